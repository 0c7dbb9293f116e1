#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod circuit;
mod error;
pub mod field;
pub mod merkle;
pub mod poseidon2;
pub mod prover;
pub mod ptau;
pub mod sampler;
pub mod slot;

pub use crate::circuit::StorageCircuit;
pub use crate::error::{Error, Result};
pub use crate::field::Fe;
pub use crate::merkle::{MerkleProof, MerkleTree};
pub use crate::poseidon2::{Rate, Sponge, compress, hash_bytes, permute, sponge, sponge2};
pub use crate::prover::{Proof, Prover, Srs};
pub use crate::ptau::{Contribution, Ptau, PtauCheck, VerifyReport, import_params, verify_params};
pub use crate::sampler::{ProofInput, Sample, cell_index, cell_indices, entropy_from_challenge};
pub use crate::slot::{SlotGeometry, SlotTree, Slots, build_slot_tree, build_verifiable};
