//! The circuit's columns and gates: a Poseidon2 chip (37 rows per permutation) and a
//! general arithmetic gate, with a layout helper that places both in one region.
//!
//! halo2-axiom's `SimpleFloorPlanner` puts every region at row 0, so the whole circuit is
//! one region and this module manages the offsets: permutations are stacked from row 0,
//! arithmetic rows follow them in the same columns (fewer columns make the proof and its
//! on-chain verification cheaper; rows are cheap). Copy constraints wire the two.
//!
//! **Poseidon2 rows.** Row 0 of a permutation holds its input. Its gate applies the
//! initial linear layer and the first full round; rows 1-3 are full rounds; rows 4-31
//! each do two partial rounds; rows 32-35 are the last full rounds; row 36 holds the
//! output. The auxiliary columns hold the squares (and, in partial rows, the first
//! round's S-box output), so every gate has degree 4.
//!
//! **Arithmetic rows.** One row, four advice cells `a, b, c, d` (the state columns and
//! the first auxiliary column) and five fixed coefficients (the round-constant columns
//! serve as the first three): `qm·a·b + qa·a + qc·c + qd·d + qk = 0`.

use halo2_proofs::circuit::{Cell, Region, Value};
use halo2_proofs::plonk::{
    Advice, Column, ConstraintSystem, Error as PlonkError, Expression, Fixed, Instance, Selector,
};
use halo2_proofs::poly::Rotation;
use halo2curves_axiom::bn256::Fr;
use halo2curves_axiom::ff::Field;

use crate::poseidon2::{
    FULL_ROUNDS, PARTIAL_ROUNDS, WIDTH, external_constants, internal_constants,
};

/// Rows one permutation takes.
pub const PERM_ROWS: usize = 1 + FULL_ROUNDS + PARTIAL_ROUNDS / 2;

/// The circuit's columns and selectors.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    state: [Column<Advice>; WIDTH],
    aux: [Column<Advice>; WIDTH],
    rc: [Column<Fixed>; WIDTH],
    q_first: Selector,
    q_full: Selector,
    q_partial: Selector,
    q_arith: Selector,
    arith: [Column<Advice>; 4],
    coeff: [Column<Fixed>; 5],
    /// The public inputs `[entropy, dataSetRoot, slotIndex]`.
    pub instance: Column<Instance>,
}

/// `M_E = circ(2, 1, 1)` on expressions.
fn mix_external(x: [Expression<Fr>; WIDTH]) -> [Expression<Fr>; WIDTH] {
    let sum = x[0].clone() + x[1].clone() + x[2].clone();
    x.map(|xi| xi + sum.clone())
}

impl StorageConfig {
    /// Allocates the columns and defines the gates.
    pub fn configure(meta: &mut ConstraintSystem<Fr>) -> Self {
        let state = [(); WIDTH].map(|_| meta.advice_column());
        let aux = [(); WIDTH].map(|_| meta.advice_column());
        let rc = [(); WIDTH].map(|_| meta.fixed_column());
        let arith = [state[0], state[1], state[2], aux[0]];
        let coeff = [
            rc[0],
            rc[1],
            rc[2],
            meta.fixed_column(),
            meta.fixed_column(),
        ];
        let instance = meta.instance_column();
        for c in arith {
            meta.enable_equality(c);
        }
        meta.enable_equality(instance);
        let q_first = meta.selector();
        let q_full = meta.selector();
        let q_partial = meta.selector();
        let q_arith = meta.selector();

        // A full round on `x` (after the initial linear layer for the first one).
        let full_round =
            |meta: &mut halo2_proofs::plonk::VirtualCells<'_, Fr>, q: Selector, first: bool| {
                let q = meta.query_selector(q);
                let s = state.map(|c| meta.query_advice(c, Rotation::cur()));
                let next = state.map(|c| meta.query_advice(c, Rotation::next()));
                let a = aux.map(|c| meta.query_advice(c, Rotation::cur()));
                let c = rc.map(|c| meta.query_fixed(c, Rotation::cur()));
                let x = if first { mix_external(s) } else { s };
                let u: [Expression<Fr>; WIDTH] = [0, 1, 2].map(|i| x[i].clone() + c[i].clone());
                let y: [Expression<Fr>; WIDTH] =
                    [0, 1, 2].map(|i| a[i].clone() * a[i].clone() * u[i].clone());
                let out = mix_external(y);
                let mut constraints = Vec::with_capacity(2 * WIDTH);
                for i in 0..WIDTH {
                    constraints.push(q.clone() * (a[i].clone() - u[i].clone() * u[i].clone()));
                }
                for i in 0..WIDTH {
                    constraints.push(q.clone() * (next[i].clone() - out[i].clone()));
                }
                constraints
            };
        meta.create_gate("poseidon2 first full round", |meta| {
            full_round(meta, q_first, true)
        });
        meta.create_gate("poseidon2 full round", |meta| {
            full_round(meta, q_full, false)
        });
        meta.create_gate("poseidon2 two partial rounds", |meta| {
            let q = meta.query_selector(q_partial);
            let [x0, x1, x2] = state.map(|c| meta.query_advice(c, Rotation::cur()));
            let next = state.map(|c| meta.query_advice(c, Rotation::next()));
            let [a0, y0, a2] = aux.map(|c| meta.query_advice(c, Rotation::cur()));
            let [c0, c1, _] = rc.map(|c| meta.query_fixed(c, Rotation::cur()));
            let two = Expression::Constant(Fr::from(2));
            let three = Expression::Constant(Fr::from(3));
            let u = x0 + c0;
            // After the first round: M_I = [[2,1,1],[1,2,1],[1,1,3]] on (y0, x1, x2).
            let v = two.clone() * y0.clone() + x1.clone() + x2.clone();
            let w1 = y0.clone() + two.clone() * x1.clone() + x2.clone();
            let w2 = y0.clone() + x1 + three * x2;
            let u2 = v + c1;
            let z = a2.clone() * a2.clone() * u2.clone();
            let sum = z.clone() + w1.clone() + w2.clone();
            vec![
                q.clone() * (a0.clone() - u.clone() * u.clone()),
                q.clone() * (y0 - a0.clone() * a0 * u),
                q.clone() * (a2 - u2.clone() * u2),
                q.clone() * (next[0].clone() - (z + sum.clone())),
                q.clone() * (next[1].clone() - (w1 + sum.clone())),
                q * (next[2].clone() - (two * w2 + sum)),
            ]
        });
        meta.create_gate("arithmetic", |meta| {
            let q = meta.query_selector(q_arith);
            let [a, b, c, d] = arith.map(|col| meta.query_advice(col, Rotation::cur()));
            let [qm, qa, qc, qd, qk] = coeff.map(|col| meta.query_fixed(col, Rotation::cur()));
            vec![q * (qm * a.clone() * b + qa * a + qc * c + qd * d + qk)]
        });
        StorageConfig {
            state,
            aux,
            rc,
            q_first,
            q_full,
            q_partial,
            q_arith,
            arith,
            coeff,
            instance,
        }
    }
}

/// A cell with its value.
#[derive(Clone, Copy, Debug)]
pub struct Var {
    /// Where it is.
    pub cell: Cell,
    /// What it holds.
    pub value: Fr,
}

/// An operand of a row: an existing cell (copied and constrained equal), a fresh
/// witness, or (for the output cell) a value the row computes.
#[derive(Clone, Copy, Debug)]
pub enum In {
    /// Copy of an existing cell.
    Var(Var),
    /// A fresh witness value.
    New(Fr),
    /// An unused cell (zero).
    Zero,
    /// The cell the row's equation determines (only for `d`, with `qd = -1`).
    Out,
}

/// Row coefficients `[qm, qa, qc, qd, qk]`.
pub type Coeffs = [Fr; 5];

fn f(v: i64) -> Fr {
    if v >= 0 {
        Fr::from(v as u64)
    } else {
        -Fr::from(v.unsigned_abs())
    }
}

/// Coefficients of `m·a·b + a_·a + c_·c + d_·d + k` from small integers.
pub fn q(m: i64, a: i64, c: i64, d: i64, k: Fr) -> Coeffs {
    [f(m), f(a), f(c), f(d), k]
}

/// Precomputed per-row round constants and the 37 rows of witness of one permutation.
struct PermWitness {
    rows: Vec<([Fr; WIDTH], [Fr; WIDTH])>,
}

/// The 37 rows `(state, aux)` of the permutation of `input`.
fn perm_witness(input: [Fr; WIDTH], ext: &[[Fr; WIDTH]; FULL_ROUNDS], int: &[Fr]) -> PermWitness {
    let mut rows = Vec::with_capacity(PERM_ROWS);
    let mix = |x: [Fr; WIDTH]| {
        let s = x[0] + x[1] + x[2];
        x.map(|v| v + s)
    };
    let full = |x: [Fr; WIDTH], c: &[Fr; WIDTH]| {
        let u = [x[0] + c[0], x[1] + c[1], x[2] + c[2]];
        let a = u.map(|v| v.square());
        let y = [0, 1, 2].map(|i| a[i].square() * u[i]);
        (a, mix(y))
    };
    let (a, mut x) = full(mix(input), &ext[0]);
    rows.push((input, a));
    for c in &ext[1..FULL_ROUNDS / 2] {
        let (a, next) = full(x, c);
        rows.push((x, a));
        x = next;
    }
    for pair in int.chunks(2) {
        let u = x[0] + pair[0];
        let a0 = u.square();
        let y0 = a0.square() * u;
        let v = y0.double() + x[1] + x[2];
        let w1 = y0 + x[1].double() + x[2];
        let w2 = y0 + x[1] + x[2].double() + x[2];
        let u2 = v + pair[1];
        let a2 = u2.square();
        let z = a2.square() * u2;
        let sum = z + w1 + w2;
        rows.push((x, [a0, y0, a2]));
        x = [z + sum, w1 + sum, w2.double() + sum];
    }
    for c in &ext[FULL_ROUNDS / 2..] {
        let (a, next) = full(x, c);
        rows.push((x, a));
        x = next;
    }
    rows.push((x, [Fr::ZERO; WIDTH]));
    PermWitness { rows }
}

/// Places permutations and arithmetic rows in one region.
pub struct Layout<'a, 'r> {
    region: &'a mut Region<'r, Fr>,
    cfg: &'a StorageConfig,
    ext: [[Fr; WIDTH]; FULL_ROUNDS],
    int: [Fr; PARTIAL_ROUNDS],
    perm_row: usize,
    arith_base: usize,
    arith_row: usize,
    constants: Vec<(Fr, Var)>,
}

impl std::fmt::Debug for Layout<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout")
            .field("perm_row", &self.perm_row)
            .field("arith_row", &self.arith_row)
            .finish()
    }
}

impl<'a, 'r> Layout<'a, 'r> {
    /// A layout with permutations from row 0 of `region` and arithmetic rows from row
    /// `arith_base` (past the last permutation).
    pub fn new(region: &'a mut Region<'r, Fr>, cfg: &'a StorageConfig, arith_base: usize) -> Self {
        Layout {
            region,
            cfg,
            ext: external_constants().map(|r| r.map(|e| e.to_fr())),
            int: internal_constants().map(|e| e.to_fr()),
            perm_row: 0,
            arith_base,
            arith_row: 0,
            constants: Vec::new(),
        }
    }

    /// Rows used so far: `(permutations, arithmetic rows)`.
    pub fn rows(&self) -> (usize, usize) {
        (self.perm_row, self.arith_row)
    }

    fn advice(&mut self, col: Column<Advice>, row: usize, v: Fr) -> Var {
        let cell = self.region.assign_advice(col, row, Value::known(v)).cell();
        Var { cell, value: v }
    }

    /// Constrains two cells to be equal.
    pub fn equal(&mut self, a: Var, b: Var) {
        self.region.constrain_equal(a.cell, b.cell);
    }

    /// One arithmetic row. `d = In::Out` computes `d` from the equation (needs `qd = -1`).
    pub fn row(&mut self, ops: [In; 4], coeffs: Coeffs) -> Result<[Var; 4], PlonkError> {
        let row = self.arith_base + self.arith_row;
        self.arith_row += 1;
        self.cfg.q_arith.enable(self.region, row)?;
        for (col, c) in self.cfg.coeff.iter().zip(coeffs) {
            if c != Fr::ZERO {
                self.region.assign_fixed(*col, row, c);
            }
        }
        let value = |op: In| match op {
            In::Var(v) => v.value,
            In::New(v) => v,
            In::Zero | In::Out => Fr::ZERO,
        };
        let [qm, qa, qc, qd, qk] = coeffs;
        let (a, b, c) = (value(ops[0]), value(ops[1]), value(ops[2]));
        let d = match ops[3] {
            In::Out => {
                debug_assert_eq!(qd, -Fr::ONE, "an output cell needs qd = -1");
                qm * a * b + qa * a + qc * c + qk
            }
            op => value(op),
        };
        let vals = [a, b, c, d];
        let mut out = Vec::with_capacity(4);
        for i in 0..4 {
            let var = self.advice(self.cfg.arith[i], row, vals[i]);
            if let In::Var(src) = ops[i] {
                self.equal(src, var);
            }
            out.push(var);
        }
        Ok([out[0], out[1], out[2], out[3]])
    }

    /// A fresh witness in a row that constrains nothing.
    pub fn witness(&mut self, v: Fr) -> Result<Var, PlonkError> {
        Ok(self.row([In::Zero, In::Zero, In::Zero, In::New(v)], [Fr::ZERO; 5])?[3])
    }

    /// A cell fixed to `k` (one per distinct constant).
    pub fn constant(&mut self, k: Fr) -> Result<Var, PlonkError> {
        if let Some((_, v)) = self.constants.iter().find(|(c, _)| *c == k) {
            return Ok(*v);
        }
        let v = self.row([In::Zero, In::Zero, In::Zero, In::Out], q(0, 0, 0, -1, k))?[3];
        self.constants.push((k, v));
        Ok(v)
    }

    /// `a·b + c`.
    pub fn mul_add(&mut self, a: Var, b: Var, c: Var) -> Result<Var, PlonkError> {
        Ok(self.row(
            [In::Var(a), In::Var(b), In::Var(c), In::Out],
            q(1, 0, 1, -1, Fr::ZERO),
        )?[3])
    }

    /// `a·b`.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var, PlonkError> {
        Ok(self.row(
            [In::Var(a), In::Var(b), In::Zero, In::Out],
            q(1, 0, 0, -1, Fr::ZERO),
        )?[3])
    }

    /// `ka·a + kc·c + k` (`c` sits in the row's third cell).
    pub fn linear(&mut self, a: In, ka: i64, c: In, kc: i64, k: Fr) -> Result<Var, PlonkError> {
        Ok(self.row([a, In::Zero, c, In::Out], q(0, ka, kc, -1, k))?[3])
    }

    /// A fresh boolean witness (`x·x - x = 0`, with both operands the same cell).
    pub fn new_bool(&mut self, bit: bool) -> Result<Var, PlonkError> {
        let v = Fr::from(u64::from(bit));
        let [a, b, _, _] = self.row(
            [In::New(v), In::New(v), In::Zero, In::Zero],
            q(1, -1, 0, 0, Fr::ZERO),
        )?;
        self.equal(a, b);
        Ok(a)
    }

    /// `a·b = 0`.
    pub fn assert_product_zero(&mut self, a: Var, b: Var) -> Result<(), PlonkError> {
        self.row(
            [In::Var(a), In::Var(b), In::Zero, In::Zero],
            q(1, 0, 0, 0, Fr::ZERO),
        )?;
        Ok(())
    }

    /// One Poseidon2 permutation of `input` (each lane copied or fresh); returns the
    /// output lanes.
    pub fn permute(&mut self, input: [In; WIDTH]) -> Result<[Var; WIDTH], PlonkError> {
        let start = self.perm_row;
        self.perm_row += PERM_ROWS;
        let values = input.map(|op| match op {
            In::Var(v) => v.value,
            In::New(v) => v,
            In::Zero | In::Out => Fr::ZERO,
        });
        let w = perm_witness(values, &self.ext, &self.int);
        let cfg = self.cfg.clone();
        let mut out = Vec::with_capacity(WIDTH);
        for (i, (s, a)) in w.rows.iter().enumerate() {
            let row = start + i;
            for lane in 0..WIDTH {
                let var = self.advice(cfg.state[lane], row, s[lane]);
                if i + 1 < PERM_ROWS {
                    self.advice(cfg.aux[lane], row, a[lane]);
                }
                if i == 0
                    && let In::Var(src) = input[lane]
                {
                    self.equal(src, var);
                }
                if i + 1 == PERM_ROWS {
                    out.push(var);
                }
            }
            let constants: Option<[Fr; WIDTH]> = match i {
                0..4 => Some(self.ext[i]),
                4..32 => {
                    let t = 2 * (i - 4);
                    Some([self.int[t], self.int[t + 1], Fr::ZERO])
                }
                32..36 => Some(self.ext[i - 28]),
                _ => None,
            };
            if let Some(c) = constants {
                for (col, v) in cfg.rc.iter().zip(c) {
                    if v != Fr::ZERO {
                        self.region.assign_fixed(*col, row, v);
                    }
                }
                let sel = match i {
                    0 => cfg.q_first,
                    4..32 => cfg.q_partial,
                    _ => cfg.q_full,
                };
                sel.enable(self.region, row)?;
            }
        }
        Ok([out[0], out[1], out[2]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::Fe;
    use crate::poseidon2::permute;

    #[test]
    fn witness_rows_compute_the_permutation() {
        let ext = external_constants().map(|r| r.map(|e| e.to_fr()));
        let int = internal_constants().map(|e| e.to_fr());
        let input = [Fr::from(0), Fr::from(1), Fr::from(2)];
        let w = perm_witness(input, &ext, &int);
        assert_eq!(w.rows.len(), PERM_ROWS);
        let mut expected = [Fe::from_u64(0), Fe::from_u64(1), Fe::from_u64(2)];
        permute(&mut expected);
        assert_eq!(w.rows[PERM_ROWS - 1].0, expected.map(|e| e.to_fr()));
    }
}
