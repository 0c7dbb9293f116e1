//! Eight Poseidon2 sponges at once with AVX-512 IFMA (x86-64 CPUs that have it: Intel
//! since Ice Lake, AMD since Zen 4).
//!
//! A field element is five 52-bit limbs in Montgomery form with `R = 2^260`, and a vector
//! of five `__m512i` holds the same limb of eight independent elements, one per lane. The
//! multiplication is the textbook word-by-word Montgomery product, done with the 52-bit
//! multiply-adds (`vpmadd52luq`/`vpmadd52huq`) in each lane; nothing crosses lanes, so
//! eight cells run the same instruction stream.
//!
//! Bounds, which the tests check against halo2curves' `Fr` at the edges: a product of
//! two normalised values below `8p` is below `2p` (`64p/R < 0.95`); [`reduce`] takes any
//! value below `2^259` to below `1.27p` by subtracting an estimate of `floor(v/p)·p`; the
//! round function keeps every state element below `8p` between reductions. Only the
//! digest leaves the vector unit, reduced to canonical form.
//!
//! Unsafe code here is two calls: the dispatchers call the `#[target_feature]` entry
//! points after checking at run time that the CPU has the features. The intrinsics
//! themselves are safe inside functions compiled with those features.

#![allow(unsafe_code)]

use std::arch::x86_64::*;
use std::sync::LazyLock;

use halo2curves_axiom::bn256::Fr;
use halo2curves_axiom::ff::Field;

use super::{CONSTANTS, FULL_ROUNDS, PARTIAL_ROUNDS, WIDTH, element_bytes, elements_count};
use crate::field::{Fe, MODULUS, less_than_modulus};

const M52: u64 = (1 << 52) - 1;

/// Five 52-bit limbs, little-endian.
type Limbs = [u64; 5];

/// One limb of eight elements per vector.
type V = [__m512i; 5];

fn to52(a: [u64; 4]) -> Limbs {
    [
        a[0] & M52,
        ((a[0] >> 52) | (a[1] << 12)) & M52,
        ((a[1] >> 40) | (a[2] << 24)) & M52,
        ((a[2] >> 28) | (a[3] << 36)) & M52,
        a[3] >> 16,
    ]
}

fn from52(l: Limbs) -> [u64; 4] {
    [
        l[0] | (l[1] << 52),
        (l[1] >> 12) | (l[2] << 40),
        (l[2] >> 24) | (l[3] << 28),
        (l[3] >> 36) | (l[4] << 16),
    ]
}

/// Constants in the limb form, computed once.
struct Consts {
    p: Limbs,
    /// `-p^-1 mod 2^52`.
    mu: u64,
    /// `floor(2^268 / p)` rounded down: the quotient estimate's multiplier.
    kq: u64,
    /// `R^2 mod p`: multiplying by it enters Montgomery form.
    r2: Limbs,
    /// One in Montgomery form.
    one: Limbs,
    /// The sponge's initial capacity element (rate 2), Montgomery form.
    iv: Limbs,
    external: [[Limbs; WIDTH]; FULL_ROUNDS],
    internal: [Limbs; PARTIAL_ROUNDS],
}

static C: LazyLock<Consts> = LazyLock::new(|| {
    let r = Fr::from(2u64).pow_vartime([260]);
    let canonical = |x: Fr| Fe(x).to_limbs();
    let mont = |x: Fr| to52(canonical(x * r));
    let mut inv = 1u64;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(MODULUS[0].wrapping_mul(inv)));
    }
    Consts {
        p: to52(MODULUS),
        mu: inv.wrapping_neg() & M52,
        kq: ((1u128 << 76) / (u128::from(MODULUS[3]) + 1)) as u64,
        r2: to52(canonical(r * r)),
        one: to52(canonical(r)),
        iv: mont(super::sponge_iv(super::Rate::Two).0),
        external: CONSTANTS.external.map(|round| round.map(mont)),
        internal: CONSTANTS.internal.map(mont),
    }
});

/// Whether this CPU runs the eight-lane path.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512ifma")
}

/// The rate-2 sponge digests of eight byte strings of equal length (as
/// [`super::hash_bytes`] of each). `None` when the CPU lacks AVX-512 IFMA or the lengths
/// differ.
pub(super) fn hash8(cells: [&[u8]; 8]) -> Option<[Fe; 8]> {
    let len = cells[0].len();
    if !available() || cells.iter().any(|c| c.len() != len) {
        return None;
    }
    let c = &*C;
    // SAFETY: `available()` checked that this CPU has AVX-512F and AVX-512 IFMA, the
    // features `hash8_ifma` is compiled with.
    Some(unsafe { hash8_ifma(cells, c) })
}

/// Eight Poseidon2 permutations (for tests and benchmarks). `None` without IFMA.
pub(super) fn permute8(states: &mut [[Fe; WIDTH]; 8]) -> Option<()> {
    if !available() {
        return None;
    }
    let c = &*C;
    // SAFETY: as in `hash8`.
    unsafe { permute8_ifma(states, c) };
    Some(())
}

/// Vector constants, broadcast once per call.
struct K {
    p: V,
    mu: __m512i,
    kq: __m512i,
    mask: __m512i,
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn splat(l: &Limbs) -> V {
    [
        _mm512_set1_epi64(l[0] as i64),
        _mm512_set1_epi64(l[1] as i64),
        _mm512_set1_epi64(l[2] as i64),
        _mm512_set1_epi64(l[3] as i64),
        _mm512_set1_epi64(l[4] as i64),
    ]
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn consts(c: &Consts) -> K {
    K {
        p: splat(&c.p),
        mu: _mm512_set1_epi64(c.mu as i64),
        kq: _mm512_set1_epi64(c.kq as i64),
        mask: _mm512_set1_epi64(M52 as i64),
    }
}

/// Eight elements' limbs into vectors (lane `i` = element `i`).
#[target_feature(enable = "avx512f,avx512ifma")]
fn gather(e: &[Limbs; 8]) -> V {
    let mut v = [_mm512_setzero_si512(); 5];
    for (j, limb) in v.iter_mut().enumerate() {
        *limb = _mm512_set_epi64(
            e[7][j] as i64,
            e[6][j] as i64,
            e[5][j] as i64,
            e[4][j] as i64,
            e[3][j] as i64,
            e[2][j] as i64,
            e[1][j] as i64,
            e[0][j] as i64,
        );
    }
    v
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn lanes(v: __m512i) -> [u64; 8] {
    let lo = _mm512_extracti64x4_epi64::<0>(v);
    let hi = _mm512_extracti64x4_epi64::<1>(v);
    [
        _mm256_extract_epi64::<0>(lo) as u64,
        _mm256_extract_epi64::<1>(lo) as u64,
        _mm256_extract_epi64::<2>(lo) as u64,
        _mm256_extract_epi64::<3>(lo) as u64,
        _mm256_extract_epi64::<0>(hi) as u64,
        _mm256_extract_epi64::<1>(hi) as u64,
        _mm256_extract_epi64::<2>(hi) as u64,
        _mm256_extract_epi64::<3>(hi) as u64,
    ]
}

/// Vectors back to eight elements' limbs.
#[target_feature(enable = "avx512f,avx512ifma")]
fn scatter(v: &V) -> [Limbs; 8] {
    let mut out = [[0u64; 5]; 8];
    for (j, limb) in v.iter().enumerate() {
        for (lane, x) in lanes(*limb).into_iter().enumerate() {
            out[lane][j] = x;
        }
    }
    out
}

#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn add(a: &V, b: &V) -> V {
    [
        _mm512_add_epi64(a[0], b[0]),
        _mm512_add_epi64(a[1], b[1]),
        _mm512_add_epi64(a[2], b[2]),
        _mm512_add_epi64(a[3], b[3]),
        _mm512_add_epi64(a[4], b[4]),
    ]
}

/// Carries so that every limb but the top one is below `2^52` (limbs non-negative).
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn normalize(mut t: V, k: &K) -> V {
    for j in 0..4 {
        let c = _mm512_srli_epi64::<52>(t[j]);
        t[j] = _mm512_and_si512(t[j], k.mask);
        t[j + 1] = _mm512_add_epi64(t[j + 1], c);
    }
    t
}

/// Montgomery product `a·b/R`: inputs normalised, below `2^259`; output normalised,
/// below `a·b/R + p` (below `2p` when both inputs are below `8p`).
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn mul(a: &V, b: &V, k: &K) -> V {
    let z = _mm512_setzero_si512();
    let mut t = [z; 6];
    for &ai in a {
        for j in 0..5 {
            t[j] = _mm512_madd52lo_epu64(t[j], ai, b[j]);
            t[j + 1] = _mm512_madd52hi_epu64(t[j + 1], ai, b[j]);
        }
        let m = _mm512_madd52lo_epu64(z, t[0], k.mu);
        for j in 0..5 {
            t[j] = _mm512_madd52lo_epu64(t[j], m, k.p[j]);
            t[j + 1] = _mm512_madd52hi_epu64(t[j + 1], m, k.p[j]);
        }
        // The low 52 bits of t[0] are now zero: shift down one limb.
        let carry = _mm512_srli_epi64::<52>(t[0]);
        t = [_mm512_add_epi64(t[1], carry), t[2], t[3], t[4], t[5], z];
    }
    normalize([t[0], t[1], t[2], t[3], t[4]], k)
}

/// Any value below `2^259` (limbs below `2^63`) to a normalised value below `1.27p`.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn reduce(v: &V, k: &K) -> V {
    let z = _mm512_setzero_si512();
    let mut r = normalize(*v, k);
    // h = floor(v / 2^252) < 128; q = floor(h·kq / 2^16) <= floor(v / p).
    let h = _mm512_srli_epi64::<44>(r[4]);
    let q = _mm512_srli_epi64::<16>(_mm512_madd52lo_epu64(z, h, k.kq));
    for j in 0..5 {
        r[j] = _mm512_sub_epi64(r[j], _mm512_madd52lo_epu64(z, q, k.p[j]));
        if j < 4 {
            r[j + 1] = _mm512_sub_epi64(r[j + 1], _mm512_madd52hi_epu64(z, q, k.p[j]));
        }
    }
    // Signed carries: the limbs may be negative, the value is not.
    for j in 0..4 {
        let c = _mm512_srai_epi64::<52>(r[j]);
        r[j] = _mm512_and_si512(r[j], k.mask);
        r[j + 1] = _mm512_add_epi64(r[j + 1], c);
    }
    r
}

#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn sbox(x: &V, k: &K) -> V {
    let x2 = mul(x, x, k);
    let x4 = mul(&x2, &x2, k);
    mul(&x4, x, k)
}

/// `M_E = circ(2, 1, 1)`, each result reduced.
#[target_feature(enable = "avx512f,avx512ifma")]
#[inline]
fn mix_external(s: &mut [V; WIDTH], k: &K) {
    let t = add(&add(&s[0], &s[1]), &s[2]);
    for x in s.iter_mut() {
        *x = reduce(&add(x, &t), k);
    }
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn permute(s: &mut [V; WIDTH], c: &Consts, k: &K) {
    mix_external(s, k);
    for (r, rc) in c.external.iter().enumerate() {
        if r == FULL_ROUNDS / 2 {
            for rc in &c.internal {
                let x = normalize(add(&s[0], &splat(rc)), k);
                s[0] = sbox(&x, k);
                // M_I = [[2,1,1],[1,2,1],[1,1,3]].
                let t = add(&add(&s[0], &s[1]), &s[2]);
                s[0] = reduce(&add(&s[0], &t), k);
                s[1] = reduce(&add(&s[1], &t), k);
                s[2] = reduce(&add(&add(&s[2], &s[2]), &t), k);
            }
        }
        for (x, rc) in s.iter_mut().zip(rc) {
            let y = normalize(add(x, &splat(rc)), k);
            *x = sbox(&y, k);
        }
        mix_external(s, k);
    }
}

/// Montgomery form back to canonical limbs.
#[target_feature(enable = "avx512f,avx512ifma")]
fn leave(v: &V, k: &K) -> [[u64; 4]; 8] {
    let one = splat(&[1, 0, 0, 0, 0]);
    scatter(&mul(v, &one, k)).map(|l| canonical_limbs(from52(l)))
}

/// Subtracts `p` while the value is at least `p`.
fn canonical_limbs(mut a: [u64; 4]) -> [u64; 4] {
    while !less_than_modulus(&a) {
        let mut borrow = 0u64;
        for (x, m) in a.iter_mut().zip(MODULUS) {
            let (d1, b1) = x.overflowing_sub(m);
            let (d2, b2) = d1.overflowing_sub(borrow);
            *x = d2;
            borrow = u64::from(b1 || b2);
        }
    }
    a
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn enter(e: &[[u64; 4]; 8], k: &K, c: &Consts) -> V {
    mul(&gather(&e.map(to52)), &splat(&c.r2), k)
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn permute8_ifma(states: &mut [[Fe; WIDTH]; 8], c: &Consts) {
    let k = consts(c);
    let zero = [_mm512_setzero_si512(); 5];
    let mut s = [zero; WIDTH];
    for (i, x) in s.iter_mut().enumerate() {
        *x = enter(&states.map(|st| st[i].to_limbs()), &k, c);
    }
    permute(&mut s, c, &k);
    for (i, v) in s.iter().enumerate() {
        for (st, limbs) in states.iter_mut().zip(leave(v, &k)) {
            st[i] = Fe::from_limbs(limbs).unwrap_or(Fe::ZERO);
        }
    }
}

/// Element `i` of `bytes` as [`super::bytes_to_elements`] makes it, as 64-bit limbs.
fn element(bytes: &[u8], i: usize) -> [u64; 4] {
    let mut chunk = [0u8; 32];
    chunk[..31].copy_from_slice(&element_bytes(bytes, i));
    let mut out = [0u64; 4];
    for (o, w) in out.iter_mut().zip(chunk.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        *o = u64::from_le_bytes(b);
    }
    out
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn hash8_ifma(cells: [&[u8]; 8], c: &Consts) -> [Fe; 8] {
    let k = consts(c);
    let zero = [_mm512_setzero_si512(); 5];
    let mut s = [zero, zero, splat(&c.iv)];
    let mut pos = 0;
    for i in 0..elements_count(cells[0].len()) {
        let e = enter(&cells.map(|cell| element(cell, i)), &k, c);
        s[pos] = add(&s[pos], &e);
        pos += 1;
        if pos == 2 {
            permute(&mut s, c, &k);
            pos = 0;
        }
    }
    s[pos] = add(&s[pos], &splat(&c.one));
    permute(&mut s, c, &k);
    leave(&s[0], &k).map(|l| Fe::from_limbs(l).unwrap_or(Fe::ZERO))
}

#[cfg(test)]
mod tests {
    use rand::{RngCore, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::poseidon2::{hash_bytes, permute};

    fn p_minus(d: u64) -> Fe {
        let mut l = MODULUS;
        l[0] -= d;
        Fe::from_limbs(l).expect("below p")
    }

    #[test]
    fn limb_conversions_round_trip() {
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..100 {
            let a = [
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64() >> 1,
            ];
            assert_eq!(from52(to52(a)), a);
        }
        assert_eq!(canonical_limbs(MODULUS), [0; 4]);
    }

    #[test]
    fn eight_permutations_match_the_scalar_one() {
        if !available() {
            // Without IFMA the entry point refuses and leaves the states alone.
            let mut states = [[Fe::ONE; WIDTH]; 8];
            assert!(permute8(&mut states).is_none());
            assert_eq!(states, [[Fe::ONE; WIDTH]; 8]);
            eprintln!("this CPU has no AVX-512 IFMA: only the refusal is tested here");
            return;
        }
        let mut rng = StdRng::seed_from_u64(7);
        let edge = [
            Fe::ZERO,
            Fe::ONE,
            p_minus(1),
            p_minus(2),
            Fe::from_u64(u64::MAX),
        ];
        let mut states = [[Fe::ZERO; WIDTH]; 8];
        for (n, st) in states.iter_mut().enumerate() {
            for (i, x) in st.iter_mut().enumerate() {
                *x = match (n + i) % 3 {
                    0 => edge[(n * 3 + i) % edge.len()],
                    _ => {
                        let l = [
                            rng.next_u64(),
                            rng.next_u64(),
                            rng.next_u64(),
                            rng.next_u64(),
                        ];
                        Fe::from_limbs(canonical_limbs([l[0], l[1], l[2], l[3] >> 2]))
                            .expect("canonical")
                    }
                };
            }
        }
        for _ in 0..3 {
            let mut want = states;
            for st in &mut want {
                permute(st);
            }
            permute8(&mut states).expect("IFMA");
            assert_eq!(states, want);
        }
    }

    #[test]
    fn eight_sponges_match_the_scalar_one() {
        if !available() {
            // Without IFMA the entry point refuses; `hash_cells` then takes the scalar path.
            assert!(hash8([&[1u8; 64][..]; 8]).is_none());
            eprintln!("this CPU has no AVX-512 IFMA: only the refusal is tested here");
            return;
        }
        let mut rng = StdRng::seed_from_u64(9);
        for len in [0usize, 1, 30, 31, 62, 100, 2048] {
            let mut data = vec![0u8; len * 8];
            rng.fill_bytes(&mut data);
            // Extremes: the largest element (31 bytes of 0xff) and zeros.
            if len >= 62 {
                data[..62].fill(0xff);
                data[len..len + 62].fill(0);
            }
            let cells: Vec<&[u8]> = data.chunks(len.max(1)).take(8).collect();
            let cells: [&[u8]; 8] = if len == 0 {
                [&[]; 8]
            } else {
                cells.try_into().expect("eight cells")
            };
            let got = hash8(cells).expect("IFMA");
            let want = cells.map(hash_bytes);
            assert_eq!(got, want, "cell length {len}");
        }
        assert!(hash8([&[1u8, 2][..], &[3], &[], &[], &[], &[], &[], &[]]).is_none());
    }
}
