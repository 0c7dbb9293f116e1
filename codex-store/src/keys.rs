//! The key layout of the repository store: one ordered keyspace of metadata records, one
//! letter per record kind, and block bodies (a namespace of their own) by CID.

use codex_core::Cid;

pub(crate) const META: u8 = b'M';
pub(crate) const LEAF: u8 = b'L';
pub(crate) const EXPIRY: u8 = b'X';
pub(crate) const MANIFEST: u8 = b'D';
/// A session's pin of one block, one record per block (stores written before pin
/// groups; still undone or finished by `recover`).
pub(crate) const PIN: u8 = b'P';
/// A session's pins of one `session_put_blocks` call: the blocks it stored or took a
/// reference to, each with whether the session created it.
pub(crate) const PIN_GROUP: u8 = b'G';
/// Blocks whose pin reference passed to a leaf of the session (flag 1), or came back
/// from an overwritten leaf (flag 0), in order (written with the leaves).
pub(crate) const PIN_MOVED: u8 = b'J';
pub(crate) const NEW_TREE: u8 = b'Q';
pub(crate) const COMMITTED: u8 = b'K';
pub(crate) const DELETING_TREE: u8 = b'T';
pub(crate) const COUNTERS: &[u8] = b"C";

fn with(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// The id of a block's body.
pub(crate) fn body(cid: &Cid) -> Vec<u8> {
    cid.to_bytes()
}

pub(crate) fn meta(cid: &Cid) -> Vec<u8> {
    with(META, &[&cid.to_bytes()])
}

pub(crate) fn leaf(tree: &Cid, index: u64) -> Vec<u8> {
    with(LEAF, &[&tree.to_bytes(), &index.to_be_bytes()])
}

pub(crate) fn leaf_prefix(tree: &Cid) -> Vec<u8> {
    with(LEAF, &[&tree.to_bytes()])
}

pub(crate) fn expiry(at: u64, cid: &Cid) -> Vec<u8> {
    with(EXPIRY, &[&at.to_be_bytes(), &cid.to_bytes()])
}

pub(crate) fn manifest(cid: &Cid) -> Vec<u8> {
    with(MANIFEST, &[&cid.to_bytes()])
}

/// Record `seq` of a session's records of `kind` (`PIN_GROUP`, `PIN_MOVED`).
pub(crate) fn session_record(kind: u8, session: u64, seq: u64) -> Vec<u8> {
    with(kind, &[&session.to_be_bytes(), &seq.to_be_bytes()])
}

pub(crate) fn new_tree(session: u64, tree: &Cid) -> Vec<u8> {
    with(NEW_TREE, &[&session.to_be_bytes(), &tree.to_bytes()])
}

pub(crate) fn session_prefix(kind: u8, session: u64) -> Vec<u8> {
    with(kind, &[&session.to_be_bytes()])
}

pub(crate) fn committed(session: u64) -> Vec<u8> {
    with(COMMITTED, &[&session.to_be_bytes()])
}

pub(crate) fn deleting_tree(tree: &Cid) -> Vec<u8> {
    with(DELETING_TREE, &[&tree.to_bytes()])
}

/// The first key after every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// Splits `<8-byte big-endian u64><rest>`.
pub(crate) fn split_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (n, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*n), rest))
}
