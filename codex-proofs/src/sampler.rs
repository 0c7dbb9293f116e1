//! The sampler (nim-codex `codex/slots/sampler`) and the circuit input: which cells a
//! challenge selects, the [`ProofInput`] that proves them, its JSON form (Codex's
//! `input.json` for the circuit) and a native check of everything the circuit checks.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::field::{Fe, parse_decimal};
use crate::merkle::{MerkleTree, depth, reconstruct};
use crate::poseidon2::{bytes_to_elements, sponge2};
use crate::slot::{CELL_SIZE, SlotTree, block_tree};

/// Padded length of `merklePaths` entries (`maxDepth`: up to 2^32 cells per slot).
pub const MAX_DEPTH: usize = 32;
/// Padded length of `slotProof` (`maxLog2NSlots`).
pub const MAX_LOG2_SLOTS: usize = 8;
/// Most slots a dataset can have in the circuit (`2^maxLog2NSlots`).
pub const MAX_SLOTS: u64 = 1 << MAX_LOG2_SLOTS;
/// Depth of a block tree (32 cells of a 64 KiB block).
pub const BLOCK_TREE_DEPTH: usize = 5;
/// Cells per block the circuit assumes.
pub const BLOCK_CELLS: u64 = 1 << BLOCK_TREE_DEPTH;
/// Field elements per 2 KiB cell (`nFieldElemsPerCell`).
pub const CELL_ELEMENTS: usize = 67;
/// Codex's default number of samples per proof (`DefaultSamplesNum`).
pub const DEFAULT_SAMPLES: usize = 5;

/// The entropy of an on-chain challenge: its first 31 bytes as a little-endian integer.
pub fn entropy_from_challenge(challenge: &[u8; 32]) -> Fe {
    Fe::from_le_bytes_31(&challenge[..31])
}

/// `log2(n_cells)`, checking that `n_cells` is a power of two between one block's cells
/// and 2^32.
fn log2_cells(n_cells: u64) -> Result<u32> {
    if !n_cells.is_power_of_two() || !(BLOCK_CELLS..=1 << MAX_DEPTH).contains(&n_cells) {
        return Err(Error::CellsPerSlot {
            cells: n_cells,
            min: BLOCK_CELLS,
        });
    }
    Ok(n_cells.trailing_zeros())
}

/// The cell index of sample `counter` (1-based): the low `log2(n_cells)` bits of
/// `Sponge_rate2([entropy, slot_root, counter])`.
///
/// # Errors
/// [`Error::CellsPerSlot`] when `n_cells` is not a power of two in range.
pub fn cell_index(entropy: Fe, slot_root: Fe, counter: u64, n_cells: u64) -> Result<u64> {
    let bits = log2_cells(n_cells)?;
    Ok(sponge2(&[entropy, slot_root, Fe::from_u64(counter)]).low_bits(bits))
}

/// The cell indices of samples `1..=n_samples`.
///
/// # Errors
/// As [`cell_index`].
pub fn cell_indices(
    entropy: Fe,
    slot_root: Fe,
    n_cells: u64,
    n_samples: usize,
) -> Result<Vec<u64>> {
    (1..=n_samples as u64)
        .map(|k| cell_index(entropy, slot_root, k, n_cells))
        .collect()
}

/// One sampled cell: its 67 field elements and its Merkle path (block-tree path of 5,
/// then the slot-tree path, zero-padded to [`MAX_DEPTH`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The cell's field elements (`cellData[k]`).
    pub cell_data: Vec<Fe>,
    /// The path from the cell digest to the slot root (`merklePaths[k]`).
    pub merkle_paths: Vec<Fe>,
}

/// Everything the storage-proof circuit takes, in the circuit's shapes (paths padded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofInput {
    /// The verify root (public).
    pub data_set_root: Fe,
    /// The challenge's entropy (public).
    pub entropy: Fe,
    /// Cells per slot, a power of two.
    pub n_cells_per_slot: u64,
    /// Slots in the dataset.
    pub n_slots_per_data_set: u64,
    /// The proven slot (public).
    pub slot_index: u64,
    /// The proven slot's root.
    pub slot_root: Fe,
    /// The slot root's path to the dataset root, zero-padded to [`MAX_LOG2_SLOTS`].
    pub slot_proof: Vec<Fe>,
    /// The sampled cells.
    pub samples: Vec<Sample>,
}

fn padded(mut path: Vec<Fe>, len: usize) -> Vec<Fe> {
    path.resize(len.max(path.len()), Fe::ZERO);
    path
}

impl ProofInput {
    /// Samples `n_samples` cells of slot `slot_index` for `entropy` and collects their
    /// data and paths. `slot_roots` are the dataset's slot roots (from the verifiable
    /// manifest), `slot` the slot's tree, and `read_block(i)` returns block `i` of the
    /// slot (`None` for an empty block); padding blocks beyond the slot's real blocks are
    /// zeros and not read. Costs one block tree (about 1,100 permutations) per sampled
    /// block.
    ///
    /// # Errors
    /// [`Error::SlotCount`], [`Error::SlotIndex`], [`Error::SlotRootMismatch`] when
    /// `slot` is not the slot the roots name, [`Error::CellsPerBlock`] for blocks other
    /// than 32 cells, [`Error::BlockLength`], and what `read_block` returns.
    pub fn new(
        entropy: Fe,
        slot_roots: &[Fe],
        slot_index: u64,
        slot: &SlotTree,
        n_samples: usize,
        mut read_block: impl FnMut(u64) -> Result<Option<Bytes>>,
    ) -> Result<Self> {
        let n_slots = slot_roots.len() as u64;
        if n_slots == 0 || n_slots > MAX_SLOTS {
            return Err(Error::SlotCount {
                slots: n_slots,
                max: MAX_SLOTS,
            });
        }
        let expected = *slot_roots
            .get(slot_index as usize)
            .ok_or(Error::SlotIndex {
                index: slot_index,
                slots: n_slots,
            })?;
        if expected != slot.root() {
            return Err(Error::SlotRootMismatch {
                slot_index,
                expected,
                actual: slot.root(),
            });
        }
        if slot.cells_per_block() != BLOCK_CELLS {
            return Err(Error::CellsPerBlock {
                cells: slot.cells_per_block(),
                expected: BLOCK_CELLS,
            });
        }
        let block_size = BLOCK_CELLS as usize * CELL_SIZE;
        let verify = MerkleTree::new(slot_roots.to_vec())?;
        let slot_proof = padded(verify.proof(slot_index)?.path, MAX_LOG2_SLOTS);
        let n_cells = slot.cells();
        let indices = cell_indices(entropy, slot.root(), n_cells, n_samples)?;
        let mut blocks: HashMap<u64, (Bytes, MerkleTree)> = HashMap::new();
        let mut samples = Vec::with_capacity(indices.len());
        for idx in indices {
            let (blk, cell) = (idx / BLOCK_CELLS, idx % BLOCK_CELLS);
            let (data, tree) = match blocks.entry(blk) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let data = if blk < slot.blocks() {
                        read_block(blk)?
                    } else {
                        None
                    };
                    let data = data.unwrap_or_else(|| Bytes::from(vec![0u8; block_size]));
                    if data.len() != block_size {
                        return Err(Error::BlockLength {
                            index: blk,
                            len: data.len(),
                            expected: block_size,
                        });
                    }
                    let tree = block_tree(&data)?;
                    e.insert((data, tree))
                }
            };
            let start = cell as usize * CELL_SIZE;
            let cell_data = bytes_to_elements(&data[start..start + CELL_SIZE]).collect();
            let mut path = tree.proof(cell)?.path;
            path.extend(slot.leaf_proof(blk)?.path);
            samples.push(Sample {
                cell_data,
                merkle_paths: padded(path, MAX_DEPTH),
            });
        }
        Ok(ProofInput {
            data_set_root: verify.root(),
            entropy,
            n_cells_per_slot: n_cells,
            n_slots_per_data_set: n_slots,
            slot_index,
            slot_root: slot.root(),
            slot_proof,
            samples,
        })
    }

    /// The circuit's public inputs: `[entropy, dataSetRoot, slotIndex]`.
    pub fn public_inputs(&self) -> [Fe; 3] {
        [
            self.entropy,
            self.data_set_root,
            Fe::from_u64(self.slot_index),
        ]
    }

    /// Checks natively what the circuit checks: the slot proof reaches the dataset
    /// root, and for each sample, at the cell index derived from the entropy and the
    /// slot root, the cell's digest and path reach the slot root. Padding entries must
    /// be zero. Returns the derived cell indices. Costs about 70 permutations per sample.
    ///
    /// # Errors
    /// The first check that fails: [`Error::SlotCount`], [`Error::SlotIndex`],
    /// [`Error::CellsPerSlot`], [`Error::WrongLength`], [`Error::NonZeroPadding`],
    /// [`Error::SlotProof`], [`Error::CellPath`] (naming the sample).
    pub fn check(&self) -> Result<Vec<u64>> {
        let n_slots = self.n_slots_per_data_set;
        if n_slots == 0 || n_slots > MAX_SLOTS {
            return Err(Error::SlotCount {
                slots: n_slots,
                max: MAX_SLOTS,
            });
        }
        if self.slot_index >= n_slots {
            return Err(Error::SlotIndex {
                index: self.slot_index,
                slots: n_slots,
            });
        }
        let n_cells = self.n_cells_per_slot;
        log2_cells(n_cells)?;
        check_len("slotProof", &self.slot_proof, MAX_LOG2_SLOTS)?;
        if self.samples.is_empty() {
            return Err(Error::WrongLength {
                field: "cellData".into(),
                expected: 1,
                found: 0,
            });
        }
        let slot_depth = depth(n_slots);
        check_padding("slotProof", &self.slot_proof[slot_depth..], slot_depth)?;
        let root = reconstruct(
            self.slot_index,
            n_slots,
            self.slot_root,
            &self.slot_proof[..slot_depth],
        );
        if root != self.data_set_root {
            return Err(Error::SlotProof {
                slot_index: self.slot_index,
            });
        }
        let slot_leaves = n_cells / BLOCK_CELLS;
        let path_depth = BLOCK_TREE_DEPTH + depth(slot_leaves);
        let mut indices = Vec::with_capacity(self.samples.len());
        for (k, sample) in self.samples.iter().enumerate() {
            check_len(&format!("cellData[{k}]"), &sample.cell_data, CELL_ELEMENTS)?;
            let paths = format!("merklePaths[{k}]");
            check_len(&paths, &sample.merkle_paths, MAX_DEPTH)?;
            check_padding(&paths, &sample.merkle_paths[path_depth..], path_depth)?;
            let idx = cell_index(self.entropy, self.slot_root, k as u64 + 1, n_cells)?;
            let (blk, cell) = (idx / BLOCK_CELLS, idx % BLOCK_CELLS);
            let leaf = sponge2(&sample.cell_data);
            let path = &sample.merkle_paths;
            let block_root = reconstruct(cell, BLOCK_CELLS, leaf, &path[..BLOCK_TREE_DEPTH]);
            let root = reconstruct(
                blk,
                slot_leaves,
                block_root,
                &path[BLOCK_TREE_DEPTH..path_depth],
            );
            if root != self.slot_root {
                return Err(Error::CellPath {
                    sample: k,
                    cell_index: idx,
                });
            }
            indices.push(idx);
        }
        Ok(indices)
    }

    /// Codex's circuit-input JSON: field elements as decimal strings, `nCellsPerSlot`,
    /// `nSlotsPerDataSet` and `slotIndex` as numbers (as Codex's generator writes them).
    pub fn to_json_value(&self) -> Value {
        let list =
            |xs: &[Fe]| Value::Array(xs.iter().map(|x| Value::String(x.to_string())).collect());
        json!({
            "dataSetRoot": self.data_set_root.to_string(),
            "entropy": self.entropy.to_string(),
            "nCellsPerSlot": self.n_cells_per_slot,
            "nSlotsPerDataSet": self.n_slots_per_data_set,
            "slotIndex": self.slot_index,
            "slotRoot": self.slot_root.to_string(),
            "slotProof": list(&self.slot_proof),
            "cellData": self.samples.iter().map(|s| list(&s.cell_data)).collect::<Vec<_>>(),
            "merklePaths": self.samples.iter().map(|s| list(&s.merkle_paths)).collect::<Vec<_>>(),
        })
    }

    /// [`ProofInput::to_json_value`] as text, with the keys in Codex's order and one
    /// element per line.
    pub fn to_json(&self) -> String {
        fn list(out: &mut String, indent: &str, xs: &[Fe]) {
            out.push_str("[\n");
            for (i, x) in xs.iter().enumerate() {
                let comma = if i + 1 < xs.len() { "," } else { "" };
                out.push_str(&format!("{indent}  \"{x}\"{comma}\n"));
            }
            out.push_str(indent);
            out.push(']');
        }
        fn lists<'a>(out: &mut String, xs: impl ExactSizeIterator<Item = &'a [Fe]>) {
            out.push_str("[\n");
            let n = xs.len();
            for (i, x) in xs.enumerate() {
                out.push_str("    ");
                list(out, "    ", x);
                out.push_str(if i + 1 < n { ",\n" } else { "\n" });
            }
            out.push_str("  ]");
        }
        let mut out = String::from("{\n");
        out.push_str(&format!("  \"dataSetRoot\": \"{}\",\n", self.data_set_root));
        out.push_str(&format!("  \"entropy\": \"{}\",\n", self.entropy));
        out.push_str(&format!(
            "  \"nCellsPerSlot\": {},\n",
            self.n_cells_per_slot
        ));
        out.push_str(&format!(
            "  \"nSlotsPerDataSet\": {},\n",
            self.n_slots_per_data_set
        ));
        out.push_str(&format!("  \"slotIndex\": {},\n", self.slot_index));
        out.push_str(&format!("  \"slotRoot\": \"{}\",\n", self.slot_root));
        out.push_str("  \"slotProof\": ");
        list(&mut out, "  ", &self.slot_proof);
        out.push_str(",\n  \"cellData\": ");
        lists(
            &mut out,
            self.samples.iter().map(|s| s.cell_data.as_slice()),
        );
        out.push_str(",\n  \"merklePaths\": ");
        lists(
            &mut out,
            self.samples.iter().map(|s| s.merkle_paths.as_slice()),
        );
        out.push_str("\n}\n");
        out
    }

    /// Parses Codex's circuit-input JSON. Field elements may be decimal strings or JSON
    /// integers; counts and the slot index likewise. Shapes are checked: `slotProof` has
    /// 8 entries, every `cellData` entry 67, every `merklePaths` entry 32, and there are
    /// as many paths as cells (at least one). Values are not checked against each other;
    /// [`ProofInput::check`] does that.
    ///
    /// # Errors
    /// [`Error::Json`], [`Error::MissingField`], [`Error::WrongType`],
    /// [`Error::InvalidDecimal`], [`Error::OutOfRange`], [`Error::WrongLength`].
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Json(Box::new(e)))?;
        Self::from_json_value(&value)
    }

    /// Parses an already-decoded JSON value; see [`ProofInput::from_json`].
    ///
    /// # Errors
    /// As [`ProofInput::from_json`].
    pub fn from_json_value(value: &Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| Error::WrongType {
            field: "input".into(),
            expected: "an object",
        })?;
        let cells = array(get(obj, "cellData")?, "cellData")?;
        let paths = array(get(obj, "merklePaths")?, "merklePaths")?;
        if cells.is_empty() {
            return Err(Error::WrongLength {
                field: "cellData".into(),
                expected: 1,
                found: 0,
            });
        }
        if paths.len() != cells.len() {
            return Err(Error::WrongLength {
                field: "merklePaths".into(),
                expected: cells.len(),
                found: paths.len(),
            });
        }
        let samples = cells
            .iter()
            .zip(paths)
            .enumerate()
            .map(|(k, (c, p))| {
                Ok(Sample {
                    cell_data: elements(c, &format!("cellData[{k}]"), CELL_ELEMENTS)?,
                    merkle_paths: elements(p, &format!("merklePaths[{k}]"), MAX_DEPTH)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(ProofInput {
            data_set_root: element(get(obj, "dataSetRoot")?, "dataSetRoot")?,
            entropy: element(get(obj, "entropy")?, "entropy")?,
            n_cells_per_slot: uint(get(obj, "nCellsPerSlot")?, "nCellsPerSlot")?,
            n_slots_per_data_set: uint(get(obj, "nSlotsPerDataSet")?, "nSlotsPerDataSet")?,
            slot_index: uint(get(obj, "slotIndex")?, "slotIndex")?,
            slot_root: element(get(obj, "slotRoot")?, "slotRoot")?,
            slot_proof: elements(get(obj, "slotProof")?, "slotProof", MAX_LOG2_SLOTS)?,
            samples,
        })
    }
}

fn check_len(field: &str, xs: &[Fe], expected: usize) -> Result<()> {
    if xs.len() != expected {
        return Err(Error::WrongLength {
            field: field.to_string(),
            expected,
            found: xs.len(),
        });
    }
    Ok(())
}

fn check_padding(field: &str, padding: &[Fe], offset: usize) -> Result<()> {
    match padding.iter().position(|x| !x.is_zero()) {
        Some(i) => Err(Error::NonZeroPadding {
            field: format!("{field}[{}]", offset + i),
        }),
        None => Ok(()),
    }
}

fn get<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<&'a Value> {
    obj.get(field).ok_or(Error::MissingField { field })
}

fn array<'a>(value: &'a Value, field: &str) -> Result<&'a Vec<Value>> {
    value.as_array().ok_or_else(|| Error::WrongType {
        field: field.to_string(),
        expected: "an array",
    })
}

/// A decimal string or a JSON integer as a 256-bit integer.
fn integer(value: &Value, field: &str) -> Result<[u64; 4]> {
    match value {
        Value::String(s) => parse_decimal(s, field),
        Value::Number(n) => match n.as_u64() {
            Some(v) => Ok([v, 0, 0, 0]),
            None => Err(Error::InvalidDecimal {
                field: field.to_string(),
            }),
        },
        _ => Err(Error::WrongType {
            field: field.to_string(),
            expected: "a decimal string or an integer",
        }),
    }
}

fn element(value: &Value, field: &str) -> Result<Fe> {
    Fe::from_limbs(integer(value, field)?).map_err(|_| Error::OutOfRange {
        field: field.to_string(),
    })
}

fn uint(value: &Value, field: &str) -> Result<u64> {
    match integer(value, field)? {
        [v, 0, 0, 0] => Ok(v),
        _ => Err(Error::OutOfRange {
            field: field.to_string(),
        }),
    }
}

fn elements(value: &Value, field: &str, len: usize) -> Result<Vec<Fe>> {
    let xs = array(value, field)?;
    if xs.len() != len {
        return Err(Error::WrongLength {
            field: field.to_string(),
            expected: len,
            found: xs.len(),
        });
    }
    xs.iter()
        .enumerate()
        .map(|(i, x)| element(x, &format!("{field}[{i}]")))
        .collect()
}
