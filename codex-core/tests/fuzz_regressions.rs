//! Inputs the fuzz targets in `fuzz/` found (each one a panic fixed in the decoder),
//! and the writer of those targets' seed corpora.

use std::fs;
use std::path::PathBuf;

use codex_core::{
    Block, Chunker, Cid, CodexProof, DEFAULT_BLOCK_SIZE, Manifest, MerkleTree, Protection,
    StrategyType, Verification, codec, pb,
};

/// Writes the seed corpora of the `cid`, `manifest` and `codex_proof` fuzz targets
/// (`fuzz/corpus/<target>/`) from real encodings. Run after a format change:
/// `cargo test -p codex-core --test fuzz_regressions -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_fuzz_seeds() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus.join(target);
        fs::create_dir_all(&dir).expect("corpus dir");
        fs::write(dir.join(name), bytes).expect("seed");
    };

    // The `hello` upload of reference §2.2, a plain upload with names, a protected and a
    // verifiable manifest.
    let blocks: Vec<Block> = Chunker::new(&b"hello"[..], DEFAULT_BLOCK_SIZE)
        .map(|b| Block::new(b.expect("read")))
        .collect();
    let tree = MerkleTree::from_cids(blocks.iter().map(Block::cid)).expect("tree");
    let hello = Manifest::new(tree.root_cid(), DEFAULT_BLOCK_SIZE as u32, 5);
    write("manifest", "hello", &hello.encode());
    let mut named = hello.clone();
    named.filename = Some("hello.txt".into());
    named.mimetype = Some("text/plain".into());
    write("manifest", "named", &named.encode());
    let mut protected = Manifest::new(Cid::from_sha256(codec::ROOT, [1; 32]), 65536, 20 * 65536);
    protected.protection = Some(Protection {
        ec_k: 3,
        ec_m: 2,
        original_tree_cid: Cid::from_sha256(codec::ROOT, [2; 32]),
        original_dataset_size: 10 * 65536 - 17,
        strategy: StrategyType::Stepped,
        verification: None,
    });
    write("manifest", "protected", &protected.encode());
    let mut verifiable = protected.clone();
    if let Some(p) = verifiable.protection.as_mut() {
        p.verification = Some(Verification {
            verify_root: Cid::from_identity(codec::PROVING_ROOT, [3; 32]),
            slot_roots: (0..5u8)
                .map(|i| Cid::from_identity(codec::SLOT_ROOT, [i; 32]))
                .collect(),
            cell_size: 2048,
            strategy: StrategyType::Linear,
        });
    }
    write("manifest", "verifiable", &verifiable.encode());

    // CIDs of every codec, binary and as text in three multibases.
    let cids = [
        ("manifest", hello.cid()),
        ("block", *blocks[0].cid()),
        ("empty_block", Cid::empty_block()),
        ("root", tree.root_cid()),
        ("slot_root", Cid::from_identity(codec::SLOT_ROOT, [7; 32])),
        (
            "proving_root",
            Cid::from_identity(codec::PROVING_ROOT, [8; 32]),
        ),
    ];
    for (name, cid) in cids {
        write("cid", &format!("{name}.bin"), &cid.to_bytes());
        write("cid", &format!("{name}.b58"), cid.to_string().as_bytes());
    }
    let b32 = multibase_text('b', &hello.cid());
    write("cid", "manifest.b32", b32.as_bytes());

    // Proofs of trees of several shapes (odd layers included).
    for n in [1u64, 2, 3, 5, 16, 33] {
        let leaves: Vec<[u8; 32]> = (0..n)
            .map(|i| codex_core::cid::sha256(&i.to_le_bytes()))
            .collect();
        let tree = MerkleTree::new(leaves).expect("tree");
        let index = n / 2;
        write(
            "codex_proof",
            &format!("n{n}_i{index}"),
            &tree.proof(index).expect("proof").encode(),
        );
    }
}

/// The base32 (lower, `b` prefix) text of a CID, as other Codex clients may send it.
fn multibase_text(prefix: char, cid: &Cid) -> String {
    assert_eq!(prefix, 'b');
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::from("b");
    let (mut acc, mut bits) = (0u32, 0);
    for byte in cid.to_bytes() {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    let parsed: Cid = out.parse().expect("base32 parses");
    assert_eq!(&parsed, cid);
    out
}

/// Fuzz target `cid`: a codec varint of 10 bytes whose last byte carries bits beyond 64
/// was accepted (the bits dropped), so these bytes parsed to a CID that encodes to other
/// bytes.
#[test]
fn cid_with_an_overflowing_varint_is_rejected() {
    let input = [
        1, 133, 154, 156, 156, 156, 156, 156, 156, 156, 79, 32, 8, 8, 8, 122, 8, 8, 8, 217, 8,
    ];
    assert!(Cid::from_bytes(&input).is_err());
    let mut canonical = input;
    canonical[10] = 1;
    let cid = Cid::from_bytes(&canonical).expect("the canonical form parses");
    assert_eq!(cid.to_bytes(), canonical);
}

/// Found by review and confirmed with the `codex_proof` target (a 2-minute run did not
/// reach it): a proof claiming `u64::MAX` leaves, with the 64 path nodes such a tree
/// needs, overflowed `(m + 1) >> 1` in `reconstruct_root`; a peer could send it in a
/// leaf delivery.
#[test]
fn proof_of_u64_max_leaves_does_not_overflow() {
    let mut w = pb::Writer::new();
    w.uint(1, codec::SHA2_256).uint(2, 0).uint(3, u64::MAX);
    for _ in 0..64 {
        let mut node = pb::Writer::new();
        node.bytes(1, &[0x11; 32]);
        w.message(4, &node);
    }
    let proof = CodexProof::decode(&w.finish()).expect("decodes");
    assert_eq!(proof.path.len(), 64);
    let leaf = [0x22; 32];
    let root = proof.reconstruct_root(&leaf).expect("a root");
    assert!(proof.verify(&leaf, &root));
    assert!(!proof.verify(&leaf, &[0; 32]));
}

/// Found by review and confirmed with the `manifest` target (a 2-minute run did not
/// reach it): a protected manifest with `datasetSize = originalDatasetSize = 2^63`,
/// one-byte blocks and K = M = 1 overflowed `steps * (K + M)` in `validate`.
#[test]
fn protected_manifest_with_huge_sizes_is_rejected_without_overflow() {
    let root = Cid::from_sha256(codec::ROOT, [1; 32]);
    let mut m = Manifest::new(root, 1, 1 << 63);
    m.protection = Some(Protection {
        ec_k: 1,
        ec_m: 1,
        original_tree_cid: Cid::from_sha256(codec::ROOT, [2; 32]),
        original_dataset_size: 1 << 63,
        strategy: StrategyType::Stepped,
        verification: None,
    });
    assert!(matches!(
        Manifest::decode(&m.encode()),
        Err(codex_core::Error::InvalidManifest(_))
    ));
    // The largest sizes that do fit: 2^62 original blocks, K = M = 1.
    m.dataset_size = 1 << 63;
    if let Some(p) = m.protection.as_mut() {
        p.original_dataset_size = 1 << 62;
    }
    assert_eq!(Manifest::decode(&m.encode()).expect("valid"), m);
}
