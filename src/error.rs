/// Result alias of the node.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From content addressing or the block store.
    #[error(transparent)]
    Core(#[from] codex_core::Error),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] codex_store::Error),
    /// The network failed.
    #[cfg(feature = "net")]
    #[error(transparent)]
    Net(#[from] codex_net::Error),
    /// Building slots or checking a proof input failed.
    #[cfg(feature = "proofs")]
    #[error(transparent)]
    Proofs(#[from] codex_proofs::Error),
    /// Erasure coding failed.
    #[error(transparent)]
    Erasure(#[from] codex_erasure::Error),
    /// A marketplace call failed.
    #[cfg(feature = "market")]
    #[error(transparent)]
    Market(#[from] codex_market::Error),
    /// A log level or filter that cannot be read.
    #[error(transparent)]
    LogLevel(#[from] crate::logging::LogLevelError),
    /// The log file cannot be opened for appending.
    #[error("cannot open the log file {path}: {source}")]
    LogFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A process-wide logger was installed before.
    #[error("a logger is installed already: {0}")]
    LoggerInstalled(String),
    /// The node runs without a marketplace.
    #[error(
        "this node runs without a marketplace (--eth-provider, --marketplace-address, --eth-private-key)"
    )]
    NoMarketplace,
    /// The host's verifying key is not the one the marketplace's verifier checks
    /// proofs against: every proof it made would be rejected on chain.
    #[error(
        "this node's verifying key digest {ours} differs from the marketplace's zkeyHash {on_chain}: its proofs would be rejected on chain (prove with the parameters and sample count the marketplace was deployed with, --circuit-params)"
    )]
    VerifyingKeyMismatch {
        /// The digest of the node's own verifying key.
        ours: String,
        /// The digest recorded in the marketplace's proof configuration.
        on_chain: String,
    },
    /// The marketplace account key is unusable.
    #[error("invalid --eth-private-key: {0}")]
    InvalidKey(String),
    /// A storage request or availability with parameters the node refuses.
    #[error("{0}")]
    InvalidRequest(String),
    /// A storage request whose dataset is not what it says (slot size, slot count or
    /// verify root): a host never fills it.
    #[error("the request does not match its dataset {cid}: {what}")]
    RequestMismatch {
        /// The dataset the request names.
        cid: codex_core::Cid,
        /// What differs.
        what: String,
    },
    /// The node runs without a network.
    #[error("this node runs without a network")]
    NoNetwork,
    /// An upload had no bytes: Codex datasets have at least one block.
    #[error("the upload is empty: a dataset needs at least one byte")]
    EmptyUpload,
    /// A CID names something that is not a dataset where one is needed.
    #[error("{0} is not a manifest CID")]
    NotAManifest(codex_core::Cid),
    /// The upload's source failed.
    #[error("reading the upload failed: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// I/O (binding the API, files).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A blocking task panicked.
    #[error("worker task failed: {0}")]
    Task(String),
    /// Encrypting or decrypting a dataset failed: a wrong key, a block that fails
    /// authentication (named by its index), a dataset that is not encrypted.
    #[error(transparent)]
    Crypto(codex_crypto::Error),
    /// Decryption with a kept key was asked for, and the node keeps none for the
    /// dataset (it runs without `--keep-keys`, or the key was never given to it).
    #[error("this node keeps no key for the dataset: give the key")]
    NoKeptKey,
}

impl From<codex_crypto::Error> for Error {
    /// A source error that carries one of ours is given back as it was.
    fn from(e: codex_crypto::Error) -> Self {
        match e {
            codex_crypto::Error::Source(inner) => match inner.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => Error::Crypto(codex_crypto::Error::Source(other)),
            },
            other => Error::Crypto(other),
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}
