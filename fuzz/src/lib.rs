//! The fuzz targets' bodies: each `fuzz_targets/<target>.rs` calls the function of its
//! name. They are here, not in the targets, so that the main workspace's test suite
//! replays every committed input of `corpus/<target>/` through the same code
//! (`tests/fuzz_corpus.rs`, which includes this file) without a fuzzing build.
//!
//! Each function panics when the code under test breaks a property (a round trip, a
//! canonical encoding); a decoder's error is a normal outcome.

use bytes::Bytes;
use codex_core::cid::sha256;
use codex_core::{Block, BlockAddress, Cid, CodexProof, Manifest};
use codex_net::message::{Message, read_message};
use codex_proofs::{Fe, ProofInput, Prover, StorageCircuit};

/// CIDs from outside: the binary form (block-exchange messages, manifests) and the text
/// form (REST path parameters, the CLI). A parsed CID must print and re-encode to
/// itself.
pub fn cid(data: &[u8]) {
    if let Ok(cid) = Cid::from_bytes(data) {
        assert_eq!(cid.to_bytes(), data, "binary form is canonical");
        check_cid(&cid);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(cid) = text.parse::<Cid>()
    {
        check_cid(&cid);
    }
}

fn check_cid(cid: &Cid) {
    assert_eq!(Cid::from_bytes(&cid.to_bytes()).ok().as_ref(), Some(cid));
    assert_eq!(cid.to_string().parse::<Cid>().ok().as_ref(), Some(cid));
    let _ = (
        cid.codec(),
        cid.hash_code(),
        cid.digest32(),
        cid.multihash_bytes(),
    );
    let _ = cid.matches(b"hello");
}

/// Manifests from outside (fetched from peers, read from the store): decode, then every
/// derived quantity the node computes from one, and a round trip through the encoder.
pub fn manifest(data: &[u8]) {
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
}

/// `CodexProof`s from outside (block-exchange deliveries, the store's leaf metadata):
/// decode, verify against a leaf and a root taken from the input, and round-trip.
pub fn codex_proof(data: &[u8]) {
    let Ok(proof) = CodexProof::decode(data) else {
        return;
    };
    let leaf = sha256(data);
    let root = sha256(&leaf);
    if let Ok(r) = proof.reconstruct_root(&leaf) {
        assert!(proof.verify(&leaf, &r));
    }
    let _ = proof.verify(&leaf, &root);
    let again = CodexProof::decode(&proof.encode()).expect("an encoded proof decodes");
    assert_eq!(again, proof, "round trip");
}

/// Block-exchange messages from a peer (`/codex/blockexc/1.0.0`): decode, check every
/// delivery as the exchange does (block hash, then the leaf proof against the tree),
/// and re-encode.
pub fn blockexc_message(data: &[u8]) {
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
}

/// The block-exchange framing: a stream of varint-length-prefixed messages from a peer,
/// read until the end, an error, or the size limit (small enough that a fuzzed length
/// prefix cannot make the target allocate much).
pub fn blockexc_frame(data: &[u8]) {
    const MAX: usize = 1 << 16;
    let mut stream = futures::io::Cursor::new(data);
    futures::executor::block_on(async {
        for _ in 0..64 {
            match read_message(&mut stream, MAX).await {
                Ok(Some(m)) => drop(m.encode()),
                Ok(None) | Err(_) => break,
            }
        }
    });
}

/// Codex's circuit-input JSON (`proof-input check|prove FILE`): parse, check natively,
/// shape-check for the circuit, and round-trip through both JSON writers.
pub fn proof_input_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(input) = ProofInput::from_json(text) else {
        return;
    };
    let _ = input.public_inputs();
    // The native check costs about 70 permutations per sample; bound the work per input.
    if input.samples.len() <= 8 {
        let _ = input.check();
    }
    let _ = StorageCircuit::new(&input);
    let again = ProofInput::from_json(&input.to_json()).expect("our JSON parses");
    assert_eq!(again, input, "round trip (to_json)");
    let value = input.to_json_value();
    let again = ProofInput::from_json_value(&value).expect("our JSON value parses");
    assert_eq!(again, input, "round trip (to_json_value)");
}

/// Proof bytes from outside, as the generated Solidity verifier takes them: the
/// calldata is three 32-byte big-endian public inputs (`entropy, dataSetRoot,
/// slotIndex`), then the SHPLONK proof, verified by `prover` (5 samples, development
/// SRS). Returns whether it verified.
pub fn proof_verify(prover: &Prover, data: &[u8]) -> bool {
    fn word(bytes: &[u8]) -> Option<Fe> {
        let mut le: [u8; 32] = bytes.try_into().ok()?;
        le.reverse();
        Fe::from_le_bytes(&le).ok()
    }
    if data.len() < 96 {
        return false;
    }
    let (Some(entropy), Some(root), Some(slot)) =
        (word(&data[..32]), word(&data[32..64]), word(&data[64..96]))
    else {
        return false;
    };
    let inputs = [entropy, root, slot];
    let proof = &data[96..];
    let verified = prover.verify(&inputs, proof).is_ok();
    if verified {
        // Only a proof of the seed's statement can verify: the same calldata again.
        assert_eq!(codex_proofs::prover::calldata(&inputs, proof), data);
    }
    verified
}

/// The REST API's parameters: CID path parameters (`/data/{cid}`, ...), the JSON bodies
/// of `POST /storage/request/{cid}` and `POST /sales/availability`, the slot id of
/// `/sales/slots/{id}`, and the peer id and `addrs` of `/connect/{peerId}`; each parsed
/// with the node's own code (the handlers call these same functions).
#[cfg(feature = "rest")]
pub fn rest_params(data: &[u8]) {
    use codex::node::purchasing::RequestParams;
    use codex::node::sales::Availability;
    use codex_market::MarketplaceConfig;
    use codex_market::alloy::primitives::B256;
    use codex_net::{Multiaddr, PeerId};

    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(p) = RequestParams::from_json(&json) {
            let _ = p.validate(&MarketplaceConfig::default());
        }
        if let Ok(a) = Availability::from_json("id".into(), &json) {
            let _ = a.to_json();
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cid) = text.parse::<Cid>() {
        assert_eq!(cid.to_string().parse::<Cid>().ok(), Some(cid));
    }
    let _ = text.parse::<B256>();
    let _ = text.parse::<PeerId>();
    for a in text.split(',').filter(|s| !s.is_empty()) {
        if let Ok(addr) = a.parse::<Multiaddr>() {
            let _ = addr.to_string();
        }
    }
}
