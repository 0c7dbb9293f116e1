//! Codex's keyed Poseidon2 Merkle tree and its proofs: the algorithm of the SHA-256 tree
//! (`codex_core::merkle`) with [`compress`] as the node function and field keys.
//!
//! A node is `compress(left, right, key)`; the key says whether the node is on the
//! tree's bottom layer (bit 0) and whether it closes an odd layer (bit 1, its right input
//! is zero). A bottom layer of one leaf is still compressed, so a one-leaf tree's root is
//! `compress(leaf, 0, 3)`.

use codex_core::{CodexProof, codec};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::field::Fe;
use crate::poseidon2::{KEY_BOTTOM_LAYER, KEY_NONE, KEY_ODD, KEY_ODD_AND_BOTTOM_LAYER, compress};

/// Layers with at least this many nodes are compressed in parallel.
const PARALLEL_LAYER: usize = 512;

/// The number of path entries of a tree with `leaves` leaves: `max(1, ceil(log2 leaves))`,
/// the same for the SHA-256 and the Poseidon2 trees.
pub use codex_core::merkle::depth;

/// A complete keyed Poseidon2 tree: all layers, the leaves first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleTree {
    layers: Vec<Vec<Fe>>,
}

fn next_layer(layer: &[Fe], bottom: bool) -> Vec<Fe> {
    let (key, odd_key) = if bottom {
        (KEY_BOTTOM_LAYER, KEY_ODD_AND_BOTTOM_LAYER)
    } else {
        (KEY_NONE, KEY_ODD)
    };
    let node = |pair: &[Fe]| match *pair {
        [x, y] => compress(x, y, key),
        [x] => compress(x, Fe::ZERO, odd_key),
        _ => unreachable!("chunks(2) yields one or two"),
    };
    if layer.len() >= PARALLEL_LAYER {
        layer.par_chunks(2).map(node).collect()
    } else {
        layer.chunks(2).map(node).collect()
    }
}

impl MerkleTree {
    /// Builds the tree over `leaves` (one compression per leaf, in parallel on wide layers).
    ///
    /// # Errors
    /// [`Error::EmptyTree`] for zero leaves.
    pub fn new(leaves: Vec<Fe>) -> Result<Self> {
        if leaves.is_empty() {
            return Err(Error::EmptyTree);
        }
        let mut layers = vec![leaves];
        loop {
            let bottom = layers.len() == 1;
            let layer = &layers[layers.len() - 1];
            if !bottom && layer.len() == 1 {
                break;
            }
            let next = next_layer(layer, bottom);
            layers.push(next);
        }
        Ok(MerkleTree { layers })
    }

    /// The root.
    pub fn root(&self) -> Fe {
        self.layers[self.layers.len() - 1][0]
    }

    /// The number of leaves.
    pub fn leaves_count(&self) -> u64 {
        self.layers[0].len() as u64
    }

    /// The leaves.
    pub fn leaves(&self) -> &[Fe] {
        &self.layers[0]
    }

    /// The proof of leaf `index`: siblings bottom-up, missing siblings as zero.
    ///
    /// # Errors
    /// [`Error::LeafOutOfRange`].
    pub fn proof(&self, index: u64) -> Result<MerkleProof> {
        let leaves = self.leaves_count();
        if index >= leaves {
            return Err(Error::LeafOutOfRange { index, leaves });
        }
        let mut j = index as usize;
        let path = self.layers[..self.layers.len() - 1]
            .iter()
            .map(|layer| {
                let sibling = layer.get(j ^ 1).copied().unwrap_or(Fe::ZERO);
                j >>= 1;
                sibling
            })
            .collect();
        Ok(MerkleProof {
            index,
            leaves,
            path,
        })
    }
}

/// The root of the tree over `leaves` without keeping the layers.
///
/// # Errors
/// [`Error::EmptyTree`] for zero leaves.
pub fn merkle_root(leaves: &[Fe]) -> Result<Fe> {
    if leaves.is_empty() {
        return Err(Error::EmptyTree);
    }
    let mut layer = next_layer(leaves, true);
    while layer.len() > 1 {
        layer = next_layer(&layer, false);
    }
    Ok(layer[0])
}

/// A leaf's position, its tree's leaf count and the sibling path (bottom-up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleProof {
    /// The leaf index.
    pub index: u64,
    /// The number of leaves in the tree.
    pub leaves: u64,
    /// Sibling nodes, bottom-up.
    pub path: Vec<Fe>,
}

impl MerkleProof {
    /// Recomputes the root from `leaf` (nim-codex `reconstructRoot`).
    ///
    /// # Errors
    /// [`Error::LeafOutOfRange`] or [`Error::ProofLength`] when the proof's shape is
    /// impossible.
    pub fn reconstruct_root(&self, leaf: Fe) -> Result<Fe> {
        if self.index >= self.leaves {
            return Err(Error::LeafOutOfRange {
                index: self.index,
                leaves: self.leaves,
            });
        }
        let expected = depth(self.leaves);
        if self.path.len() != expected {
            return Err(Error::ProofLength {
                leaves: self.leaves,
                expected,
                found: self.path.len(),
            });
        }
        Ok(reconstruct(self.index, self.leaves, leaf, &self.path))
    }

    /// Whether `leaf` is at `self.index` of the tree with root `root`.
    pub fn verify(&self, leaf: Fe, root: Fe) -> bool {
        matches!(self.reconstruct_root(leaf), Ok(r) if r == root)
    }

    /// Codex's stored form: a `CodexProof` with `mcodec = identity` and the path as
    /// 32-byte little-endian elements (what the slot builder's `putCidAndProof` stores).
    pub fn to_codex(&self) -> CodexProof {
        CodexProof {
            mcodec: codec::IDENTITY,
            index: self.index,
            nleaves: self.leaves,
            path: self.path.iter().map(Fe::to_le_bytes).collect(),
        }
    }

    /// Reads [`MerkleProof::to_codex`]'s form.
    ///
    /// # Errors
    /// [`Error::ProofCodec`] when `mcodec` is not identity, [`Error::NotCanonical`] for a
    /// path entry `>= r`.
    pub fn from_codex(proof: &CodexProof) -> Result<Self> {
        if proof.mcodec != codec::IDENTITY {
            return Err(Error::ProofCodec {
                mcodec: proof.mcodec,
            });
        }
        Ok(MerkleProof {
            index: proof.index,
            leaves: proof.nleaves,
            path: proof
                .path
                .iter()
                .map(Fe::from_le_bytes)
                .collect::<Result<_>>()?,
        })
    }
}

/// The walk of `reconstructRoot`: `path` has the right length for `leaves`.
pub(crate) fn reconstruct(index: u64, leaves: u64, leaf: Fe, path: &[Fe]) -> Fe {
    let (mut j, mut m, mut h) = (index, leaves, leaf);
    for (step, &p) in path.iter().enumerate() {
        let key = if step == 0 {
            KEY_BOTTOM_LAYER
        } else {
            KEY_NONE
        };
        h = if j & 1 == 1 {
            compress(p, h, key)
        } else if j == m - 1 {
            compress(h, p, key + 2)
        } else {
            compress(h, p, key)
        };
        j >>= 1;
        m = (m + 1) >> 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Fe> {
        (1..=n).map(Fe::from_u64).collect()
    }

    #[test]
    fn small_trees_by_hand() {
        let l = leaves(3);
        let a = compress(l[0], l[1], KEY_BOTTOM_LAYER);
        let b = compress(l[2], Fe::ZERO, KEY_ODD_AND_BOTTOM_LAYER);
        let root = compress(a, b, KEY_NONE);
        assert_eq!(MerkleTree::new(l.clone()).expect("tree").root(), root);
        assert_eq!(merkle_root(&l).expect("root"), root);
        let one = MerkleTree::new(vec![l[0]]).expect("one");
        assert_eq!(
            one.root(),
            compress(l[0], Fe::ZERO, KEY_ODD_AND_BOTTOM_LAYER)
        );
        assert_eq!(one.proof(0).expect("proof").path, vec![Fe::ZERO]);
    }

    #[test]
    fn every_proof_verifies_and_a_flipped_bit_fails() {
        for n in (1..=70).chain([127, 128, 129, 600, 1025]) {
            let l = leaves(n);
            let tree = MerkleTree::new(l.clone()).expect("tree");
            assert_eq!(merkle_root(&l).expect("root"), tree.root());
            let step = if n > 100 { 37 } else { 1 };
            for i in (0..n).step_by(step).chain([n - 1]) {
                let proof = tree.proof(i).expect("proof");
                assert_eq!(proof.path.len(), depth(n));
                let leaf = l[i as usize];
                assert!(proof.verify(leaf, tree.root()), "n={n} i={i}");
                let codex = proof.to_codex();
                assert_eq!(MerkleProof::from_codex(&codex).expect("codex"), proof);
                assert_eq!(CodexProof::decode(&codex.encode()).expect("decode"), codex);
                // A flipped bit anywhere fails.
                let bit = (i as usize * 7 + n as usize) % 254;
                let flip = |x: Fe| {
                    let mut b = x.to_le_bytes();
                    b[bit / 8] ^= 1 << (bit % 8);
                    Fe::from_le_bytes(&b).unwrap_or(Fe::ONE + x)
                };
                assert!(!proof.verify(flip(leaf), tree.root()));
                assert!(!proof.verify(leaf, flip(tree.root())));
                let mut p = proof.clone();
                let k = i as usize % p.path.len();
                p.path[k] = flip(p.path[k]);
                assert!(!p.verify(leaf, tree.root()), "n={n} i={i} k={k}");
            }
        }
    }

    #[test]
    fn wrong_shapes_are_rejected() {
        let l = leaves(5);
        let tree = MerkleTree::new(l.clone()).expect("tree");
        let proof = tree.proof(4).expect("proof");
        let mut p = proof.clone();
        p.index = 5;
        assert!(matches!(
            p.reconstruct_root(l[4]),
            Err(Error::LeafOutOfRange {
                index: 5,
                leaves: 5
            })
        ));
        let mut p = proof.clone();
        p.path.push(Fe::ZERO);
        assert!(matches!(
            p.reconstruct_root(l[4]),
            Err(Error::ProofLength {
                expected: 3,
                found: 4,
                ..
            })
        ));
        let mut p = proof.clone();
        p.leaves = 6;
        assert!(!p.verify(l[4], tree.root()));
        assert!(!proof.verify(l[3], tree.root()));
        assert!(tree.proof(5).is_err());
        assert!(matches!(MerkleTree::new(vec![]), Err(Error::EmptyTree)));
        let mut codex = proof.to_codex();
        codex.mcodec = codec::SHA2_256;
        assert!(matches!(
            MerkleProof::from_codex(&codex),
            Err(Error::ProofCodec { mcodec: 0x12 })
        ));
    }
}
