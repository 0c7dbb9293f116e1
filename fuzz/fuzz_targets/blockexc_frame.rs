//! The block-exchange framing: see `codex_fuzz::blockexc_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| codex_fuzz::blockexc_frame(data));
