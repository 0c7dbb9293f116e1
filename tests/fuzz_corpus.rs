//! Every committed input of the fuzz targets' corpora (`fuzz/corpus/<target>/`: real
//! encodings, Codex's fixtures, and the inputs that once crashed a decoder) run through
//! the targets' own code (`fuzz/src/lib.rs`, included here), in the test suite's
//! ordinary build. Fuzzing itself (libFuzzer, AddressSanitizer) is `scripts/fuzz.sh`.

use std::fs;
use std::path::{Path, PathBuf};

use codex_proofs::{Prover, Srs};

#[path = "../fuzz/src/lib.rs"]
mod targets;

/// The files of `fuzz/corpus/<target>/`, with their bytes; at least one.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seeds", dir.display());
    files
}

/// Runs `f` on every seed of `target`, naming the seed that panics.
fn replay(target: &str, f: impl Fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&bytes)));
        assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
    }
}

/// A test per target that replays its corpus through the target's function of the
/// same name.
macro_rules! replay_tests {
    ($($target:ident),*) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target), targets::$target);
            }
        )*
    };
}

replay_tests!(
    cid,
    manifest,
    codex_proof,
    blockexc_message,
    blockexc_frame,
    proof_input_json,
    rest_params
);

/// The seeds through a real 5-sample verifier: at least one (the calldata of a proof of
/// Codex's fixture) verifies, and none that verifies does so with a bit of its proof
/// flipped.
#[test]
fn proof_verify() {
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("proof-keys");
    let (prover, _) = Prover::new(&Srs::Development, 5, Some(&cache)).expect("5-sample verifier");
    let mut verified = 0;
    for (path, bytes) in corpus("proof_verify") {
        if targets::proof_verify(&prover, &bytes) {
            verified += 1;
            let mut flipped = bytes.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert!(
                !targets::proof_verify(&prover, &flipped),
                "{} verifies with a bit flipped",
                path.display()
            );
        }
    }
    assert!(verified >= 1, "no seed of proof_verify verified");
}
