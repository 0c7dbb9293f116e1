//! Storage proofs end to end: setup, prove and verify times, proof size and the gas of
//! the on-chain (EVM) verification, for 5 and 100 samples (or the sample counts given as
//! arguments). A bench binary, not criterion: one proof of 100 samples takes tens of
//! seconds. Development KZG parameters and keys are cached in `target/proof-bench-cache`.
//!
//! `cargo bench -p codex-proofs --bench prove [-- 5 100]`

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use codex_proofs::prover::{compile_verifier, evm_call};
use codex_proofs::slot::{SlotGeometry, Slots};
use codex_proofs::{Fe, ProofInput, Prover, Srs};
use rand::{RngCore, SeedableRng, rngs::StdRng};

const BS: usize = 65536;
const SLOTS: u64 = 4;
const SLOT_BLOCKS: u64 = 16;

fn block(slot: u64, b: u64) -> Bytes {
    let mut data = vec![0u8; BS];
    StdRng::seed_from_u64(slot * 1000 + b).fill_bytes(&mut data);
    Bytes::from(data)
}

/// A proof input of `samples` samples over a 4-slot dataset of 1 MiB slots.
fn input(samples: usize) -> anyhow::Result<ProofInput> {
    let geometry = SlotGeometry {
        num_slots: SLOTS,
        slot_blocks: SLOT_BLOCKS,
        pad_blocks: 0,
        block_size: BS as u32,
    };
    let slots = Slots::from_blocks(geometry, block)?;
    let index = 2;
    Ok(ProofInput::new(
        Fe::from_u64(0xC0FFEE),
        &slots.slot_roots(),
        index,
        &slots.slots()[index as usize],
        samples,
        |b| Ok(Some(block(index, b))),
    )?)
}

fn main() -> anyhow::Result<()> {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![5, 100]
    } else {
        counts
    };
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/proof-bench-cache");
    println!(
        "| samples | k | setup (params, keys) | first proof | later proofs | verify | proof bytes | EVM gas |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in counts {
        let input = input(n)?;
        let (prover, setup) = Prover::new(&Srs::Development, n, Some(&cache))?;
        // The process's first proof (what a CLI run that proves once costs), then for
        // small circuits the median of three more (what a node proving every period
        // costs); large ones: the first only.
        let t = Instant::now();
        let first = prover.prove(&input)?;
        let first_time = t.elapsed();
        let runs = if n > 20 { 0 } else { 3 };
        let mut times = Vec::new();
        let mut proof = None;
        for _ in 0..runs {
            let t = Instant::now();
            proof = Some(prover.prove(&input)?);
            times.push(t.elapsed());
        }
        times.sort();
        let later = times.get(times.len() / 2).copied().unwrap_or(first_time);
        let proof = proof.unwrap_or(first);
        let t = Instant::now();
        for _ in 0..20 {
            prover.verify(&proof.public_inputs, &proof.bytes)?;
        }
        let verify = t.elapsed() / 20;
        let bytecode = compile_verifier(&prover.solidity_verifier(), Some(&cache))?;
        let gas = evm_call(&bytecode, proof.calldata())?;
        println!(
            "| {n} | {} | {:.1?}, {:.1?}{} | {first_time:.2?} | {later:.2?} | {:.2?} | {} | {gas} |",
            prover.k(),
            setup.params,
            setup.keys,
            if setup.cached { " (cached)" } else { "" },
            verify,
            proof.bytes.len(),
        );
    }
    Ok(())
}
