//! The crate's error type.

/// What went wrong encrypting or decrypting a dataset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key (or passphrase) is not the one the dataset was encrypted with. Found
    /// with the manifest's key check, before any block is read.
    #[error("wrong key: the dataset was encrypted with another key or passphrase")]
    WrongKey,
    /// A block failed authentication: its bytes were altered, or it is a block of
    /// another dataset.
    #[error("block {index} failed authentication: altered, or from another dataset")]
    Tampered {
        /// The block's position in the dataset.
        index: u64,
    },
    /// A block of this dataset stands at the wrong position (blocks swapped or
    /// reordered).
    #[error("block {index} is this dataset's block {belongs_at}: blocks were reordered")]
    Misplaced {
        /// Where it was found.
        index: u64,
        /// Where it belongs.
        belongs_at: u64,
    },
    /// The dataset ends before its last block: the bytes stop early, or the block
    /// that ends them was not sealed as the last.
    #[error("the dataset is cut short after {got} blocks")]
    Truncated {
        /// Blocks found before the end.
        got: u64,
    },
    /// The dataset is not encrypted (its manifest has no encryption parameters).
    #[error("the dataset is not encrypted")]
    NotEncrypted,
    /// The manifest names a scheme this build does not know.
    #[error("unknown encryption scheme {0}")]
    UnknownScheme(u32),
    /// A key given as text that is not 64 hex digits.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A passphrase was given for a dataset encrypted with a random key.
    #[error("the dataset was encrypted with a key, not a passphrase: give the key")]
    NeedsKey,
    /// Key derivation parameters out of bounds or refused by Argon2.
    #[error("key derivation: {0}")]
    Kdf(String),
    /// The block size is too small to hold the encrypted metadata.
    #[error("block size {0} is too small for encryption (at least {min})", min = crate::MIN_BLOCK_SIZE)]
    BlockSize(usize),
    /// A file name or MIME type longer than [`crate::MAX_NAME_LEN`] bytes.
    #[error("{0} is longer than {max} bytes", max = crate::MAX_NAME_LEN)]
    NameTooLong(&'static str),
    /// The decrypted bytes or the sizes do not follow the format.
    #[error("malformed encrypted dataset: {0}")]
    Format(String),
    /// The byte source failed.
    #[error("source: {0}")]
    Source(Box<dyn std::error::Error + Send + Sync>),
    /// A blocking task panicked or was cancelled.
    #[error("task: {0}")]
    Task(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
