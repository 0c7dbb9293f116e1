use codex_core::Cid;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while erasure coding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// K or M is out of range.
    #[error("invalid erasure parameters K = {k}, M = {m}: {reason}")]
    InvalidParams {
        /// Data rows asked for.
        k: usize,
        /// Parity rows asked for.
        m: usize,
        /// Which rule they break.
        reason: &'static str,
    },
    /// The dataset has fewer blocks than K.
    #[error("the dataset has {blocks} blocks, fewer than K = {k}")]
    TooFewBlocks {
        /// Blocks in the dataset.
        blocks: u64,
        /// K.
        k: usize,
    },
    /// A column has fewer than K of its K+M blocks.
    #[error("column {column} has {present} of its blocks, {needed} are needed to decode it")]
    NotEnoughShards {
        /// The column (0..steps).
        column: u64,
        /// Blocks of the column that are available.
        present: usize,
        /// K.
        needed: usize,
    },
    /// The rebuilt data does not hash to the tree root the manifest names.
    #[error("rebuilt tree {actual} does not match the manifest's {expected}")]
    TreeMismatch {
        /// The root the manifest names.
        expected: Box<Cid>,
        /// The root of the rebuilt blocks.
        actual: Box<Cid>,
    },
    /// The manifest is protected already (encode) or not protected (decode, repair).
    #[error("{0}")]
    WrongManifest(&'static str),
    /// A slot index beyond K+M.
    #[error("slot {slot} does not exist: the dataset has {slots} slots")]
    NoSuchSlot {
        /// The slot asked for.
        slot: usize,
        /// K + M.
        slots: usize,
    },
    /// The Reed-Solomon library refused the shards.
    #[error("reed-solomon: {0}")]
    Codec(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Reading or writing blocks failed.
    #[error(transparent)]
    Store(#[from] codex_core::Error),
    /// A worker thread panicked.
    #[error("erasure worker failed: {0}")]
    Task(String),
}

impl From<reed_solomon_simd::Error> for Error {
    fn from(e: reed_solomon_simd::Error) -> Self {
        Error::Codec(Box::new(e))
    }
}
