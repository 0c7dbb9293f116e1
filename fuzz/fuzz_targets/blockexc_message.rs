//! Block-exchange messages from a peer (`/codex/blockexc/1.0.0`): decode, check every
//! delivery as the exchange does (block hash, then the leaf proof against the tree),
//! and re-encode.
#![no_main]

use bytes::Bytes;
use codex_core::{Block, BlockAddress};
use codex_net::message::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::decode_bytes(Bytes::copy_from_slice(data)) else {
        return;
    };
    for d in &m.payload {
        if Block::verified(d.cid, d.data.clone()).is_err() {
            continue;
        }
        if let (BlockAddress::Leaf { tree, .. }, Some(proof)) = (&d.address, &d.proof) {
            let _ = proof.verify_cids(&d.cid, tree);
        }
    }
    // The encoder drops what the decoder fills in by default (an absent address, a
    // proof beside a CID address, empty account bytes): after one pass the bytes are
    // stable.
    let once = m.encode();
    let m2 = Message::decode(&once).expect("an encoded message decodes");
    assert_eq!(m2.encode(), once, "encoding is stable");
    assert_eq!(m2.wantlist, m.wantlist);
    assert_eq!(m2.presences, m.presences);
    assert_eq!(m2.payload.len(), m.payload.len());
});
