//! Proof bytes from outside, as the generated Solidity verifier takes them: see
//! `codex_fuzz::proof_verify`. The verifier (5 samples, development SRS) is set up once
//! per process; its parameters and keys are cached under fuzz/target/proof-keys.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use codex_proofs::{Prover, Srs};
use libfuzzer_sys::fuzz_target;

static PROVER: LazyLock<Prover> = LazyLock::new(|| {
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("proof-keys");
    Prover::new(&Srs::Development, 5, Some(&cache))
        .expect("set up the 5-sample verifier")
        .0
});

fuzz_target!(|data: &[u8]| {
    codex_fuzz::proof_verify(&PROVER, data);
});
