//! Real proofs: prove Codex's circuit fixture (5 samples) with development parameters,
//! verify it natively and in an EVM with the generated Solidity verifier compiled by the
//! project's pinned solc, and reject tampered proofs and wrong public inputs.

use std::path::PathBuf;
use std::time::Instant;

use codex_proofs::prover::{calldata, compile_verifier, evm_call};
use codex_proofs::{Error, Fe, ProofInput, Prover, Srs};

fn cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("proof-keys")
}

fn fixture() -> anyhow::Result<ProofInput> {
    Ok(ProofInput::from_json(include_str!(
        "fixtures/codex_input.json"
    ))?)
}

#[test]
fn prove_verify_and_verify_on_evm() -> anyhow::Result<()> {
    let input = fixture()?;
    let (prover, setup) = Prover::new(&Srs::Development, 5, Some(&cache()))?;
    println!(
        "setup: params {:?}, keys {:?} (cached: {})",
        setup.params, setup.keys, setup.cached
    );
    assert_eq!(prover.k(), 15);

    let t = Instant::now();
    let proof = prover.prove(&input)?;
    println!("prove: {:?}, {} bytes", t.elapsed(), proof.bytes.len());
    assert_eq!(proof.public_inputs, input.public_inputs());
    let t = Instant::now();
    prover.verify(&proof.public_inputs, &proof.bytes)?;
    println!("verify: {:?}", t.elapsed());

    // Tampered proof bytes, and each public input changed: rejected.
    let mut tampered = proof.bytes.clone();
    tampered[100] ^= 1;
    assert!(matches!(
        prover.verify(&proof.public_inputs, &tampered),
        Err(Error::InvalidProof)
    ));
    assert!(matches!(
        prover.verify(&proof.public_inputs, &proof.bytes[..proof.bytes.len() - 32]),
        Err(Error::InvalidProof)
    ));
    for i in 0..3 {
        let mut wrong = proof.public_inputs;
        wrong[i] += Fe::ONE;
        assert!(
            matches!(
                prover.verify(&wrong, &proof.bytes),
                Err(Error::InvalidProof)
            ),
            "input {i}"
        );
    }

    // The EVM verifier: accepts the proof, rejects the same changes.
    let source = prover.solidity_verifier();
    assert!(source.contains("pragma solidity 0.8.19"));
    let bytecode = compile_verifier(&source, Some(&cache()))?;
    let gas = evm_call(&bytecode, proof.calldata())?;
    println!(
        "EVM verification: {gas} gas, verifier {} bytes",
        bytecode.len()
    );
    assert!(gas < 600_000, "{gas} gas");
    assert!(matches!(
        evm_call(&bytecode, calldata(&proof.public_inputs, &tampered)),
        Err(Error::EvmRejected(_))
    ));
    for i in 0..3 {
        let mut wrong = proof.public_inputs;
        wrong[i] += Fe::ONE;
        assert!(
            matches!(
                evm_call(&bytecode, calldata(&wrong, &proof.bytes)),
                Err(Error::EvmRejected(_))
            ),
            "input {i}"
        );
    }
    Ok(())
}

#[test]
fn prove_rejects_bad_inputs_with_typed_errors() -> anyhow::Result<()> {
    let (prover, _) = Prover::new(&Srs::Development, 5, Some(&cache()))?;
    let mut input = fixture()?;
    input.samples[1].cell_data[0] += Fe::ONE;
    assert!(matches!(
        prover.prove(&input),
        Err(Error::CellPath { sample: 1, .. })
    ));
    let mut input = fixture()?;
    input.samples.truncate(4);
    assert!(matches!(
        prover.prove(&input),
        Err(Error::SampleCount {
            found: 4,
            expected: 5
        })
    ));
    Ok(())
}
