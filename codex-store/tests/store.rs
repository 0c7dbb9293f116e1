//! One suite, run against both stores.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use codex_core::{Block, BlockAddress, BlockStore, Cid, Error, LeafMeta, Manifest, MerkleTree};
use codex_store::{MemoryStore, Repo, SledStore, StoreConfig};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn config(quota: u64) -> StoreConfig {
    StoreConfig {
        quota_max_bytes: quota,
        block_ttl: Duration::from_secs(3600),
        cache_bytes: 8 << 20,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn random_blocks(seed: u64, n: usize, size: usize) -> Vec<Block> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut data = vec![0u8; size];
            rng.fill(&mut data[..]);
            Block::new(data)
        })
        .collect()
}

/// Stores `blocks` as a dataset in one session; returns the manifest CID.
async fn store_dataset(
    store: &impl BlockStore,
    blocks: &[Block],
    name: &str,
) -> anyhow::Result<(Cid, Manifest)> {
    let tree = MerkleTree::from_cids(blocks.iter().map(Block::cid))?;
    let s = store.begin().await?;
    store.session_put_blocks(s, blocks.to_vec()).await?;
    let leaves = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Ok(LeafMeta {
                index: i as u64,
                block_cid: *b.cid(),
                proof: tree.proof(i as u64)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    store
        .session_put_leaves(s, &tree.root_cid(), leaves)
        .await?;
    let mut manifest = Manifest::new(
        tree.root_cid(),
        blocks[0].len() as u32,
        (blocks.len() * blocks[0].len()) as u64,
    );
    manifest.filename = Some(name.into());
    let mblock = Block::manifest(manifest.encode());
    let cid = *mblock.cid();
    store.commit(s, Some(mblock)).await?;
    Ok((cid, manifest))
}

async fn assert_consistent<K: codex_store::Kv>(store: &Repo<K>) {
    let problems = store.check().expect("check");
    assert!(problems.is_empty(), "store inconsistent: {problems:#?}");
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    let store = codex_store::MemoryStore::new(super::config(1 << 30));
                    super::$name(&store).await
                }
            )*
        }
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    let dir = tempfile::tempdir()?;
                    let store = codex_store::SledStore::open(dir.path(), super::config(1 << 30))?;
                    super::$name(&store).await
                }
            )*
        }
    };
}

suite!(
    blocks_round_trip,
    leaves_round_trip_with_proofs,
    committed_dataset_is_listed_and_consistent,
    aborted_session_leaves_nothing,
    quota_is_enforced_and_failed_writes_change_nothing,
    reservations_take_quota,
    shared_blocks_survive_deleting_one_dataset,
    same_tree_under_two_manifests,
    expired_data_is_swept,
    unknown_sessions_are_errors,
);

async fn blocks_round_trip<K: codex_store::Kv>(store: &Repo<K>) -> anyhow::Result<()> {
    let blocks = random_blocks(1, 3, 1000);
    for b in &blocks {
        store.put_block(b.clone()).await?;
        store.put_block(b.clone()).await?; // again: no double counting
    }
    for b in &blocks {
        assert_eq!(&store.get_block(b.cid()).await?, b);
        assert!(store.has_block(b.cid()).await?);
        assert_eq!(&store.get(&BlockAddress::Cid(*b.cid())).await?, b);
    }
    let space = store.space().await?;
    assert_eq!((space.total_blocks, space.quota_used_bytes), (3, 3000));
    let missing = Cid::for_block(b"not stored");
    assert!(matches!(
        store.get_block(&missing).await,
        Err(Error::NotFound(_))
    ));
    assert!(!store.has_block(&missing).await?);
    store.delete_block(blocks[0].cid()).await?;
    assert!(!store.has_block(blocks[0].cid()).await?);
    assert_eq!(store.space().await?.quota_used_bytes, 2000);
    assert_consistent(store).await;
    Ok(())
}

async fn leaves_round_trip_with_proofs<K: codex_store::Kv>(store: &Repo<K>) -> anyhow::Result<()> {
    let blocks = random_blocks(2, 5, 512);
    let tree = MerkleTree::from_cids(blocks.iter().map(Block::cid))?;
    let root = tree.root_cid();
    for (i, b) in blocks.iter().enumerate() {
        store
            .put_leaf(&root, i as u64, b.clone(), tree.proof(i as u64)?)
            .await?;
    }
    for (i, b) in blocks.iter().enumerate() {
        let (got, proof) = store.get_leaf(&root, i as u64).await?;
        assert_eq!(&got, b);
        assert!(proof.verify_cids(b.cid(), &root));
        assert!(store.has_leaf(&root, i as u64).await?);
        let addr = BlockAddress::Leaf {
            tree: root,
            index: i as u64,
        };
        assert_eq!(&store.get(&addr).await?, b);
    }
    assert!(!store.has_leaf(&root, 5).await?);
    assert!(matches!(
        store.get_leaf(&root, 5).await,
        Err(Error::NotFound(_))
    ));
    // A block that a leaf refers to is not deleted on its own.
    store.delete_block(blocks[0].cid()).await?;
    assert!(store.has_block(blocks[0].cid()).await?);
    assert_consistent(store).await;
    Ok(())
}

async fn committed_dataset_is_listed_and_consistent<K: codex_store::Kv>(
    store: &Repo<K>,
) -> anyhow::Result<()> {
    let blocks = random_blocks(3, 10, 4096);
    let (cid, manifest) = store_dataset(store, &blocks, "a").await?;
    let listed = store.manifests().await?;
    assert_eq!(listed, vec![(cid, manifest.clone())]);
    for i in 0..10 {
        assert!(store.has_leaf(&manifest.tree_cid, i).await?);
    }
    let space = store.space().await?;
    let manifest_len = manifest.encode().len() as u64;
    assert_eq!(space.total_blocks, 11);
    assert_eq!(space.quota_used_bytes, 10 * 4096 + manifest_len);
    assert_consistent(store).await;
    store.delete_dataset(&cid).await?;
    assert!(store.manifests().await?.is_empty());
    let space = store.space().await?;
    assert_eq!((space.total_blocks, space.quota_used_bytes), (0, 0));
    assert_consistent(store).await;
    Ok(())
}

async fn aborted_session_leaves_nothing<K: codex_store::Kv>(store: &Repo<K>) -> anyhow::Result<()> {
    let kept = random_blocks(4, 1, 100);
    store.put_block(kept[0].clone()).await?;
    let blocks = random_blocks(5, 6, 100);
    let tree = MerkleTree::from_cids(blocks.iter().map(Block::cid))?;
    let s = store.begin().await?;
    // The kept block is in this session too: aborting must not delete it.
    store
        .session_put_blocks(s, [blocks.clone(), kept.clone()].concat())
        .await?;
    let leaves = (0..6)
        .map(|i| {
            Ok(LeafMeta {
                index: i,
                block_cid: *blocks[i as usize].cid(),
                proof: tree.proof(i)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    store
        .session_put_leaves(s, &tree.root_cid(), leaves)
        .await?;
    assert_eq!(store.space().await?.total_blocks, 7);
    store.abort(s).await?;
    let space = store.space().await?;
    assert_eq!((space.total_blocks, space.quota_used_bytes), (1, 100));
    assert!(store.has_block(kept[0].cid()).await?);
    assert!(!store.has_leaf(&tree.root_cid(), 0).await?);
    assert_consistent(store).await;
    Ok(())
}

async fn quota_is_enforced_and_failed_writes_change_nothing<K: codex_store::Kv>(
    store: &Repo<K>,
) -> anyhow::Result<()> {
    // The suite's quota is 1 GiB; fill it with a reservation, leaving 10 000 bytes.
    let quota = store.space().await?.quota_max_bytes;
    store.reserve(quota - 10_000).await?;
    let blocks = random_blocks(6, 3, 4096);
    let s = store.begin().await?;
    let err = store
        .session_put_blocks(s, blocks.clone())
        .await
        .expect_err("must not fit");
    match err {
        Error::QuotaExceeded { needed, available } => {
            assert_eq!((needed, available), (4096, 10_000 - 8192))
        }
        other => panic!("expected QuotaExceeded, got {other}"),
    }
    // The failed batch wrote nothing.
    assert_eq!(store.space().await?.total_blocks, 0);
    store.abort(s).await?;
    assert!(matches!(
        store.put_block(Block::new(vec![1u8; 20_000])).await,
        Err(Error::QuotaExceeded { .. })
    ));
    assert_eq!(store.space().await?.quota_used_bytes, 0);
    assert_consistent(store).await;
    Ok(())
}

async fn reservations_take_quota<K: codex_store::Kv>(store: &Repo<K>) -> anyhow::Result<()> {
    let quota = store.space().await?.quota_max_bytes;
    store.reserve(quota / 2).await?;
    assert_eq!(store.space().await?.quota_reserved_bytes, quota / 2);
    assert!(matches!(
        store.reserve(quota / 2 + 1).await,
        Err(Error::QuotaExceeded { .. })
    ));
    store.release(quota).await?;
    assert_eq!(store.space().await?.quota_reserved_bytes, 0);
    Ok(())
}

async fn shared_blocks_survive_deleting_one_dataset<K: codex_store::Kv>(
    store: &Repo<K>,
) -> anyhow::Result<()> {
    let common = random_blocks(7, 2, 256);
    let a = [common.clone(), random_blocks(8, 2, 256)].concat();
    let b = [random_blocks(9, 1, 256), common.clone()].concat();
    let (ca, _) = store_dataset(store, &a, "a").await?;
    let (cb, mb) = store_dataset(store, &b, "b").await?;
    assert_eq!(store.space().await?.total_blocks, 2 + 2 + 1 + 2);
    store.delete_dataset(&ca).await?;
    for (i, block) in b.iter().enumerate() {
        assert_eq!(&store.get_leaf(&mb.tree_cid, i as u64).await?.0, block);
    }
    assert_eq!(store.manifests().await?.len(), 1);
    assert_eq!(store.space().await?.total_blocks, 3 + 1);
    store.delete_dataset(&cb).await?;
    assert_eq!(store.space().await?.total_blocks, 0);
    assert_consistent(store).await;
    Ok(())
}

async fn same_tree_under_two_manifests<K: codex_store::Kv>(store: &Repo<K>) -> anyhow::Result<()> {
    let blocks = random_blocks(10, 3, 256);
    let (c1, m1) = store_dataset(store, &blocks, "one").await?;
    let (c2, _) = store_dataset(store, &blocks, "two").await?;
    assert_ne!(c1, c2);
    store.delete_dataset(&c1).await?;
    for i in 0..3 {
        assert!(store.has_leaf(&m1.tree_cid, i).await?, "leaf {i} lost");
    }
    assert_consistent(store).await;
    store.delete_dataset(&c2).await?;
    assert_eq!(store.space().await?.total_blocks, 0);
    Ok(())
}

async fn expired_data_is_swept<K: codex_store::Kv>(store: &Repo<K>) -> anyhow::Result<()> {
    let loose = random_blocks(11, 3, 128);
    for b in &loose {
        store.put_block(b.clone()).await?;
    }
    let (cid, _) = store_dataset(store, &random_blocks(12, 4, 128), "d").await?;
    // Nothing has expired yet.
    assert_eq!(store.sweep_expired(now(), 1000)?, 0);
    assert_eq!(store.space().await?.total_blocks, 3 + 4 + 1);
    // An hour and a minute later, everything has.
    let later = now() + 3600 + 60;
    let mut deleted = 0;
    loop {
        let n = store.sweep_expired(later, 2)?;
        if n == 0 && store.space().await?.total_blocks == 0 {
            break;
        }
        deleted += n;
        assert!(deleted <= 10, "sweep does not converge");
    }
    assert!(store.manifests().await?.is_empty());
    assert!(!store.has_block(&cid).await?);
    assert_consistent(store).await;
    Ok(())
}

async fn unknown_sessions_are_errors<K: codex_store::Kv>(store: &Repo<K>) -> anyhow::Result<()> {
    let s = store.begin().await?;
    store.commit(s, None).await?;
    assert!(matches!(
        store.commit(s, None).await,
        Err(Error::UnknownSession(_))
    ));
    assert!(matches!(
        store.session_put_blocks(s, random_blocks(13, 1, 10)).await,
        Err(Error::UnknownSession(_))
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_persists_and_rolls_back_uncommitted_sessions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kept = random_blocks(20, 4, 1024);
    let lost = random_blocks(21, 4, 1024);
    let manifest_cid;
    {
        let store = SledStore::open(dir.path(), config(1 << 30))?;
        manifest_cid = store_dataset(&store, &kept, "kept").await?.0;
        let s = store.begin().await?;
        store.session_put_blocks(s, lost.clone()).await?;
        // Dropped without commit or abort, as a crash would leave it.
    }
    let store = SledStore::open(dir.path(), config(1 << 30))?;
    assert_eq!(store.manifests().await?.len(), 1);
    assert!(store.has_block(&manifest_cid).await?);
    for b in &lost {
        assert!(
            !store.has_block(b.cid()).await?,
            "uncommitted block survived"
        );
    }
    let space = store.space().await?;
    assert_eq!(space.total_blocks, 5);
    assert_consistent(&store).await;
    // Session ids are not reused.
    let s = store.begin().await?;
    assert!(s.0 >= 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_bytes_are_reported_not_returned() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let block = random_blocks(30, 1, 65536).remove(0);
    {
        let store = SledStore::open(dir.path(), config(1 << 30))?;
        store.put_block(block.clone()).await?;
    }
    {
        // Flip a byte of the stored data behind the store's back: the only pack file holds
        // the one block at offset 0.
        let path = dir.path().join("packs").join("00000000.pack");
        let mut data = std::fs::read(&path)?;
        data[100] ^= 0x40;
        std::fs::write(&path, data)?;
    }
    let store = SledStore::open(dir.path(), config(1 << 30))?;
    match store.get_block(block.cid()).await {
        Err(Error::Corrupt { cid, .. }) => assert_eq!(&*cid, block.cid()),
        other => panic!("expected corruption, got {other:?}"),
    }
    Ok(())
}

#[test]
fn memory_store_is_usable_without_a_runtime_for_sweeps() {
    let store = MemoryStore::new(config(1000));
    assert_eq!(store.sweep_expired(now(), 10).expect("sweep"), 0);
}
