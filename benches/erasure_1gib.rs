//! Erasure coding at scale: upload N bytes (default 1 GiB) into a sled store, then
//! encode it (K=10, M=5), lose M data slots and decode them, printing MB/s of original
//! data and the peak RSS of each phase (VmHWM, reset between phases).
//!
//! `cargo bench --bench erasure_1gib` (`CODEX_BENCH_BYTES` changes the size,
//! `CODEX_BENCH_BATCH_MIB` the batch of columns).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use codex_core::prelude::*;
use codex_core::{Block, Manifest};
use codex_erasure::Layout;
use codex_store::{SledStore, StoreConfig};
use futures::StreamExt;

#[path = "support/proc.rs"]
mod proc;
use proc::cpu_secs;

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let total: u64 = std::env::var("CODEX_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let (k, m) = (10, 5);
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let config = StoreConfig {
        quota_max_bytes: total * 4,
        ..StoreConfig::default()
    };
    let store: Arc<dyn BlockStore> =
        Arc::new(SledStore::open(dir.path().join("full"), config.clone())?);
    rt.block_on(async {
        let started = Instant::now();
        let pieces = total.div_ceil(1 << 20);
        let body = futures::stream::iter(0..pieces).map(|i| {
            let mut v = vec![0u8; 1 << 20];
            let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            for chunk in v.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            Ok::<_, std::io::Error>(Bytes::from(v))
        });
        let cid = codex::node::data::store_stream(Arc::clone(&store), body, Default::default()).await?;
        let plain = Manifest::decode(store.get_block(&cid).await?.data())?;
        let size = plain.dataset_size as f64;
        println!(
            "upload {:>5} MiB: {:.2} s",
            total >> 20,
            started.elapsed().as_secs_f64()
        );

        // The upload's writeback finishes before the clock starts: the encoder reads a
        // dataset at rest, and does not share the disk and the CPU with the upload's tail.
        rustix::fs::sync();
        reset_peak();
        let cpu = cpu_secs();
        let t = Instant::now();
        // When the last batch of columns is written: the rest is the tree's leaves.
        let coded = Arc::new(std::sync::OnceLock::new());
        let last = Arc::clone(&coded);
        let options = codex_erasure::Options {
            batch_bytes: std::env::var("CODEX_BENCH_BATCH_MIB")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .map_or(codex_erasure::Options::default().batch_bytes, |v| v << 20),
            progress: Some(Arc::new(move |done, all| {
                if done == all {
                    let _ = last.set(t.elapsed());
                }
            })),
        };
        let (_, protected) = codex_erasure::encode_with(&*store, &plain, k, m, &options).await?;
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu;
        let coded = coded.get().map_or(0.0, std::time::Duration::as_secs_f64);
        println!(
            "encode K={k} M={m} {:>5} MiB: {:.2} s, {:.0} MB/s, CPU {:.2} s ({:.2} cores), peak RSS {} MiB; \
             read, code and write parity {:.2} s, tree leaves and commit {:.2} s",
            total >> 20,
            secs,
            size / secs / 1e6,
            cpu,
            cpu / secs,
            peak_rss_mib(),
            coded,
            secs - coded
        );

        // A second store holding the dataset without M data slots.
        let layout = Layout::new(plain.blocks_count(), k, m)?;
        let lost: BTreeSet<u64> = (0..m).flat_map(|r| layout.slot(r)).collect();
        let part = SledStore::open(dir.path().join("part"), config.clone())?;
        part.put_block(Block::manifest(protected.encode())).await?;
        for i in (0..protected.blocks_count()).filter(|i| !lost.contains(i)) {
            let (b, p) = store.get_leaf(&protected.tree_cid, i).await?;
            part.put_leaf(&protected.tree_cid, i, b, p).await?;
        }
        reset_peak();
        let cpu = cpu_secs();
        let t = Instant::now();
        let rebuilt = codex_erasure::decode(&part, &protected).await?;
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu;
        println!(
            "decode with {m} of {k} data slots lost ({rebuilt} blocks rebuilt): {:.2} s, {:.0} MB/s, CPU {:.2} s ({:.2} cores), peak RSS {} MiB",
            secs,
            size / secs / 1e6,
            cpu,
            cpu / secs,
            peak_rss_mib()
        );
        anyhow::Ok(())
    })?;
    Ok(())
}
