//! Manifests from outside: see `codex_fuzz::manifest`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| codex_fuzz::manifest(data));
