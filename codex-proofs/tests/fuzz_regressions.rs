//! Inputs the fuzz targets in `fuzz/` found in the circuit-input parser and the proof
//! verifier (none so far), and the writer of the `proof_input_json` and `proof_verify`
//! seed corpora.

use std::fs;
use std::path::PathBuf;

use codex_proofs::{ProofInput, Prover, Srs};

const FIXTURE: &str = include_str!("fixtures/codex_input.json");

/// Writes the seed corpora of the `proof_input_json` and `proof_verify` fuzz targets
/// (`fuzz/corpus/<target>/`): Codex's fixture, our writers' JSON of it, and the calldata
/// (public inputs, then the proof) of a real 5-sample proof of it. Run after a format
/// change: `cargo test -p codex-proofs --test fuzz_regressions -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus and proves (a few seconds); run by hand"]
fn write_fuzz_seeds() -> anyhow::Result<()> {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let json_dir = corpus.join("proof_input_json");
    let proof_dir = corpus.join("proof_verify");
    fs::create_dir_all(&json_dir)?;
    fs::create_dir_all(&proof_dir)?;
    let input = ProofInput::from_json(FIXTURE)?;
    fs::write(json_dir.join("codex_fixture.json"), FIXTURE)?;
    fs::write(json_dir.join("to_json.json"), input.to_json())?;
    fs::write(
        json_dir.join("to_json_value.json"),
        serde_json::to_string(&input.to_json_value())?,
    )?;
    // One sample: the smallest input of the fixture's shape.
    let mut one = input.clone();
    one.samples.truncate(1);
    fs::write(json_dir.join("one_sample.json"), one.to_json())?;

    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("proof-keys");
    let (prover, _) = Prover::new(&Srs::Development, 5, Some(&cache))?;
    let proof = prover.prove(&input)?;
    prover.verify(&proof.public_inputs, &proof.bytes)?;
    fs::write(proof_dir.join("fixture_proof"), proof.calldata())?;
    Ok(())
}
