#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod logging;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod node;

mod error;

pub use crate::error::{Error, Result};
pub use crate::node::{Node, NodeConfig};

/// Content addressing: CIDs and codecs, chunker, Merkle trees, manifests, the
/// `BlockStore` trait. Always present.
pub use codex_core as core;
/// End-to-end encryption of datasets (`codex-crypto`).
pub use codex_crypto as crypto;
/// Reed-Solomon erasure coding in Codex's stepped layout: encode, decode, repair.
/// Always present.
pub use codex_erasure as erasure;
/// The storage marketplace: Solidity contracts, alloy bindings, the marketplace client
/// and a local chain helper. Feature `market`.
#[cfg(feature = "market")]
pub use codex_market as market;
/// libp2p networking: transports, Kademlia, block exchange, the download engine.
/// Feature `net`.
#[cfg(feature = "net")]
pub use codex_net as net;
/// Poseidon2, slot building, sampling and halo2 storage proofs with their EVM verifier.
/// Feature `proofs`.
#[cfg(feature = "proofs")]
pub use codex_proofs as proofs;
/// The block store on sled and in memory. Always present.
pub use codex_store as store;
