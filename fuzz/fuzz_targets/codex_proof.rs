//! `CodexProof`s from outside (block-exchange deliveries, the store's leaf metadata):
//! decode, verify against a leaf and a root taken from the input, and round-trip.
#![no_main]

use codex_core::CodexProof;
use codex_core::cid::sha256;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(proof) = CodexProof::decode(data) else {
        return;
    };
    let leaf = sha256(data);
    let root = sha256(&leaf);
    if let Ok(r) = proof.reconstruct_root(&leaf) {
        assert!(proof.verify(&leaf, &r));
    }
    let _ = proof.verify(&leaf, &root);
    let again = CodexProof::decode(&proof.encode()).expect("an encoded proof decodes");
    assert_eq!(again, proof, "round trip");
});
