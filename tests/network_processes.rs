//! The network scenarios of codex-net's five-node test across real `codex-node`
//! processes on loopback, started and stopped (`kill -9`) by the tests: a peer serving
//! corrupted blocks and a peer whose store is damaged on disk, a source killed in the
//! middle of a download, and a receiver killed in the middle of a download that resumes
//! after a restart without fetching again what it had stored.
//!
//! The tests wait on conditions read through the REST API (`/debug/info`, `/space`,
//! `/data/{cid}/exists`) and the nodes' logs, each with a deadline, never on fixed sleeps.
//! A node process is killed when its handle drops, and by a small `sh` watchdog when the
//! test process dies without unwinding.
//!
//! The `codex-node` binary is the one `cargo test --workspace` builds beside this test;
//! when it is missing or older than the sources it is built first (`CODEX_NODE_BIN`
//! names another one).

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use codex_core::{Block, BlockRead, Chunker, Cid, CodexProof, LeafMeta};
use codex_store::{MemoryStore, StoreConfig};
use futures::StreamExt;
use rand::{RngCore, SeedableRng, rngs::StdRng};
use serde_json::Value;

/// How long any one condition may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Newest modification time of the files under `dir`.
fn newest(dir: &Path) -> Option<SystemTime> {
    let mut best = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok())
        };
        best = best.max(t);
    }
    best
}

/// The `codex-node` binary of this build profile, built first when missing or stale.
fn node_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CODEX_NODE_BIN") {
            return bin.into();
        }
        // target/<profile>/deps/<this test> -> target/<profile>/codex-node
        let exe = std::env::current_exe().expect("the test's own path");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from target/<profile>/deps");
        let bin = profile.join("codex-node");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let sources = [
            "src",
            "examples/codex-node/src",
            "codex-core/src",
            "codex-store/src",
            "codex-erasure/src",
            "codex-proofs/src",
            "codex-net/src",
            "codex-market/src",
        ]
        .iter()
        .filter_map(|d| newest(&root.join(d)))
        .max();
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        if built.is_none() || sources > built {
            let mut cargo =
                Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            cargo
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "codex-node",
                    "--bin",
                    "codex-node",
                ])
                .current_dir(root);
            if profile.file_name().is_some_and(|p| p == "release") {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("cargo runs");
            assert!(status.success(), "cannot build codex-node");
        }
        bin
    })
}

/// A `codex-node` process: its API URL and what it logged. Killed on drop.
struct NodeProcess {
    child: Child,
    watchdog: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl NodeProcess {
    /// Starts a node in `dir` (API and peers on loopback, free ports), bootstrapping from
    /// `bootstrap` if given.
    fn start(dir: &Path, bootstrap: Option<&str>) -> anyhow::Result<NodeProcess> {
        let mut cmd = Command::new(node_bin());
        cmd.args(["--data-dir", &dir.display().to_string(), "--api-port", "0"])
            .args(["--listen-addrs", "/ip4/127.0.0.1/tcp/0"])
            .args([
                "--log-level",
                &std::env::var("CODEX_LOG").unwrap_or_else(|_| "info".into()),
            ])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap-node", b]);
        }
        let mut child = cmd.spawn()?;
        // Kills the node once our end of its stdin closes: on drop, or when this process
        // dies without unwinding.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!("read _; kill -9 {} 2>/dev/null", child.id()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let Some(stderr) = stderr else { return };
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&strip_ansi(&line));
                log.push('\n');
            }
        });
        let mut node = NodeProcess {
            child,
            watchdog,
            url: String::new(),
            log,
        };
        let stdout = node
            .child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        anyhow::ensure!(
            line.starts_with("http://"),
            "node printed {line:?}; log:\n{}",
            node.log()
        );
        node.url = line.trim().to_string();
        Ok(node)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `kill -9`, and waits until the process is gone.
    fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let res = reqwest::get(format!("{}{path}", self.url)).await?;
        anyhow::ensure!(res.status().is_success(), "GET {path}: {}", res.status());
        Ok(res.json().await?)
    }

    async fn upload(&self, data: &[u8]) -> anyhow::Result<String> {
        let res = reqwest::Client::new()
            .post(format!("{}/data", self.url))
            .body(data.to_vec())
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "upload: {}", res.status());
        Ok(res.text().await?)
    }

    /// Peer id and address (`/ip4/.../tcp/...`, without `/p2p/`).
    async fn peer(&self) -> anyhow::Result<(String, String)> {
        let info = self.get("/debug/info").await?;
        let id = info["id"].as_str().unwrap_or_default().to_string();
        let addr = info["addrs"][0]
            .as_str()
            .and_then(|a| a.split("/p2p/").next())
            .ok_or_else(|| anyhow::anyhow!("no address in {info}"))?
            .to_string();
        Ok((id, addr))
    }

    /// The peer address to bootstrap from.
    async fn bootstrap_addr(&self) -> anyhow::Result<String> {
        let (id, addr) = self.peer().await?;
        Ok(format!("{addr}/p2p/{id}"))
    }

    /// Connects to `peer` at `addr` and waits until the connection shows in `/debug/info`.
    async fn connect(&self, peer: &str, addr: &str) -> anyhow::Result<()> {
        let res = reqwest::get(format!("{}/connect/{peer}?addrs={addr}", self.url)).await?;
        anyhow::ensure!(res.status().is_success(), "connect: {}", res.status());
        wait_for(&format!("a connection to {peer}"), || async {
            let info = self.get("/debug/info").await?;
            Ok(info["connectedPeers"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p == peer)))
        })
        .await
    }

    async fn total_blocks(&self) -> anyhow::Result<u64> {
        Ok(self.get("/space").await?["totalBlocks"]
            .as_u64()
            .unwrap_or_default())
    }

    async fn has(&self, cid: &str) -> anyhow::Result<bool> {
        Ok(self.get(&format!("/data/{cid}/exists")).await?["has"] == true)
    }

    /// The network download of `cid`, as a stream of its bytes.
    async fn stream(&self, cid: &str) -> anyhow::Result<ByteStream> {
        let res = reqwest::get(format!("{}/data/{cid}/network/stream", self.url)).await?;
        anyhow::ensure!(res.status().is_success(), "stream: {}", res.status());
        Ok(res.bytes_stream().boxed())
    }

    /// [`NodeProcess::fetch_report`], once the node has logged it.
    async fn wait_fetch_report(&self) -> anyhow::Result<(u64, u64, u64)> {
        wait_for("the fetch report in the log", || async {
            Ok(self.fetch_report().is_some())
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", self.log()))?;
        self.fetch_report()
            .ok_or_else(|| anyhow::anyhow!("no fetch report"))
    }

    /// The counts of the node's last finished fetch: (fetched, present, missing).
    fn fetch_report(&self) -> Option<(u64, u64, u64)> {
        let log = self.log();
        let line = log.lines().rfind(|l| l.contains("fetch finished"))?;
        let field = |name: &str| -> Option<u64> {
            let rest = &line[line.find(&format!("{name}="))? + name.len() + 1..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        Some((field("fetched")?, field("present")?, field("missing")?))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls `check` until it holds, for at most [`PATIENCE`].
async fn wait_for<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(true) = check().await {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type ByteStream = futures::stream::BoxStream<'static, reqwest::Result<Bytes>>;

/// Reads a whole stream.
async fn collect(mut stream: ByteStream) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Reads from `stream` into `out` until it holds at least `n` bytes.
async fn read_at_least(stream: &mut ByteStream, out: &mut Vec<u8>, n: usize) -> anyhow::Result<()> {
    while out.len() < n {
        let chunk = stream
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("the stream ended at {} bytes", out.len()))??;
        out.extend_from_slice(&chunk);
    }
    Ok(())
}

type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = codex_core::Result<T>> + Send + 'a>>;

/// Forwards `BlockRead` methods to the wrapped store (the trait's methods as
/// `async_trait` declares them).
macro_rules! forward {
    ($name:ident(&$cid:ident $(, $arg:ident: $ty:ty)*) -> $out:ty) => {
        fn $name<'s, 'c, 'f>(&'s self, $cid: &'c Cid $(, $arg: $ty)*) -> StoreFuture<'f, $out>
        where
            's: 'f,
            'c: 'f,
            Self: 'f,
        {
            Box::pin(self.0.$name($cid $(, $arg)*))
        }
    };
}

/// A store that damages every block it serves as a leaf: the store of a lying peer.
#[derive(Debug)]
struct Corrupting(MemoryStore);

impl BlockRead for Corrupting {
    forward!(get_block(&c) -> Block);
    forward!(get_leaf_meta(&t, i: u64) -> LeafMeta);
    forward!(has_block(&c) -> bool);
    forward!(has_leaf(&t, i: u64) -> bool);

    fn get_leaf<'s, 'c, 'f>(
        &'s self,
        tree: &'c Cid,
        index: u64,
    ) -> StoreFuture<'f, (Block, CodexProof)>
    where
        's: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let (block, proof) = self.0.get_leaf(tree, index).await?;
            let mut data = block.data().to_vec();
            data[0] ^= 1;
            Ok((Block::new_unchecked(*block.cid(), Bytes::from(data)), proof))
        })
    }
}

/// Flips a byte in every 4 KiB page of the node's pack files: every stored block body is
/// damaged on disk.
fn damage_packs(dir: &Path) -> anyhow::Result<usize> {
    let mut damaged = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "pack") {
                use std::os::unix::fs::FileExt;
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)?;
                let len = file.metadata()?.len();
                let mut byte = [0u8; 1];
                for page in 0..len.div_ceil(4096) {
                    let at = page * 4096 + 17;
                    if at < len {
                        file.read_exact_at(&mut byte, at)?;
                        byte[0] ^= 0x5a;
                        file.write_all_at(&byte, at)?;
                        damaged += 1;
                    }
                }
                file.sync_all()?;
            }
        }
    }
    Ok(damaged)
}

/// A: an honest source. X: a source whose pack files are damaged on disk after the
/// upload (it must refuse to serve what no longer checks out). V: a peer (in this
/// process, codex-net over the same loopback) that serves every block with a flipped
/// bit. E downloads from all three and gets byte-identical data: V's deliveries are
/// rejected and V dropped, X answers that it lacks the blocks, A serves the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_download_around_corrupted_peers() -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(180), corrupted_peers()).await?
}

async fn corrupted_peers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = random(4 << 20, 11);
    let b = NodeProcess::start(&dir.path().join("b"), None)?;
    let boot = b.bootstrap_addr().await?;
    let a = NodeProcess::start(&dir.path().join("a"), Some(&boot))?;
    let x = NodeProcess::start(&dir.path().join("x"), Some(&boot))?;
    let cid = a.upload(&data).await?;
    assert_eq!(x.upload(&data).await?, cid);
    assert!(damage_packs(&dir.path().join("x"))? >= 64);

    // V: the same dataset in a store that corrupts what it serves.
    let evil = Arc::new(Corrupting(MemoryStore::new(StoreConfig::default())));
    let blocks: Vec<Block> = Chunker::new(&data[..], 65536)
        .map(|b| b.map(Block::new))
        .collect::<Result<_, _>>()?;
    let (v_cid, manifest) =
        codex_core::store_dataset(&evil.0, blocks, 65536, data.len() as u64).await?;
    assert_eq!(v_cid.to_string(), cid);
    let key = codex_net::load_or_create_key(&dir.path().join("v-key"))?;
    let v = codex_net::Network::start(
        key,
        codex_net::NetConfig {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            bootstrap: vec![boot.parse()?],
            ..codex_net::NetConfig::default()
        },
        evil,
    )
    .await?;
    v.provide(v_cid).await?;
    v.provide(manifest.tree_cid).await?;
    // A started network listens: its address is known.
    let v_addr = v.info().await?.listen_addrs.first().cloned();
    let v_addr = v_addr.ok_or_else(|| anyhow::anyhow!("V does not listen"))?;

    let e = NodeProcess::start(&dir.path().join("e"), Some(&boot))?;
    for n in [&a, &x] {
        let (id, addr) = n.peer().await?;
        e.connect(&id, &addr).await?;
    }
    e.connect(&v.peer_id().to_string(), &v_addr.to_string())
        .await?;

    let got = collect(e.stream(&cid).await?).await?;
    assert!(got == data, "downloaded bytes differ");
    wait_for("E to store the dataset", || e.has(&cid)).await?;
    let (fetched, present, missing) = e.wait_fetch_report().await?;
    assert_eq!((fetched, present, missing), (manifest.blocks_count(), 0, 0));

    // V served corrupted blocks, and E dropped it for that.
    assert!(v.exchange().stats.served.load(Ordering::Relaxed) >= 1);
    let e_log = e.log();
    let dropped: Vec<&str> = e_log
        .lines()
        .filter(|l| l.contains("dropping a misbehaving peer"))
        .collect();
    assert!(
        dropped.iter().any(|l| l.contains(&v.peer_id().to_string())),
        "E did not drop V:\n{e_log}"
    );
    let (x_id, _) = x.peer().await?;
    let (a_id, _) = a.peer().await?;
    assert!(
        !dropped
            .iter()
            .any(|l| l.contains(&x_id) || l.contains(&a_id)),
        "E dropped an honest peer:\n{e_log}"
    );
    // X noticed its damaged blocks and did not send them.
    assert!(
        x.log().contains("cannot serve a block"),
        "X served without noticing:\n{}",
        x.log()
    );
    v.shutdown().await;
    Ok(())
}

/// A 64 MiB dataset: more blocks than a streaming download fetches ahead of its reader
/// (512), so a paused reader holds the download in its middle.
const LARGE: usize = 64 << 20;

/// A and D hold the dataset; E streams it from both, its reader pauses, D is killed with
/// `kill -9`, and E's download completes from A alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_download_survives_a_killed_source() -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(240), killed_source()).await?
}

async fn killed_source() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = random(LARGE, 12);
    let a = NodeProcess::start(&dir.path().join("a"), None)?;
    let boot = a.bootstrap_addr().await?;
    let mut d = NodeProcess::start(&dir.path().join("d"), Some(&boot))?;
    let cid = a.upload(&data).await?;
    assert_eq!(d.upload(&data).await?, cid);
    let e = NodeProcess::start(&dir.path().join("e"), Some(&boot))?;
    let (d_id, d_addr) = d.peer().await?;
    e.connect(&d_id, &d_addr).await?;

    let mut stream = e.stream(&cid).await?;
    let mut got = Vec::new();
    read_at_least(&mut stream, &mut got, 1 << 20).await?;
    // D goes while requests to it are in flight; the paused reader keeps E from running
    // more than 512 blocks ahead, so most of the dataset is fetched after the kill.
    d.kill()?;
    let n = (LARGE / 65536) as u64;
    let before = e.total_blocks().await?;
    assert!(
        before < n - 128,
        "E held {before} of {n} blocks at the kill"
    );
    got.extend(collect(stream).await?);
    assert!(got == data, "downloaded bytes differ");
    wait_for("E to store the dataset", || e.has(&cid)).await?;
    let (fetched, _, missing) = e.wait_fetch_report().await?;
    assert_eq!((fetched, missing), (n, 0));
    Ok(())
}

/// E streams a dataset from A, is killed with `kill -9` in the middle, restarts on the
/// same data directory and downloads again: what it had stored is not fetched again,
/// and the bytes are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_resume_an_interrupted_download() -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(240), resume()).await?
}

async fn resume() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = random(LARGE, 13);
    let a = NodeProcess::start(&dir.path().join("a"), None)?;
    let boot = a.bootstrap_addr().await?;
    let cid = a.upload(&data).await?;
    let n = (LARGE / 65536) as u64;
    let e_dir = dir.path().join("e");
    let mut e = NodeProcess::start(&e_dir, Some(&boot))?;
    {
        let mut stream = e.stream(&cid).await?;
        let mut got = Vec::new();
        read_at_least(&mut stream, &mut got, 1 << 20).await?;
        assert!(got[..] == data[..got.len()]);
        wait_for("E to store part of the dataset", || async {
            Ok(e.total_blocks().await? >= 128)
        })
        .await
        .map_err(|err| anyhow::anyhow!("{err}; A's log:\n{}\nE's log:\n{}", a.log(), e.log()))?;
        e.kill()?;
    }
    drop(e);

    let e = NodeProcess::start(&e_dir, Some(&boot))?;
    let kept = e.total_blocks().await?;
    assert!(
        kept > 0 && kept < n,
        "{kept} of {n} blocks kept through the kill"
    );
    assert!(
        !e.has(&cid).await?,
        "no manifest before the dataset is whole"
    );
    let got = collect(e.stream(&cid).await?).await?;
    assert!(got == data, "downloaded bytes differ");
    wait_for("E to store the dataset", || e.has(&cid)).await?;
    let (fetched, present, missing) = e.wait_fetch_report().await?;
    assert_eq!(missing, 0);
    assert_eq!(present, kept, "every block kept was reused");
    assert_eq!(fetched, n - kept, "only the missing blocks were fetched");
    Ok(())
}

#[test]
fn ansi_is_stripped() {
    assert_eq!(
        strip_ansi("\u{1b}[2mfetched\u{1b}[0m\u{1b}[2m=\u{1b}[0m7"),
        "fetched=7"
    );
}
