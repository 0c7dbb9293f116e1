//! Codex's circuit-input JSON (`proof-input check|prove FILE`): parse, check natively,
//! shape-check for the circuit, and round-trip through both JSON writers.
#![no_main]

use codex_proofs::{ProofInput, StorageCircuit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(input) = ProofInput::from_json(text) else {
        return;
    };
    let _ = input.public_inputs();
    // The native check costs about 70 permutations per sample; bound the work per input.
    if input.samples.len() <= 8 {
        let _ = input.check();
    }
    let _ = StorageCircuit::new(&input);
    let again = ProofInput::from_json(&input.to_json()).expect("our JSON parses");
    assert_eq!(again, input, "round trip (to_json)");
    let value = input.to_json_value();
    let again = ProofInput::from_json_value(&value).expect("our JSON value parses");
    assert_eq!(again, input, "round trip (to_json_value)");
});
