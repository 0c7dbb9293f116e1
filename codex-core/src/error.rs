use crate::block::BlockAddress;
use crate::cid::Cid;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in content addressing, decoding and block storage.
///
/// The storage variants are here because [`crate::BlockStore`] is defined here: every
/// store implementation maps its own failures onto them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A CID could not be parsed or has a shape Codex does not use.
    #[error("invalid CID: {0}")]
    InvalidCid(String),
    /// A protobuf or binary encoding could not be decoded.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded (`manifest`, `CodexProof`, ...).
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A manifest decoded but breaks one of Codex's rules.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// A Merkle tree was asked for something it cannot give.
    #[error("merkle tree: {0}")]
    Tree(String),
    /// Block bytes do not hash to the CID they were stored or delivered under.
    #[error("block {cid} is corrupt: its bytes hash to {actual}")]
    Corrupt {
        /// The CID the block claims.
        cid: Box<Cid>,
        /// The CID its bytes really have.
        actual: Box<Cid>,
    },
    /// The block or leaf is not in the store.
    #[error("not found: {0}")]
    NotFound(Box<BlockAddress>),
    /// The store's quota cannot take the bytes.
    #[error("storage quota exhausted: {needed} bytes needed, {available} available")]
    QuotaExceeded {
        /// Bytes the operation needed.
        needed: u64,
        /// Bytes still free (quota minus used minus reserved).
        available: u64,
    },
    /// A write session id that the store does not know (already committed or aborted).
    #[error("unknown write session {0}")]
    UnknownSession(u64),
    /// The storage backend failed (I/O, database).
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An I/O error while reading input.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// [`Error::NotFound`] for `address`.
    pub fn not_found(address: impl Into<BlockAddress>) -> Self {
        Error::NotFound(Box::new(address.into()))
    }

    pub(crate) fn decode(what: &'static str, reason: impl ToString) -> Self {
        Error::Decode {
            what,
            reason: reason.to_string(),
        }
    }
}
