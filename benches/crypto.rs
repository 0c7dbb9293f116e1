//! codex-crypto: XChaCha20-Poly1305 per block, the CPU work an encrypted upload or
//! download adds.
//!
//! - seal and open of one 64 KiB block at a time with `Cipher::seal_into` /
//!   `open_into`, on the bench's one thread (one core);
//! - `encrypt` and `decrypt` of a 256 MiB stream (batches of 16 blocks on a blocking
//!   thread, the way uploads and downloads run them);
//! - the reference: `openssl speed -evp chacha20-poly1305 -bytes 65536 -seconds 3`
//!   (one core; skipped with a message when openssl is not installed).
//!
//! At the end it prints the figures in GB/s (10^9 bytes of plaintext per second) beside
//! the target, 1 GB/s per core.
//!
//! `cargo bench --bench crypto`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use codex_crypto::{Cipher, Metadata, NewKey, TAG_LEN, decrypt, encrypt, new_dataset};
use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use futures::{StreamExt, TryStreamExt};
use rand::{RngCore, SeedableRng, rngs::StdRng};

const BLOCK: usize = 65536;
/// Plaintext bytes in a 64 KiB block: the rest is the tag.
const SEGMENT: usize = BLOCK - TAG_LEN;
const STREAM: usize = 256 << 20;
const PIECE: usize = 1 << 20;
const GROUP: &str = "crypto";

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn cipher() -> (Arc<Cipher>, codex_core::Encryption) {
    let (key, params) = new_dataset(&NewKey::Random).expect("a random key");
    let cipher = Cipher::new(&key, &params).expect("the key matches its own parameters");
    (Arc::new(cipher), params)
}

/// Seal and open, one 64 KiB block at a time on this thread.
fn blocks(c: &mut Criterion) {
    let (cipher, _) = cipher();
    let plain = random(SEGMENT, 1);
    let mut g = c.benchmark_group(GROUP);
    g.throughput(Throughput::Bytes(SEGMENT as u64));
    let mut out = BytesMut::with_capacity(BLOCK);
    let mut index = 0u64;
    g.bench_function("seal_64KiB_1core", |b| {
        b.iter(|| {
            out.clear();
            cipher.seal_into(index, false, &plain, &mut out);
            index += 1;
        })
    });
    let mut sealed = BytesMut::with_capacity(BLOCK);
    cipher.seal_into(7, false, &plain, &mut sealed);
    assert_eq!(sealed.len(), BLOCK);
    let mut out = BytesMut::with_capacity(BLOCK);
    g.bench_function("open_64KiB_1core", |b| {
        b.iter(|| {
            out.clear();
            cipher
                .open_into(7, 100, &sealed, &mut out)
                .expect("the block opens");
        })
    });
    g.finish();
}

/// `encrypt` and `decrypt` of a 256 MiB stream of 1 MiB pieces.
fn streams(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (cipher, params) = cipher();
    let file = Bytes::from(random(STREAM, 2));
    let pieces: Vec<Bytes> = (0..STREAM / PIECE)
        .map(|i| file.slice(i * PIECE..(i + 1) * PIECE))
        .collect();
    let meta = Metadata {
        filename: Some("bench.bin".into()),
        mimetype: None,
    };
    let source =
        |pieces: Vec<Bytes>| futures::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));

    let ciphertext: Vec<Bytes> = rt.block_on(async {
        encrypt(source(pieces.clone()), Arc::clone(&cipher), &meta, BLOCK)
            .expect("encrypt")
            .try_collect()
            .await
            .expect("encrypted")
    });
    let size: usize = ciphertext.iter().map(Bytes::len).sum();
    let mut manifest = codex_core::Manifest::new(
        codex_core::Cid::from_sha256(codex_core::codec::ROOT, [0; 32]),
        BLOCK as u32,
        size as u64,
    );
    manifest.encryption = Some(params);

    let mut g = c.benchmark_group(GROUP);
    g.throughput(Throughput::Bytes(STREAM as u64));
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function("encrypt_256MiB_stream", |b| {
        b.iter_batched(
            || pieces.clone(),
            |pieces| {
                rt.block_on(async {
                    let mut out = encrypt(source(pieces), Arc::clone(&cipher), &meta, BLOCK)
                        .expect("encrypt");
                    let mut n = 0;
                    while let Some(chunk) = out.next().await {
                        n += chunk.expect("sealed").len();
                    }
                    assert_eq!(n, size);
                })
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("decrypt_256MiB_stream", |b| {
        b.iter_batched(
            || ciphertext.clone(),
            |ciphertext| {
                rt.block_on(async {
                    let opened = decrypt(source(ciphertext), Arc::clone(&cipher), &manifest)
                        .await
                        .expect("decrypt");
                    assert_eq!(opened.size, STREAM as u64);
                    let mut plain = opened.stream;
                    let mut n = 0;
                    while let Some(chunk) = plain.next().await {
                        n += chunk.expect("opened").len();
                    }
                    assert_eq!(n, STREAM);
                })
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Where criterion writes its estimates: `CRITERION_HOME`, else `criterion` in the
/// target directory this binary was built into (`target/release/deps/crypto-*`).
fn criterion_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// This run's mean throughput of a benchmark in GB/s, from criterion's estimates (bytes
/// per nanosecond are GB/s); none when it did not run this time (filtered out).
fn measured(home: &std::path::Path, id: &str, bytes: usize, since: SystemTime) -> Option<f64> {
    let path = home.join(GROUP).join(id).join("new/estimates.json");
    let written = std::fs::metadata(&path).ok()?.modified().ok()?;
    if written < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let ns = json["mean"]["point_estimate"].as_f64()?;
    (ns > 0.0).then(|| bytes as f64 / ns)
}

/// `openssl speed`'s figure for ChaCha20-Poly1305 on 64 KiB buffers, one core, in GB/s.
fn openssl_reference() -> Result<f64, String> {
    let out = std::process::Command::new("openssl")
        .args([
            "speed",
            "-evp",
            "chacha20-poly1305",
            "-bytes",
            "65536",
            "-seconds",
            "3",
        ])
        .output()
        .map_err(|e| format!("openssl is not installed or did not start ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl speed failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // The table's last line: `chacha20-poly1305  1234567.89k`, in 1000s of bytes per second.
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find(|l| {
            l.trim_start()
                .to_ascii_lowercase()
                .starts_with("chacha20-poly1305")
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.strip_suffix('k'))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|k| k * 1e3 / 1e9)
        .ok_or_else(|| format!("no figure in openssl's output:\n{text}"))
}

fn main() {
    // `cargo bench` passes --bench; without it (`cargo test --benches`) criterion runs
    // each bench once as a test, and the summary and openssl are left out.
    let quick = !std::env::args().any(|a| a == "--bench");
    let since = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    blocks(&mut c);
    streams(&mut c);
    c.final_summary();
    if quick {
        return;
    }

    println!();
    println!("plaintext GB/s (10^9 bytes/s); the issue's target: >= 1 GB/s per core");
    if let Some(home) = criterion_home() {
        for (id, bytes, what) in [
            ("seal_64KiB_1core", SEGMENT, "seal 64 KiB blocks, 1 core"),
            ("open_64KiB_1core", SEGMENT, "open 64 KiB blocks, 1 core"),
            ("encrypt_256MiB_stream", STREAM, "encrypt stream, 256 MiB"),
            ("decrypt_256MiB_stream", STREAM, "decrypt stream, 256 MiB"),
        ] {
            if let Some(gbs) = measured(&home, id, bytes, since) {
                let verdict = if gbs >= 1.0 { "meets" } else { "BELOW" };
                println!("  {what:<28} {gbs:>6.2} GB/s  ({verdict} the target)");
            }
        }
    }
    match openssl_reference() {
        Ok(gbs) => println!(
            "  {:<28} {gbs:>6.2} GB/s  (reference: openssl speed -evp chacha20-poly1305 -bytes 65536, 1 core)",
            "openssl ChaCha20-Poly1305"
        ),
        Err(why) => println!("  openssl reference skipped: {why}"),
    }
}
