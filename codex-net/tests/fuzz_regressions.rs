//! Inputs the fuzz targets in `fuzz/` found in the block-exchange decoder (none so far:
//! its CID and proof decoders' finds are in codex-core's), and the writer of the
//! `blockexc_message` and `blockexc_frame` seed corpora.

use std::fs;
use std::path::PathBuf;

use codex_core::{Block, BlockAddress, MerkleTree};
use codex_net::message::{
    Delivery, Entry, Message, Presence, PresenceType, WantList, WantType, write_message,
};

/// Messages of every kind, as our encoder writes them.
fn messages() -> Vec<(&'static str, Message)> {
    let blocks: Vec<Block> = (0..5u8).map(|i| Block::new(vec![i; 300])).collect();
    let tree = MerkleTree::from_cids(blocks.iter().map(Block::cid)).expect("tree");
    let root = tree.root_cid();
    let want = |address, want_type, cancel| Entry {
        address,
        priority: 3,
        cancel,
        want_type,
        send_dont_have: true,
    };
    vec![
        ("empty", Message::default()),
        (
            "wantlist",
            Message {
                wantlist: WantList {
                    entries: vec![
                        want(
                            BlockAddress::Leaf {
                                tree: root,
                                index: 4,
                            },
                            WantType::WantBlock,
                            false,
                        ),
                        want(
                            BlockAddress::Cid(*blocks[0].cid()),
                            WantType::WantHave,
                            false,
                        ),
                        want(
                            BlockAddress::Cid(*blocks[1].cid()),
                            WantType::WantBlock,
                            true,
                        ),
                    ],
                    full: true,
                },
                ..Message::default()
            },
        ),
        (
            "deliveries",
            Message {
                payload: vec![
                    Delivery {
                        cid: *blocks[3].cid(),
                        data: blocks[3].data().clone(),
                        address: BlockAddress::Leaf {
                            tree: root,
                            index: 3,
                        },
                        proof: Some(tree.proof(3).expect("proof")),
                    },
                    Delivery {
                        cid: *blocks[2].cid(),
                        data: blocks[2].data().clone(),
                        address: BlockAddress::Cid(*blocks[2].cid()),
                        proof: None,
                    },
                ],
                pending_bytes: 600,
                ..Message::default()
            },
        ),
        (
            "presences",
            Message {
                presences: vec![
                    Presence {
                        address: BlockAddress::Cid(*blocks[0].cid()),
                        kind: PresenceType::Have,
                        price: vec![0, 1],
                    },
                    Presence {
                        address: BlockAddress::Leaf {
                            tree: root,
                            index: 1,
                        },
                        kind: PresenceType::DontHave,
                        price: vec![],
                    },
                ],
                account: Some(vec![0xaa; 20]),
                payment: Some(vec![1, 2, 3]),
                ..Message::default()
            },
        ),
    ]
}

/// Writes the seed corpora of the `blockexc_message` and `blockexc_frame` fuzz targets
/// (`fuzz/corpus/<target>/`). Run after a format change:
/// `cargo test -p codex-net --test fuzz_regressions -- --ignored`.
#[tokio::test]
#[ignore = "writes fuzz/corpus; run by hand"]
async fn write_fuzz_seeds() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for target in ["blockexc_message", "blockexc_frame"] {
        fs::create_dir_all(corpus.join(target)).expect("corpus dir");
    }
    let mut stream = Vec::new();
    for (name, m) in messages() {
        fs::write(corpus.join("blockexc_message").join(name), m.encode()).expect("seed");
        let mut framed = Vec::new();
        write_message(&mut futures::io::Cursor::new(&mut framed), &m, true)
            .await
            .expect("frame");
        fs::write(corpus.join("blockexc_frame").join(name), &framed).expect("seed");
        stream.extend_from_slice(&framed);
    }
    fs::write(corpus.join("blockexc_frame").join("all"), stream).expect("seed");
}
