use crate::field::Fe;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in hashing, slot building, sampling and checking proof
/// inputs. Variants carry the numbers that were wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 32 bytes that encode an integer `>= r`, the BN254 scalar field modulus.
    #[error("32-byte value is not a canonical BN254 field element (it is >= r)")]
    NotCanonical,
    /// A text value that is not a non-negative decimal integer.
    #[error("{field}: not a decimal integer")]
    InvalidDecimal {
        /// Where the value sits (`entropy`, `cellData[2][5]`, ...).
        field: String,
    },
    /// A number too large for where it is used (`>= r` for a field element, `> u64::MAX`
    /// for a count or index).
    #[error("{field}: value out of range")]
    OutOfRange {
        /// Where the value sits.
        field: String,
    },
    /// A JSON value of the wrong type.
    #[error("{field}: expected {expected}")]
    WrongType {
        /// Where the value sits.
        field: String,
        /// What was expected (`an array`, `a decimal string`, ...).
        expected: &'static str,
    },
    /// A required field is absent.
    #[error("missing field {field}")]
    MissingField {
        /// The field's name.
        field: &'static str,
    },
    /// A list of the wrong length.
    #[error("{field}: {found} entries, expected {expected}")]
    WrongLength {
        /// Which list.
        field: String,
        /// The length required.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// Zero-padding (beyond a path's real depth) that is not zero.
    #[error("{field}: padding entry is not zero")]
    NonZeroPadding {
        /// Where the entry sits (`merklePaths[1][20]`, `slotProof[6]`).
        field: String,
    },
    /// Text that is not JSON.
    #[error("invalid JSON")]
    Json(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A Merkle tree over no leaves.
    #[error("a Merkle tree needs at least one leaf")]
    EmptyTree,
    /// A leaf index beyond the tree.
    #[error("leaf {index} out of range: the tree has {leaves}")]
    LeafOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree's leaf count.
        leaves: u64,
    },
    /// A Merkle proof whose path does not fit its tree size.
    #[error("proof path has {found} nodes, a tree of {leaves} leaves needs {expected}")]
    ProofLength {
        /// The tree's leaf count.
        leaves: u64,
        /// The path length the tree needs.
        expected: usize,
        /// The path length found.
        found: usize,
    },
    /// A `CodexProof` that is not a Poseidon2 proof (its `mcodec` is not identity, 0).
    #[error("proof codec {mcodec:#x} is not the identity codec of Poseidon2 proofs")]
    ProofCodec {
        /// The codec found.
        mcodec: u64,
    },
    /// The manifest is not erasure-coded, so it has no slots.
    #[error("the manifest is not protected (erasure-coded); it has no slots")]
    NotProtected,
    /// The block size is not a power-of-two multiple of the cell size.
    #[error("block size {block_size} is not a power-of-two multiple of the {cell_size}-byte cell")]
    BlockSize {
        /// The manifest's block size.
        block_size: u32,
        /// The cell size.
        cell_size: u32,
    },
    /// The dataset's blocks cannot be split evenly into slots.
    #[error("{blocks} blocks cannot be split evenly into {slots} slots")]
    BlocksNotDivisible {
        /// Blocks in the dataset.
        blocks: u64,
        /// Slots (K + M).
        slots: u64,
    },
    /// A block read from the store whose length is neither 0 (empty) nor the block size.
    #[error("block {index} has {len} bytes, expected {expected}")]
    BlockLength {
        /// Index of the block in the dataset.
        index: u64,
        /// Its length.
        len: usize,
        /// The block size.
        expected: usize,
    },
    /// `nCellsPerSlot` is not a power of two of at least one block's cells and at most
    /// `2^32`.
    #[error("{cells} cells per slot: must be a power of two between {min} and 2^32")]
    CellsPerSlot {
        /// The value given.
        cells: u64,
        /// The smallest allowed (the cells of one block).
        min: u64,
    },
    /// A slot count of 0 or above the circuit's maximum.
    #[error("{slots} slots: must be between 1 and {max}")]
    SlotCount {
        /// The value given.
        slots: u64,
        /// The maximum (256).
        max: u64,
    },
    /// A slot index beyond the dataset.
    #[error("slot {index} out of range: the dataset has {slots}")]
    SlotIndex {
        /// The index given.
        index: u64,
        /// The dataset's slot count.
        slots: u64,
    },
    /// A block tree whose cell count does not match the slot geometry.
    #[error("a block of {cells} cells cannot be sampled: the circuit needs {expected}")]
    CellsPerBlock {
        /// Cells per block.
        cells: u64,
        /// Cells per block the circuit assumes (32).
        expected: u64,
    },
    /// Sample `sample`'s cell and Merkle path do not lead to the slot root.
    #[error("sample {sample} (cell {cell_index}) does not reach the slot root")]
    CellPath {
        /// Which sample (0-based).
        sample: usize,
        /// The cell index derived for it.
        cell_index: u64,
    },
    /// The slot root and the slot proof do not lead to the dataset root.
    #[error("slot {slot_index}'s proof does not reach the dataset root")]
    SlotProof {
        /// The slot index.
        slot_index: u64,
    },
    /// A slot root that differs from the expected one.
    #[error("slot {slot_index}: root {actual} differs from the expected {expected}")]
    SlotRootMismatch {
        /// The slot index.
        slot_index: u64,
        /// The root expected (from the manifest).
        expected: Fe,
        /// The root computed.
        actual: Fe,
    },
    /// A file of parameters, keys or proofs could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A KZG parameters file that cannot be used.
    #[error("KZG parameters {}: {reason}", path.display())]
    Params {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        reason: String,
    },
    /// A proof input with another number of samples than the keys were made for.
    #[error("the input has {found} samples, the keys are for {expected}")]
    SampleCount {
        /// Samples in the input.
        found: usize,
        /// Samples of the circuit.
        expected: usize,
    },
    /// A proof that does not verify for the given public inputs.
    #[error("the proof does not verify for these public inputs")]
    InvalidProof,
    /// Compiling the Solidity verifier failed.
    #[error("solc: {0}")]
    Solc(String),
    /// The EVM verifier rejected a proof (it reverted), or could not be deployed.
    #[error("EVM: {0}")]
    EvmRejected(String),
    /// halo2 failed to generate keys or a proof.
    #[error("halo2: {0}")]
    Plonk(String),
    /// The block store failed.
    #[error("block store")]
    Store(#[source] codex_core::Error),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
    /// A powers-of-tau file (`.ptau`), a ceremony or KZG parameters that fail a check;
    /// `check` names it (`tauG1[37] is not on the curve`, `contribution 2: proof of
    /// knowledge for tau fails`, ...).
    #[error(
        "{}{check}",
        path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default()
    )]
    Ptau {
        /// The file, when the check was on one.
        path: Option<std::path::PathBuf>,
        /// What failed.
        check: crate::ptau::PtauCheck,
    },
}

impl From<codex_core::Error> for Error {
    fn from(e: codex_core::Error) -> Self {
        Error::Store(e)
    }
}
