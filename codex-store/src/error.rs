/// Failures of the store itself (surfaced through `codex_core::Error::Backend` by the
/// store traits), and of [`crate::dataset`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed (I/O, corruption detected by sled, ...).
    #[error("database: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database is held open by another process, or by another instance in this
    /// one that is still open (or still shutting down after [`LOCK_WAIT`]).
    ///
    /// [`LOCK_WAIT`]: crate::SledKv::LOCK_WAIT
    #[error("the store at {} is in use (another process or instance holds its lock)", path.display())]
    InUse {
        /// The database's directory.
        path: std::path::PathBuf,
    },
    /// A metadata record could not be parsed.
    #[error("corrupt metadata record {key}: {reason}")]
    CorruptMetadata {
        /// The record's key, hex-encoded.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A metadata key that the backend keeps for itself (see [`crate::SledKv`]).
    #[error("metadata key {key} is reserved by the backend")]
    ReservedKey {
        /// The key, hex-encoded.
        key: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
    /// A store operation failed (not found, corrupt, quota exceeded, ...).
    #[error(transparent)]
    Core(#[from] codex_core::Error),
    /// [`crate::dataset::add_stream`] was given no bytes.
    #[error("the stream has no bytes: a dataset has at least one")]
    EmptyUpload,
    /// The stream given to [`crate::dataset::add_stream`] failed.
    #[error("reading the source failed: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A block size of zero or beyond `u32::MAX`.
    #[error("invalid block size {0}")]
    InvalidBlockSize(usize),
    /// A missing block of a protected dataset could not be rebuilt.
    #[error("cannot rebuild block {index}: {source}")]
    Recovery {
        /// The block's index.
        index: u64,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    pub(crate) fn database(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Database(Box::new(e))
    }
}

impl From<Error> for codex_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Core(e) => e,
            e => codex_core::Error::Backend(Box::new(e)),
        }
    }
}
