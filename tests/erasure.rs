//! Reading a protected dataset whose node lost blocks: the file comes back whole,
//! rebuilt from the surviving blocks on the fly.

use std::sync::Arc;

use bytes::Bytes;
use codex::node::data;
use codex_core::prelude::*;
use codex_core::{Block, Manifest};
use codex_erasure::Layout;
use codex_store::{MemoryStore, StoreConfig};
use futures::TryStreamExt;
use rand::{RngCore, SeedableRng, rngs::StdRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_file_reads_back_through_lost_slots() -> anyhow::Result<()> {
    let mut bytes = vec![0u8; 40 * 65536 + 999];
    StdRng::seed_from_u64(11).fill_bytes(&mut bytes);
    let full: Arc<dyn BlockStore> = Arc::new(MemoryStore::new(StoreConfig::default()));
    let body = futures::stream::iter(
        bytes
            .chunks(100_000)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c))),
    );
    let cid = data::store_stream(Arc::clone(&full), body, Default::default()).await?;
    let (protected_cid, protected) = data::erasure_encode(&*full, cid, 4, 2).await?;

    // A second node holding everything but data slots 1 and 3.
    let layout = Layout::new(protected.original_blocks_count(), 4, 2)?;
    let part: Arc<dyn BlockStore> = Arc::new(MemoryStore::new(StoreConfig::default()));
    part.put_block(Block::manifest(protected.encode())).await?;
    for i in 0..protected.blocks_count() {
        if layout.slot(1).contains(&i) || layout.slot(3).contains(&i) {
            continue;
        }
        let (b, p) = full.get_leaf(&protected.tree_cid, i).await?;
        part.put_leaf(&protected.tree_cid, i, b, p).await?;
    }
    assert!(
        !part
            .has_leaf(&protected.tree_cid, layout.index(1, 0))
            .await?
    );

    let dataset = data::open(Arc::clone(&part), protected_cid).await?;
    assert_eq!(dataset.size, bytes.len() as u64);
    let read: Vec<Bytes> = dataset.stream.try_collect().await?;
    assert!(read.concat() == bytes, "rebuilt on the fly");

    // Decoding stores the rebuilt blocks; afterwards the read needs no rebuilding.
    let m: Manifest = protected.clone();
    let rebuilt = codex_erasure::decode(&*part, &m).await?;
    let lost_data = layout
        .slot(1)
        .chain(layout.slot(3))
        .filter(|&i| !layout.is_padding(i))
        .count();
    assert_eq!(rebuilt, lost_data as u64);
    let read: Vec<Bytes> = data::open(part, protected_cid)
        .await?
        .stream
        .try_collect()
        .await?;
    assert!(read.concat() == bytes);
    Ok(())
}
