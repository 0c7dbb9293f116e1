#![doc = include_str!("../README.md")]

pub mod node;

mod error;

pub use crate::error::{Error, Result};
pub use crate::node::{Node, NodeConfig};

/// Content addressing, manifests, Merkle trees, the `BlockStore` trait.
pub use codex_core as core;
/// Reed-Solomon erasure coding (not implemented yet).
pub use codex_erasure as erasure;
/// The storage marketplace (not implemented yet).
pub use codex_market as market;
/// libp2p networking (not implemented yet).
pub use codex_net as net;
/// Poseidon2, slots and storage proofs (not implemented yet).
pub use codex_proofs as proofs;
/// The block store on sled and in memory.
pub use codex_store as store;
