//! Storage and erasure coding alone, no network and no HTTP: store a file, protect it,
//! lose whole slots, and read it back.
//!
//! A few MiB of random bytes go into a `SledStore` with `codex_store::dataset::add_stream`,
//! are erasure-coded with `codex_erasure::encode` (K = 4 data slots, M = 2 parity
//! slots), and copied into a second store without two of the six slots. The file still
//! reads back whole: `DatasetReader` rebuilds each missing block from its column with
//! `codex_erasure::Recovery`. Then `codex_erasure::repair` rebuilds and stores the lost
//! slots, and the file reads back without any rebuilding.
//!
//! ```text
//! cargo run --example store_and_erasure
//! ```

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use codex_core::prelude::*; // the store traits' methods
use codex_core::{Block, Cid};
use codex_erasure::{Layout, Recovery};
use codex_store::dataset::{AddOptions, DatasetReader, add_stream};
use codex_store::{SledStore, StoreConfig};
use futures::TryStreamExt;
use rand::{RngCore, SeedableRng, rngs::StdRng};

/// Data slots (K) and parity slots (M): any K of the K+M slots hold the whole file.
const K: usize = 4;
const M: usize = 2;
/// The slots the second store never gets.
const LOST: [usize; 2] = [1, 3];

/// Reads the dataset `cid` from `store` into memory, rebuilding missing blocks when
/// `recovery` is given.
async fn read_all(store: &SledStore, cid: Cid, recover: bool) -> anyhow::Result<Vec<u8>> {
    let recovery = recover.then(|| Arc::new(Recovery) as Arc<dyn codex_core::RecoverBlock>);
    let reader = DatasetReader::open(store.clone(), cid, recovery).await?;
    let chunks: Vec<Bytes> = reader.try_collect().await?;
    Ok(chunks.concat())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;

    // 1. Store a file: 6 MiB and a bit of random bytes, streamed in 100 kB pieces.
    let mut file = vec![0u8; (6 << 20) + 12_345];
    StdRng::seed_from_u64(7).fill_bytes(&mut file);
    let store = SledStore::open(dir.path().join("store"), StoreConfig::default())?;
    let started = Instant::now();
    let pieces = file
        .chunks(100_000)
        .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)));
    let options = AddOptions {
        filename: Some("random.bin".into()),
        mimetype: Some("application/octet-stream".into()),
        ..AddOptions::default()
    };
    let added = add_stream(&store, futures::stream::iter(pieces), options).await?;
    println!(
        "stored {} bytes as {} ({} blocks of {} bytes) in {:?}",
        file.len(),
        added.cid,
        added.manifest.blocks_count(),
        added.manifest.block_size,
        started.elapsed()
    );

    // 2. Protect it: K data slots and M parity slots.
    let started = Instant::now();
    let (protected_cid, protected) = codex_erasure::encode(&store, &added.manifest, K, M).await?;
    let layout = Layout::new(protected.original_blocks_count(), K, M)?;
    println!(
        "erasure-coded with K={K}, M={M} as {protected_cid}: {} blocks in {} slots of {} in {:?}",
        protected.blocks_count(),
        K + M,
        layout.steps,
        started.elapsed()
    );

    // 3. Lose two whole slots: a second store gets the protected manifest and every
    //    leaf (block and proof) except those of the lost slots.
    let part = SledStore::open(dir.path().join("part"), StoreConfig::default())?;
    part.put_block(Block::manifest(protected.encode())).await?;
    let mut copied = 0;
    for i in 0..protected.blocks_count() {
        if LOST.iter().any(|&s| layout.slot(s).contains(&i)) {
            continue;
        }
        let (block, proof) = store.get_leaf(&protected.tree_cid, i).await?;
        part.put_leaf(&protected.tree_cid, i, block, proof).await?;
        copied += 1;
    }
    println!(
        "second store: {copied} of {} blocks, slots {LOST:?} lost",
        protected.blocks_count()
    );
    drop(store);

    // 4. Without the erasure layer the read stops at the first missing block.
    match read_all(&part, protected_cid, false).await {
        Err(e) => println!("read without recovery fails as it should: {e}"),
        Ok(_) => anyhow::bail!("the read without recovery found every block"),
    }

    // 5. With it, each missing block is rebuilt from its column as the file streams out.
    let started = Instant::now();
    let back = read_all(&part, protected_cid, true).await?;
    anyhow::ensure!(back == file, "the file read back differs");
    println!(
        "read back {} bytes through the lost slots, identical, in {:?}",
        back.len(),
        started.elapsed()
    );

    // 6. Repair: rebuild the lost slots, check them against the tree, and store them.
    let started = Instant::now();
    let rebuilt = codex_erasure::repair(&part, &protected, &LOST).await?;
    for i in 0..protected.blocks_count() {
        anyhow::ensure!(
            part.has_leaf(&protected.tree_cid, i).await?,
            "block {i} is still missing after the repair"
        );
    }
    println!(
        "repaired slots {LOST:?}: {rebuilt} blocks rebuilt and stored in {:?}",
        started.elapsed()
    );
    let back = read_all(&part, protected_cid, false).await?;
    anyhow::ensure!(back == file, "the file read back after the repair differs");
    println!("read back after the repair without recovery: identical");
    let problems = part.check()?;
    anyhow::ensure!(problems.is_empty(), "store inconsistent: {problems:?}");

    println!("next: cargo run --example custom_store (a store of your own, serving a peer)");
    Ok(())
}
