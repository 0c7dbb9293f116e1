//! The same permutation through Plonky3 (`p3-poseidon2` 0.8 with `p3-bn254`).

use std::fmt;

use p3_bn254::{Bn254, Poseidon2Bn254};
use p3_field::PrimeField;
use p3_poseidon2::ExternalLayerConstants;
use p3_symmetric::Permutation;

use super::{FULL_ROUNDS, WIDTH, constants};
use crate::field::Fe;

/// Plonky3's `Poseidon2Bn254<3>` built with Codex's round constants. p3 applies the
/// initial linear layer itself, so it matches nim-poseidon2 bit for bit.
///
/// Kept as a second, independent implementation: tests check the hand-written
/// [`super::permute`] against it, and the benchmarks compare their speed.
#[derive(Clone)]
pub struct Plonky3 {
    perm: Poseidon2Bn254<WIDTH>,
}

impl fmt::Debug for Plonky3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Plonky3(Poseidon2Bn254<3>, Codex constants)")
    }
}

impl Default for Plonky3 {
    fn default() -> Self {
        Self::new()
    }
}

impl Plonky3 {
    /// The permutation with Codex's constants: rounds 0-3 initial, 4-7 terminal, 56
    /// internal.
    pub fn new() -> Self {
        let round = |r: &[[u64; 4]; WIDTH]| r.map(Bn254::new);
        let initial = constants::EXTERNAL[..FULL_ROUNDS / 2]
            .iter()
            .map(round)
            .collect();
        let terminal = constants::EXTERNAL[FULL_ROUNDS / 2..]
            .iter()
            .map(round)
            .collect();
        let internal = constants::INTERNAL.iter().map(|c| Bn254::new(*c)).collect();
        Plonky3 {
            perm: Poseidon2Bn254::<WIDTH>::new(
                ExternalLayerConstants::new(initial, terminal),
                internal,
            ),
        }
    }

    /// Permutes p3 field elements in place.
    pub fn permute_bn254(&self, state: &mut [Bn254; WIDTH]) {
        self.perm.permute_mut(state);
    }

    /// Permutes in place, converting to and from p3's field type.
    pub fn permute(&self, state: &mut [Fe; WIDTH]) {
        let mut s = state.map(to_bn254);
        self.perm.permute_mut(&mut s);
        *state = s.map(from_bn254);
    }
}

/// Our element as a p3 element.
pub fn to_bn254(x: Fe) -> Bn254 {
    Bn254::new(x.to_limbs())
}

/// A p3 element as ours.
pub fn from_bn254(x: Bn254) -> Fe {
    let digits = x.as_canonical_biguint().to_u64_digits();
    let mut limbs = [0u64; 4];
    for (l, d) in limbs.iter_mut().zip(digits) {
        *l = d;
    }
    // p3 elements are canonical, so this cannot fail.
    Fe::from_limbs(limbs).unwrap_or(Fe::ZERO)
}
