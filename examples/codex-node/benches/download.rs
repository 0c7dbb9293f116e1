//! Download between `codex-node` processes on loopback: N bytes (default 1 GiB) uploaded to
//! one or three source nodes, then streamed by a fresh node from the network
//! (`GET /data/{cid}/network/stream`), sha256 checked. Prints MB/s and the peak RSS of
//! every process.
//!
//! `cargo bench -p codex-node --bench download` (`CODEX_BENCH_BYTES` changes the size).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use futures::StreamExt;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_codex-node");

fn spawn(dir: &std::path::Path, extra: &[String]) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(BIN)
        .args(["--data-dir", &dir.display().to_string(), "--api-port", "0"])
        .args([
            "--log-level",
            &std::env::var("CODEX_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        ])
        .args([
            "--listen-addrs",
            "/ip4/127.0.0.1/tcp/0",
            "--storage-quota",
            "8G",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("CODEX_BENCH_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()?;
    let mut line = String::new();
    BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    )
    .read_line(&mut line)?;
    Ok((child, line.trim().to_string()))
}

fn peak_rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

fn piece(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; 1 << 20];
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    v
}

async fn run(sources: usize, total: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let client = reqwest::Client::new();
    let (mut boot, boot_url) = spawn(&dir.path().join("boot"), &[])?;
    let info: serde_json::Value = client
        .get(format!("{boot_url}/debug/info"))
        .send()
        .await?
        .json()
        .await?;
    let boot_addr = info["addrs"][0].as_str().unwrap_or_default().to_string();
    let bootstrap = vec!["--bootstrap-node".to_string(), boot_addr];
    let pieces = total.div_ceil(1 << 20);
    let mut digest = Sha256::new();
    for i in 0..pieces {
        digest.update(piece(i));
    }
    let digest = digest.finalize();
    let mut children = Vec::new();
    let mut cid = String::new();
    for s in 0..sources {
        let (child, url) = spawn(&dir.path().join(format!("src{s}")), &bootstrap)?;
        let body = futures::stream::iter(0..pieces).map(|i| Ok::<_, std::io::Error>(piece(i)));
        cid = client
            .post(format!("{url}/data"))
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await?
            .text()
            .await?;
        children.push(child);
    }
    let (sink, sink_url) = spawn(&dir.path().join("sink"), &bootstrap)?;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let t = Instant::now();
    let res = client
        .get(format!("{sink_url}/data/{cid}/network/stream"))
        .send()
        .await?;
    anyhow::ensure!(
        res.status().is_success(),
        "download refused: {}",
        res.status()
    );
    let mut stream = res.bytes_stream();
    let mut got = 0u64;
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        got += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(got == pieces << 20, "got {got} bytes");
    anyhow::ensure!(hasher.finalize() == digest, "downloaded bytes differ");
    let src_rss: Vec<u64> = children.iter().map(|c| peak_rss_mib(c.id())).collect();
    println!(
        "download {} MiB from {sources} source(s): {secs:.2} s, {:.0} MiB/s; peak RSS: receiver {} MiB, sources {src_rss:?} MiB",
        got >> 20,
        got as f64 / secs / (1 << 20) as f64,
        peak_rss_mib(sink.id())
    );
    for mut c in children.into_iter().chain([sink]) {
        c.kill()?;
        c.wait()?;
    }
    boot.kill()?;
    boot.wait()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let total: u64 = std::env::var("CODEX_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(1, total))?;
    rt.block_on(run(3, total))?;
    Ok(())
}
