//! Every vector of `shared/vectors/poseidon2.json` (Codex's nim-poseidon2 tests), for
//! both permutations.

use std::path::PathBuf;

use codex_proofs::poseidon2::{self, Plonky3, Rate};
use codex_proofs::{Fe, MerkleTree, compress, sponge};
use serde_json::Value;

fn vectors() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/poseidon2.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn dec(v: &Value) -> Fe {
    Fe::from_decimal(v.as_str().expect("string"), "vector").expect("decimal")
}

/// Big-endian hex (`0x...`) to an element.
fn hex(v: &Value) -> Fe {
    let s = v.as_str().expect("string").trim_start_matches("0x");
    let mut limbs = [0u64; 4];
    for (i, limb) in limbs.iter_mut().enumerate() {
        let end = s.len() - 16 * i;
        *limb = u64::from_str_radix(&s[end - 16..end], 16).expect("hex");
    }
    Fe::from_limbs(limbs).expect("canonical")
}

fn list(v: &Value) -> &Vec<Value> {
    v.as_array().expect("array")
}

#[test]
fn round_constants_match() {
    let v = vectors();
    let ext: Vec<Fe> = list(&v["round_constants"]["external_hex"])
        .iter()
        .map(hex)
        .collect();
    let int: Vec<Fe> = list(&v["round_constants"]["internal_hex"])
        .iter()
        .map(hex)
        .collect();
    assert_eq!(ext.len(), 24);
    assert_eq!(int.len(), 56);
    let ours: Vec<Fe> = poseidon2::external_constants()
        .iter()
        .flatten()
        .copied()
        .collect();
    assert_eq!(ours, ext);
    assert_eq!(poseidon2::internal_constants().to_vec(), int);
}

#[test]
fn permutation() {
    let v = vectors();
    let input: Vec<Fe> = list(&v["permutation"]["input"]).iter().map(dec).collect();
    let output: Vec<Fe> = list(&v["permutation"]["output"]).iter().map(dec).collect();
    let mut s = [input[0], input[1], input[2]];
    poseidon2::permute(&mut s);
    assert_eq!(s.to_vec(), output);
    let mut s = [input[0], input[1], input[2]];
    Plonky3::new().permute(&mut s);
    assert_eq!(s.to_vec(), output);
    // reference §4.1: perm(0,1,2)[0] in hex.
    assert_eq!(
        s[0],
        hex(&Value::from(
            "0x30610a447b7dec194697fb50786aa7421494bd64c221ba4d3b1af25fb07bd103"
        ))
    );
}

#[test]
fn sponges_over_1_to_n() {
    let v = vectors();
    for (key, rate) in [
        ("sponge_rate1_of_1_to_n", Rate::One),
        ("sponge_rate2_of_1_to_n", Rate::Two),
    ] {
        let from = v[key]["n_from"].as_u64().expect("n_from");
        for (i, d) in list(&v[key]["digests"]).iter().enumerate() {
            let n = from + i as u64;
            let xs: Vec<Fe> = (1..=n).map(Fe::from_u64).collect();
            assert_eq!(sponge(rate, &xs), dec(d), "{key} n={n}");
        }
    }
}

#[test]
fn merkle_roots_of_1_to_n() {
    let v = vectors();
    let key = "merkle_root_of_elements_1_to_n";
    let from = v[key]["n_from"].as_u64().expect("n_from");
    let roots = list(&v[key]["roots"]);
    assert!(!roots.is_empty());
    for (i, r) in roots.iter().enumerate() {
        let n = from + i as u64;
        let leaves: Vec<Fe> = (1..=n).map(Fe::from_u64).collect();
        let tree = MerkleTree::new(leaves.clone()).expect("tree");
        assert_eq!(tree.root(), dec(r), "n={n}");
        for (j, &leaf) in leaves.iter().enumerate() {
            assert!(
                tree.proof(j as u64)
                    .expect("proof")
                    .verify(leaf, tree.root())
            );
        }
    }
}

#[test]
fn keyed_compressions() {
    let v = vectors();
    let cases = list(&v["keyed_compress_hex"]);
    assert_eq!(cases.len(), 4);
    for c in cases {
        let key = c["key"].as_u64().expect("key");
        assert_eq!(
            compress(dec(&c["x"]), dec(&c["y"]), key),
            hex(&c["out"]),
            "{c}"
        );
    }
}

/// reference §9 byte-sequence Merkle roots (nim-poseidon2 `testMerkle.nim`): the keyed
/// tree over the bytes' field elements.
#[test]
fn byte_sequence_roots_from_reference() {
    let le = |s: &str| {
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        Fe::from_le_bytes(&bytes.try_into().expect("32")).expect("canonical")
    };
    let bytes: Vec<u8> = (1..=80).collect();
    let merkle_of_elements = |b: &[u8]| {
        let xs: Vec<Fe> = poseidon2::bytes_to_elements(b).collect();
        codex_proofs::merkle::merkle_root(&xs).expect("root")
    };
    let root = merkle_of_elements(&bytes);
    let empty = merkle_of_elements(&[]);
    assert_eq!(
        root,
        le("40989b63104f39e3331767883381085bcfc46e2202679123371f1ffe53521b16"),
        "bytes 1..80"
    );
    assert_eq!(
        empty,
        le("cc8da1d157900e611b89e258d95450e707f4f9eec169422d7c26aba54f803c08"),
        "empty bytes"
    );
}
