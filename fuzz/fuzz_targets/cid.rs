//! CIDs from outside (binary and text form): see `codex_fuzz::cid`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| codex_fuzz::cid(data));
