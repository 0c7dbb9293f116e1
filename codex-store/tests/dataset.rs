//! `add_stream` and `DatasetReader` over both stores.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codex_core::prelude::*;
use codex_core::{Error as CoreError, MerkleTree};
use codex_store::dataset::{AddOptions, DatasetReader, add_stream};
use codex_store::{Error, MemoryStore, SledStore, StoreConfig};
use futures::{StreamExt, TryStreamExt};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::io::AsyncReadExt;

fn config(quota: u64) -> StoreConfig {
    StoreConfig {
        quota_max_bytes: quota,
        ..StoreConfig::default()
    }
}

fn random(seed: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill(&mut v[..]);
    Bytes::from(v)
}

/// `data` as a stream of pieces of `piece` bytes.
fn pieces(
    data: &Bytes,
    piece: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + use<> {
    let chunks: Vec<_> = (0..data.len())
        .step_by(piece)
        .map(|s| Ok(data.slice(s..(s + piece).min(data.len()))))
        .collect();
    futures::stream::iter(chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_round_trip_through_stream_and_async_read() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sled = Arc::new(SledStore::open(dir.path(), config(1 << 30))?);
    let memory = Arc::new(MemoryStore::new(config(1 << 30)));
    let block = 65_536;
    for (i, len) in [1, block - 1, block, block + 1, 5 * block + 77, 3_000_000]
        .into_iter()
        .enumerate()
    {
        let data = random(i as u64, len);
        let options = AddOptions {
            filename: Some(format!("f{i}")),
            mimetype: Some("application/octet-stream".into()),
            ..AddOptions::default()
        };
        let a = add_stream(&*sled, pieces(&data, 10_000), options.clone()).await?;
        let b = add_stream(&*memory, pieces(&data, 333_333), options).await?;
        // Same bytes, same dataset, however the stream is cut.
        assert_eq!(a, b);
        assert_eq!(a.manifest.original_size(), len as u64);
        assert_eq!(a.manifest.blocks_count(), len.div_ceil(block) as u64);
        assert_eq!(a.manifest.filename.as_deref(), Some(&*format!("f{i}")));
        // The tree is the SHA-256 tree of the blocks, zero-padded.
        let blocks: Vec<_> = (0..a.manifest.blocks_count())
            .map(|k| {
                let s = k as usize * block;
                let mut b = data[s..(s + block).min(len)].to_vec();
                b.resize(block, 0);
                codex_core::Block::new(b)
            })
            .collect();
        let tree = MerkleTree::from_cids(blocks.iter().map(codex_core::Block::cid))?;
        assert_eq!(tree.root_cid(), a.manifest.tree_cid);

        let reader = DatasetReader::open(Arc::clone(&sled), a.cid, None).await?;
        assert_eq!(reader.size(), len as u64);
        let back: Vec<Bytes> = reader.try_collect().await?;
        assert_eq!(back.concat(), data);

        let mut read = Vec::new();
        DatasetReader::open(Arc::clone(&memory), b.cid, None)
            .await?
            .into_async_read()
            .read_to_end(&mut read)
            .await?;
        assert_eq!(read, data);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_leave_nothing_stored() -> anyhow::Result<()> {
    let store = MemoryStore::new(config(1 << 20));
    // No bytes.
    let empty = futures::stream::iter(Vec::<Result<Bytes, std::io::Error>>::new());
    assert!(matches!(
        add_stream(&store, empty, AddOptions::default()).await,
        Err(Error::EmptyUpload)
    ));
    // A source that fails after 300 KB.
    let data = random(9, 300_000);
    let failing = pieces(&data, 50_000).chain(futures::stream::iter([Err(std::io::Error::other(
        "connection reset",
    ))]));
    match add_stream(&store, failing, AddOptions::default()).await {
        Err(Error::Source(e)) => assert!(e.to_string().contains("connection reset")),
        other => panic!("expected a source error, got {other:?}"),
    }
    // More than the 1 MiB quota.
    let big = random(10, 2 << 20);
    match add_stream(&store, pieces(&big, 100_000), AddOptions::default()).await {
        Err(Error::Core(CoreError::QuotaExceeded { .. })) => {}
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    let space = store.space().await?;
    assert_eq!((space.total_blocks, space.quota_used_bytes), (0, 0));
    assert!(store.check()?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_add_leaves_nothing_stored() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), config(1 << 30))?;
    let data = random(11, 4 << 20);
    // The source stalls forever after 2 MiB; the add is cancelled by a timeout.
    let stalled = pieces(&data.slice(..2 << 20), 65_536).chain(futures::stream::pending());
    let add = add_stream(&store, stalled, AddOptions::default());
    assert!(
        tokio::time::timeout(Duration::from_millis(500), add)
            .await
            .is_err()
    );
    let mut blocks = u64::MAX;
    for _ in 0..250 {
        blocks = store.space().await?.total_blocks;
        if blocks == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(blocks, 0, "the cancelled add's blocks stayed");
    assert!(store.check()?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_block_ends_the_stream_with_its_error() -> anyhow::Result<()> {
    let store = Arc::new(MemoryStore::new(config(1 << 30)));
    let data = random(12, 10 * 65_536);
    let added = add_stream(&*store, pieces(&data, 65_536), AddOptions::default()).await?;
    // Not found before streaming: an unknown CID.
    assert!(matches!(
        DatasetReader::open(Arc::clone(&store), codex_core::Cid::for_block(b"x"), None).await,
        Err(Error::Core(CoreError::NotFound(_)))
    ));
    // Delete the dataset, then store its manifest again on its own: every leaf is gone.
    store.delete_dataset(&added.cid).await?;
    store
        .put_block(codex_core::Block::manifest(added.manifest.encode()))
        .await?;
    // The dataset's leaves are gone with it: its first block is missing.
    let reader = DatasetReader::open(Arc::clone(&store), added.cid, None).await?;
    let results: Vec<_> = reader.collect().await;
    assert!(matches!(
        results.first(),
        Some(Err(Error::Core(CoreError::NotFound(_))))
    ));
    Ok(())
}
