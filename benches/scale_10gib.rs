//! A large dataset end to end across real `codex-node` processes on loopback: SIZE bytes
//! (default 10 GiB) uploaded to node A through the REST API from a generator (never held
//! in memory), downloaded back from A through the REST API, then downloaded by node B
//! from A over the network (`GET /data/{cid}/network/stream`). Each direction is checked
//! by SHA-256 against the source; the bench prints MB/s per phase and the peak RSS
//! (`VmHWM`) of every process after each phase, and fails when a hash differs or a peak
//! RSS exceeds 300 MiB.
//!
//! Not part of any test suite: `scripts/scale.sh` runs it in release (`SCALE_BYTES`
//! changes the size, `SCALE_DIR` where the nodes' data goes; both nodes store the
//! dataset, so about twice SIZE must be free there). The `codex-node` binary is the one
//! beside this bench in `target/release` (built first when missing or older than the
//! sources), or `CODEX_NODE_BIN`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Instant, SystemTime};

use anyhow::{Context, ensure};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

const PIECE: usize = 1 << 20;
/// The most any process may hold resident.
const RSS_LIMIT_MIB: u64 = 300;

/// Piece `i` of the generated stream: random-looking bytes with a counter in every
/// 64 KiB, so that no two blocks are equal.
fn piece(seed: &[u8], i: u64) -> Bytes {
    let mut v = seed.to_vec();
    for (j, block) in v.chunks_mut(65536).enumerate() {
        block[..8].copy_from_slice(&(i * 16 + j as u64).to_le_bytes());
    }
    Bytes::from(v)
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
fn node_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("CODEX_NODE_BIN") {
        return Ok(bin.into());
    }
    // target/<profile>/deps/<this bench> -> target/<profile>/codex-node
    let exe = std::env::current_exe()?;
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench runs from target/<profile>/deps")?;
    let bin = profile.join("codex-node");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = [
        "src",
        "examples/codex-node/src",
        "codex-core/src",
        "codex-store/src",
        "codex-erasure/src",
        "codex-net/src",
    ]
    .iter()
    .filter_map(|d| newest(&root.join(d)))
    .max();
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if built.is_none() || sources > built {
        let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
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
        ensure!(cargo.status()?.success(), "cannot build codex-node");
    }
    Ok(bin)
}

/// A `codex-node` process; killed on drop, and by a small `sh` watchdog when this
/// process dies without unwinding.
struct NodeProcess {
    child: Child,
    watchdog: Child,
    url: String,
}

impl NodeProcess {
    fn start(
        bin: &Path,
        name: &'static str,
        dir: &Path,
        quota: u64,
        bootstrap: Option<&str>,
    ) -> anyhow::Result<NodeProcess> {
        let mut cmd = Command::new(bin);
        cmd.args(["--data-dir", &dir.display().to_string(), "--api-port", "0"])
            .args(["--listen-addrs", "/ip4/127.0.0.1/tcp/0"])
            .args(["--storage-quota", &quota.to_string()])
            .args([
                "--log-level",
                &std::env::var("CODEX_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            ])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap-node", b]);
        }
        let mut child = cmd.spawn()?;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!("read _; kill -9 {} 2>/dev/null", child.id()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut node = NodeProcess {
            child,
            watchdog,
            url: String::new(),
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        ensure!(line.starts_with("http://"), "{name} printed {line:?}");
        node.url = line.trim().to_string();
        Ok(node)
    }

    fn peak_rss_mib(&self) -> u64 {
        peak_rss_mib(&format!("/proc/{}/status", self.child.id()))
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

/// `VmHWM` of a `/proc/PID/status` file, in MiB.
fn peak_rss_mib(status: &str) -> u64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

/// GETs `url` and returns the byte count and SHA-256 of the body, read as a stream.
async fn read(http: &reqwest::Client, url: &str) -> anyhow::Result<(u64, Vec<u8>)> {
    let res = http.get(url).send().await?;
    ensure!(res.status().is_success(), "GET {url}: {}", res.status());
    let mut stream = res.bytes_stream();
    let (mut got, mut hasher) = (0u64, Sha256::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        got += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((got, hasher.finalize().to_vec()))
}

struct Phase {
    name: &'static str,
    secs: f64,
    /// Peak RSS of A, B and this process after the phase, MiB.
    rss: [u64; 3],
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo test --benches` asks for a list of tests
    }
    let size: u64 = match std::env::var("SCALE_BYTES") {
        Ok(v) => v.parse().with_context(|| format!("SCALE_BYTES={v}"))?,
        Err(_) => 10 << 30,
    };
    let pieces = size.div_ceil(PIECE as u64);
    let size = pieces * PIECE as u64;
    let bin = node_bin()?;
    let dir = match std::env::var_os("SCALE_DIR") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let quota = size + size / 10 + (1 << 30);
    println!(
        "{} MiB ({size} bytes) through codex-node processes; data in {}",
        size >> 20,
        dir.path().display()
    );

    let mut seed = vec![0u8; PIECE];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in seed.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let t = Instant::now();
    let mut hasher = Sha256::new();
    for i in 0..pieces {
        hasher.update(piece(&seed, i));
    }
    let source = hasher.finalize().to_vec();
    println!(
        "source sha256 {} ({:.1} s, not timed below)",
        hex(&source),
        t.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Runtime::new()?;
    let a = NodeProcess::start(&bin, "A", &dir.path().join("a"), quota, None)?;
    let phases = rt.block_on(async {
        let http = reqwest::Client::new();
        let info: serde_json::Value = http
            .get(format!("{}/debug/info", a.url))
            .send()
            .await?
            .json()
            .await?;
        let boot = info["addrs"][0]
            .as_str()
            .with_context(|| format!("no address in {info}"))?
            .to_string();
        let b = NodeProcess::start(&bin, "B", &dir.path().join("b"), quota, Some(&boot))?;
        let rss = |a: &NodeProcess, b: &NodeProcess| {
            [
                a.peak_rss_mib(),
                b.peak_rss_mib(),
                peak_rss_mib("/proc/self/status"),
            ]
        };
        let mut phases = Vec::new();

        let t = Instant::now();
        let body =
            futures::stream::iter(0..pieces).map(move |i| Ok::<_, std::io::Error>(piece(&seed, i)));
        let res = http
            .post(format!("{}/data", a.url))
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await?;
        ensure!(res.status().is_success(), "upload: {}", res.status());
        let cid = res.text().await?;
        phases.push(Phase {
            name: "upload to A (REST)",
            secs: t.elapsed().as_secs_f64(),
            rss: rss(&a, &b),
        });

        let t = Instant::now();
        let (got, digest) = read(&http, &format!("{}/data/{cid}", a.url)).await?;
        ensure!(got == size, "REST download: {got} of {size} bytes");
        ensure!(digest == source, "REST download: sha256 {}", hex(&digest));
        phases.push(Phase {
            name: "download from A (REST)",
            secs: t.elapsed().as_secs_f64(),
            rss: rss(&a, &b),
        });

        let t = Instant::now();
        let (got, digest) = read(&http, &format!("{}/data/{cid}/network/stream", b.url)).await?;
        ensure!(got == size, "network download: {got} of {size} bytes");
        ensure!(
            digest == source,
            "network download: sha256 {}",
            hex(&digest)
        );
        phases.push(Phase {
            name: "B downloads from A (libp2p)",
            secs: t.elapsed().as_secs_f64(),
            rss: rss(&a, &b),
        });
        println!("manifest CID {cid}; every direction's sha256 equals the source's");
        drop(b);
        anyhow::Ok(phases)
    })?;
    drop(a);
    drop(rt);

    for p in &phases {
        println!(
            "{:<28} {:>7.1} s {:>7.0} MB/s   peak RSS so far: A {} MiB, B {} MiB, bench {} MiB",
            p.name,
            p.secs,
            size as f64 / p.secs / 1e6,
            p.rss[0],
            p.rss[1],
            p.rss[2]
        );
    }
    let last = phases.last().map(|p| p.rss).unwrap_or_default();
    let over: Vec<String> = ["A", "B", "bench"]
        .iter()
        .zip(last)
        .filter(|(_, r)| *r > RSS_LIMIT_MIB)
        .map(|(n, r)| format!("{n} {r} MiB"))
        .collect();
    ensure!(
        over.is_empty(),
        "peak RSS over {RSS_LIMIT_MIB} MiB: {}",
        over.join(", ")
    );
    dir.close()?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
