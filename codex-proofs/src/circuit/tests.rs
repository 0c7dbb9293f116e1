//! MockProver tests: each gadget against the native code (on Codex's vectors where there
//! are some), and the whole circuit on Codex's circuit fixture, accepted as is and
//! rejected with any part changed.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use halo2_proofs::circuit::{Layouter, SimpleFloorPlanner};
use halo2_proofs::dev::MockProver;
use halo2_proofs::plonk::{Circuit, ConstraintSystem, Error as PlonkError};
use halo2curves_axiom::bn256::Fr;
use halo2curves_axiom::ff::Field;

use super::chip::{In, Layout, StorageConfig, Var};
use super::*;
use crate::field::Fe;
use crate::merkle::{MerkleTree, reconstruct};
use crate::poseidon2::{compress, permute, sponge2};
use crate::sampler::ProofInput;

type Gadget =
    Arc<dyn Fn(&mut Layout<'_, '_>) -> std::result::Result<Vec<Var>, PlonkError> + Send + Sync>;

/// A circuit that lays out a gadget (arithmetic rows from row `.0`) and exposes its
/// outputs as public inputs.
#[derive(Clone)]
struct GadgetCircuit(usize, Gadget);

impl Circuit<Fr> for GadgetCircuit {
    type Config = StorageConfig;
    type FloorPlanner = SimpleFloorPlanner;
    type Params = ();

    fn without_witnesses(&self) -> Self {
        self.clone()
    }

    fn configure(meta: &mut ConstraintSystem<Fr>) -> StorageConfig {
        StorageConfig::configure(meta)
    }

    fn synthesize(
        &self,
        config: StorageConfig,
        mut layouter: impl Layouter<Fr>,
    ) -> std::result::Result<(), PlonkError> {
        let outs = layouter.assign_region(
            || "gadget",
            |mut region| {
                let mut l = Layout::new(&mut region, &config, self.0);
                (self.1)(&mut l)
            },
        )?;
        for (row, v) in outs.iter().enumerate() {
            layouter.constrain_instance(v.cell, config.instance, row);
        }
        Ok(())
    }
}

/// Whether the gadget's outputs equal `expected` under MockProver (with `2^k` rows, the
/// arithmetic rows in the upper half).
fn gadget_ok(k: u32, gadget: Gadget, expected: Vec<Fr>) -> bool {
    MockProver::run(k, &GadgetCircuit(1 << (k - 1), gadget), vec![expected])
        .unwrap()
        .verify()
        .is_ok()
}

fn fr(v: u64) -> Fr {
    Fr::from(v)
}

fn decimal(s: &str) -> Fr {
    Fe::from_decimal(s, "vector").unwrap().to_fr()
}

#[test]
fn permutation_matches_codex_vector() {
    // Perm(0, 1, 2), reference §C.7.
    let expected =
        ["21882471761025344482456282050943515707267606647948403374880378562101343146243"];
    let mut native = [Fe::from_u64(0), Fe::from_u64(1), Fe::from_u64(2)];
    permute(&mut native);
    assert_eq!(native[0].to_fr(), decimal(expected[0]));
    let g: Gadget = Arc::new(|l| {
        Ok(l.permute([In::New(fr(0)), In::New(fr(1)), In::New(fr(2))])?
            .to_vec())
    });
    let out = native.map(|e| e.to_fr()).to_vec();
    assert!(gadget_ok(8, g.clone(), out.clone()));
    let mut wrong = out;
    wrong[2] += Fr::ONE;
    assert!(!gadget_ok(8, g, wrong));
}

#[test]
fn cell_sponge_matches_native_and_codex_vectors() {
    // The rate-2 sponge over [1..n] (reference §C.7) for n = 1, 2, 7; and over a
    // 67-element cell as the circuit hashes it.
    let vectors = [
        (
            1,
            "5101758095924000127790537496504070769319625501671400349336709520206095219618",
        ),
        (
            2,
            "7306734450287348725566606192910189982345130476287345231433021147457815478255",
        ),
        (
            7,
            "11732533243633999579592740965735640217427639382365959787508754341969556105663",
        ),
    ];
    for (n, digest) in vectors {
        let elems: Vec<Fr> = (1..=n).map(fr).collect();
        let g: Gadget = Arc::new(move |l| {
            let iv =
                l.constant(crate::poseidon2::sponge_iv(crate::poseidon2::Rate::Two).to_fr())?;
            Ok(vec![cell_digest(l, &elems, iv)?])
        });
        assert!(gadget_ok(9, g.clone(), vec![decimal(digest)]), "n = {n}");
        assert!(!gadget_ok(9, g, vec![decimal(digest) + Fr::ONE]));
    }
    let cell: Vec<Fe> = (0..67u64)
        .map(|i| Fe::from_u64(i * 1_000_003 + 7))
        .collect();
    let native = sponge2(&cell).to_fr();
    let elems: Vec<Fr> = cell.iter().map(|e| e.to_fr()).collect();
    let g: Gadget = Arc::new(move |l| {
        let iv = l.constant(crate::poseidon2::sponge_iv(crate::poseidon2::Rate::Two).to_fr())?;
        Ok(vec![cell_digest(l, &elems, iv)?])
    });
    assert!(gadget_ok(12, g, vec![native]));
}

#[test]
fn keyed_compression_in_each_order_and_key() {
    let (x, y) = (Fe::from_u64(1234), Fe::from_u64(5678));
    for (bit, key) in [(0u64, 0u64), (1, 0), (0, 1), (1, 1), (0, 2), (0, 3)] {
        let native = if bit == 1 {
            compress(y, x, key)
        } else {
            compress(x, y, key)
        };
        let g: Gadget = Arc::new(move |l| {
            let node = l.witness(x.to_fr())?;
            let b = l.new_bool(bit == 1)?;
            let k = l.constant(fr(key))?;
            Ok(vec![level(l, node, y.to_fr(), b, k)?])
        });
        assert!(
            gadget_ok(8, g.clone(), vec![native.to_fr()]),
            "bit {bit} key {key}"
        );
        assert!(!gadget_ok(8, g, vec![native.to_fr() + Fr::ONE]));
    }
}

/// The tree-path gadget against native `reconstruct` for a tree of `leaves` leaves (up to
/// 2^levels) and every index, with the depth chosen by bit masks as the circuit does for
/// the dataset tree.
fn check_tree(levels: usize, leaves: u64) {
    let digests: Vec<Fe> = (0..leaves).map(|i| Fe::from_u64(i * 7 + 3)).collect();
    let tree = MerkleTree::new(digests.clone()).unwrap();
    let depth = crate::merkle::depth(leaves);
    for index in 0..leaves {
        let mut path = tree.proof(index).unwrap().path;
        assert_eq!(
            reconstruct(index, leaves, digests[index as usize], &path),
            tree.root()
        );
        path.resize(levels, Fe::ZERO);
        let path: Vec<Fr> = path.iter().map(|e| e.to_fr()).collect();
        let leaf = digests[index as usize].to_fr();
        let last = leaves - 1;
        let g: Gadget = Arc::new(move |l| {
            let zero = l.constant(Fr::ZERO)?;
            let one = l.constant(Fr::ONE)?;
            let bits: Vec<Var> = (0..levels)
                .map(|i| l.new_bool((index >> i) & 1 == 1))
                .collect::<Result<_, _>>()?;
            let last_bits: Vec<Var> = (0..levels)
                .map(|i| l.new_bool((last >> i) & 1 == 1))
                .collect::<Result<_, _>>()?;
            let mut active = vec![zero; levels + 1];
            active[0] = one;
            for a in active.iter_mut().take(depth).skip(1) {
                *a = one;
            }
            let leaf = l.witness(leaf)?;
            Ok(vec![tree_path(l, leaf, &path, &bits, &last_bits, &active)?])
        });
        assert!(
            gadget_ok(12, g.clone(), vec![tree.root().to_fr()]),
            "{leaves} leaves, index {index}"
        );
        assert!(!gadget_ok(12, g, vec![tree.root().to_fr() + Fr::ONE]));
    }
}

#[test]
fn tree_paths_match_native_trees() {
    for leaves in [1, 2, 3, 5, 8, 11] {
        check_tree(4, leaves);
    }
}

#[test]
fn canonical_decomposition_rejects_the_other_one() {
    // h = 5: its canonical bits pass; the bits of h + r (also < 2^254, and equal to h
    // in the field) would let a prover pick other low bits, and are rejected.
    let h = fr(5);
    let r_plus_5: Vec<bool> = {
        let mut limbs = crate::field::MODULUS;
        let (v, carry) = limbs[0].overflowing_add(5);
        limbs[0] = v;
        assert!(!carry);
        (0..254)
            .map(|i| (limbs[i / 64] >> (i % 64)) & 1 == 1)
            .collect()
    };
    let canonical: Gadget = Arc::new(move |l| {
        let zero = l.constant(Fr::ZERO)?;
        let one = l.constant(Fr::ONE)?;
        let v = l.witness(h)?;
        let low = canonical_low_bits(l, v, zero, one)?;
        Ok(low[..3].to_vec())
    });
    assert!(gadget_ok(11, canonical, vec![fr(1), fr(0), fr(1)]));
    let bits = r_plus_5.clone();
    let other: Gadget = Arc::new(move |l| {
        let zero = l.constant(Fr::ZERO)?;
        let one = l.constant(Fr::ONE)?;
        let v = l.witness(h)?;
        let bits = bits.clone();
        let low = decompose(l, v, zero, one, &move |i| bits[i])?;
        Ok(low[..3].to_vec())
    });
    let low: Vec<Fr> = r_plus_5[..3].iter().map(|&b| fr(u64::from(b))).collect();
    assert!(!gadget_ok(11, other, low));
    // The field modulus itself (which is 0 in the field) is not canonical either.
    let r_bits: Vec<bool> = (0..254).map(modulus_bit).collect();
    let modulus: Gadget = Arc::new(move |l| {
        let zero = l.constant(Fr::ZERO)?;
        let one = l.constant(Fr::ONE)?;
        let v = l.witness(Fr::ZERO)?;
        let bits = r_bits.clone();
        let low = decompose(l, v, zero, one, &move |i| bits[i])?;
        Ok(low[..1].to_vec())
    });
    assert!(!gadget_ok(11, modulus, vec![fr(1)]));
}

fn fixture() -> ProofInput {
    ProofInput::from_json(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/codex_input.json"
    )))
    .unwrap()
}

fn mock(input: &ProofInput, publics: Vec<Fr>) -> bool {
    let circuit = StorageCircuit::new(input).unwrap();
    let k = StorageCircuit::k_for(input.samples.len());
    MockProver::run(k, &circuit, vec![publics])
        .unwrap()
        .verify()
        .is_ok()
}

#[test]
fn whole_circuit_accepts_codex_fixture_and_rejects_every_change() {
    let input = fixture();
    assert_eq!(input.check().unwrap(), [287, 21, 307, 157, 508]);
    let publics = StorageCircuit::new(&input).unwrap().public_inputs();
    assert_eq!(StorageCircuit::k_for(5), 15);
    assert!(mock(&input, publics.clone()));

    // Public inputs: entropy, dataset root, slot index.
    for i in 0..3 {
        let mut p = publics.clone();
        p[i] += Fr::ONE;
        assert!(!mock(&input, p), "public input {i} changed");
    }
    // Private values: a cell element, a path element, the slot root, a slot-proof entry.
    let mut bad = input.clone();
    bad.samples[2].cell_data[40] += Fe::ONE;
    assert!(!mock(&bad, publics.clone()), "cell changed");
    let mut bad = input.clone();
    bad.samples[4].merkle_paths[7] += Fe::ONE;
    assert!(!mock(&bad, publics.clone()), "path element changed");
    let mut bad = input.clone();
    bad.slot_root += Fe::ONE;
    assert!(!mock(&bad, publics.clone()), "slot root changed");
    let mut bad = input.clone();
    bad.slot_proof[1] += Fe::ONE;
    assert!(!mock(&bad, publics.clone()), "slot proof changed");
    // Claiming another slot size or count changes the trees' shapes.
    let mut bad = input.clone();
    bad.n_cells_per_slot *= 2;
    assert!(!mock(&bad, publics.clone()), "cells per slot changed");
    let mut bad = input.clone();
    bad.n_slots_per_data_set = 4;
    assert!(bad.check().is_err());
    assert!(!mock(&bad, publics.clone()), "slot count changed");
    // Slot 3's path in a tree of 12 slots has the same keys as in one of 11: the
    // native check and the circuit both accept it.
    let mut same = input;
    same.n_slots_per_data_set = 12;
    assert!(same.check().is_ok());
    assert!(mock(&same, publics));
}

#[test]
fn one_sample_rows_fit_k() {
    // The arithmetic rows stay below the Poseidon2 rows for which k is computed.
    let input = {
        let mut i = fixture();
        i.samples.truncate(1);
        i
    };
    let publics = StorageCircuit::new(&input).unwrap().public_inputs();
    assert!(mock(&input, publics));
}
