//! End to end through the REST API: upload then download N bytes (default 1 GiB) to a
//! node on loopback, printing MB/s; then the same encrypted (`POST /data?encrypt=true`,
//! and `GET /data/{cid}` with the returned key in `X-Codex-Key`), with the ratio of
//! encrypted to plain (the target for the upload: >= 0.8). The server runs in
//! this process on its own runtime; the client streams generated data (fresh random
//! bytes each run, unique blocks, so nothing deduplicates) and checks the SHA-256 of
//! what comes back.
//!
//! After a warm-up round, runs 3 rounds (`CODEX_BENCH_RUNS`), plain first then
//! encrypted first in turn, each dataset deleted after its download (the next upload
//! reuses its space) and dirty pages written out (`sync`) before each upload; prints
//! the medians.
//!
//! `cargo bench --bench rest` (set `CODEX_BENCH_BYTES` to change the size).

use std::time::Instant;

use bytes::Bytes;
use codex::{Node, NodeConfig};
use futures::StreamExt;
use sha2::{Digest, Sha256};

#[path = "support/proc.rs"]
mod proc;
use proc::cpu_secs;

const PIECE: usize = 1 << 20;

/// Seconds of wall time and of CPU a step took.
#[derive(Clone, Copy)]
struct Took {
    secs: f64,
    cpu: f64,
}

impl Took {
    fn since(t: Instant, cpu: f64) -> Took {
        Took {
            secs: t.elapsed().as_secs_f64(),
            cpu: cpu_secs() - cpu,
        }
    }

    /// `in 2.41 s: 445 MB/s, CPU 3.10 s (1.29 cores)`
    fn show(&self, bytes: u64) -> String {
        format!(
            "in {:.2} s: {:.0} MB/s, CPU {:.2} s ({:.2} cores)",
            self.secs,
            bytes as f64 / self.secs / 1e6,
            self.cpu,
            self.cpu / self.secs
        )
    }
}

/// A generated upload: `pieces` pieces of 1 MiB from a random seed piece.
#[derive(Clone)]
struct Data {
    seed: Bytes,
    pieces: u64,
}

impl Data {
    /// Fresh random bytes (xorshift from a random start).
    fn random(pieces: u64) -> Data {
        let mut seed = vec![0u8; PIECE];
        let mut x = rand::random::<u64>() | 1;
        for chunk in seed.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        Data {
            seed: Bytes::from(seed),
            pieces,
        }
    }

    fn len(&self) -> u64 {
        self.pieces * PIECE as u64
    }

    /// Piece `i`: the seed with a counter in every 64 KiB so that no two blocks are equal.
    fn piece(&self, i: u64) -> Bytes {
        let mut v = self.seed.to_vec();
        for (j, block) in v.chunks_mut(65536).enumerate() {
            block[..8].copy_from_slice(&(i * 16 + j as u64).to_le_bytes());
        }
        Bytes::from(v)
    }

    fn digest(&self) -> Vec<u8> {
        let mut hasher = Sha256::new();
        for i in 0..self.pieces {
            hasher.update(self.piece(i));
        }
        hasher.finalize().to_vec()
    }

    fn body(&self) -> reqwest::Body {
        let data = self.clone();
        reqwest::Body::wrap_stream(
            futures::stream::iter(0..data.pieces)
                .map(move |i| Ok::<_, std::io::Error>(data.piece(i))),
        )
    }
}

/// Uploads `data` (encrypted when `encrypt`); its CID and key, and the seconds taken.
async fn upload(
    client: &reqwest::Client,
    url: &str,
    data: &Data,
    encrypt: bool,
) -> anyhow::Result<(String, Option<String>, Took)> {
    // The previous run's writeback does not slow this one.
    rustix::fs::sync();
    let target = if encrypt {
        format!("{url}/data?encrypt=true")
    } else {
        format!("{url}/data")
    };
    let (t, cpu) = (Instant::now(), cpu_secs());
    let res = client
        .post(target)
        .header("Content-Disposition", "attachment; filename=\"bench.bin\"")
        .body(data.body())
        .send()
        .await?;
    let status = res.status();
    let text = res.text().await?;
    let took = Took::since(t, cpu);
    anyhow::ensure!(status.is_success(), "upload failed: {status}: {text}");
    if !encrypt {
        return Ok((text, None, took));
    }
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("the encrypted upload did not answer JSON ({e}): {text}"))?;
    let (Some(cid), Some(key)) = (json["cid"].as_str(), json["key"].as_str()) else {
        anyhow::bail!("the encrypted upload's answer lacks cid or key: {text}");
    };
    Ok((cid.to_string(), Some(key.to_string()), took))
}

/// Downloads `cid` (decrypted with `key` when given), checks its size and SHA-256
/// against `data`; the time taken.
async fn download(
    client: &reqwest::Client,
    url: &str,
    cid: &str,
    key: Option<&str>,
    data: &Data,
) -> anyhow::Result<Took> {
    let digest = data.digest();
    let (t, cpu) = (Instant::now(), cpu_secs());
    let mut req = client.get(format!("{url}/data/{cid}"));
    if let Some(key) = key {
        req = req.header("X-Codex-Key", key);
    }
    let res = req.send().await?;
    let status = res.status();
    if !status.is_success() {
        anyhow::bail!("download failed: {status}: {}", res.text().await?);
    }
    let announced = res.content_length();
    let mut stream = res.bytes_stream();
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        got += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let took = Took::since(t, cpu);
    let total = data.len();
    anyhow::ensure!(got == total, "downloaded {got} of {total} bytes");
    anyhow::ensure!(
        announced.is_none_or(|n| n == total),
        "Content-Length {announced:?}, expected {total}"
    );
    anyhow::ensure!(
        hasher.finalize().as_slice() == digest,
        "downloaded bytes differ"
    );
    Ok(took)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    let runs: usize = std::env::var("CODEX_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let dir = tempfile::tempdir()?;
    let node = server_rt.block_on(Node::start(NodeConfig {
        data_dir: dir.path().to_path_buf(),
        api_port: 0,
        // Two datasets at most at a time (16 bytes more per block encrypted), and room.
        storage_quota: total * 3 + (1 << 30),
        network: None,
        ..NodeConfig::default()
    }))?;
    let url = node.api_url();
    let mib = total >> 20;

    client_rt.block_on(async {
        let client = reqwest::Client::new();
        let (mut ups, mut downs, mut eups, mut edowns) = (vec![], vec![], vec![], vec![]);
        // Run 0 warms up: its figures are printed, not counted. On this kind of VM
        // the first write of a page the guest has not used costs as much as the
        // upload's own work, so every upload deletes its dataset after it and the next
        // one writes into the space (and page cache) freed; the warm-up takes that
        // space first for both kinds.
        for run in 0..=runs {
            // Plain first in even runs, encrypted first in odd ones, the dirty pages
            // of the last upload written out before each.
            for encrypted in [run % 2 == 1, run % 2 == 0] {
                let data = Data::random(pieces);
                let _ = std::process::Command::new("sync").status();
                let (cid, key, up) = upload(&client, &url, &data, encrypted).await?;
                let down = download(&client, &url, &cid, key.as_deref(), &data).await?;
                let deleted = client.delete(format!("{url}/data/{cid}")).send().await?;
                anyhow::ensure!(deleted.status().is_success(), "delete: {}", deleted.status());
                if run == 0 {
                    println!("warm-up: upload {} ({})", up.show(total), if encrypted { "encrypted" } else { "plain" });
                    continue;
                }
                let what = if encrypted { "encrypted" } else { "plain    " };
                println!(
                    "run {run}: upload   {mib:>6} MiB {what} {}",
                    up.show(total)
                );
                println!(
                    "run {run}: download {mib:>6} MiB {what} {} (sha256 checked)",
                    down.show(total)
                );
                if encrypted {
                    eups.push(up.secs);
                    edowns.push(down.secs);
                } else {
                    ups.push(up.secs);
                    downs.push(down.secs);
                }
            }
        }
        let mb = |secs: f64| total as f64 / secs / 1e6;
        let (up, eup) = (median(&mut ups), median(&mut eups));
        let (down, edown) = (median(&mut downs), median(&mut edowns));
        println!(
            "medians of {runs}: upload plain {:.0} MB/s, encrypted {:.0} MB/s; download plain {:.0} MB/s, decrypted {:.0} MB/s",
            mb(up),
            mb(eup),
            mb(down),
            mb(edown)
        );
        let ratio = up / eup;
        println!(
            "encrypted / plain: upload {ratio:.2} ({} the target >= 0.8), download {:.2}",
            if ratio >= 0.8 { "meets" } else { "BELOW" },
            down / edown
        );
        anyhow::Ok(())
    })?;
    server_rt.block_on(node.shutdown())?;
    Ok(())
}
