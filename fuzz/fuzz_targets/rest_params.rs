//! The REST API's parameters: see `codex_fuzz::rest_params`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| codex_fuzz::rest_params(data));
