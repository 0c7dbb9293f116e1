//! What the node provides in the DHT, kept next to its data (the file [`FILE`] in the
//! data directory), so that a restarted node announces its datasets again without
//! reading every manifest. Feature `net`.
//!
//! The file is text: a header line `codex-provided 1 <clean|running> <count>`, then one
//! CID a line (manifest and tree CIDs; [`codex_net::Network::provided`]). It is
//! written whole to `provided.tmp` and renamed over the old one: every minute while the
//! set changes (`running`), and at [`crate::Node::shutdown`] (`clean`).
//!
//! At start the node hands the listed keys to
//! [`codex_net::NetworkBuilder::provided`], dropping manifests the store no longer
//! holds (a metadata look-up each, no manifest read). It reads every manifest and
//! announces each dataset, as without the file, when the file is missing, unreadable
//! or corrupt (with a warning), when it was last written while running (the node did
//! not stop cleanly: datasets of its last minute may be missing), or when the node
//! provided more than [`MAX_KEYS`] keys.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use codex_core::prelude::*;
use codex_core::{Cid, codec};
use codex_net::Network;
use tokio_util::sync::CancellationToken;

/// The file's name in the data directory.
pub const FILE: &str = "provided";

/// The most keys the file keeps (about 64 MiB of file): a node that provides more
/// announces from its manifests at start.
pub const MAX_KEYS: usize = 1 << 20;

/// How often the set is saved while it changes.
pub(crate) const SAVE_INTERVAL: Duration = Duration::from_secs(60);

const MAGIC: &str = "codex-provided";
const VERSION: &str = "1";
/// The longest line taken: a CID's text is about 60 characters.
const MAX_LINE: usize = 256;

/// Why a file is not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("line {line}: {reason}")]
    Corrupt { line: usize, reason: String },
}

/// A file read back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Saved {
    pub(crate) keys: Vec<Cid>,
    /// Written at a clean shutdown: the set was complete.
    pub(crate) clean: bool,
}

/// Reads the file at `path`; `None` when there is none.
pub(crate) fn load(path: &Path) -> Result<Option<Saved>, LoadError> {
    let corrupt = |line: usize, reason: String| LoadError::Corrupt { line, reason };
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let max = (MAX_KEYS as u64 + 1) * MAX_LINE as u64;
    if len > max {
        return Err(corrupt(0, format!("{len} bytes, more than {max}")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => corrupt(0, "not UTF-8 text".into()),
        _ => e.into(),
    })?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    let (clean, count) = match header.as_slice() {
        [MAGIC, VERSION, state @ ("clean" | "running"), count] => (
            *state == "clean",
            count
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= MAX_KEYS)
                .ok_or_else(|| corrupt(1, format!("bad key count {count:?}")))?,
        ),
        _ => {
            return Err(corrupt(
                1,
                format!("not a `{MAGIC} {VERSION} <clean|running> <count>` header"),
            ));
        }
    };
    let mut keys = Vec::with_capacity(count);
    for (i, line) in lines.enumerate() {
        if keys.len() == count {
            return Err(corrupt(
                i + 2,
                format!("more than the {count} keys announced"),
            ));
        }
        let cid = line
            .parse::<Cid>()
            .map_err(|e| corrupt(i + 2, format!("not a CID: {e}")))?;
        keys.push(cid);
    }
    if keys.len() != count {
        return Err(corrupt(
            keys.len() + 2,
            format!("{} keys of the {count} announced", keys.len()),
        ));
    }
    Ok(Some(Saved { keys, clean }))
}

/// Writes `keys` to `path` atomically (a temporary file beside it, synced, renamed over
/// it). More than [`MAX_KEYS`]: removes the file instead, so that the next start
/// announces from the manifests.
pub(crate) fn save(path: &Path, keys: &[Cid], clean: bool) -> std::io::Result<()> {
    if keys.len() > MAX_KEYS {
        tracing::warn!(
            keys = keys.len(),
            max = MAX_KEYS,
            "too many provided keys to keep: the next start announces from the manifests"
        );
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let tmp = path.with_extension("tmp");
    let state = if clean { "clean" } else { "running" };
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    writeln!(out, "{MAGIC} {VERSION} {state} {}", keys.len())?;
    for k in keys {
        writeln!(out, "{k}")?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The keys of `saved` that are still worth providing: manifests the store still holds
/// (one metadata look-up each) and every other key (trees: a host holds part of one).
pub(crate) async fn still_held(store: &dyn BlockStore, saved: Vec<Cid>) -> Vec<Cid> {
    let mut keys = Vec::with_capacity(saved.len());
    for cid in saved {
        if cid.codec() != codec::MANIFEST || store.has_block(&cid).await.unwrap_or(true) {
            keys.push(cid);
        }
    }
    keys
}

/// An order-free fingerprint of a set of keys, to tell whether it changed.
fn fingerprint(keys: &mut [Cid]) -> u64 {
    keys.sort_unstable();
    let mut h = std::hash::DefaultHasher::new();
    keys.hash(&mut h);
    h.finish()
}

/// Keeps the node's provided keys in the file: saves them while the node runs and at
/// its shutdown, once the set is complete.
#[derive(Debug)]
pub(crate) struct Persist {
    path: PathBuf,
    /// The set is complete: loaded from a clean file, or every manifest announced.
    ready: AtomicBool,
    /// The fingerprint and state of the last save.
    last: Mutex<Option<(u64, bool)>>,
}

impl Persist {
    pub(crate) fn new(data_dir: &Path) -> Persist {
        Persist {
            path: data_dir.join(FILE),
            ready: AtomicBool::new(false),
            last: Mutex::new(None),
        }
    }

    /// The keys to provide from the start, and whether every dataset must be announced
    /// from its manifest as well. Never fails: a bad file is a warning.
    pub(crate) async fn load(&self, store: &dyn BlockStore) -> (Vec<Cid>, bool) {
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e).into()));
        match loaded {
            Ok(Some(saved)) => {
                let count = saved.keys.len();
                let keys = still_held(store, saved.keys).await;
                tracing::info!(
                    file = %self.path.display(),
                    keys = keys.len(),
                    dropped = count - keys.len(),
                    clean = saved.clean,
                    "provided keys loaded"
                );
                if saved.clean {
                    self.ready.store(true, Ordering::Release);
                } else {
                    tracing::info!(
                        "the node did not stop cleanly: announcing every stored dataset too"
                    );
                }
                (keys, !saved.clean)
            }
            Ok(None) => (Vec::new(), true),
            Err(e) => {
                tracing::warn!(
                    file = %self.path.display(),
                    error = %e,
                    "cannot use the provided keys' file: announcing every stored dataset"
                );
                (Vec::new(), true)
            }
        }
    }

    /// Saves the node's provided keys when they changed since the last save (or `clean`
    /// is new), once the set is complete.
    pub(crate) async fn save(&self, net: &Network, clean: bool) {
        if !self.ready.load(Ordering::Acquire) {
            return;
        }
        let mut keys = match net.provided().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the provided keys");
                return;
            }
        };
        let print = fingerprint(&mut keys);
        let unchanged = self
            .last
            .lock()
            .map(|l| *l == Some((print, clean)))
            .unwrap_or(false);
        if unchanged {
            return;
        }
        let path = self.path.clone();
        let count = keys.len();
        match tokio::task::spawn_blocking(move || save(&path, &keys, clean)).await {
            Ok(Ok(())) => {
                if let Ok(mut l) = self.last.lock() {
                    *l = Some((print, clean));
                }
                tracing::debug!(keys = count, clean, "provided keys saved");
            }
            Ok(Err(e)) => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot save the provided keys")
            }
            Err(e) => tracing::warn!(error = %e, "saving the provided keys failed"),
        }
    }

    /// Announces every stored dataset when `announce_all` (no usable file), then saves
    /// the set every [`SAVE_INTERVAL`] while it changes, until `stop`. The save at
    /// shutdown is [`Persist::save`]'s, called by the node.
    pub(crate) async fn run(
        self: std::sync::Arc<Self>,
        net: Network,
        store: std::sync::Arc<dyn BlockStore>,
        announce_all: bool,
        stop: CancellationToken,
    ) {
        if announce_all {
            // Biased: an announcement that has sent its last key finishes (and the set
            // counts as complete) even when the stop comes at the same time.
            tokio::select! {
                biased;
                announced = crate::node::network::announce_all(&net, &*store) => match announced {
                    Ok(count) => {
                        tracing::info!(count, "announced stored datasets");
                        self.ready.store(true, Ordering::Release);
                    }
                    // Not complete: nothing is saved, the next start announces again.
                    Err(e) => tracing::warn!(error = %e, "cannot announce stored datasets"),
                },
                _ = stop.cancelled() => return,
            }
        }
        let mut every = tokio::time::interval(SAVE_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => self.save(&net, false).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cids(n: u8) -> Vec<Cid> {
        (0..n)
            .map(|i| Cid::from_sha256(codec::MANIFEST, [i; 32]))
            .collect()
    }

    #[test]
    fn saved_keys_load_back() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE);
        assert!(load(&path)?.is_none());
        let keys = cids(5);
        save(&path, &keys, true)?;
        assert_eq!(
            load(&path)?,
            Some(Saved {
                keys: keys.clone(),
                clean: true
            })
        );
        save(&path, &keys[..2], false)?;
        assert_eq!(
            load(&path)?,
            Some(Saved {
                keys: keys[..2].to_vec(),
                clean: false
            })
        );
        assert!(!path.with_extension("tmp").exists());
        Ok(())
    }

    #[test]
    fn corrupt_files_are_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE);
        let one = cids(1)[0];
        for text in [
            String::new(),
            "garbage\n".to_string(),
            format!("{MAGIC} 2 clean 1\n{one}\n"),
            format!("{MAGIC} 1 clean 2\n{one}\n"),
            format!("{MAGIC} 1 clean 0\n{one}\n"),
            format!("{MAGIC} 1 clean 1\nnot-a-cid\n"),
            format!("{MAGIC} 1 maybe 1\n{one}\n"),
        ] {
            std::fs::write(&path, &text)?;
            assert!(
                matches!(load(&path), Err(LoadError::Corrupt { .. })),
                "{text:?}"
            );
        }
        std::fs::write(&path, [0xff, 0xfe, 0x00])?;
        assert!(matches!(load(&path), Err(LoadError::Corrupt { .. })));
        Ok(())
    }

    #[test]
    fn the_fingerprint_ignores_order() {
        let mut a = cids(4);
        let mut b: Vec<Cid> = a.iter().rev().copied().collect();
        assert_eq!(fingerprint(&mut a), fingerprint(&mut b));
        assert_ne!(fingerprint(&mut a[..3]), fingerprint(&mut b));
    }
}
