//! The block-exchange framing: a stream of varint-length-prefixed messages from a peer,
//! read until the end, an error, or the size limit.
#![no_main]

use codex_net::message::read_message;
use futures::executor::block_on;
use futures::io::Cursor;
use libfuzzer_sys::fuzz_target;

/// Small enough that a fuzzed length prefix cannot make the target allocate much.
const MAX: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut stream = Cursor::new(data);
    block_on(async {
        for _ in 0..64 {
            match read_message(&mut stream, MAX).await {
                Ok(Some(m)) => drop(m.encode()),
                Ok(None) | Err(_) => break,
            }
        }
    });
});
