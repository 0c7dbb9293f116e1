//! `CodexProof`s from outside: see `codex_fuzz::codex_proof`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| codex_fuzz::codex_proof(data));
