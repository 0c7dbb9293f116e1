#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod block;
pub mod buffers;
pub mod chunker;
pub mod cid;
mod error;
pub mod manifest;
pub mod merkle;
pub mod pb;
pub mod store;

/// The store traits, imported for their methods: `use codex_core::prelude::*;`.
pub mod prelude {
    pub use crate::store::{
        BlockRead as _, BlockStore, BlockWrite as _, Manifests as _, Quota as _, Sessions as _,
        WriteSession,
    };
}

pub use crate::block::{Block, BlockAddress};
pub use crate::chunker::{ChunkBuffer, Chunker, DEFAULT_BLOCK_SIZE};
pub use crate::cid::{Cid, codec};
pub use crate::error::{Error, Result};
pub use crate::manifest::{Encryption, Kdf, Manifest, Protection, StrategyType, Verification};
pub use crate::merkle::{CodexProof, MerkleTree};
pub use crate::store::{
    BlockRead, BlockStore, BlockWrite, LeafMeta, Manifests, Quota, RecoverBlock, SessionId,
    Sessions, Space, WriteSession, store_dataset,
};
