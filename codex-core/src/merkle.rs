//! Codex's keyed SHA-256 Merkle tree (reference §1.4) and its proofs.
//!
//! Every internal node is `SHA256(left || right || key)`. The key byte says whether the
//! node sits on the bottom layer and whether it closes an odd layer (its right input is
//! 32 zero bytes). A bottom layer of one leaf is still compressed, so a one-block
//! dataset's root is `SHA256(leaf || 0^32 || 0x03)`.

use sha2::{Digest, Sha256};

use crate::cid::{Cid, codec};
use crate::error::{Error, Result};
use crate::pb;

/// Key of an inner node above the bottom layer.
pub const KEY_NONE: u8 = 0;
/// Key of a node on the bottom layer.
pub const KEY_BOTTOM_LAYER: u8 = 1;
/// Key of the last node of an odd layer.
pub const KEY_ODD: u8 = 2;
/// Key of the last node of an odd bottom layer.
pub const KEY_ODD_AND_BOTTOM_LAYER: u8 = 3;

/// Largest encoded proof accepted (Codex: 1 MiB).
pub const MAX_PROOF_SIZE: usize = 1 << 20;

const ZERO: [u8; 32] = [0; 32];

/// `SHA256(x || y || key)`.
pub fn compress(x: &[u8; 32], y: &[u8; 32], key: u8) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(x);
    h.update(y);
    h.update([key]);
    h.finalize().into()
}

/// The number of path entries of a tree with `leaves` leaves: `max(1, ceil(log2 leaves))`.
pub fn depth(leaves: u64) -> usize {
    if leaves <= 1 {
        1
    } else {
        (64 - (leaves - 1).leading_zeros()) as usize
    }
}

/// A complete tree: all layers, bottom (the leaves) first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleTree {
    layers: Vec<Vec<[u8; 32]>>,
}

impl MerkleTree {
    /// Builds the tree over leaf digests (for a dataset: the SHA-256 digests of its block
    /// CIDs, in block order). Costs one SHA-256 of 65 bytes per leaf.
    ///
    /// # Errors
    /// [`Error::Tree`] for zero leaves.
    pub fn new(leaves: Vec<[u8; 32]>) -> Result<Self> {
        if leaves.is_empty() {
            return Err(Error::Tree("a tree needs at least one leaf".into()));
        }
        let mut layers = vec![leaves];
        loop {
            let bottom = layers.len() == 1;
            let layer = &layers[layers.len() - 1];
            if !bottom && layer.len() == 1 {
                break;
            }
            let (key, odd_key) = if bottom {
                (KEY_BOTTOM_LAYER, KEY_ODD_AND_BOTTOM_LAYER)
            } else {
                (KEY_NONE, KEY_ODD)
            };
            let next = layer
                .chunks(2)
                .map(|pair| match pair {
                    [x, y] => compress(x, y, key),
                    [x] => compress(x, &ZERO, odd_key),
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            layers.push(next);
        }
        Ok(MerkleTree { layers })
    }

    /// Builds the tree over block CIDs (each must carry a 32-byte digest).
    ///
    /// # Errors
    /// [`Error::Tree`] for zero CIDs or a CID without a 32-byte digest.
    pub fn from_cids<'a>(cids: impl IntoIterator<Item = &'a Cid>) -> Result<Self> {
        let leaves = cids
            .into_iter()
            .map(|c| {
                c.digest32()
                    .ok_or_else(|| Error::Tree(format!("leaf {c} has no 32-byte digest")))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(leaves)
    }

    /// The root digest.
    pub fn root(&self) -> [u8; 32] {
        self.layers[self.layers.len() - 1][0]
    }

    /// The root as a `codex-root` CID (the manifest's `treeCid`).
    pub fn root_cid(&self) -> Cid {
        Cid::from_sha256(codec::ROOT, self.root())
    }

    /// The number of leaves.
    pub fn leaves_count(&self) -> u64 {
        self.layers[0].len() as u64
    }

    /// The leaf digests.
    pub fn leaves(&self) -> &[[u8; 32]] {
        &self.layers[0]
    }

    /// The proof of leaf `index`, path bottom-up, missing siblings as zeros.
    ///
    /// # Errors
    /// [`Error::Tree`] when `index` is out of range.
    pub fn proof(&self, index: u64) -> Result<CodexProof> {
        let n = self.leaves_count();
        if index >= n {
            return Err(Error::Tree(format!(
                "leaf {index} out of range: the tree has {n}"
            )));
        }
        let mut j = index as usize;
        let path = self.layers[..self.layers.len() - 1]
            .iter()
            .map(|layer| {
                let sibling = layer.get(j ^ 1).copied().unwrap_or(ZERO);
                j >>= 1;
                sibling
            })
            .collect();
        Ok(CodexProof {
            mcodec: codec::SHA2_256,
            index,
            nleaves: n,
            path,
        })
    }
}

/// Codex's `CodexProof`: a leaf's index, the tree's leaf count and the sibling path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodexProof {
    /// Multihash codec of the tree (`0x12` for the SHA-256 tree, `0x00` for Poseidon2).
    pub mcodec: u64,
    /// The leaf index.
    pub index: u64,
    /// The number of leaves in the tree.
    pub nleaves: u64,
    /// Sibling nodes, bottom-up.
    pub path: Vec<[u8; 32]>,
}

impl CodexProof {
    /// Recomputes the root from `leaf` with SHA-256 keyed compression (`reconstructRoot`).
    ///
    /// # Errors
    /// [`Error::Tree`] when the proof's shape is impossible (index out of range, a path of
    /// the wrong length, a codec other than sha2-256).
    pub fn reconstruct_root(&self, leaf: &[u8; 32]) -> Result<[u8; 32]> {
        if self.mcodec != codec::SHA2_256 {
            return Err(Error::Tree(format!(
                "proof codec {:#x} is not sha2-256",
                self.mcodec
            )));
        }
        if self.index >= self.nleaves {
            return Err(Error::Tree(format!(
                "proof index {} out of range of {} leaves",
                self.index, self.nleaves
            )));
        }
        let expected = depth(self.nleaves);
        if self.path.len() != expected {
            return Err(Error::Tree(format!(
                "proof path has {} nodes, a tree of {} leaves needs {expected}",
                self.path.len(),
                self.nleaves
            )));
        }
        let (mut j, mut m, mut h) = (self.index, self.nleaves, *leaf);
        for (step, p) in self.path.iter().enumerate() {
            let flag = if step == 0 {
                KEY_BOTTOM_LAYER
            } else {
                KEY_NONE
            };
            h = if j & 1 == 1 {
                compress(p, &h, flag)
            } else if j == m - 1 {
                compress(&h, p, flag + 2)
            } else {
                compress(&h, p, flag)
            };
            j >>= 1;
            // Not `(m + 1) >> 1`: a hostile proof may claim u64::MAX leaves.
            m = m.div_ceil(2);
        }
        Ok(h)
    }

    /// Whether `leaf` is at `self.index` of the tree with root `root`.
    pub fn verify(&self, leaf: &[u8; 32], root: &[u8; 32]) -> bool {
        matches!(self.reconstruct_root(leaf), Ok(r) if &r == root)
    }

    /// Whether the block `leaf` (a CID with a SHA-256 digest) is at `self.index` of the tree `tree`.
    pub fn verify_cids(&self, leaf: &Cid, tree: &Cid) -> bool {
        match (leaf.digest32(), tree.digest32()) {
            (Some(l), Some(r)) => self.verify(&l, &r),
            _ => false,
        }
    }

    /// Protobuf: `{1: mcodec, 2: index, 3: nleaves, 4: repeated {1: node}}`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = pb::Writer::new();
        w.uint(1, self.mcodec)
            .uint(2, self.index)
            .uint(3, self.nleaves);
        // Each node is a message with one 32-byte field 1: key 0x0a, length 32, the bytes.
        let mut n = [0u8; 34];
        n[..2].copy_from_slice(&[0x0a, 32]);
        for node in &self.path {
            n[2..].copy_from_slice(node);
            w.bytes(4, &n);
        }
        w.finish()
    }

    /// Decodes [`CodexProof::encode`]'s format.
    ///
    /// # Errors
    /// [`Error::Decode`] for malformed bytes, nodes that are not 32 bytes, or input over
    /// [`MAX_PROOF_SIZE`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "CodexProof";
        if bytes.len() > MAX_PROOF_SIZE {
            return Err(Error::decode(
                WHAT,
                format!("{} bytes exceed the 1 MiB limit", bytes.len()),
            ));
        }
        let mut proof = CodexProof {
            mcodec: 0,
            index: 0,
            nleaves: 0,
            path: Vec::new(),
        };
        let mut r = pb::Reader::new(bytes, WHAT);
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => proof.mcodec = value.uint(WHAT)?,
                2 => proof.index = value.uint(WHAT)?,
                3 => proof.nleaves = value.uint(WHAT)?,
                4 => {
                    let mut inner = pb::Reader::new(value.bytes(WHAT)?, WHAT);
                    let mut node = None;
                    while let Some((f, v)) = inner.next_field()? {
                        if f == 1 {
                            let b = v.bytes(WHAT)?;
                            node = Some(<[u8; 32]>::try_from(b).map_err(|_| {
                                Error::decode(
                                    WHAT,
                                    format!("path node of {} bytes, expected 32", b.len()),
                                )
                            })?);
                        }
                    }
                    proof
                        .path
                        .push(node.ok_or_else(|| Error::decode(WHAT, "empty path node"))?);
                }
                _ => {}
            }
        }
        Ok(proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<[u8; 32]> {
        (0..n)
            .map(|i| crate::cid::sha256(&(i as u64).to_le_bytes()))
            .collect()
    }

    #[test]
    fn zero_block_root_matches_reference() {
        // reference §9: sha256 of 64 KiB of zeros is de2f2560…9ca9cc31; the single-leaf
        // tree root is 774010fc…378c13a0 = zDzSvJTf8RviqW9HL7ppHPywc6dQZFY1JWpcNc1ZWsPt3aQue7AP.
        let zero = vec![0u8; 65536];
        let digest = crate::cid::sha256(&zero);
        let hex_digest = hex::encode(digest);
        assert!(hex_digest.starts_with("de2f2560") && hex_digest.ends_with("9ca9cc31"));
        let tree = MerkleTree::new(vec![digest]).expect("tree");
        let root = hex::encode(tree.root());
        assert!(
            root.starts_with("774010fc") && root.ends_with("378c13a0"),
            "{root}"
        );
        assert_eq!(
            tree.root_cid().to_string(),
            "zDzSvJTf8RviqW9HL7ppHPywc6dQZFY1JWpcNc1ZWsPt3aQue7AP"
        );
    }

    #[test]
    fn single_leaf_root_is_compressed_with_odd_bottom_key() {
        let leaf = [9u8; 32];
        let tree = MerkleTree::new(vec![leaf]).expect("tree");
        assert_eq!(
            tree.root(),
            compress(&leaf, &ZERO, KEY_ODD_AND_BOTTOM_LAYER)
        );
        let proof = tree.proof(0).expect("proof");
        assert_eq!(proof.path, vec![ZERO]);
        assert!(proof.verify(&leaf, &tree.root()));
    }

    #[test]
    fn three_leaf_tree_by_hand() {
        let l = leaves(3);
        let a = compress(&l[0], &l[1], KEY_BOTTOM_LAYER);
        let b = compress(&l[2], &ZERO, KEY_ODD_AND_BOTTOM_LAYER);
        let root = compress(&a, &b, KEY_NONE);
        assert_eq!(MerkleTree::new(l).expect("tree").root(), root);
    }

    #[test]
    fn every_proof_verifies_for_sizes_1_to_300() {
        for n in 1..=300usize {
            let l = leaves(n);
            let tree = MerkleTree::new(l.clone()).expect("tree");
            for (i, leaf) in l.iter().enumerate() {
                let proof = tree.proof(i as u64).expect("proof");
                assert_eq!(proof.path.len(), depth(n as u64));
                assert!(proof.verify(leaf, &tree.root()), "n={n} i={i}");
                let decoded = CodexProof::decode(&proof.encode()).expect("decode");
                assert_eq!(decoded, proof);
            }
        }
    }

    #[test]
    fn proof_nodes_are_encoded_as_nested_messages() {
        let tree = MerkleTree::new(leaves(11)).expect("tree");
        let proof = tree.proof(6).expect("proof");
        // Codex's schema: field 4 repeats a message whose only field (1) is the node.
        let mut w = pb::Writer::new();
        w.uint(1, proof.mcodec)
            .uint(2, proof.index)
            .uint(3, proof.nleaves);
        for node in &proof.path {
            let mut n = pb::Writer::new();
            n.bytes(1, node);
            w.message(4, &n);
        }
        assert_eq!(proof.encode(), w.finish());
    }

    #[test]
    fn empty_tree_is_an_error() {
        assert!(MerkleTree::new(vec![]).is_err());
    }

    #[test]
    fn wrong_shapes_are_rejected() {
        let l = leaves(5);
        let tree = MerkleTree::new(l.clone()).expect("tree");
        let proof = tree.proof(4).expect("proof");
        let mut p = proof.clone();
        p.index = 5;
        assert!(!p.verify(&l[4], &tree.root()));
        let mut p = proof.clone();
        p.path.push(ZERO);
        assert!(!p.verify(&l[4], &tree.root()));
        let mut p = proof.clone();
        p.nleaves = 6;
        assert!(!p.verify(&l[4], &tree.root()));
        assert!(!proof.verify(&l[3], &tree.root()));
        assert!(tree.proof(5).is_err());
    }

    #[test]
    fn malformed_encodings_are_errors() {
        assert!(CodexProof::decode(&[0x22, 0x05, 0x0a]).is_err());
        assert!(CodexProof::decode(&[0x22, 0x03, 0x0a, 0x01, 0x00]).is_err());
        assert!(CodexProof::decode(&[0x08]).is_err());
        assert!(CodexProof::decode(&vec![0u8; MAX_PROOF_SIZE + 1]).is_err());
    }

    proptest! {
        #[test]
        fn a_flipped_bit_fails(n in 1usize..=300, i in any::<prop::sample::Index>(), bit in 0usize..(32 * 8), target in 0usize..3) {
            let l = leaves(n);
            let idx = i.index(n);
            let tree = MerkleTree::new(l.clone()).expect("tree");
            let proof = tree.proof(idx as u64).expect("proof");
            let mut leaf = l[idx];
            let mut root = tree.root();
            let mut p = proof.clone();
            match target {
                0 => leaf[bit / 8] ^= 1 << (bit % 8),
                1 => root[bit / 8] ^= 1 << (bit % 8),
                _ => {
                    let node = bit % p.path.len();
                    p.path[node][bit / 8] ^= 1 << (bit % 8);
                }
            }
            prop_assert!(!p.verify(&leaf, &root));
        }
    }
}
