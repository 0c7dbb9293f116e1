//! The store conformance suite (feature `test-utils`): what every [`BlockStore`] must do,
//! run against `SledStore` and `MemoryStore` in this crate's tests and available to a
//! third-party store.
//!
//! ```no_run
//! # async fn f() {
//! use codex_store::{MemoryStore, StoreConfig, conformance};
//! let passed = conformance::run(|| async { MemoryStore::new(StoreConfig::default()) })
//!     .await
//!     .expect("a conforming store");
//! println!("{passed} cases passed");
//! # }
//! ```
//!
//! Each case gets a fresh, empty store from the factory, whose quota must be at least
//! [`MIN_QUOTA`] bytes and whose blocks must not expire within the run.

use std::future::Future;

use codex_core::prelude::*;
use codex_core::{Block, BlockAddress, Cid, Error, LeafMeta, Manifest, MerkleTree, WriteSession};

/// The least quota the suite's stores must have: 16 MiB.
pub const MIN_QUOTA: u64 = 16 << 20;

/// A case that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("conformance case `{case}` failed: {reason}")]
pub struct Failure {
    /// The case's name.
    pub case: &'static str,
    /// What went wrong.
    pub reason: String,
}

/// A case's outcome.
pub type CaseResult = std::result::Result<(), Failure>;

/// One case of the suite.
pub type Case<S> = fn(&S) -> std::pin::Pin<Box<dyn Future<Output = CaseResult> + Send + '_>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// The names of the cases, in the order [`run`] runs them.
        pub const CASES: &[&str] = &[$(stringify!($name)),*];

        /// Every case with its name, for a harness that runs them one by one.
        pub fn cases<S: BlockStore>() -> Vec<(&'static str, Case<S>)> {
            vec![$((stringify!($name), (|s: &S| Box::pin($name(s))) as Case<S>)),*]
        }
    };
}

cases!(
    blocks_round_trip,
    leaves_round_trip_with_proofs,
    committed_dataset_is_listed,
    aborted_session_leaves_nothing,
    dropped_session_leaves_nothing,
    quota_is_enforced_and_failed_writes_change_nothing,
    reservations_take_quota,
    shared_blocks_survive_deleting_one_dataset,
    same_tree_under_two_manifests,
    unknown_sessions_are_errors,
);

/// Runs every case, each on a store from `fresh`; returns how many passed.
///
/// # Errors
/// The first case that fails.
pub async fn run<S, F, Fut>(mut fresh: F) -> std::result::Result<usize, Failure>
where
    S: BlockStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    let all = cases::<S>();
    for (_, case) in &all {
        let store = fresh().await;
        case(&store).await?;
    }
    Ok(all.len())
}

/// Fails the current case unless `cond` holds.
macro_rules! ensure {
    ($case:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Failure { case: $case, reason: format!($($msg)+) });
        }
    };
}

/// Turns a store error into a failure of `case`.
fn ok<T>(case: &'static str, what: &str, r: codex_core::Result<T>) -> Result<T, Failure> {
    r.map_err(|e| Failure {
        case,
        reason: format!("{what}: {e}"),
    })
}

/// `n` blocks of `size` bytes, different for every `seed` (a xorshift stream).
pub fn test_blocks(seed: u64, n: usize, size: usize) -> Vec<Block> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            let data = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect::<Vec<u8>>();
            Block::new(data)
        })
        .collect()
}

/// Stores `blocks` as a dataset named `name` in one session.
async fn dataset(
    case: &'static str,
    store: &impl BlockStore,
    blocks: &[Block],
    name: &str,
) -> Result<(Cid, Manifest), Failure> {
    let tree = ok(
        case,
        "tree",
        MerkleTree::from_cids(blocks.iter().map(Block::cid)),
    )?;
    let leaves = leaves(case, &tree, blocks)?;
    let mut manifest = Manifest::new(
        tree.root_cid(),
        blocks[0].len() as u32,
        (blocks.len() * blocks[0].len()) as u64,
    );
    manifest.filename = Some(name.into());
    let block = Block::manifest(manifest.encode());
    let cid = *block.cid();
    let session = ok(case, "begin", WriteSession::begin(store).await)?;
    ok(
        case,
        "put blocks",
        session.put_blocks(blocks.to_vec()).await,
    )?;
    ok(
        case,
        "put leaves",
        session.put_leaves(&tree.root_cid(), leaves).await,
    )?;
    ok(case, "commit", session.commit(Some(block)).await)?;
    Ok((cid, manifest))
}

fn leaves(
    case: &'static str,
    tree: &MerkleTree,
    blocks: &[Block],
) -> Result<Vec<LeafMeta>, Failure> {
    blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Ok(LeafMeta {
                index: i as u64,
                block_cid: *b.cid(),
                proof: ok(case, "proof", tree.proof(i as u64))?,
            })
        })
        .collect()
}

/// Blocks stored on their own read back, count once, and go when deleted.
pub async fn blocks_round_trip(store: &impl BlockStore) -> CaseResult {
    const C: &str = "blocks_round_trip";
    let blocks = test_blocks(1, 3, 1000);
    for b in &blocks {
        ok(C, "put", store.put_block(b.clone()).await)?;
        ok(C, "put again", store.put_block(b.clone()).await)?;
    }
    for b in &blocks {
        ensure!(
            C,
            &ok(C, "get", store.get_block(b.cid()).await)? == b,
            "a block read back differs"
        );
        ensure!(
            C,
            ok(C, "has", store.has_block(b.cid()).await)?,
            "has_block is false for a stored block"
        );
        let by_address = ok(
            C,
            "get by address",
            store.get(&BlockAddress::Cid(*b.cid())).await,
        )?;
        ensure!(C, &by_address == b, "get by address differs");
    }
    let space = ok(C, "space", store.space().await)?;
    ensure!(
        C,
        (space.total_blocks, space.quota_used_bytes) == (3, 3000),
        "three 1000-byte blocks stored twice count as {} blocks, {} bytes",
        space.total_blocks,
        space.quota_used_bytes
    );
    let missing = Cid::for_block(b"not stored");
    ensure!(
        C,
        matches!(store.get_block(&missing).await, Err(Error::NotFound(_))),
        "a missing block is not NotFound"
    );
    ensure!(
        C,
        !ok(C, "has", store.has_block(&missing).await)?,
        "has_block is true for a missing block"
    );
    ok(C, "delete", store.delete_block(blocks[0].cid()).await)?;
    ensure!(
        C,
        !ok(C, "has", store.has_block(blocks[0].cid()).await)?,
        "a deleted block is still there"
    );
    let used = ok(C, "space", store.space().await)?.quota_used_bytes;
    ensure!(
        C,
        used == 2000,
        "after deleting one block {used} bytes are used, not 2000"
    );
    Ok(())
}

/// Leaves stored with proofs read back with proofs that verify; a block a leaf refers to
/// is not deleted on its own.
pub async fn leaves_round_trip_with_proofs(store: &impl BlockStore) -> CaseResult {
    const C: &str = "leaves_round_trip_with_proofs";
    let blocks = test_blocks(2, 5, 512);
    let tree = ok(
        C,
        "tree",
        MerkleTree::from_cids(blocks.iter().map(Block::cid)),
    )?;
    let root = tree.root_cid();
    for (i, b) in blocks.iter().enumerate() {
        let proof = ok(C, "proof", tree.proof(i as u64))?;
        ok(
            C,
            "put leaf",
            store.put_leaf(&root, i as u64, b.clone(), proof).await,
        )?;
    }
    for (i, b) in blocks.iter().enumerate() {
        let (got, proof) = ok(C, "get leaf", store.get_leaf(&root, i as u64).await)?;
        ensure!(C, &got == b, "leaf {i} read back differs");
        ensure!(
            C,
            proof.verify_cids(b.cid(), &root),
            "leaf {i}'s proof does not verify"
        );
        ensure!(
            C,
            ok(C, "has leaf", store.has_leaf(&root, i as u64).await)?,
            "has_leaf({i}) is false"
        );
        let meta = ok(C, "leaf meta", store.get_leaf_meta(&root, i as u64).await)?;
        ensure!(
            C,
            meta.block_cid == *b.cid() && meta.index == i as u64,
            "leaf {i}'s meta differs"
        );
        let addr = BlockAddress::Leaf {
            tree: root,
            index: i as u64,
        };
        ensure!(
            C,
            &ok(C, "get by address", store.get(&addr).await)? == b,
            "leaf {i} by address differs"
        );
    }
    let many = ok(
        C,
        "get leaf blocks",
        store.get_leaf_blocks(&root, vec![4, 0, 5]).await,
    )?;
    ensure!(
        C,
        many.len() == 3,
        "get_leaf_blocks returned {} results for 3 indices",
        many.len()
    );
    ensure!(
        C,
        matches!(&many[0], Ok(b) if b == &blocks[4]),
        "get_leaf_blocks: leaf 4 differs"
    );
    ensure!(
        C,
        matches!(&many[1], Ok(b) if b == &blocks[0]),
        "get_leaf_blocks: leaf 0 differs"
    );
    ensure!(
        C,
        matches!(&many[2], Err(Error::NotFound(_))),
        "get_leaf_blocks: leaf 5 is not NotFound"
    );
    ensure!(
        C,
        !ok(C, "has leaf", store.has_leaf(&root, 5).await)?,
        "has_leaf is true past the end"
    );
    ensure!(
        C,
        matches!(store.get_leaf(&root, 5).await, Err(Error::NotFound(_))),
        "a missing leaf is not NotFound"
    );
    ok(C, "delete", store.delete_block(blocks[0].cid()).await)?;
    ensure!(
        C,
        ok(C, "has", store.has_block(blocks[0].cid()).await)?,
        "deleting a block that a leaf refers to removed it"
    );
    Ok(())
}

/// A committed dataset is listed, complete and counted; deleting it frees everything.
pub async fn committed_dataset_is_listed(store: &impl BlockStore) -> CaseResult {
    const C: &str = "committed_dataset_is_listed";
    let blocks = test_blocks(3, 10, 4096);
    let (cid, manifest) = dataset(C, store, &blocks, "a").await?;
    let listed = ok(C, "manifests", store.manifests().await)?;
    ensure!(
        C,
        listed == vec![(cid, manifest.clone())],
        "manifests() lists {listed:?}"
    );
    for i in 0..10 {
        ensure!(
            C,
            ok(C, "has leaf", store.has_leaf(&manifest.tree_cid, i).await)?,
            "leaf {i} missing"
        );
    }
    let space = ok(C, "space", store.space().await)?;
    let expected = 10 * 4096 + manifest.encode().len() as u64;
    ensure!(
        C,
        space.total_blocks == 11 && space.quota_used_bytes == expected,
        "{} blocks and {} bytes counted, expected 11 and {expected}",
        space.total_blocks,
        space.quota_used_bytes
    );
    ok(C, "delete dataset", store.delete_dataset(&cid).await)?;
    ensure!(
        C,
        ok(C, "manifests", store.manifests().await)?.is_empty(),
        "a deleted dataset is listed"
    );
    let space = ok(C, "space", store.space().await)?;
    ensure!(
        C,
        (space.total_blocks, space.quota_used_bytes) == (0, 0),
        "a deleted dataset left {} blocks, {} bytes",
        space.total_blocks,
        space.quota_used_bytes
    );
    Ok(())
}

/// What an aborted session wrote is gone, and a block stored before it stays.
pub async fn aborted_session_leaves_nothing(store: &impl BlockStore) -> CaseResult {
    const C: &str = "aborted_session_leaves_nothing";
    let kept = test_blocks(4, 1, 100);
    ok(C, "put", store.put_block(kept[0].clone()).await)?;
    let blocks = test_blocks(5, 6, 100);
    let tree = ok(
        C,
        "tree",
        MerkleTree::from_cids(blocks.iter().map(Block::cid)),
    )?;
    let session = ok(C, "begin", WriteSession::begin(store).await)?;
    // The kept block is in this session too: aborting must not delete it.
    ok(
        C,
        "put blocks",
        session
            .put_blocks([blocks.clone(), kept.clone()].concat())
            .await,
    )?;
    ok(
        C,
        "put leaves",
        session
            .put_leaves(&tree.root_cid(), leaves(C, &tree, &blocks)?)
            .await,
    )?;
    let during = ok(C, "space", store.space().await)?.total_blocks;
    ensure!(
        C,
        during == 7,
        "{during} blocks counted during the session, expected 7"
    );
    ok(C, "abort", session.abort().await)?;
    let space = ok(C, "space", store.space().await)?;
    ensure!(
        C,
        (space.total_blocks, space.quota_used_bytes) == (1, 100),
        "after abort {} blocks, {} bytes remain, expected 1 and 100",
        space.total_blocks,
        space.quota_used_bytes
    );
    ensure!(
        C,
        ok(C, "has", store.has_block(kept[0].cid()).await)?,
        "abort deleted a block stored before"
    );
    ensure!(
        C,
        !ok(C, "has leaf", store.has_leaf(&tree.root_cid(), 0).await)?,
        "an aborted leaf stayed"
    );
    Ok(())
}

/// A session dropped uncommitted (a cancelled future) is undone, soon.
pub async fn dropped_session_leaves_nothing(store: &impl BlockStore) -> CaseResult {
    const C: &str = "dropped_session_leaves_nothing";
    let blocks = test_blocks(14, 4, 300);
    {
        let session = ok(C, "begin", WriteSession::begin(store).await)?;
        ok(C, "put blocks", session.put_blocks(blocks.clone()).await)?;
        // Dropped here without commit or abort.
    }
    // Abandoning may run in the background: give it up to 5 s.
    for _ in 0..250 {
        if ok(C, "space", store.space().await)?.total_blocks == 0 {
            for b in &blocks {
                ensure!(
                    C,
                    !ok(C, "has", store.has_block(b.cid()).await)?,
                    "a dropped session's block stayed"
                );
            }
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Err(Failure {
        case: C,
        reason: "a dropped session's blocks are still counted after 5 s".into(),
    })
}

/// A write that does not fit is refused with `QuotaExceeded` and changes nothing.
pub async fn quota_is_enforced_and_failed_writes_change_nothing(
    store: &impl BlockStore,
) -> CaseResult {
    const C: &str = "quota_is_enforced_and_failed_writes_change_nothing";
    let quota = ok(C, "space", store.space().await)?.quota_max_bytes;
    ensure!(
        C,
        quota >= MIN_QUOTA,
        "the store's quota {quota} is below MIN_QUOTA"
    );
    // Fill the quota with a reservation, leaving 10 000 bytes.
    ok(C, "reserve", store.reserve(quota - 10_000).await)?;
    let blocks = test_blocks(6, 3, 4096);
    let session = ok(C, "begin", WriteSession::begin(store).await)?;
    match session.put_blocks(blocks).await {
        Err(Error::QuotaExceeded { needed, available }) => ensure!(
            C,
            (needed, available) == (4096, 10_000 - 8192),
            "QuotaExceeded says {needed} needed, {available} available; expected 4096 and 1808"
        ),
        other => {
            return Err(Failure {
                case: C,
                reason: format!("a batch beyond the quota gave {other:?}, not QuotaExceeded"),
            });
        }
    }
    let stored = ok(C, "space", store.space().await)?.total_blocks;
    ensure!(C, stored == 0, "a refused batch left {stored} blocks");
    ok(C, "abort", session.abort().await)?;
    ensure!(
        C,
        matches!(
            store.put_block(Block::new(vec![1u8; 20_000])).await,
            Err(Error::QuotaExceeded { .. })
        ),
        "a block beyond the quota is not QuotaExceeded"
    );
    let used = ok(C, "space", store.space().await)?.quota_used_bytes;
    ensure!(C, used == 0, "refused writes use {used} bytes");
    Ok(())
}

/// Reservations take quota and are released.
pub async fn reservations_take_quota(store: &impl BlockStore) -> CaseResult {
    const C: &str = "reservations_take_quota";
    let quota = ok(C, "space", store.space().await)?.quota_max_bytes;
    ok(C, "reserve", store.reserve(quota / 2).await)?;
    let reserved = ok(C, "space", store.space().await)?.quota_reserved_bytes;
    ensure!(
        C,
        reserved == quota / 2,
        "{reserved} bytes reserved, expected {}",
        quota / 2
    );
    ensure!(
        C,
        matches!(
            store.reserve(quota / 2 + 1).await,
            Err(Error::QuotaExceeded { .. })
        ),
        "reserving more than is free is not QuotaExceeded"
    );
    ok(C, "release", store.release(quota).await)?;
    let reserved = ok(C, "space", store.space().await)?.quota_reserved_bytes;
    ensure!(
        C,
        reserved == 0,
        "{reserved} bytes still reserved after releasing all"
    );
    Ok(())
}

/// Deleting one of two datasets that share blocks keeps the other whole.
pub async fn shared_blocks_survive_deleting_one_dataset(store: &impl BlockStore) -> CaseResult {
    const C: &str = "shared_blocks_survive_deleting_one_dataset";
    let common = test_blocks(7, 2, 256);
    let a = [common.clone(), test_blocks(8, 2, 256)].concat();
    let b = [test_blocks(9, 1, 256), common].concat();
    let (ca, _) = dataset(C, store, &a, "a").await?;
    let (cb, mb) = dataset(C, store, &b, "b").await?;
    let n = ok(C, "space", store.space().await)?.total_blocks;
    ensure!(
        C,
        n == 7,
        "{n} blocks counted for 5 distinct blocks and 2 manifests"
    );
    ok(C, "delete", store.delete_dataset(&ca).await)?;
    for (i, block) in b.iter().enumerate() {
        let got = ok(C, "get leaf", store.get_leaf(&mb.tree_cid, i as u64).await)?.0;
        ensure!(C, &got == block, "leaf {i} of the kept dataset differs");
    }
    let listed = ok(C, "manifests", store.manifests().await)?.len();
    ensure!(C, listed == 1, "{listed} datasets listed, expected 1");
    let n = ok(C, "space", store.space().await)?.total_blocks;
    ensure!(C, n == 4, "{n} blocks counted, expected 4");
    ok(C, "delete", store.delete_dataset(&cb).await)?;
    let n = ok(C, "space", store.space().await)?.total_blocks;
    ensure!(C, n == 0, "{n} blocks left after deleting both datasets");
    Ok(())
}

/// The same tree under two manifests stays until both are deleted.
pub async fn same_tree_under_two_manifests(store: &impl BlockStore) -> CaseResult {
    const C: &str = "same_tree_under_two_manifests";
    let blocks = test_blocks(10, 3, 256);
    let (c1, m1) = dataset(C, store, &blocks, "one").await?;
    let (c2, _) = dataset(C, store, &blocks, "two").await?;
    ensure!(
        C,
        c1 != c2,
        "two manifests with different names have one CID"
    );
    ok(C, "delete", store.delete_dataset(&c1).await)?;
    for i in 0..3 {
        ensure!(
            C,
            ok(C, "has leaf", store.has_leaf(&m1.tree_cid, i).await)?,
            "leaf {i} lost"
        );
    }
    ok(C, "delete", store.delete_dataset(&c2).await)?;
    let n = ok(C, "space", store.space().await)?.total_blocks;
    ensure!(C, n == 0, "{n} blocks left");
    Ok(())
}

/// A committed session's id is refused afterwards.
pub async fn unknown_sessions_are_errors(store: &impl BlockStore) -> CaseResult {
    const C: &str = "unknown_sessions_are_errors";
    let s = ok(C, "begin", store.begin().await)?;
    ok(C, "commit", store.commit(s, None).await)?;
    ensure!(
        C,
        matches!(store.commit(s, None).await, Err(Error::UnknownSession(_))),
        "committing twice is not UnknownSession"
    );
    ensure!(
        C,
        matches!(
            store.session_put_blocks(s, test_blocks(13, 1, 10)).await,
            Err(Error::UnknownSession(_))
        ),
        "writing to a committed session is not UnknownSession"
    );
    Ok(())
}
