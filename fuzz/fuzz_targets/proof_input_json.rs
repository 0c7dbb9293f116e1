//! Codex's circuit-input JSON: see `codex_fuzz::proof_input_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| codex_fuzz::proof_input_json(data));
