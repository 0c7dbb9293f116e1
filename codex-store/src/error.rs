/// Failures of the store itself; surfaced through `codex_core::Error::Backend`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed (I/O, corruption detected by sled, ...).
    #[error("database: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A metadata record could not be parsed.
    #[error("corrupt metadata record {key}: {reason}")]
    CorruptMetadata {
        /// The record's key, hex-encoded.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

impl Error {
    pub(crate) fn database(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Database(Box::new(e))
    }
}

impl From<Error> for codex_core::Error {
    fn from(e: Error) -> Self {
        codex_core::Error::Backend(Box::new(e))
    }
}
