//! Block-exchange messages from a peer: see `codex_fuzz::blockexc_message`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| codex_fuzz::blockexc_message(data));
