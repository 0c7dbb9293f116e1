//! Manifests from outside (fetched from peers, read from the store): decode, then every
//! derived quantity the node computes from one, and a round trip through the encoder.
#![no_main]

use codex_core::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::decode(data) else {
        return;
    };
    let _ = (
        m.is_protected(),
        m.is_verifiable(),
        m.blocks_count(),
        m.original_size(),
        m.original_blocks_count(),
        m.original_tree_cid(),
        m.steps(),
        m.num_slots(),
    );
    let bytes = m.encode();
    let again = Manifest::decode(&bytes).expect("an encoded valid manifest decodes");
    assert_eq!(again, m, "round trip");
    assert_eq!(again.cid(), m.cid());
});
