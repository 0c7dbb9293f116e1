//! One suite, run against both stores.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use codex_core::prelude::*;
use codex_core::{
    Block, BlockRead, BlockWrite, Cid, CodexProof, Error, LeafMeta, Manifest, Manifests, Quota,
    SessionId, Sessions, Space,
};
use codex_store::{MemoryStore, Repo, SledStore, StoreConfig, conformance};
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
) -> anyhow::Result<(Cid, Manifest)> {
    let size = blocks[0].len();
    Ok(codex_core::store_dataset(
        store,
        blocks.to_vec(),
        size as u32,
        (blocks.len() * size) as u64,
    )
    .await?)
}

fn assert_consistent<K: codex_store::Kv>(store: &Repo<K>) {
    let problems = store.check().expect("check");
    assert!(problems.is_empty(), "store inconsistent: {problems:#?}");
}

/// Every conformance case on a fresh store of each kind, each followed by the store's
/// own consistency check.
/// Runs every conformance case on a fresh store from `fresh`, each followed by the
/// store's own consistency check.
async fn conforms<K: codex_store::Kv>(
    mut fresh: impl FnMut() -> anyhow::Result<(Repo<K>, Option<tempfile::TempDir>)>,
) -> anyhow::Result<()> {
    for (name, case) in conformance::cases::<Repo<K>>() {
        let (store, _dir) = fresh()?;
        case(&store).await?;
        let problems = store.check()?;
        assert!(
            problems.is_empty(),
            "{name}: store inconsistent: {problems:#?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() -> anyhow::Result<()> {
    conforms(|| Ok((MemoryStore::new(config(1 << 30)), None))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_conforms() -> anyhow::Result<()> {
    conforms(|| {
        let dir = tempfile::tempdir()?;
        Ok((SledStore::open(dir.path(), config(1 << 30))?, Some(dir)))
    })
    .await
}

/// A store that forgets sessions dropped uncommitted: everything else is a `MemoryStore`.
#[derive(Debug)]
struct Leaky(MemoryStore);

#[async_trait::async_trait]
impl BlockRead for Leaky {
    async fn get_block(&self, cid: &Cid) -> codex_core::Result<Block> {
        self.0.get_block(cid).await
    }
    async fn get_leaf(&self, tree: &Cid, index: u64) -> codex_core::Result<(Block, CodexProof)> {
        self.0.get_leaf(tree, index).await
    }
    async fn get_leaf_meta(&self, tree: &Cid, index: u64) -> codex_core::Result<LeafMeta> {
        self.0.get_leaf_meta(tree, index).await
    }
    async fn has_block(&self, cid: &Cid) -> codex_core::Result<bool> {
        self.0.has_block(cid).await
    }
    async fn has_leaf(&self, tree: &Cid, index: u64) -> codex_core::Result<bool> {
        self.0.has_leaf(tree, index).await
    }
}

#[async_trait::async_trait]
impl BlockWrite for Leaky {
    async fn put_block(&self, block: Block) -> codex_core::Result<()> {
        self.0.put_block(block).await
    }
    async fn put_leaf(
        &self,
        tree: &Cid,
        index: u64,
        block: Block,
        proof: CodexProof,
    ) -> codex_core::Result<()> {
        self.0.put_leaf(tree, index, block, proof).await
    }
    async fn delete_block(&self, cid: &Cid) -> codex_core::Result<()> {
        self.0.delete_block(cid).await
    }
    async fn delete_dataset(&self, manifest: &Cid) -> codex_core::Result<()> {
        self.0.delete_dataset(manifest).await
    }
}

#[async_trait::async_trait]
impl Sessions for Leaky {
    async fn begin(&self) -> codex_core::Result<SessionId> {
        self.0.begin().await
    }
    async fn session_put_blocks(&self, s: SessionId, blocks: Vec<Block>) -> codex_core::Result<()> {
        self.0.session_put_blocks(s, blocks).await
    }
    async fn session_put_leaves(
        &self,
        s: SessionId,
        tree: &Cid,
        leaves: Vec<LeafMeta>,
    ) -> codex_core::Result<()> {
        self.0.session_put_leaves(s, tree, leaves).await
    }
    async fn session_put_leaf_refs(
        &self,
        s: SessionId,
        tree: &Cid,
        leaves: Vec<LeafMeta>,
    ) -> codex_core::Result<()> {
        self.0.session_put_leaf_refs(s, tree, leaves).await
    }
    async fn commit(&self, s: SessionId, manifest: Option<Block>) -> codex_core::Result<()> {
        self.0.commit(s, manifest).await
    }
    async fn abort(&self, s: SessionId) -> codex_core::Result<()> {
        self.0.abort(s).await
    }
    fn abandon(&self, _session: SessionId) {}
}

#[async_trait::async_trait]
impl Quota for Leaky {
    async fn space(&self) -> codex_core::Result<Space> {
        self.0.space().await
    }
    async fn reserve(&self, bytes: u64) -> codex_core::Result<()> {
        self.0.reserve(bytes).await
    }
    async fn release(&self, bytes: u64) -> codex_core::Result<()> {
        self.0.release(bytes).await
    }
}

#[async_trait::async_trait]
impl Manifests for Leaky {
    async fn manifests(&self) -> codex_core::Result<Vec<(Cid, Manifest)>> {
        self.0.manifests().await
    }
}

/// The suite fails a store that breaks a rule: here one that keeps what a dropped
/// session wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_store_that_keeps_dropped_sessions() -> anyhow::Result<()> {
    let err = conformance::run(|| async { Leaky(MemoryStore::new(config(1 << 30))) })
        .await
        .expect_err("a leaky store must fail");
    assert_eq!(err.case, "dropped_session_leaves_nothing");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_data_is_swept() -> anyhow::Result<()> {
    for dir in [None, Some(tempfile::tempdir()?)] {
        match &dir {
            None => expired_data_is_swept_in(&MemoryStore::new(config(1 << 30))).await?,
            Some(d) => {
                expired_data_is_swept_in(&SledStore::open(d.path(), config(1 << 30))?).await?
            }
        }
    }
    Ok(())
}

async fn expired_data_is_swept_in<K: codex_store::Kv>(store: &Repo<K>) -> anyhow::Result<()> {
    let loose = random_blocks(11, 3, 128);
    for b in &loose {
        store.put_block(b.clone()).await?;
    }
    let (cid, _) = store_dataset(store, &random_blocks(12, 4, 128)).await?;
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
    assert_consistent(store);
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
        manifest_cid = store_dataset(&store, &kept).await?.0;
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
    assert_consistent(&store);
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

/// A host that rebuilt one slot keeps that slot alone: the other leaves go, with the
/// blocks and the space only they held; what stays reads back, and the dataset still
/// deletes whole afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_of_leaves_is_deleted() -> anyhow::Result<()> {
    for dir in [None, Some(tempfile::tempdir()?)] {
        match &dir {
            None => leaves_deleted_in(&MemoryStore::new(config(1 << 30))).await?,
            Some(d) => leaves_deleted_in(&SledStore::open(d.path(), config(1 << 30))?).await?,
        }
    }
    Ok(())
}

async fn leaves_deleted_in<K: codex_store::Kv>(store: &Repo<K>) -> anyhow::Result<()> {
    let blocks = random_blocks(21, 9, 256);
    let (cid, manifest) = store_dataset(store, &blocks).await?;
    let tree = manifest.tree_cid;
    let used = store.space().await?.quota_used_bytes;
    // Keep leaves 3..6: delete before and after.
    assert_eq!(store.delete_leaves(&tree, 0..3).await?, 3);
    assert_eq!(store.delete_leaves(&tree, 6..u64::MAX).await?, 3);
    assert_eq!(store.delete_leaves(&tree, 0..3).await?, 0, "already gone");
    assert_eq!(store.delete_leaves(&tree, 4..4).await?, 0, "an empty range");
    for i in 0..9u64 {
        let kept = (3..6).contains(&i);
        assert_eq!(store.has_leaf(&tree, i).await?, kept, "leaf {i}");
        assert_eq!(
            store.has_block(blocks[i as usize].cid()).await?,
            kept,
            "block {i}"
        );
    }
    for i in 3..6u64 {
        assert_eq!(
            store.get_leaf(&tree, i).await?.0.data(),
            blocks[i as usize].data()
        );
    }
    assert_eq!(store.space().await?.quota_used_bytes, used - 6 * 256);
    assert!(store.has_block(&cid).await?, "the manifest stays");
    // The dataset is partial now (as a host's fetched slot is): nothing else is off.
    let problems = store.check()?;
    assert!(
        problems
            .iter()
            .all(|p| p.ends_with("of its tree is missing")),
        "{problems:#?}"
    );
    store.delete_dataset(&cid).await?;
    assert_eq!(store.space().await?.quota_used_bytes, 0);
    assert_consistent(store);
    Ok(())
}

/// A session's pin reference passes to the first leaf that refers to a block the
/// session created. A session that stored blocks and the leaves of a new tree, then was
/// interrupted, is undone on restart: its tree and the blocks it created go, a block
/// stored before it (unreferenced) and a block of another dataset stay. A dataset whose
/// tree holds one block twice keeps it while either leaf is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_pass_to_leaves_and_an_interrupted_session_with_leaves_is_undone() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let kept = random_blocks(40, 3, 1024);
    let standalone = random_blocks(41, 1, 1024).remove(0);
    let created = random_blocks(42, 2, 1024);
    let twice = random_blocks(43, 2, 1024);
    let (kept_cid, tree);
    {
        let store = SledStore::open(dir.path(), config(1 << 30))?;
        kept_cid = store_dataset(&store, &kept).await?.0;
        store.put_block(standalone.clone()).await?;
        let s = store.begin().await?;
        let blocks = vec![
            standalone.clone(),
            kept[1].clone(),
            created[0].clone(),
            created[1].clone(),
            created[0].clone(),
        ];
        store.session_put_blocks(s, blocks.clone()).await?;
        let leaves;
        (tree, leaves) = leaves_at(&blocks, &[0, 1, 2, 3, 4])?;
        store.session_put_leaves(s, &tree, leaves).await?;
        assert!(store.has_leaf(&tree, 4).await?);
        // Dropped without commit or abort, as a crash would leave it.
    }
    let store = SledStore::open(dir.path(), config(1 << 30))?;
    assert_consistent(&store);
    for i in 0..5 {
        assert!(
            !store.has_leaf(&tree, i).await?,
            "leaf {i} of the undone tree"
        );
    }
    for b in &created {
        assert!(!store.has_block(b.cid()).await?, "a created block survived");
    }
    assert!(
        store.has_block(standalone.cid()).await?,
        "a block stored before"
    );
    for b in &kept {
        assert!(
            store.has_block(b.cid()).await?,
            "a block of another dataset"
        );
    }
    // 3 blocks and the manifest of `kept`, and the standalone block.
    assert_eq!(store.space().await?.total_blocks, 5);

    // The same block at leaves 0 and 2 of a committed dataset.
    let blocks = vec![twice[0].clone(), twice[1].clone(), twice[0].clone()];
    let (cid, manifest) = store_dataset(&store, &blocks).await?;
    assert_consistent(&store);
    assert_eq!(store.delete_leaves(&manifest.tree_cid, 0..1).await?, 1);
    assert!(
        store.has_block(twice[0].cid()).await?,
        "leaf 2 still holds it"
    );
    assert_eq!(
        store.get_leaf(&manifest.tree_cid, 2).await?.0.cid(),
        twice[0].cid()
    );
    store.delete_dataset(&cid).await?;
    store.delete_dataset(&kept_cid).await?;
    for b in twice.iter().chain(&kept) {
        assert!(
            !store.has_block(b.cid()).await?,
            "every reference was dropped"
        );
    }
    assert!(store.has_block(standalone.cid()).await?);
    assert_eq!(store.space().await?.total_blocks, 1);
    assert_consistent(&store);
    Ok(())
}

/// Leaves for `blocks` at `indices`, with proofs from a tree over `blocks`.
fn leaves_at(blocks: &[Block], indices: &[u64]) -> anyhow::Result<(Cid, Vec<LeafMeta>)> {
    let cids: Vec<Cid> = blocks.iter().map(|b| *b.cid()).collect();
    let t = codex_core::MerkleTree::from_cids(&cids)?;
    let leaves = indices
        .iter()
        .map(|&i| {
            Ok(LeafMeta {
                index: i,
                block_cid: cids[i as usize],
                proof: t.proof(i)?,
            })
        })
        .collect::<codex_core::Result<Vec<_>>>()?;
    Ok((t.root_cid(), leaves))
}

/// Opens a session, stores `blocks` (X, Y), writes leaf 0 as X (it takes X's pin
/// reference), then overwrites it with Y.
async fn overwrite_in_a_session(
    store: &SledStore,
    tree: &Cid,
    blocks: &[Block],
    leaves: &[LeafMeta],
) -> anyhow::Result<SessionId> {
    let s = store.begin().await?;
    store.session_put_blocks(s, blocks.to_vec()).await?;
    store
        .session_put_leaves(s, tree, vec![leaves[0].clone()])
        .await?;
    let mut over = leaves[1].clone();
    over.index = 0;
    store.session_put_leaves(s, tree, vec![over]).await?;
    Ok(s)
}

/// A leaf that took a pin's reference and is overwritten in the same session gives the
/// reference back to the pin: the block stays, a later leaf of the session takes it
/// again, and the counts add up after the commit; interrupted after such an overwrite,
/// the session is undone whole on restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwritten_leaf_gives_the_pin_its_reference_back() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let x = random_blocks(50, 1, 1024).remove(0);
    let y = random_blocks(51, 1, 1024).remove(0);
    let blocks = vec![x.clone(), y.clone()];
    let (tree, leaves) = leaves_at(&blocks, &[0, 1])?;
    {
        let store = SledStore::open(dir.path(), config(1 << 30))?;
        let s = overwrite_in_a_session(&store, &tree, &blocks, &leaves).await?;
        assert!(store.has_block(x.cid()).await?, "the pin holds X again");
        // X stored again in the session (already pinned) and taken by leaf 1.
        store.session_put_blocks(s, vec![x.clone()]).await?;
        let mut x_at_1 = leaves[0].clone();
        x_at_1.index = 1;
        store.session_put_leaves(s, &tree, vec![x_at_1]).await?;
        store.commit(s, None).await?;
        assert_consistent(&store);
        assert_eq!(store.get_leaf(&tree, 0).await?.0.cid(), y.cid());
        assert_eq!(store.get_leaf(&tree, 1).await?.0.cid(), x.cid());
        // One reference each: deleting the leaves frees both.
        assert_eq!(store.delete_leaves(&tree, 0..u64::MAX).await?, 2);
        assert!(!store.has_block(x.cid()).await?);
        assert!(!store.has_block(y.cid()).await?);
        assert_consistent(&store);

        // The same overwrite, then a crash: dropped without commit or abort.
        overwrite_in_a_session(&store, &tree, &blocks, &leaves).await?;
    }
    let store = SledStore::open(dir.path(), config(1 << 30))?;
    assert_consistent(&store);
    assert!(
        !store.has_block(x.cid()).await?,
        "X, created and unreferenced, is undone"
    );
    assert!(!store.has_block(y.cid()).await?, "Y, created, is undone");
    assert!(!store.has_leaf(&tree, 0).await?);
    assert_eq!(store.space().await?.total_blocks, 0);
    Ok(())
}
