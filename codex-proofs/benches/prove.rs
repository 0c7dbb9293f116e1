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
    let mut breakdowns = Vec::new();
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
        let source = prover.solidity_verifier();
        let bytecode = compile_verifier(&source, Some(&cache))?;
        let calldata = proof.calldata();
        let gas = evm_call(&bytecode, calldata.clone())?;
        breakdowns.push(format!(
            "{n} samples: {}",
            gas_breakdown(&source, &calldata, gas)
        ));
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
    println!();
    for b in breakdowns {
        println!("gas of the verification, {b}");
    }
    Ok(())
}

/// Where a verification's gas goes: the transaction's base and calldata, and the
/// precompile calls the generated verifier makes (counted in its source, priced as
/// EIP-1108/EIP-2028 price them); the rest is the verifier's own opcodes and memory.
fn gas_breakdown(source: &str, calldata: &[u8], total: u64) -> String {
    let zeros = calldata.iter().filter(|&&b| b == 0).count() as u64;
    let calldata_gas = 4 * zeros + 16 * (calldata.len() as u64 - zeros);
    let (mut adds, mut muls, mut pairings, mut pairs) = (0u64, 0u64, 0u64, 0u64);
    for call in source.split("staticcall(gas(), ").skip(1) {
        let args: Vec<&str> = call.split(',').map(str::trim).collect();
        match args.first().copied() {
            Some("0x6") => adds += 1,
            Some("0x7") => muls += 1,
            Some("0x8") => {
                pairings += 1;
                let len = args
                    .get(2)
                    .and_then(|l| u64::from_str_radix(l.trim_start_matches("0x"), 16).ok())
                    .unwrap_or(0);
                pairs += len / 192;
            }
            _ => {}
        }
    }
    let pairing_gas = 45_000 * pairings + 34_000 * pairs;
    let rest =
        total.saturating_sub(21_000 + calldata_gas + 150 * adds + 6_000 * muls + pairing_gas);
    format!(
        "{total} = 21000 (transaction) + {calldata_gas} (calldata, {} bytes) + {} (ecMul x{muls}) \
         + {} (ecAdd x{adds}) + {pairing_gas} (pairing x{pairings}, {pairs} pairs) + {rest} (opcodes, memory)",
        calldata.len(),
        6_000 * muls,
        150 * adds,
    )
}
