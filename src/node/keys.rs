//! Keys the node keeps when asked (`--keep-keys`): a file `keys` in the data directory,
//! mode 0600, one line per encrypted dataset: `<dataset nonce hex> <key hex> <cid>`.
//! Found by the dataset nonce, so the key of a dataset also opens its erasure-coded
//! and verifiable versions (their manifests carry the same parameters).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use codex_core::{Cid, Encryption};
use codex_crypto::Key;

use crate::error::{Error, Result};

/// The node's kept keys.
#[derive(Debug)]
pub(crate) struct KeyRing {
    path: PathBuf,
    /// Serialises writers of the file.
    lock: Mutex<()>,
}

impl KeyRing {
    pub(crate) fn new(data_dir: &std::path::Path) -> KeyRing {
        KeyRing {
            path: data_dir.join("keys"),
            lock: Mutex::new(()),
        }
    }

    async fn task<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&KeyRing) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let ring = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&ring)).await?
    }

    /// Appends the key of the dataset `cid` with these parameters.
    pub(crate) async fn keep(
        self: &Arc<Self>,
        cid: Cid,
        enc: &Encryption,
        key: &Key,
    ) -> Result<()> {
        let line = format!("{} {} {cid}\n", hex::encode(enc.nonce), key.to_hex());
        self.task(move |ring| {
            let _guard = ring
                .lock
                .lock()
                .map_err(|_| Error::Task("key ring lock".into()))?;
            let mut options = std::fs::OpenOptions::new();
            options.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&ring.path)?;
            file.write_all(line.as_bytes())?;
            file.sync_all()?;
            Ok(())
        })
        .await
    }

    /// The kept key of a dataset with these parameters.
    pub(crate) async fn find(self: &Arc<Self>, enc: &Encryption) -> Result<Option<Key>> {
        let nonce = hex::encode(enc.nonce);
        self.task(move |ring| {
            let text = match std::fs::read_to_string(&ring.path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            for line in text.lines().rev() {
                let mut words = line.split_whitespace();
                if words.next() == Some(nonce.as_str())
                    && let Some(key) = words.next()
                {
                    return Ok(Some(Key::from_hex(key)?));
                }
            }
            Ok(None)
        })
        .await
    }
}
