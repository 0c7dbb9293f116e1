//! Encode, decode and repair over a real store.

use std::collections::BTreeSet;

use codex_core::prelude::*;
use codex_core::{Block, Chunker, Cid, Error as CoreError, Manifest};
use codex_erasure::{Error, Layout};
use codex_store::{MemoryStore, StoreConfig};
use proptest::prelude::*;
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng, seq::SliceRandom};

fn store() -> MemoryStore {
    MemoryStore::new(StoreConfig::default())
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Stores `data` as a plain dataset of `block_size` blocks; returns its manifest.
async fn put_dataset(
    store: &MemoryStore,
    data: &[u8],
    block_size: usize,
) -> anyhow::Result<Manifest> {
    let blocks: Vec<Block> = Chunker::new(data, block_size)
        .map(|b| b.map(Block::new))
        .collect::<Result<_, _>>()?;
    Ok(
        codex_core::store_dataset(store, blocks, block_size as u32, data.len() as u64)
            .await?
            .1,
    )
}

/// The original file as a reader sees it: data leaves of the protected tree, or of the
/// original tree where decode put them.
async fn read_file(store: &MemoryStore, m: &Manifest) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..m.original_blocks_count() {
        let block = match store.get_leaf(&m.tree_cid, i).await {
            Ok((b, _)) => b,
            Err(CoreError::NotFound(_)) => store.get_leaf(&m.original_tree_cid(), i).await?.0,
            Err(e) => return Err(e.into()),
        };
        out.extend_from_slice(block.data());
    }
    out.truncate(m.original_size() as usize);
    Ok(out)
}

/// A store holding only leaves `keep` of the protected dataset (and its manifest), as a
/// node that lost the rest would.
async fn subset(
    full: &MemoryStore,
    m: &Manifest,
    keep: &BTreeSet<u64>,
) -> anyhow::Result<MemoryStore> {
    let part = store();
    part.put_block(Block::manifest(m.encode())).await?;
    for &i in keep {
        let (block, proof) = full.get_leaf(&m.tree_cid, i).await?;
        part.put_leaf(&m.tree_cid, i, block, proof).await?;
    }
    Ok(part)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encode_is_systematic_and_complete() -> anyhow::Result<()> {
    let s = store();
    let data = random(10 * 65536 - 17, 1);
    let plain = put_dataset(&s, &data, 65536).await?;
    let (cid, protected) = codex_erasure::encode(&s, &plain, 3, 2).await?;
    assert_eq!(cid, protected.cid());
    assert_eq!(
        Manifest::decode(s.get_block(&cid).await?.data())?,
        protected
    );
    let p = protected.protection.clone().expect("protected");
    assert_eq!((p.ec_k, p.ec_m), (3, 2));
    assert_eq!(p.original_tree_cid, plain.tree_cid);
    assert_eq!(p.original_dataset_size, data.len() as u64);
    // 10 blocks, K=3: rounded 12, steps 4, 20 blocks.
    assert_eq!(protected.blocks_count(), 20);
    assert_eq!(protected.dataset_size, 20 * 65536);
    for i in 0..20 {
        let (block, proof) = s.get_leaf(&protected.tree_cid, i).await?;
        assert!(
            proof.verify_cids(block.cid(), &protected.tree_cid),
            "leaf {i}"
        );
        if i == 10 || i == 11 {
            assert_eq!(*block.cid(), Cid::empty_block(), "padding leaf {i}");
        }
    }
    assert_eq!(read_file(&s, &protected).await?, data);
    assert!(s.check()?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_and_repair_through_losses() -> anyhow::Result<()> {
    let s = store();
    let data = random(23 * 65536 + 5, 2);
    let plain = put_dataset(&s, &data, 65536).await?;
    let (_, m) = codex_erasure::encode(&s, &plain, 4, 3).await?;
    let layout = Layout::new(plain.blocks_count(), 4, 3)?;
    // Lose data rows 0 and 2 and parity row 5 (3 = M whole slots).
    let lost: BTreeSet<u64> = [0usize, 2, 5]
        .iter()
        .flat_map(|&r| layout.slot(r))
        .collect();
    let keep: BTreeSet<u64> = (0..m.blocks_count())
        .filter(|i| !lost.contains(i))
        .collect();
    let part = subset(&s, &m, &keep).await?;
    let rebuilt = codex_erasure::decode(&part, &m).await?;
    let lost_data = lost
        .iter()
        .filter(|&&i| i < layout.rounded() && !layout.is_padding(i))
        .count() as u64;
    assert_eq!(rebuilt, lost_data, "the data blocks of rows 0 and 2");
    assert_eq!(read_file(&part, &m).await?, data);

    let part = subset(&s, &m, &keep).await?;
    let rebuilt = codex_erasure::repair(&part, &m, &[0, 2, 5]).await?;
    let lost_real = lost.iter().filter(|&&i| !layout.is_padding(i)).count() as u64;
    assert_eq!(rebuilt, lost_real);
    for i in 0..m.blocks_count() {
        let (a, _) = s.get_leaf(&m.tree_cid, i).await?;
        let (b, proof) = part.get_leaf(&m.tree_cid, i).await?;
        assert_eq!(a, b, "leaf {i} after repair");
        assert!(proof.verify_cids(b.cid(), &m.tree_cid));
    }
    assert!(part.check()?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_and_manifests_are_typed_errors() -> anyhow::Result<()> {
    let s = store();
    let plain = put_dataset(&s, &random(3 * 1024, 3), 1024).await?;
    assert!(matches!(
        codex_erasure::encode(&s, &plain, 0, 1).await,
        Err(Error::InvalidParams { k: 0, m: 1, .. })
    ));
    assert!(matches!(
        codex_erasure::encode(&s, &plain, 4, 1).await,
        Err(Error::TooFewBlocks { blocks: 3, k: 4 })
    ));
    assert!(matches!(
        codex_erasure::decode(&s, &plain).await,
        Err(Error::WrongManifest(_))
    ));
    let (_, m) = codex_erasure::encode(&s, &plain, 1, 3).await?;
    assert!(matches!(
        codex_erasure::encode(&s, &m, 1, 1).await,
        Err(Error::WrongManifest(_))
    ));
    assert!(matches!(
        codex_erasure::repair(&s, &m, &[4]).await,
        Err(Error::NoSuchSlot { slot: 4, slots: 4 })
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_encode_stores_nothing() -> anyhow::Result<()> {
    let quota = 40 * 1024;
    let s = MemoryStore::new(StoreConfig {
        quota_max_bytes: quota,
        ..StoreConfig::default()
    });
    let plain = put_dataset(&s, &random(20 * 1024, 4), 1024).await?;
    let before = s.space().await?;
    // 40 parity blocks of 1 KiB do not fit the 20 KiB left. (With K = 1 the parity
    // would equal the data and take no room.)
    let err = codex_erasure::encode(&s, &plain, 2, 4)
        .await
        .expect_err("quota");
    assert!(
        matches!(err, Error::Store(CoreError::QuotaExceeded { .. })),
        "{err}"
    );
    assert_eq!(s.space().await?, before);
    assert_eq!(s.manifests().await?.len(), 1);
    assert!(s.check()?.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Random sizes and parameters; random losses that leave at least K blocks in every
    /// column decode to the exact bytes; one loss more in a column is an error naming it;
    /// losing M whole slots and repairing them restores the identical tree.
    #[test]
    fn losses_up_to_m_per_column_are_survivable(len in 1usize..150_000, k in 1usize..8, m in 1usize..8, seed in any::<u64>()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
        rt.block_on(async {
            let bs = 1024;
            let data = random(len, seed);
            let blocks = len.div_ceil(bs) as u64;
            prop_assume!(blocks >= k as u64);
            let s = store();
            let plain = put_dataset(&s, &data, bs).await.expect("upload");
            let (_, man) = codex_erasure::encode(&s, &plain, k, m).await.expect("encode");
            let layout = Layout::new(blocks, k, m).expect("layout");
            let mut rng = StdRng::seed_from_u64(seed);

            // Per column keep a random K..=K+M of its rows.
            let mut keep = BTreeSet::new();
            let mut victim = None;
            for c in 0..layout.steps {
                let mut rows: Vec<usize> = (0..k + m).collect();
                rows.shuffle(&mut rng);
                let n = rng.random_range(k..=k + m);
                if victim.is_none() && n == k {
                    victim = Some(c);
                }
                keep.extend(rows[..n].iter().map(|&r| layout.index(r, c)));
            }
            let part = subset(&s, &man, &keep).await.expect("subset");
            codex_erasure::decode(&part, &man).await.expect("decode");
            prop_assert_eq!(read_file(&part, &man).await.expect("read"), data.clone());

            // One block fewer in some column than K: the error names that column.
            let column = victim.unwrap_or(0);
            let mut fewer: BTreeSet<u64> = keep.clone();
            let in_column: Vec<u64> = (0..k + m).map(|r| layout.index(r, column)).filter(|i| fewer.contains(i)).collect();
            for i in in_column.iter().skip(k - 1) {
                fewer.remove(i);
            }
            // Padding blocks are never missing; a column whose kept rows are padding can't lose them.
            let present = (0..k + m).map(|r| layout.index(r, column)).filter(|i| fewer.contains(i) || layout.is_padding(*i)).count();
            if present < k {
                let part = subset(&s, &man, &fewer).await.expect("subset");
                match codex_erasure::decode(&part, &man).await {
                    Err(Error::NotEnoughShards { column: c, present: p, needed }) => {
                        prop_assert_eq!((c, p, needed), (column, present, k));
                    }
                    other => prop_assert!(false, "expected NotEnoughShards, got {:?}", other),
                }
            }

            // Lose M random whole slots, repair them.
            let mut slots: Vec<usize> = (0..k + m).collect();
            slots.shuffle(&mut rng);
            let slots = &slots[..m];
            let keep: BTreeSet<u64> = (0..man.blocks_count())
                .filter(|i| !slots.iter().any(|&r| layout.slot(r).contains(i)))
                .collect();
            let part = subset(&s, &man, &keep).await.expect("subset");
            codex_erasure::repair(&part, &man, slots).await.expect("repair");
            for i in 0..man.blocks_count() {
                let a = s.get_leaf(&man.tree_cid, i).await.expect("original").0;
                let b = part.get_leaf(&man.tree_cid, i).await.expect("repaired").0;
                prop_assert_eq!(a, b);
            }
            Ok(())
        })?;
    }
}
