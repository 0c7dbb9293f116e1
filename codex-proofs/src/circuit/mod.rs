//! The storage-proof circuit: Codex's `SampleAndProve(maxDepth = 32, maxLog2NSlots = 8,
//! blockTreeDepth = 5, nFieldElemsPerCell = 67, nSamples)` in halo2 (halo2-axiom, BN254).
//!
//! Public inputs, in order: `[entropy, dataSetRoot, slotIndex]`. Private: the slot root,
//! the slot count and cells per slot (as bit masks), the slot's path to the dataset root,
//! and for each sample the cell's 67 field elements and its 32-entry Merkle path.
//!
//! What it proves, as Codex's circom circuit does:
//! 1. the slot root, at `slotIndex` with the dataset tree's odd-node keys taken from the
//!    bits of `nSlots - 1`, hashes up to `dataSetRoot` at the tree's depth;
//! 2. for sample `k` (1-based), the index is the low bits of
//!    `Sponge([entropy, slotRoot, k])`, whose 254-bit decomposition is checked to be
//!    below the field modulus (so it is the canonical one: the prover cannot pick cells);
//! 3. the sponge of the cell's elements, along the index's path (block tree of 5
//!    levels, then the slot tree whose depth and odd-node keys come from the cells-per-slot
//!    mask), reaches the slot root.
//!
//! Paths are zero-padded to the maximum depths and every level is computed; the root is
//! taken at the real depth (a one-leaf tree still compresses once, as the native trees do).

mod chip;

use halo2_proofs::circuit::{Layouter, SimpleFloorPlanner};
use halo2_proofs::plonk::{Circuit, ConstraintSystem, Error as PlonkError};
use halo2curves_axiom::bn256::Fr;
use halo2curves_axiom::ff::{Field, PrimeField};

use self::chip::{In, Layout, Var, q};
pub use self::chip::{PERM_ROWS, StorageConfig};
use crate::error::{Error, Result};
use crate::field::{Fe, MODULUS};
use crate::sampler::{BLOCK_TREE_DEPTH, CELL_ELEMENTS, MAX_DEPTH, MAX_LOG2_SLOTS, ProofInput};

/// Levels of the slot tree (over blocks) in a padded path.
const SLOT_LEVELS: usize = MAX_DEPTH - BLOCK_TREE_DEPTH;
/// Bits of a field element's canonical decomposition.
const FIELD_BITS: usize = 254;
/// Permutations per sample: 2 for the index, 34 for the cell, one per path level.
const PERMS_PER_SAMPLE: usize = 2 + CELL_ELEMENTS.div_ceil(2) + MAX_DEPTH;
/// Arithmetic rows per sample (1,089 counted) and for the rest (154 counted): upper
/// bounds that reserve the rows; synthesis fails if the layout outgrows them.
const ARITH_ROWS_PER_SAMPLE: usize = 1100;
const ARITH_ROWS_FIXED: usize = 200;

/// The witness of one proof, in the circuit's field.
#[derive(Clone, Debug)]
struct Witness {
    entropy: Fr,
    data_set_root: Fr,
    slot_index: u64,
    slot_root: Fr,
    /// log2 of the cells per slot (5..=32).
    log2_cells: u32,
    /// `nSlots - 1` (0..=255).
    last_slot: u64,
    slot_proof: Vec<Fr>,
    cells: Vec<Vec<Fr>>,
    paths: Vec<Vec<Fr>>,
}

/// The storage-proof circuit for a fixed number of samples.
#[derive(Clone, Debug)]
pub struct StorageCircuit {
    witness: Witness,
}

impl StorageCircuit {
    /// The circuit over `input`, for `input.samples.len()` samples.
    ///
    /// # Errors
    /// The shape errors of [`ProofInput::check`] (list lengths, slot count, cells per
    /// slot); the values themselves are left for the circuit to accept or reject.
    pub fn new(input: &ProofInput) -> Result<Self> {
        let n_slots = input.n_slots_per_data_set;
        if n_slots == 0 || n_slots > 1 << MAX_LOG2_SLOTS {
            return Err(Error::SlotCount {
                slots: n_slots,
                max: 1 << MAX_LOG2_SLOTS,
            });
        }
        if input.slot_index >= 1 << MAX_LOG2_SLOTS {
            return Err(Error::SlotIndex {
                index: input.slot_index,
                slots: n_slots,
            });
        }
        let cells = input.n_cells_per_slot;
        if !cells.is_power_of_two() || !(1 << BLOCK_TREE_DEPTH..=1 << MAX_DEPTH).contains(&cells) {
            return Err(Error::CellsPerSlot {
                cells,
                min: 1 << BLOCK_TREE_DEPTH,
            });
        }
        let len = |field: String, found: usize, expected: usize| {
            if found == expected {
                Ok(())
            } else {
                Err(Error::WrongLength {
                    field,
                    expected,
                    found,
                })
            }
        };
        len("slotProof".into(), input.slot_proof.len(), MAX_LOG2_SLOTS)?;
        if input.samples.is_empty() {
            return Err(Error::WrongLength {
                field: "cellData".into(),
                expected: 1,
                found: 0,
            });
        }
        for (k, s) in input.samples.iter().enumerate() {
            len(format!("cellData[{k}]"), s.cell_data.len(), CELL_ELEMENTS)?;
            len(format!("merklePaths[{k}]"), s.merkle_paths.len(), MAX_DEPTH)?;
        }
        let fr = |xs: &[Fe]| xs.iter().map(|x| x.to_fr()).collect::<Vec<_>>();
        Ok(StorageCircuit {
            witness: Witness {
                entropy: input.entropy.to_fr(),
                data_set_root: input.data_set_root.to_fr(),
                slot_index: input.slot_index,
                slot_root: input.slot_root.to_fr(),
                log2_cells: cells.trailing_zeros(),
                last_slot: n_slots - 1,
                slot_proof: fr(&input.slot_proof),
                cells: input.samples.iter().map(|s| fr(&s.cell_data)).collect(),
                paths: input.samples.iter().map(|s| fr(&s.merkle_paths)).collect(),
            },
        })
    }

    /// A circuit of `n_samples` with placeholder values: the shape for key generation.
    pub fn placeholder(n_samples: usize) -> Self {
        let n = n_samples.max(1);
        StorageCircuit {
            witness: Witness {
                entropy: Fr::ZERO,
                data_set_root: Fr::ZERO,
                slot_index: 0,
                slot_root: Fr::ZERO,
                log2_cells: BLOCK_TREE_DEPTH as u32,
                last_slot: 0,
                slot_proof: vec![Fr::ZERO; MAX_LOG2_SLOTS],
                cells: vec![vec![Fr::ZERO; CELL_ELEMENTS]; n],
                paths: vec![vec![Fr::ZERO; MAX_DEPTH]; n],
            },
        }
    }

    /// The number of samples.
    pub fn samples(&self) -> usize {
        self.witness.cells.len()
    }

    /// The public inputs `[entropy, dataSetRoot, slotIndex]`.
    pub fn public_inputs(&self) -> Vec<Fr> {
        let w = &self.witness;
        vec![w.entropy, w.data_set_root, Fr::from(w.slot_index)]
    }

    /// The smallest `k` (2^k rows) that fits `n_samples`.
    pub fn k_for(n_samples: usize) -> u32 {
        // Rows for the blinding factors and halo2's reserved rows.
        let rows = perm_rows(n_samples) + arith_rows(n_samples) + 16;
        rows.next_power_of_two().trailing_zeros()
    }
}

/// Rows of the permutations of `n_samples`; the arithmetic rows start after them.
fn perm_rows(n_samples: usize) -> usize {
    (n_samples.max(1) * PERMS_PER_SAMPLE + MAX_LOG2_SLOTS) * PERM_ROWS
}

/// Rows reserved for the arithmetic of `n_samples`.
fn arith_rows(n_samples: usize) -> usize {
    n_samples.max(1) * ARITH_ROWS_PER_SAMPLE + ARITH_ROWS_FIXED
}

/// Bit `i` of the canonical integer of `x`.
fn bit(x: &Fr, i: usize) -> bool {
    let repr = x.to_repr();
    (repr[i / 8] >> (i % 8)) & 1 == 1
}

fn modulus_bit(i: usize) -> bool {
    (MODULUS[i / 64] >> (i % 64)) & 1 == 1
}

impl Circuit<Fr> for StorageCircuit {
    type Config = StorageConfig;
    type FloorPlanner = SimpleFloorPlanner;
    type Params = ();

    fn without_witnesses(&self) -> Self {
        StorageCircuit::placeholder(self.samples())
    }

    fn configure(meta: &mut ConstraintSystem<Fr>) -> StorageConfig {
        StorageConfig::configure(meta)
    }

    fn synthesize(
        &self,
        config: StorageConfig,
        mut layouter: impl Layouter<Fr>,
    ) -> std::result::Result<(), PlonkError> {
        let publics = layouter.assign_region(
            || "storage proof",
            |mut region| {
                let mut l = Layout::new(&mut region, &config, perm_rows(self.samples()));
                self.lay_out(&mut l)
            },
        )?;
        for (row, cell) in publics.iter().enumerate() {
            layouter.constrain_instance(cell.cell, config.instance, row);
        }
        Ok(())
    }
}

impl StorageCircuit {
    /// Lays out the whole statement; returns the cells of the public inputs.
    fn lay_out(&self, l: &mut Layout<'_, '_>) -> std::result::Result<[Var; 3], PlonkError> {
        let w = &self.witness;
        let zero = l.constant(Fr::ZERO)?;
        let one = l.constant(Fr::ONE)?;
        let entropy = l.witness(w.entropy)?;
        let data_set_root = l.witness(w.data_set_root)?;
        let slot_root = l.witness(w.slot_root)?;

        // Slot index bits (public value, range-checked to 8 bits by the decomposition).
        let mut slot_bits = Vec::with_capacity(MAX_LOG2_SLOTS);
        let mut slot_index = zero;
        for i in 0..MAX_LOG2_SLOTS {
            let b = l.new_bool((w.slot_index >> i) & 1 == 1)?;
            slot_index = l.linear(In::Var(slot_index), 1, In::Var(b), 1 << i, Fr::ZERO)?;
            slot_bits.push(b);
        }
        // Bits of nSlots - 1, and which dataset levels are real: level i (>= 1) is iff a
        // bit at or above i is set (level 0 always is).
        let last_bits: Vec<Var> = (0..MAX_LOG2_SLOTS)
            .map(|i| l.new_bool((w.last_slot >> i) & 1 == 1))
            .collect::<Result<_, _>>()?;
        let mut active = vec![zero; MAX_LOG2_SLOTS + 1];
        let mut above = zero;
        for i in (1..MAX_LOG2_SLOTS).rev() {
            // above_i = ns_i OR above_{i+1}
            above = l.row(
                [
                    In::Var(last_bits[i]),
                    In::Var(above),
                    In::Var(above),
                    In::Out,
                ],
                q(-1, 1, 1, -1, Fr::ZERO),
            )?[3];
            active[i] = above;
        }
        active[0] = one;
        let ds_root = tree_path(l, slot_root, &w.slot_proof, &slot_bits, &last_bits, &active)?;
        l.equal(ds_root, data_set_root);

        // The cells-per-slot mask over the slot tree's levels: m_j = 1 iff path level
        // 5 + j is below log2(nCells). Booleans, and monotone (1...10...0).
        let mask: Vec<Var> = (0..SLOT_LEVELS)
            .map(|j| l.new_bool(((BLOCK_TREE_DEPTH + j) as u32) < w.log2_cells))
            .collect::<Result<_, _>>()?;
        for j in 1..SLOT_LEVELS {
            // m_j (1 - m_{j-1}) = 0
            l.row(
                [
                    In::Var(mask[j - 1]),
                    In::Var(mask[j]),
                    In::Var(mask[j]),
                    In::Zero,
                ],
                q(-1, 0, 1, 0, Fr::ZERO),
            )?;
        }
        let mut slot_active = vec![zero; SLOT_LEVELS + 1];
        slot_active[0] = one;
        slot_active[1..SLOT_LEVELS].copy_from_slice(&mask[1..]);

        let iv = l.constant(crate::poseidon2::sponge_iv(crate::poseidon2::Rate::Two).to_fr())?;
        for (k, (cell, path)) in w.cells.iter().zip(&w.paths).enumerate() {
            // The index: Sponge([entropy, slotRoot, k + 1]) with 10* padding.
            let counter = l.constant(Fr::from(k as u64 + 1))?;
            let s = l.permute([In::Var(entropy), In::Var(slot_root), In::Var(iv)])?;
            let a = l.linear(In::Var(s[0]), 1, In::Var(counter), 1, Fr::ZERO)?;
            let b = l.linear(In::Var(s[1]), 1, In::Zero, 0, Fr::ONE)?;
            let h = l.permute([In::Var(a), In::Var(b), In::Var(s[2])])?[0];
            let low = canonical_low_bits(l, h, zero, one)?;

            // The cell's digest.
            let leaf = cell_digest(l, cell, iv)?;

            // The block tree: 5 full levels, bottom key at the first.
            let mut node = leaf;
            for (depth, (&sibling, &bit)) in
                path.iter().zip(&low).take(BLOCK_TREE_DEPTH).enumerate()
            {
                let key = if depth == 0 { one } else { zero };
                node = level(l, node, sibling, bit, key)?;
            }
            // The slot tree: index bits masked by the cells-per-slot mask, whose bits
            // are also the bits of nBlocks - 1 (nCells is a power of two).
            let bits: Vec<Var> = (0..SLOT_LEVELS)
                .map(|j| l.mul(low[BLOCK_TREE_DEPTH + j], mask[j]))
                .collect::<Result<_, _>>()?;
            let root = tree_path(
                l,
                node,
                &path[BLOCK_TREE_DEPTH..],
                &bits,
                &mask,
                &slot_active,
            )?;
            l.equal(root, slot_root);
        }
        // The rows used must be the rows k was computed for.
        let (perms, arith) = l.rows();
        if perms != perm_rows(self.samples()) || arith > arith_rows(self.samples()) {
            return Err(PlonkError::Synthesis);
        }
        Ok([entropy, data_set_root, slot_index])
    }
}

/// The root of a keyed Merkle path from `leaf` with node-index bits `bits` in a tree
/// whose last index has bits `last`; `active[j]` says level `j` is below the root
/// (`active[0] = 1`, trailing zeros, one extra zero at the end). Odd-node keys apply
/// where the node is even and equal to the last index on its level.
fn tree_path(
    l: &mut Layout<'_, '_>,
    leaf: Var,
    path: &[Fr],
    bits: &[Var],
    last: &[Var],
    active: &[Var],
) -> std::result::Result<Var, PlonkError> {
    let levels = bits.len();
    let one = l.constant(Fr::ONE)?;
    let zero = l.constant(Fr::ZERO)?;
    // eq_j: the node index and the last index agree on every bit >= j.
    let mut eq = vec![one; levels + 1];
    for j in (0..levels).rev() {
        // same_j = 1 - b - lb + 2·b·lb
        let same = l.row(
            [
                In::Var(bits[j]),
                In::Var(last[j]),
                In::Var(last[j]),
                In::Out,
            ],
            q(2, -1, -1, -1, Fr::ONE),
        )?[3];
        eq[j] = l.mul(eq[j + 1], same)?;
    }
    let mut node = leaf;
    let mut root = zero;
    for j in 0..levels {
        // key = bottom + 2·(1 - b)·eq
        let bottom = if j == 0 { Fr::ONE } else { Fr::ZERO };
        let key = l.row(
            [In::Var(bits[j]), In::Var(eq[j]), In::Var(eq[j]), In::Out],
            q(-2, 0, 2, -1, bottom),
        )?[3];
        node = level(l, node, path[j], bits[j], key)?;
        // root += (active_j - active_{j+1}) · node
        let step = l.linear(In::Var(active[j]), 1, In::Var(active[j + 1]), -1, Fr::ZERO)?;
        root = l.mul_add(step, node, root)?;
    }
    Ok(root)
}

/// One compression: `(node, sibling)` in the order `bit` gives, with `key`.
fn level(
    l: &mut Layout<'_, '_>,
    node: Var,
    sibling: Fr,
    bit: Var,
    key: Var,
) -> std::result::Result<Var, PlonkError> {
    // diff = sibling - node; left = node + bit·diff; right = sibling - bit·diff.
    let [p, _, _, diff] = l.row(
        [In::New(sibling), In::Zero, In::Var(node), In::Out],
        q(0, 1, -1, -1, Fr::ZERO),
    )?;
    let left = l.mul_add(bit, diff, node)?;
    let right = l.row(
        [In::Var(bit), In::Var(diff), In::Var(p), In::Out],
        q(-1, 0, 1, -1, Fr::ZERO),
    )?[3];
    Ok(l.permute([In::Var(left), In::Var(right), In::Var(key)])?[0])
}

/// The rate-2 sponge over a cell's elements (fresh witnesses), with 10* padding.
fn cell_digest(
    l: &mut Layout<'_, '_>,
    cell: &[Fr],
    iv: Var,
) -> std::result::Result<Var, PlonkError> {
    // 10* padding: the element 1, then a zero if needed for a whole block of 2.
    let one = l.constant(Fr::ONE)?;
    let mut padded: Vec<In> = cell.iter().map(|&x| In::New(x)).collect();
    padded.push(In::Var(one));
    if padded.len() % 2 == 1 {
        padded.push(In::Zero);
    }
    let mut state: Option<[Var; 3]> = None;
    for pair in padded.chunks(2) {
        let input = match state {
            None => {
                let zero = l.constant(Fr::ZERO)?;
                let lane = |e: In| {
                    if matches!(e, In::Zero) {
                        In::Var(zero)
                    } else {
                        e
                    }
                };
                [lane(pair[0]), lane(pair[1]), In::Var(iv)]
            }
            Some(s) => {
                let mut lanes = [In::Var(s[0]), In::Var(s[1]), In::Var(s[2])];
                for (lane, &e) in pair.iter().enumerate() {
                    if !matches!(e, In::Zero) {
                        lanes[lane] = In::Var(l.linear(In::Var(s[lane]), 1, e, 1, Fr::ZERO)?);
                    }
                }
                lanes
            }
        };
        state = Some(l.permute(input)?);
    }
    state.map(|s| s[0]).ok_or(PlonkError::Synthesis)
}

/// Decomposes `h` into 254 bits, checks the integer they form is below the field
/// modulus (the canonical decomposition), and returns the low 32 bits.
fn canonical_low_bits(
    l: &mut Layout<'_, '_>,
    h: Var,
    zero: Var,
    one: Var,
) -> std::result::Result<Vec<Var>, PlonkError> {
    let value = h.value;
    decompose(l, h, zero, one, &|i| bit(&value, i))
}

/// [`canonical_low_bits`] with the prover's choice of bits (tests give wrong ones).
fn decompose(
    l: &mut Layout<'_, '_>,
    h: Var,
    zero: Var,
    one: Var,
    bits: &dyn Fn(usize) -> bool,
) -> std::result::Result<Vec<Var>, PlonkError> {
    let mut acc = zero;
    // eq: the bits so far (from the top) equal the modulus's; never greater.
    let mut eq = one;
    let mut low = vec![zero; MAX_DEPTH];
    for i in (0..FIELD_BITS).rev() {
        let b = l.new_bool(bits(i))?;
        acc = l.linear(In::Var(acc), 2, In::Var(b), 1, Fr::ZERO)?;
        if modulus_bit(i) {
            eq = l.mul(eq, b)?;
        } else {
            l.assert_product_zero(eq, b)?;
        }
        if i < MAX_DEPTH {
            low[i] = b;
        }
    }
    l.equal(acc, h);
    // Equal to the modulus all the way down is not below it.
    l.equal(eq, zero);
    Ok(low)
}

#[cfg(test)]
mod tests;
