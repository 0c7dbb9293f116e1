//! The slot builder over a protected dataset in a `MemoryStore`, and the sampler on it.

use std::collections::HashMap;

use bytes::Bytes;
use codex_core::prelude::*;
use codex_core::{
    Block, Cid, LeafMeta, Manifest, MerkleTree as ShaTree, Protection, StrategyType, codec,
};
use codex_proofs::merkle::MerkleProof;
use codex_proofs::poseidon2::bytes_to_elements;
use codex_proofs::sampler::cell_indices;
use codex_proofs::slot::{SlotGeometry, block_digest, cell_cid, cid_element, zero_block_digest};
use codex_proofs::{Error, Fe, ProofInput, Slots, build_verifiable};
use codex_store::{MemoryStore, StoreConfig};
use rand::{RngCore, SeedableRng, rngs::StdRng};

const BS: usize = 65536;
/// 7 original blocks, K=3, M=2: rounded 9, steps 3, 15 blocks; blocks 7 and 8 are
/// padding (empty CID); each slot has 3 blocks = 96 cells, padded to 128 (1 zero block).
const ORIGINAL: usize = 7;
const K: u32 = 3;
const M: u32 = 2;
const TOTAL: usize = 15;

/// A protected dataset (parity rows are random bytes: the slot builder does not care)
/// stored as erasure coding stores it; returns the manifest and the blocks by index
/// (`None` for padding).
async fn protected_dataset(store: &MemoryStore) -> (Manifest, Vec<Option<Bytes>>) {
    let mut rng = StdRng::seed_from_u64(7);
    let data: Vec<Option<Bytes>> = (0..TOTAL)
        .map(|i| {
            if (ORIGINAL..9).contains(&i) {
                None
            } else {
                let mut b = vec![0u8; BS];
                rng.fill_bytes(&mut b);
                Some(Bytes::from(b))
            }
        })
        .collect();
    let blocks: Vec<Block> = data
        .iter()
        .map(|d| match d {
            Some(b) => Block::new(b.clone()),
            None => Block::new(Bytes::new()),
        })
        .collect();
    let cids: Vec<Cid> = blocks.iter().map(|b| *b.cid()).collect();
    assert_eq!(cids[7], Cid::empty_block());
    let tree = ShaTree::from_cids(&cids).expect("tree");
    let original = ShaTree::from_cids(&cids[..ORIGINAL]).expect("original tree");
    let s = store.begin().await.expect("begin");
    store.session_put_blocks(s, blocks).await.expect("blocks");
    let leaves = (0..TOTAL as u64)
        .map(|i| LeafMeta {
            index: i,
            block_cid: cids[i as usize],
            proof: tree.proof(i).expect("proof"),
        })
        .collect();
    store
        .session_put_leaves(s, &tree.root_cid(), leaves)
        .await
        .expect("leaves");
    let mut m = Manifest::new(tree.root_cid(), BS as u32, (TOTAL * BS) as u64);
    m.protection = Some(Protection {
        ec_k: K,
        ec_m: M,
        original_tree_cid: original.root_cid(),
        original_dataset_size: (ORIGINAL * BS - 100) as u64,
        strategy: StrategyType::Stepped,
        verification: None,
    });
    m.validate().expect("valid protected manifest");
    store
        .commit(s, Some(Block::manifest(m.encode())))
        .await
        .expect("commit");
    (m, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_verifiable_manifest_with_padding() {
    let store = MemoryStore::new(StoreConfig::default());
    let (manifest, data) = protected_dataset(&store).await;
    let geometry = SlotGeometry::new(&manifest).expect("geometry");
    assert_eq!(
        geometry,
        SlotGeometry {
            num_slots: 5,
            slot_blocks: 3,
            pad_blocks: 1,
            block_size: BS as u32
        }
    );
    assert_eq!(geometry.cells_per_slot(), 128);
    assert_eq!(geometry.slot_bytes(), 4 * BS as u64);

    let (cid, verifiable, slots) = build_verifiable(&store, &manifest).await.expect("build");
    // The manifest is stored, decodes and names the roots.
    let stored =
        Manifest::decode(store.get_block(&cid).await.expect("stored").data()).expect("decode");
    assert_eq!(stored, verifiable);
    assert_eq!(cid, verifiable.cid());
    let v = verifiable
        .protection
        .as_ref()
        .and_then(|p| p.verification.clone())
        .expect("verification");
    assert_eq!(v.cell_size, 2048);
    assert_eq!(v.strategy, StrategyType::Linear);
    assert_eq!(v.slot_roots.len(), 5);
    assert_eq!(v.verify_root.codec(), codec::PROVING_ROOT);
    assert_eq!(v.verify_root.hash_code(), codec::IDENTITY);
    assert_eq!(
        cid_element(&v.verify_root).expect("root"),
        slots.verify_root()
    );

    // Independent recomputation: slot i is blocks 3i..3i+3, then one zero block.
    let zero = zero_block_digest(BS).expect("zero");
    assert_eq!(zero, block_digest(&vec![0u8; BS]).expect("zero digest"));
    for (i, slot) in slots.slots().iter().enumerate() {
        let expected: Vec<Fe> = (0..3)
            .map(|j| match &data[3 * i + j] {
                Some(b) => block_digest(b).expect("digest"),
                None => zero,
            })
            .chain([zero])
            .collect();
        assert_eq!(slot.tree().leaves(), expected.as_slice(), "slot {i}");
        assert_eq!(slot.blocks(), 3);
        assert_eq!(slot.cells(), 128);
        assert_eq!(v.slot_roots[i].codec(), codec::SLOT_ROOT);
        assert_eq!(
            cid_element(&v.slot_roots[i]).expect("slot root"),
            slot.root()
        );
        // Every leaf as Codex stores it verifies against the slot root.
        let metas = slot.leaf_metas();
        assert_eq!(metas.len(), 4);
        for meta in metas {
            assert_eq!(meta.block_cid.codec(), codec::SLOT_CELL);
            assert_eq!(meta.block_cid.hash_code(), codec::POSEIDON2_MERKLE_2KB);
            assert_eq!(meta.proof.mcodec, codec::IDENTITY);
            let leaf = cid_element(&meta.block_cid).expect("leaf");
            assert_eq!(Some(meta.block_cid), cell_cid(leaf));
            let proof = MerkleProof::from_codex(&meta.proof).expect("proof");
            assert!(
                proof.verify(leaf, slot.root()),
                "slot {i} leaf {}",
                meta.index
            );
            assert!(!proof.verify(leaf + Fe::ONE, slot.root()));
        }
        // The verify tree proof of each slot.
        let proof = slots.slot_proof(i as u64).expect("slot proof");
        assert!(proof.verify(slot.root(), slots.verify_root()));
    }
    // Slot 2 holds the two padding blocks (7, 8).
    assert_eq!(&slots.slots()[2].tree().leaves()[1..], &[zero, zero, zero]);

    // The synchronous builder over the same blocks gives the same trees, in any batch size
    // and on a one-thread pool.
    let by_index: HashMap<u64, Option<Bytes>> = data
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u64, d.clone()))
        .collect();
    let read = |idx: &[u64]| Ok(idx.iter().map(|i| by_index[i].clone()).collect());
    for batch in [1, 2, 64] {
        assert_eq!(Slots::build(&manifest, batch, read).expect("sync"), slots);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let one = pool
        .install(|| Slots::build(&manifest, 2, read))
        .expect("one thread");
    assert_eq!(one, slots);
    // A wrong-sized block is reported with its index.
    let short = |idx: &[u64]| {
        Ok(idx
            .iter()
            .map(|&i| {
                if i == 4 {
                    Some(Bytes::from(vec![1u8; 100]))
                } else {
                    by_index[&i].clone()
                }
            })
            .collect())
    };
    assert!(matches!(
        Slots::build(&manifest, 2, short),
        Err(Error::BlockLength {
            index: 4,
            len: 100,
            expected: BS
        })
    ));
    // A plain manifest has no slots.
    let plain = Manifest::new(manifest.tree_cid, BS as u32, (TOTAL * BS) as u64);
    assert!(matches!(
        SlotGeometry::new(&plain),
        Err(Error::NotProtected)
    ));

    sampler_on_built_slots(&slots, &data);
}

/// Builds a proof input for slot 2 (which has padding), round-trips it through JSON,
/// checks it, and makes sure every tampering is caught.
fn sampler_on_built_slots(slots: &Slots, data: &[Option<Bytes>]) {
    let slot_index = 2u64;
    let slot = &slots.slots()[slot_index as usize];
    let entropy = codex_proofs::entropy_from_challenge(&[0xAB; 32]);
    assert_eq!(entropy.to_le_bytes()[31], 0, "only 31 bytes of entropy");
    let read = |b: u64| Ok(data[(3 * slot_index + b) as usize].clone());
    let n = 12;
    let input =
        ProofInput::new(entropy, &slots.slot_roots(), slot_index, slot, n, read).expect("input");
    assert_eq!(input.n_cells_per_slot, 128);
    assert_eq!(input.n_slots_per_data_set, 5);
    assert_eq!(input.data_set_root, slots.verify_root());
    let json = input.to_json();
    let parsed = ProofInput::from_json(&json).expect("parse");
    assert_eq!(parsed, input);
    let indices = input.check().expect("check");
    assert_eq!(
        indices,
        cell_indices(entropy, slot.root(), 128, n).expect("indices")
    );
    assert!(indices.iter().all(|&i| i < 128));

    // A changed byte of a sampled cell.
    for k in 0..n {
        let idx = indices[k];
        let (blk, cell) = (idx / 32, (idx % 32) as usize);
        let mut bytes = match data.get((3 * slot_index + blk) as usize).cloned().flatten() {
            Some(b) if blk < 3 => b.to_vec(),
            _ => vec![0u8; BS],
        };
        bytes[cell * 2048 + (k * 97) % 2048] ^= 0x10;
        let mut bad = input.clone();
        bad.samples[k].cell_data =
            bytes_to_elements(&bytes[cell * 2048..(cell + 1) * 2048]).collect();
        assert!(
            matches!(bad.check(), Err(Error::CellPath { sample, cell_index }) if sample == k && cell_index == idx),
            "byte of sample {k}"
        );
    }
    // Every real path element of every sample (5 block levels + 2 slot levels).
    for k in 0..n {
        for j in 0..7 {
            let mut bad = input.clone();
            bad.samples[k].merkle_paths[j] += Fe::ONE;
            assert!(
                matches!(bad.check(), Err(Error::CellPath { sample, .. }) if sample == k),
                "sample {k} path {j}"
            );
        }
        let mut bad = input.clone();
        bad.samples[k].merkle_paths[20] = Fe::ONE;
        assert!(
            matches!(bad.check(), Err(Error::NonZeroPadding { field }) if field == format!("merklePaths[{k}][20]"))
        );
    }
    // Entropy.
    let mut bad = input.clone();
    bad.entropy += Fe::ONE;
    assert!(matches!(bad.check(), Err(Error::CellPath { .. })));
    // Roots and the slot proof.
    let mut bad = input.clone();
    bad.slot_root += Fe::ONE;
    assert!(matches!(
        bad.check(),
        Err(Error::SlotProof { slot_index: 2 })
    ));
    let mut bad = input.clone();
    bad.data_set_root += Fe::ONE;
    assert!(matches!(bad.check(), Err(Error::SlotProof { .. })));
    for j in 0..3 {
        let mut bad = input.clone();
        bad.slot_proof[j] += Fe::ONE;
        assert!(
            matches!(bad.check(), Err(Error::SlotProof { .. })),
            "slotProof[{j}]"
        );
    }
    let mut bad = input.clone();
    bad.slot_proof[5] = Fe::ONE;
    assert!(matches!(bad.check(), Err(Error::NonZeroPadding { .. })));
    let mut bad = input.clone();
    bad.slot_index = 1;
    assert!(matches!(
        bad.check(),
        Err(Error::SlotProof { slot_index: 1 })
    ));
    let mut bad = input.clone();
    bad.slot_index = 5;
    assert!(matches!(
        bad.check(),
        Err(Error::SlotIndex { index: 5, slots: 5 })
    ));
    let mut bad = input.clone();
    bad.n_cells_per_slot = 96;
    assert!(matches!(
        bad.check(),
        Err(Error::CellsPerSlot { cells: 96, .. })
    ));
    let mut bad = input.clone();
    bad.samples[3].cell_data.pop();
    assert!(matches!(
        bad.check(),
        Err(Error::WrongLength {
            expected: 67,
            found: 66,
            ..
        })
    ));

    // The wrong slot tree for the roots.
    let other = &slots.slots()[1];
    let read = |b: u64| Ok(data[(3 + b) as usize].clone());
    assert!(matches!(
        ProofInput::new(entropy, &slots.slot_roots(), slot_index, other, 5, read),
        Err(Error::SlotRootMismatch { slot_index: 2, .. })
    ));
}

#[test]
fn parser_rejects_malformed_input() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/codex_input.json");
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    let r = "21888242871839275222246405745257275088548364400416034343698204186575808495617";
    type Case = (Box<dyn Fn(&mut serde_json::Value)>, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        (
            Box::new(|v| {
                v.as_object_mut().expect("obj").remove("entropy");
            }),
            |e| matches!(e, Error::MissingField { field: "entropy" }),
        ),
        (
            Box::new(|v| {
                v.as_object_mut().expect("obj").remove("merklePaths");
            }),
            |e| {
                matches!(
                    e,
                    Error::MissingField {
                        field: "merklePaths"
                    }
                )
            },
        ),
        (
            Box::new(|v| v["slotProof"].as_array_mut().expect("arr").truncate(7)),
            |e| {
                matches!(
                    e,
                    Error::WrongLength {
                        expected: 8,
                        found: 7,
                        ..
                    }
                )
            },
        ),
        (
            Box::new(|v| {
                v["cellData"][2]
                    .as_array_mut()
                    .expect("arr")
                    .push("1".into())
            }),
            |e| matches!(e, Error::WrongLength { field, expected: 67, found: 68 } if field == "cellData[2]"),
        ),
        (
            Box::new(|v| {
                v["merklePaths"][4]
                    .as_array_mut()
                    .expect("arr")
                    .truncate(31)
            }),
            |e| matches!(e, Error::WrongLength { field, expected: 32, found: 31 } if field == "merklePaths[4]"),
        ),
        (
            Box::new(|v| v["merklePaths"].as_array_mut().expect("arr").truncate(4)),
            |e| {
                matches!(
                    e,
                    Error::WrongLength {
                        expected: 5,
                        found: 4,
                        ..
                    }
                )
            },
        ),
        (Box::new(|v| v["cellData"] = serde_json::json!([])), |e| {
            matches!(e, Error::WrongLength { found: 0, .. })
        }),
        (
            Box::new(|v| v["entropy"] = "12a".into()),
            |e| matches!(e, Error::InvalidDecimal { field } if field == "entropy"),
        ),
        (
            Box::new(|v| v["cellData"][1][5] = "-3".into()),
            |e| matches!(e, Error::InvalidDecimal { field } if field == "cellData[1][5]"),
        ),
        (
            Box::new(move |v| v["slotRoot"] = r.into()),
            |e| matches!(e, Error::OutOfRange { field } if field == "slotRoot"),
        ),
        (
            Box::new(move |v| v["merklePaths"][0][3] = r.into()),
            |e| matches!(e, Error::OutOfRange { field } if field == "merklePaths[0][3]"),
        ),
        (
            Box::new(|v| v["slotIndex"] = "18446744073709551616".into()),
            |e| matches!(e, Error::OutOfRange { field } if field == "slotIndex"),
        ),
        (
            Box::new(|v| v["nCellsPerSlot"] = serde_json::json!(1.5)),
            |e| matches!(e, Error::InvalidDecimal { .. }),
        ),
        (
            Box::new(|v| v["slotProof"] = serde_json::json!({})),
            |e| matches!(e, Error::WrongType { field, .. } if field == "slotProof"),
        ),
        (
            Box::new(|v| v["dataSetRoot"] = serde_json::json!(null)),
            |e| matches!(e, Error::WrongType { .. }),
        ),
    ];
    for (i, (mutate, expected)) in cases.iter().enumerate() {
        let mut v = good.clone();
        mutate(&mut v);
        let text = v.to_string();
        match ProofInput::from_json(&text) {
            Err(e) => assert!(expected(&e), "case {i}: {e:?}"),
            Ok(_) => panic!("case {i} parsed"),
        }
    }
    assert!(matches!(ProofInput::from_json("{"), Err(Error::Json(_))));
    assert!(matches!(
        ProofInput::from_json("[]"),
        Err(Error::WrongType { .. })
    ));
    // Decimal strings and numbers are both accepted for counts.
    let mut v = good.clone();
    v["nCellsPerSlot"] = "512".into();
    v["entropy"] = serde_json::json!(1234567);
    let parsed = ProofInput::from_json(&v.to_string()).expect("lenient");
    assert_eq!(
        parsed,
        ProofInput::from_json(&good.to_string()).expect("good")
    );
}
