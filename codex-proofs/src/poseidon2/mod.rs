//! Poseidon2 over BN254 with Codex's constants (width 3, x^5, 8 full and 56 partial
//! rounds), and the sponge, byte packing and keyed compression of nim-poseidon2.
//!
//! [`permute`] is a hand-written permutation over halo2curves' `Fr`; [`Plonky3`] is the
//! same permutation from `p3-poseidon2`. Both reproduce every Codex vector; the
//! hand-written one is faster (see the crate's benchmarks) and is what the sponge, the
//! trees and the slot builder use.

mod constants;
#[cfg(target_arch = "x86_64")]
mod ifma;
mod plonky3;

use std::sync::LazyLock;

use halo2curves_axiom::bn256::Fr;

use crate::field::Fe;

pub use self::plonky3::{Plonky3, from_bn254, to_bn254};

/// State width.
pub const WIDTH: usize = 3;
/// Full (external) rounds, half before and half after the partial rounds.
pub const FULL_ROUNDS: usize = 8;
/// Partial (internal) rounds.
pub const PARTIAL_ROUNDS: usize = 56;

/// Key of an inner node above the bottom layer.
pub const KEY_NONE: u64 = 0;
/// Key of a node on a tree's bottom layer.
pub const KEY_BOTTOM_LAYER: u64 = 1;
/// Key of the last node of an odd layer.
pub const KEY_ODD: u64 = 2;
/// Key of the last node of an odd bottom layer.
pub const KEY_ODD_AND_BOTTOM_LAYER: u64 = 3;

struct Constants {
    external: [[Fr; WIDTH]; FULL_ROUNDS],
    internal: [Fr; PARTIAL_ROUNDS],
}

static CONSTANTS: LazyLock<Constants> = LazyLock::new(|| Constants {
    external: constants::EXTERNAL.map(|round| round.map(Fr::from_raw)),
    internal: constants::INTERNAL.map(Fr::from_raw),
});

/// The external round constants (rounds 0-3 initial, 4-7 terminal) as field elements.
pub fn external_constants() -> [[Fe; WIDTH]; FULL_ROUNDS] {
    CONSTANTS.external.map(|r| r.map(Fe))
}

/// The internal round constants as field elements.
pub fn internal_constants() -> [Fe; PARTIAL_ROUNDS] {
    CONSTANTS.internal.map(Fe)
}

#[inline(always)]
fn sbox(x: Fr) -> Fr {
    let x2 = x.square();
    x2.square() * x
}

/// `M_E = circ(2, 1, 1)`: each lane gets the sum of all three added.
#[inline(always)]
fn mix_external(s: &mut [Fr; WIDTH]) {
    let t = s[0] + s[1] + s[2];
    s[0] += t;
    s[1] += t;
    s[2] += t;
}

#[inline(always)]
fn full_round(s: &mut [Fr; WIDTH], rc: &[Fr; WIDTH]) {
    s[0] = sbox(s[0] + rc[0]);
    s[1] = sbox(s[1] + rc[1]);
    s[2] = sbox(s[2] + rc[2]);
    mix_external(s);
}

/// The permutation on halo2curves' `Fr` (no conversions).
#[inline]
pub(crate) fn permute_fr(s: &mut [Fr; WIDTH]) {
    let c = &*CONSTANTS;
    mix_external(s);
    for rc in &c.external[..FULL_ROUNDS / 2] {
        full_round(s, rc);
    }
    for rc in &c.internal {
        s[0] = sbox(s[0] + rc);
        // M_I = [[2,1,1],[1,2,1],[1,1,3]].
        let t = s[0] + s[1] + s[2];
        s[0] += t;
        s[1] += t;
        s[2] = s[2].double() + t;
    }
    for rc in &c.external[FULL_ROUNDS / 2..] {
        full_round(s, rc);
    }
}

/// Codex's Poseidon2 permutation, in place (about 8 µs on one core).
pub fn permute(state: &mut [Fe; WIDTH]) {
    let mut s = state.map(|x| x.0);
    permute_fr(&mut s);
    *state = s.map(Fe);
}

/// Keyed compression: `perm(x, y, key)[0]` (`compress` of nim-poseidon2).
pub fn compress(x: Fe, y: Fe, key: u64) -> Fe {
    let mut s = [x.0, y.0, Fr::from(key)];
    permute_fr(&mut s);
    Fe(s[0])
}

/// The sponge's rate: how many elements each permutation absorbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    /// Rate 1, capacity 2.
    One,
    /// Rate 2, capacity 1: what Codex uses everywhere.
    Two,
}

impl Rate {
    fn get(self) -> usize {
        match self {
            Rate::One => 1,
            Rate::Two => 2,
        }
    }
}

/// nim-poseidon2's sponge: state `(0, 0, 2^64 + 256*3 + rate)`, absorbing by addition,
/// `10*` padding with field elements, output `s[0]`.
#[derive(Clone, Debug)]
pub struct Sponge {
    state: [Fr; WIDTH],
    rate: usize,
    pos: usize,
}

/// The sponge's initial capacity element: `2^64 + 256 * t + rate`.
pub fn sponge_iv(rate: Rate) -> Fe {
    Fe(Fr::from_raw([(256 * WIDTH + rate.get()) as u64, 1, 0, 0]))
}

impl Sponge {
    /// An empty sponge of `rate`.
    pub fn new(rate: Rate) -> Self {
        Sponge {
            state: [Fr::zero(), Fr::zero(), sponge_iv(rate).0],
            rate: rate.get(),
            pos: 0,
        }
    }

    /// Absorbs one element.
    pub fn absorb(&mut self, e: Fe) {
        self.state[self.pos] += e.0;
        self.pos += 1;
        if self.pos == self.rate {
            permute_fr(&mut self.state);
            self.pos = 0;
        }
    }

    /// Pads, permutes and returns the digest.
    pub fn finish(mut self) -> Fe {
        self.state[self.pos] += Fr::one();
        permute_fr(&mut self.state);
        Fe(self.state[0])
    }
}

/// The sponge of `rate` over `elements`.
pub fn sponge(rate: Rate, elements: &[Fe]) -> Fe {
    let mut s = Sponge::new(rate);
    for &e in elements {
        s.absorb(e);
    }
    s.finish()
}

/// The rate-2 sponge over `elements` (`Sponge.digest` over field elements).
pub fn sponge2(elements: &[Fe]) -> Fe {
    sponge(Rate::Two, elements)
}

/// Bytes to field elements (nim-poseidon2 `elements`): 31-byte little-endian chunks; the
/// last chunk is the remaining bytes, then a `0x01` marker, then zeros. The marker is
/// always added, so there are `len / 31 + 1` elements (67 for a 2048-byte cell).
pub fn bytes_to_elements(bytes: &[u8]) -> impl ExactSizeIterator<Item = Fe> + '_ {
    (0..elements_count(bytes.len())).map(move |i| Fe::from_le_bytes_31(&element_bytes(bytes, i)))
}

/// The 31 little-endian bytes of element `i` of [`bytes_to_elements`]: a 31-byte chunk,
/// or for the last element the remaining bytes, the `0x01` marker and zeros.
fn element_bytes(bytes: &[u8], i: usize) -> [u8; 31] {
    let full = bytes.len() / 31;
    let mut chunk = [0u8; 31];
    if i < full {
        chunk.copy_from_slice(&bytes[i * 31..i * 31 + 31]);
    } else {
        let rest = &bytes[full * 31..];
        chunk[..rest.len()].copy_from_slice(rest);
        chunk[rest.len()] = 1;
    }
    chunk
}

/// The number of elements [`bytes_to_elements`] gives for `len` bytes.
pub fn elements_count(len: usize) -> usize {
    len / 31 + 1
}

/// The rate-2 sponge over the bytes' elements (`Sponge.digest(bytes)`, multihash 0xCD10).
/// A 2048-byte cell costs 34 permutations.
pub fn hash_bytes(bytes: &[u8]) -> Fe {
    let mut s = Sponge::new(Rate::Two);
    for e in bytes_to_elements(bytes) {
        s.absorb(e);
    }
    s.finish()
}

/// The [`hash_bytes`] digests of `data`'s `cell`-byte chunks (the last may be shorter),
/// in order. On x86-64 CPUs with AVX-512 IFMA, eight cells are hashed at once in the
/// lanes of the vector unit (several times faster, see the crate's benchmarks); elsewhere
/// one after the other. A `cell` of 0 is taken as 1.
pub fn hash_cells(data: &[u8], cell: usize) -> Vec<Fe> {
    let cell = cell.max(1);
    let mut out = Vec::with_capacity(data.len().div_ceil(cell));
    let mut groups = data.chunks_exact(cell * 8);
    for group in &mut groups {
        let mut cells = [&group[..0]; 8];
        for (c, chunk) in cells.iter_mut().zip(group.chunks_exact(cell)) {
            *c = chunk;
        }
        match hash8(cells) {
            Some(digests) => out.extend(digests),
            None => out.extend(cells.map(hash_bytes)),
        }
    }
    out.extend(groups.remainder().chunks(cell).map(hash_bytes));
    out
}

/// Eight equal-length cells at once, when this CPU can.
#[cfg(target_arch = "x86_64")]
fn hash8(cells: [&[u8]; 8]) -> Option<[Fe; 8]> {
    ifma::hash8(cells)
}

#[cfg(not(target_arch = "x86_64"))]
fn hash8(_cells: [&[u8]; 8]) -> Option<[Fe; 8]> {
    None
}

/// Eight permutations at once on AVX-512 IFMA; `None` (states untouched) on a CPU
/// without it. For benchmarks; the sponge uses it through [`hash_cells`].
pub fn permute8(states: &mut [[Fe; WIDTH]; 8]) -> Option<()> {
    #[cfg(target_arch = "x86_64")]
    return ifma::permute8(states);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = states;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_padding() {
        let e: Vec<Fe> = bytes_to_elements(&[]).collect();
        assert_eq!(e, vec![Fe::ONE]);
        let e: Vec<Fe> = bytes_to_elements(&[7; 31]).collect();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1], Fe::ONE);
        let e: Vec<Fe> = bytes_to_elements(&[0xff, 0x02]).collect();
        assert_eq!(e, vec![Fe::from_u64(0x01_02ff)]);
        assert_eq!(bytes_to_elements(&[0; 2048]).len(), 67);
        assert_eq!(elements_count(2048), 67);
        let last = bytes_to_elements(&[0x5f, 0x2e].repeat(1024))
            .last()
            .expect("last");
        // reference §C.3: a cell ending in 0x5f 0x2e has last element 0x01_2E5F = 77407.
        assert_eq!(last, Fe::from_u64(77407));
    }

    #[test]
    fn native_and_plonky3_agree() {
        let p3 = Plonky3::new();
        let mut a = [Fe::from_u64(3), Fe::from_u64(1 << 40), Fe::ZERO];
        for _ in 0..20 {
            let mut b = a;
            permute(&mut a);
            p3.permute(&mut b);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn hash_cells_matches_hash_bytes() {
        let data: Vec<u8> = (0..2048 * 9 + 100)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        for cell in [2048, 31, 1000] {
            let want: Vec<Fe> = data.chunks(cell).map(hash_bytes).collect();
            assert_eq!(hash_cells(&data, cell), want, "cell {cell}");
        }
        assert!(hash_cells(&[], 2048).is_empty());
    }
}
