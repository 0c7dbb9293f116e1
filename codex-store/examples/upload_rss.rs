//! Peak memory of the sled store while a large dataset goes in as an upload writes it:
//! a session, 64 KiB blocks in batches of 32, the tree's leaves with their proofs in
//! batches of 4096, the commit. Prints MB/s and VmRSS / VmHWM after each phase.
//!
//! ```sh
//! cargo run --release -p codex-store --example upload_rss -- 4096 [DIR]   # MiB, data dir
//! CACHE_MIB=32 LEAF_BATCH=256 VERBOSE=1 ...   # sled cache, leaves per call, progress
//! ```
//!
//! Without DIR the data goes to a temporary directory, deleted at the end; a given DIR is kept.

use std::time::Instant;

use codex_core::prelude::*;
use codex_core::{Block, Cid, LeafMeta, Manifest, MerkleTree, codec};
use codex_store::{SledStore, StoreConfig};

const BLOCK: usize = 65536;
const BATCH_BLOCKS: usize = 32;
const LEAF_BATCH: u64 = 4096;

fn status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l[field.len()..].trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn report(phase: &str, bytes: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{phase:<8} {:>8.1} s {:>8.0} MB/s   VmRSS {:>12}   VmHWM {:>12}",
        secs,
        bytes as f64 / secs / 1e6,
        status("VmRSS:"),
        status("VmHWM:"),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let tmp;
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let blocks = mib * (1 << 20) / BLOCK as u64;
    let total = blocks * BLOCK as u64;
    let mut config = StoreConfig::default();
    if let Ok(c) = std::env::var("CACHE_MIB") {
        config.cache_bytes = c.parse::<u64>()? << 20;
    }
    let store = SledStore::open(&dir, config)?;
    report("open", 0, Instant::now());

    let t0 = Instant::now();
    let session = WriteSession::begin(&store).await?;
    let mut cids: Vec<Cid> = Vec::with_capacity(blocks as usize);
    let mut data = vec![0x5au8; BLOCK];
    let mut i = 0u64;
    while i < blocks {
        let n = (blocks - i).min(BATCH_BLOCKS as u64);
        let batch: Vec<Block> = (i..i + n)
            .map(|k| {
                data[..8].copy_from_slice(&k.to_le_bytes());
                Block::new(data.clone())
            })
            .collect();
        cids.extend(batch.iter().map(|b| *b.cid()));
        session.put_blocks(batch).await?;
        i += n;
        if i.is_multiple_of(16384) {
            report("  blocks", i * BLOCK as u64, t0);
        }
    }
    report("blocks", total, t0);

    let t1 = Instant::now();
    let tree = MerkleTree::from_cids(&cids)?;
    drop(cids);
    let root = tree.root_cid();
    let n = tree.leaves_count();
    let leaf_batch = match std::env::var("LEAF_BATCH") {
        Ok(b) => b.parse()?,
        Err(_) => LEAF_BATCH,
    };
    for start in (0..n).step_by(leaf_batch as usize) {
        let end = (start + leaf_batch).min(n);
        let leaves = (start..end)
            .map(|i| {
                Ok(LeafMeta {
                    index: i,
                    block_cid: Cid::from_sha256(codec::BLOCK, tree.leaves()[i as usize]),
                    proof: tree.proof(i)?,
                })
            })
            .collect::<codex_core::Result<Vec<_>>>()?;
        session.put_leaves(&root, leaves).await?;
        if std::env::var_os("VERBOSE").is_some() && (end / leaf_batch).is_multiple_of(4) {
            report("  leaves", end * BLOCK as u64, t1);
        }
    }
    report("leaves", total, t1);

    let t2 = Instant::now();
    let manifest = Block::manifest(Manifest::new(root, BLOCK as u32, total).encode());
    session.commit(Some(manifest)).await?;
    report("commit", total, t2);
    report("upload", total, t0);

    let t3 = Instant::now();
    for i in (0..n).step_by(97) {
        let (block, proof) = store.get_leaf(&root, i).await?;
        anyhow::ensure!(proof.verify_cids(block.cid(), &root), "leaf {i} fails");
    }
    report("read", (n / 97) * BLOCK as u64, t3);
    drop(store);
    Ok(())
}
