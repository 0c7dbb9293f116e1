//! Proof bytes from outside, as the generated Solidity verifier takes them: the
//! calldata is three 32-byte big-endian public inputs (`entropy, dataSetRoot,
//! slotIndex`), then the SHPLONK proof. Decoded here and verified by a real verifier
//! (5 samples, development SRS) set up once per process; its parameters and keys are
//! cached under fuzz/target/proof-keys.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use codex_proofs::{Fe, Prover, Srs};
use libfuzzer_sys::fuzz_target;

static PROVER: LazyLock<Prover> = LazyLock::new(|| {
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("proof-keys");
    Prover::new(&Srs::Development, 5, Some(&cache))
        .expect("set up the 5-sample verifier")
        .0
});

fn word(bytes: &[u8]) -> Option<Fe> {
    let mut le: [u8; 32] = bytes.try_into().ok()?;
    le.reverse();
    Fe::from_le_bytes(&le).ok()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 96 {
        return;
    }
    let (Some(entropy), Some(root), Some(slot)) =
        (word(&data[..32]), word(&data[32..64]), word(&data[64..96]))
    else {
        return;
    };
    let inputs = [entropy, root, slot];
    let proof = &data[96..];
    if PROVER.verify(&inputs, proof).is_ok() {
        // Only a proof of the seed's statement can verify: the same calldata again.
        assert_eq!(codex_proofs::prover::calldata(&inputs, proof), data);
    }
});
