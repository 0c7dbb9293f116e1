//! End to end through the REST API: upload then download N bytes (default 1 GiB) to a
//! node on loopback, printing MB/s. The server runs in this process on its own runtime;
//! the client streams generated data (unique blocks, so nothing deduplicates) and checks
//! the SHA-256 of what comes back.
//!
//! `cargo bench --bench rest` (set `CODEX_BENCH_BYTES` to change the size).

use std::time::Instant;

use bytes::Bytes;
use codex::{Node, NodeConfig};
use futures::StreamExt;
use sha2::{Digest, Sha256};

const PIECE: usize = 1 << 20;

/// Piece `i` of the generated stream: random-looking bytes with a counter in every
/// 64 KiB so that no two blocks are equal.
fn piece(seed: &[u8], i: u64) -> Bytes {
    let mut v = seed.to_vec();
    for (j, block) in v.chunks_mut(65536).enumerate() {
        block[..8].copy_from_slice(&(i * 16 + j as u64).to_le_bytes());
    }
    Bytes::from(v)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo test --benches` asks for a list of tests
    }
    let total: u64 = std::env::var("CODEX_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let pieces = total.div_ceil(PIECE as u64);
    let total = pieces * PIECE as u64;
    let server_rt = tokio::runtime::Runtime::new()?;
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let node = server_rt.block_on(Node::start(NodeConfig {
        data_dir: dir.path().to_path_buf(),
        api_port: 0,
        storage_quota: total * 2 + (1 << 30),
        network: None,
        ..NodeConfig::default()
    }))?;
    let url = node.api_url();
    let mut seed = vec![0u8; PIECE];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in seed.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }

    client_rt.block_on(async {
        let client = reqwest::Client::new();
        let mut hasher = Sha256::new();
        for i in 0..pieces {
            hasher.update(piece(&seed, i));
        }
        let sent_digest = hasher.finalize();

        let body =
            futures::stream::iter(0..pieces).map(move |i| Ok::<_, std::io::Error>(piece(&seed, i)));
        let t = Instant::now();
        let res = client
            .post(format!("{url}/data"))
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "upload failed: {}", res.status());
        let cid = res.text().await?;
        let up = t.elapsed().as_secs_f64();
        println!(
            "upload   {:>6} MiB in {up:.2} s: {:.0} MB/s",
            total >> 20,
            total as f64 / up / 1e6
        );

        let t = Instant::now();
        let res = client.get(format!("{url}/data/{cid}")).send().await?;
        let mut stream = res.bytes_stream();
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            got += chunk.len() as u64;
            hasher.update(&chunk);
        }
        let down = t.elapsed().as_secs_f64();
        anyhow::ensure!(got == total, "downloaded {got} of {total} bytes");
        anyhow::ensure!(hasher.finalize() == sent_digest, "downloaded bytes differ");
        println!(
            "download {:>6} MiB in {down:.2} s: {:.0} MB/s (sha256 checked)",
            total >> 20,
            total as f64 / down / 1e6
        );
        anyhow::Ok(())
    })?;
    server_rt.block_on(node.shutdown())?;
    Ok(())
}
