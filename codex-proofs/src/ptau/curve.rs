//! BN254 arithmetic and the point encodings of snarkjs (ffjavascript / wasmcurves).
//!
//! Encodings, as wasmcurves writes them:
//! - **LEM** (the `.ptau` file): each base-field coordinate little-endian in Montgomery
//!   form (`x·2^256 mod q`); G1 is `x, y` (64 bytes), G2 `x.c0, x.c1, y.c0, y.c1` (128
//!   bytes); the point at infinity is all zeros.
//! - **uncompressed** (hashed for the challenges): each coordinate big-endian in normal
//!   form; an Fq2 element is its 64-byte little-endian form reversed, i.e. `c1` then
//!   `c0`; infinity is all zeros.
//! - **compressed** (hashed for the response): `x` as above with the top bit set when
//!   `y` is "negative" (greater than `(q-1)/2`, judged on `c1` unless it is zero) and
//!   `0x40` alone for infinity.
//!
//! halo2curves keeps its fields in Montgomery form too, but we never rely on that: we
//! convert with `from_repr`/`to_repr` and a multiplication by `2^±256`.

use std::sync::LazyLock;

use halo2curves_axiom::bn256::{
    Fq, Fq2, Fr, G1, G1Affine, G2, G2Affine, G2Prepared, Gt, multi_miller_loop,
};
use halo2curves_axiom::ff::{Field, PrimeField};
use halo2curves_axiom::group::prime::PrimeCurveAffine;
use halo2curves_axiom::group::{Curve, Group};
use halo2curves_axiom::pairing::MillerLoopResult;
use halo2curves_axiom::{CurveAffine, CurveExt};

/// Bytes of a G1 point in the file.
pub(crate) const G1_LEN: usize = 64;
/// Bytes of a G2 point in the file.
pub(crate) const G2_LEN: usize = 128;

/// The base field modulus q, little-endian limbs.
pub(crate) const Q_LIMBS: [u64; 4] = [
    0x3c20_8c16_d87c_fd47,
    0x9781_6a91_6871_ca8d,
    0xb850_45b6_8181_585d,
    0x3064_4e72_e131_a029,
];

/// BN254's parameter x (`p = 36x⁴ + 36x³ + 24x² + 6x + 1`).
const BN_X: u64 = 4_965_661_367_192_848_881;

struct Consts {
    /// 2^256 mod q and its inverse.
    r_q: Fq,
    r_q_inv: Fq,
    /// 2^-256 mod r.
    r_r_inv: Fr,
    /// (q - 1) / 2.
    half_q: [u64; 4],
    /// ψ's constants: ξ^((q-1)/3) and ξ^((q-1)/2), ξ = 9 + u.
    psi_x: Fq2,
    psi_y: Fq2,
}

static CONSTS: LazyLock<Consts> = LazyLock::new(|| {
    let r_q = Fq::from(2u64).pow_vartime([256]);
    let r_r = Fr::from(2u64).pow_vartime([256]);
    let xi = Fq2 {
        c0: Fq::from(9u64),
        c1: Fq::ONE,
    };
    let q_minus_1 = sub_small(Q_LIMBS, 1);
    Consts {
        r_q,
        r_q_inv: Option::from(r_q.invert()).unwrap_or(Fq::ONE),
        r_r_inv: Option::from(r_r.invert()).unwrap_or(Fr::ONE),
        half_q: div_small(q_minus_1, 2),
        psi_x: xi.pow_vartime(div_small(q_minus_1, 3)),
        psi_y: xi.pow_vartime(div_small(q_minus_1, 2)),
    }
});

fn sub_small(a: [u64; 4], b: u64) -> [u64; 4] {
    let mut out = a;
    let mut borrow = b;
    for limb in &mut out {
        let (v, o) = limb.overflowing_sub(borrow);
        *limb = v;
        borrow = u64::from(o);
    }
    out
}

fn div_small(a: [u64; 4], d: u64) -> [u64; 4] {
    let mut out = [0u64; 4];
    let mut rem: u128 = 0;
    for i in (0..4).rev() {
        let cur = (rem << 64) | u128::from(a[i]);
        out[i] = (cur / u128::from(d)) as u64;
        rem = cur % u128::from(d);
    }
    out
}

fn limbs_to_bytes(limbs: [u64; 4]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, limb) in out.chunks_exact_mut(8).zip(limbs) {
        chunk.copy_from_slice(&limb.to_le_bytes());
    }
    out
}

fn bytes_to_limbs(bytes: &[u8; 32]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (limb, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *limb = u64::from_le_bytes(b);
    }
    out
}

/// The Fq element whose Montgomery form is the integer `limbs` (`limbs·2^-256`);
/// `None` when `limbs >= q`.
pub(crate) fn fq_from_montgomery(limbs: [u64; 4]) -> Option<Fq> {
    Option::<Fq>::from(Fq::from_repr(limbs_to_bytes(limbs))).map(|m| m * CONSTS.r_q_inv)
}

/// The Fr element whose Montgomery form is the integer `limbs`; `None` when `limbs >= r`.
pub(crate) fn fr_from_montgomery(limbs: [u64; 4]) -> Option<Fr> {
    Option::<Fr>::from(Fr::from_repr(limbs_to_bytes(limbs))).map(|m| m * CONSTS.r_r_inv)
}

/// An Fq element from 32 LEM bytes; `None` when not below q.
fn fq_from_lem(bytes: &[u8]) -> Option<Fq> {
    let mut b = [0u8; 32];
    b.copy_from_slice(bytes);
    fq_from_montgomery(bytes_to_limbs(&b))
}

fn fq_to_lem(x: &Fq, out: &mut [u8]) {
    out.copy_from_slice(&(*x * CONSTS.r_q).to_repr());
}

fn fq_to_be(x: &Fq, out: &mut [u8]) {
    let mut repr = x.to_repr();
    repr.reverse();
    out.copy_from_slice(&repr);
}

/// wasmcurves' "negative": the canonical value is above `(q-1)/2`.
pub(crate) fn fq_is_negative(x: &Fq) -> bool {
    let v = bytes_to_limbs(&x.to_repr());
    let half = CONSTS.half_q;
    for i in (0..4).rev() {
        if v[i] != half[i] {
            return v[i] > half[i];
        }
    }
    false
}

/// wasmcurves' sign of an Fq2 element: that of `c1`, or of `c0` when `c1` is zero.
pub(crate) fn fq2_is_negative(x: &Fq2) -> bool {
    if bool::from(x.c1.is_zero()) {
        fq_is_negative(&x.c0)
    } else {
        fq_is_negative(&x.c1)
    }
}

/// The twist's constant b' = 3 / (9 + u).
pub(crate) fn g2_b() -> Fq2 {
    <G2Affine as CurveAffine>::b()
}

/// Why a point's bytes are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bad {
    /// A coordinate not below q.
    NotCanonical,
    /// Not on the curve.
    NotOnCurve,
}

/// A G1 point from its 64 LEM bytes, checked canonical and on the curve (which is the
/// subgroup: G1's cofactor is 1). All zeros is the point at infinity.
pub(crate) fn g1_from_lem(bytes: &[u8]) -> Result<G1Affine, Bad> {
    let x = fq_from_lem(&bytes[..32]).ok_or(Bad::NotCanonical)?;
    let y = fq_from_lem(&bytes[32..64]).ok_or(Bad::NotCanonical)?;
    let p = G1Affine { x, y };
    if bool::from(p.is_on_curve()) {
        Ok(p)
    } else {
        Err(Bad::NotOnCurve)
    }
}

/// A G2 point from its 128 LEM bytes, checked canonical and on the twist (not the
/// subgroup: see [`g2_in_subgroup`]).
pub(crate) fn g2_from_lem(bytes: &[u8]) -> Result<G2Affine, Bad> {
    let f = |at: usize| fq_from_lem(&bytes[at..at + 32]).ok_or(Bad::NotCanonical);
    let x = Fq2 {
        c0: f(0)?,
        c1: f(32)?,
    };
    let y = Fq2 {
        c0: f(64)?,
        c1: f(96)?,
    };
    let p = G2Affine { x, y };
    if bool::from(p.is_on_curve()) {
        Ok(p)
    } else {
        Err(Bad::NotOnCurve)
    }
}

pub(crate) fn g1_to_lem(p: &G1Affine, out: &mut [u8]) {
    fq_to_lem(&p.x, &mut out[..32]);
    fq_to_lem(&p.y, &mut out[32..64]);
}

pub(crate) fn g2_to_lem(p: &G2Affine, out: &mut [u8]) {
    fq_to_lem(&p.x.c0, &mut out[..32]);
    fq_to_lem(&p.x.c1, &mut out[32..64]);
    fq_to_lem(&p.y.c0, &mut out[64..96]);
    fq_to_lem(&p.y.c1, &mut out[96..128]);
}

/// 64 bytes: x, y big-endian; zeros for infinity (identity is (0, 0) in both libraries).
pub(crate) fn g1_uncompressed(p: &G1Affine, out: &mut [u8]) {
    fq_to_be(&p.x, &mut out[..32]);
    fq_to_be(&p.y, &mut out[32..64]);
}

/// 128 bytes: x.c1, x.c0, y.c1, y.c0 big-endian; zeros for infinity.
pub(crate) fn g2_uncompressed(p: &G2Affine, out: &mut [u8]) {
    fq_to_be(&p.x.c1, &mut out[..32]);
    fq_to_be(&p.x.c0, &mut out[32..64]);
    fq_to_be(&p.y.c1, &mut out[64..96]);
    fq_to_be(&p.y.c0, &mut out[96..128]);
}

/// 32 bytes: x big-endian, `0x80` set when y is negative, `0x40` alone for infinity.
pub(crate) fn g1_compressed(p: &G1Affine, out: &mut [u8]) {
    if bool::from(p.is_identity()) {
        out[..32].fill(0);
        out[0] = 0x40;
        return;
    }
    fq_to_be(&p.x, &mut out[..32]);
    if fq_is_negative(&p.y) {
        out[0] |= 0x80;
    }
}

/// 64 bytes: x.c1, x.c0 big-endian, the flags as for G1 on the first byte.
pub(crate) fn g2_compressed(p: &G2Affine, out: &mut [u8]) {
    if bool::from(p.is_identity()) {
        out[..64].fill(0);
        out[0] = 0x40;
        return;
    }
    fq_to_be(&p.x.c1, &mut out[..32]);
    fq_to_be(&p.x.c0, &mut out[32..64]);
    if fq2_is_negative(&p.y) {
        out[0] |= 0x80;
    }
}

/// Constants of the GLV decomposition of BN254's scalars (the lattice basis and its
/// rounding multipliers, as halo2curves uses them for G1): `k = k1 - ζ·k2` with `k1`,
/// `k2` below 2^128, `ζ` the cube root of unity by which `endo()` multiplies.
const GLV_GAMMA1: [u64; 4] = [0xd91d_232e_c7e0_b3d7, 0x2, 0, 0];
const GLV_GAMMA2: [u64; 4] = [0x5398_fd03_00ff_6565, 0x4cce_f014_a773_d2d2, 0x02, 0];
const GLV_B1: [u64; 4] = [0x89d3_2568_94d2_13e3, 0, 0, 0];
const GLV_B2: [u64; 4] = [0x0be4_e154_1221_250b, 0x6f4d_8248_eeb8_59fd, 0, 0];

fn mul_wide(a: &[u64; 4], b: &[u64; 4]) -> [u64; 8] {
    let mut out = [0u64; 8];
    for i in 0..4 {
        let mut carry: u128 = 0;
        for j in 0..4 {
            let cur = u128::from(out[i + j]) + u128::from(a[i]) * u128::from(b[j]) + carry;
            out[i + j] = cur as u64;
            carry = cur >> 64;
        }
        out[i + 4] = carry as u64;
    }
    out
}

/// `(|k1|, k1 < 0, |k2|, k2 < 0)` with `k = k1 - ζ·k2`; `None` if a half does not fit
/// 128 bits (it always does; the caller then falls back to a plain NAF).
pub(crate) fn decompose(k: &Fr) -> Option<(u128, bool, u128, bool)> {
    use halo2curves_axiom::ff::WithSmallOrderMulGroup;
    let limbs = bytes_to_limbs(&k.to_repr());
    let top = |w: [u64; 8]| [w[4], w[5], w[6], w[7]];
    let low = |w: [u64; 8]| [w[0], w[1], w[2], w[3]];
    let c1 = top(mul_wide(&GLV_GAMMA2, &limbs));
    let c2 = top(mul_wide(&GLV_GAMMA1, &limbs));
    let q1 = Fr::from_raw(low(mul_wide(&c1, &GLV_B1)));
    let q2 = Fr::from_raw(low(mul_wide(&c2, &GLV_B2)));
    let k2 = q2 - q1;
    let k1 = *k + k2 * Fr::ZETA;
    let small = |x: Fr| -> Option<(u128, bool)> {
        let fits = |v: [u64; 4]| {
            (v[2] == 0 && v[3] == 0).then(|| u128::from(v[0]) | (u128::from(v[1]) << 64))
        };
        fits(bytes_to_limbs(&x.to_repr()))
            .map(|v| (v, false))
            .or_else(|| fits(bytes_to_limbs(&(-x).to_repr())).map(|v| (v, true)))
    };
    let (a, an) = small(k1)?;
    let (b, bn) = small(k2)?;
    Some((a, an, b, bn))
}

/// The odd multiples `p, 3p, ..., 15p`.
fn odd_multiples<C: Group>(p: &C) -> [C; 8] {
    let double = p.double();
    let mut table = [*p; 8];
    for i in 1..8 {
        table[i] = table[i - 1] + double;
    }
    table
}

fn add_digit<C: Group>(acc: C, table: &[C; 8], d: i8) -> C {
    if d > 0 {
        acc + table[(d as usize) / 2]
    } else if d < 0 {
        acc - table[(d.unsigned_abs() as usize) / 2]
    } else {
        acc
    }
}

/// `k·p`: GLV (the curve's endomorphism splits `k` into two 128-bit halves) with
/// width-5 NAFs, about 128 doublings and 58 additions, a third of halo2curves' own `*`
/// (an addition per bit of a 256-bit scalar). Valid for points of the order-r
/// subgroup (all of G1; G2 points off the subgroup get a wrong but harmless result).
/// Not constant-time: the ceremony machine is trusted.
pub(crate) fn mul<C: CurveExt<ScalarExt = Fr>>(p: &C, k: &Fr) -> C {
    let Some((k1, neg1, k2, neg2)) = decompose(k) else {
        let (digits, len) = wnaf5(bytes_to_limbs(&k.to_repr()));
        let table = odd_multiples(p);
        let mut acc = C::identity();
        for &d in digits[..len].iter().rev() {
            acc = add_digit(acc.double(), &table, d);
        }
        return acc;
    };
    // k·p = k1·(±p) + k2·(∓ζp), the signs from the decomposition.
    let p1 = if neg1 { -*p } else { *p };
    let e = p.endo();
    let p2 = if neg2 { e } else { -e };
    let (d1, l1) = wnaf5([k1 as u64, (k1 >> 64) as u64, 0, 0]);
    let (d2, l2) = wnaf5([k2 as u64, (k2 >> 64) as u64, 0, 0]);
    let t1 = odd_multiples(&p1);
    let t2 = odd_multiples(&p2);
    let mut acc = C::identity();
    for i in (0..l1.max(l2)).rev() {
        acc = acc.double();
        acc = add_digit(acc, &t1, d1[i]);
        acc = add_digit(acc, &t2, d2[i]);
    }
    acc
}

/// The width-5 NAF digits of `v`, least significant first, and how many there are.
pub(crate) fn wnaf5(mut v: [u64; 4]) -> ([i8; 258], usize) {
    let mut out = [0i8; 258];
    let mut i = 0;
    while v.iter().any(|&l| l != 0) && i < out.len() {
        if v[0] & 1 == 1 {
            let m = (v[0] & 31) as i8;
            let d = if m >= 16 { m - 32 } else { m };
            out[i] = d;
            v = if d > 0 {
                sub_small(v, d as u64)
            } else {
                add_small(v, u64::from(d.unsigned_abs()))
            };
        }
        for j in 0..4 {
            v[j] >>= 1;
            if j < 3 {
                v[j] |= v[j + 1] << 63;
            }
        }
        i += 1;
    }
    (out, i)
}

fn add_small(a: [u64; 4], b: u64) -> [u64; 4] {
    let mut out = a;
    let mut carry = b;
    for limb in &mut out {
        let (v, o) = limb.overflowing_add(carry);
        *limb = v;
        carry = u64::from(o);
    }
    out
}

/// `k·p` for an arbitrary integer `k` (little-endian limbs), by double-and-add; for the
/// cofactor-sized multiples of tests and the subgroup check.
pub(crate) fn mul_limbs<C: Group>(p: &C, k: &[u64]) -> C {
    let mut acc = C::identity();
    for limb in k.iter().rev() {
        for bit in (0..64).rev() {
            acc = acc.double();
            if (limb >> bit) & 1 == 1 {
                acc += p;
            }
        }
    }
    acc
}

/// The endomorphism ψ = untwist ∘ Frobenius ∘ twist of the twist curve.
pub(crate) fn psi(p: &G2) -> G2 {
    let c = &*CONSTS;
    let mut x = p.x;
    let mut y = p.y;
    let mut z = p.z;
    x.conjugate();
    y.conjugate();
    z.conjugate();
    G2 {
        x: x * c.psi_x,
        y: y * c.psi_y,
        z,
    }
}

/// Whether a point of the twist is in the order-r subgroup G2, by the test of Dai, Lin,
/// Zhao and Zhou (eprint 2022/348): `[x+1]P + ψ([x]P) + ψ²([x]P) = ψ³([2x]P)`, which
/// costs a 63-bit multiplication instead of a 254-bit one (the unit tests show it
/// rejects a point of every prime order dividing the cofactor).
pub(crate) fn g2_in_subgroup(p: &G2Affine) -> bool {
    if !bool::from(p.is_on_curve()) {
        return false;
    }
    let p = G2::from(*p);
    let xp = mul_limbs(&p, &[BN_X]);
    let lhs = xp + p + psi(&xp) + psi(&psi(&xp));
    let rhs = psi(&psi(&psi(&xp.double())));
    lhs == rhs
}

/// `e(a1, b1) == e(a2, b2)`, by one multi-Miller loop and one final exponentiation.
pub(crate) fn pairing_eq(a1: &G1Affine, b1: &G2Affine, a2: &G1Affine, b2: &G2Affine) -> bool {
    let b1 = G2Prepared::from(*b1);
    let b2 = G2Prepared::from(*b2);
    let neg_a2 = -*a2;
    multi_miller_loop(&[(a1, &b1), (&neg_a2, &b2)]).final_exponentiation() == Gt::identity()
}

/// snarkjs's `sameRatio(g1s, g1sx, g2s, g2sx)`: none of the four is infinity and
/// `e(g1s, g2sx) == e(g1sx, g2s)`, i.e. `g1sx = s·g1s` and `g2sx = s·g2s` for one `s`.
pub(crate) fn same_ratio(g1s: &G1Affine, g1sx: &G1Affine, g2s: &G2Affine, g2sx: &G2Affine) -> bool {
    if bool::from(g1s.is_identity() | g1sx.is_identity() | g2s.is_identity() | g2sx.is_identity()) {
        return false;
    }
    pairing_eq(g1s, g2sx, g1sx, g2s)
}

/// `G2 · k` for affine output.
pub(crate) fn g2_affine_mul(p: &G2Affine, k: &Fr) -> G2Affine {
    mul(&G2::from(*p), k).to_affine()
}

/// `G1 · k` for affine output.
pub(crate) fn g1_affine_mul(p: &G1Affine, k: &Fr) -> G1Affine {
    mul(&G1::from(*p), k).to_affine()
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo2curves_axiom::group::cofactor::CofactorGroup;
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;

    /// r and the prime factors of G2's cofactor h = 2q - r (h is square-free).
    const R_LIMBS: [u64; 4] = [
        0x43e1_f593_f000_0001,
        0x2833_e848_79b9_7091,
        0xb850_45b6_8181_585d,
        0x3064_4e72_e131_a029,
    ];

    fn big_mul(a: &[u64], b: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; a.len() + b.len()];
        for (i, &x) in a.iter().enumerate() {
            let mut carry: u128 = 0;
            for (j, &y) in b.iter().enumerate() {
                let cur = u128::from(out[i + j]) + u128::from(x) * u128::from(y) + carry;
                out[i + j] = cur as u64;
                carry = cur >> 64;
            }
            out[i + b.len()] = carry as u64;
        }
        out
    }

    /// A random point of the twist, not cleared: almost surely outside G2.
    fn twist_point(rng: &mut ChaCha20Rng) -> G2 {
        loop {
            let x = Fq2::random(&mut *rng);
            if let Some(y) = Option::<Fq2>::from((x.square() * x + g2_b()).sqrt()) {
                return G2::from(G2Affine { x, y });
            }
        }
    }

    #[test]
    fn montgomery_conversions_round_trip() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for _ in 0..20 {
            let x = Fq::random(&mut rng);
            let mut b = [0u8; 32];
            fq_to_lem(&x, &mut b);
            assert_eq!(fq_from_lem(&b), Some(x));
        }
        // 1 in Montgomery form is 2^256 mod q.
        let mut b = [0u8; 32];
        fq_to_lem(&Fq::ONE, &mut b);
        assert_eq!(Fq::from_repr(b).unwrap(), CONSTS.r_q);
        assert!(fq_from_montgomery(Q_LIMBS).is_none());
    }

    #[test]
    fn wnaf_multiplication_matches_halo2curves() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for _ in 0..10 {
            let k = Fr::random(&mut rng);
            assert_eq!(mul(&G1::generator(), &k), G1::generator() * k);
            assert_eq!(mul(&G2::generator(), &k), G2::generator() * k);
        }
        assert_eq!(mul(&G1::generator(), &Fr::ZERO), G1::identity());
        assert_eq!(mul(&G1::generator(), &-Fr::ONE), -G1::generator());
    }

    #[test]
    fn glv_decomposition_is_exact() {
        use halo2curves_axiom::ff::WithSmallOrderMulGroup;
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let mut scalars: Vec<Fr> = (0..2000).map(|_| Fr::random(&mut rng)).collect();
        scalars.extend([
            Fr::ZERO,
            Fr::ONE,
            -Fr::ONE,
            Fr::ZETA,
            -Fr::ZETA,
            Fr::from(u64::MAX),
        ]);
        for k in scalars {
            let (a, an, b, bn) = decompose(&k).expect("halves fit 128 bits");
            let signed = |v: u128, neg: bool| {
                let x = Fr::from_u128(v);
                if neg { -x } else { x }
            };
            assert_eq!(signed(a, an) - Fr::ZETA * signed(b, bn), k);
        }
        assert_eq!(G1::generator().endo(), G1::generator() * Fr::ZETA);
    }

    #[test]
    fn psi_acts_as_q_on_g2() {
        // On G2, ψ is multiplication by q mod r = 6x².
        let g = G2::generator();
        let six_x2 = big_mul(&big_mul(&[BN_X], &[BN_X]), &[6]);
        assert_eq!(psi(&g), mul_limbs(&g, &six_x2));
    }

    #[test]
    fn subgroup_check_is_exact() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        assert!(g2_in_subgroup(&G2Affine::generator()));
        let q = (G2::generator() * Fr::random(&mut rng)).to_affine();
        assert!(g2_in_subgroup(&q));
        assert!(g2_in_subgroup(&G2Affine::identity()));
        // For each prime l | h, a point of order l must be refused: the check is a group
        // homomorphism, so this shows its kernel is exactly G2 (h is square-free and
        // prime to r).
        let factors: [&[u64]; 4] = [
            &[10069],
            &[5864401],
            &[1875725156269],
            // 197620364512881247228717050342013327560683201906968909
            &[
                0x9b6e_0b35_8e0d_894d,
                0xe9da_b924_0f0c_6ab8,
                0x0002_1031_5729_f570,
            ],
        ];
        let h: Vec<u64> = factors.iter().fold(vec![1u64], |acc, f| {
            let mut v = big_mul(&acc, f);
            while v.len() > 1 && v.last() == Some(&0) {
                v.pop();
            }
            v
        });
        // h is the cofactor halo2curves clears.
        let p = twist_point(&mut rng);
        assert_eq!(mul_limbs(&p, &h), p.clear_cofactor());
        for (i, f) in factors.iter().enumerate() {
            // [r·h/l]P has order l (or is zero: draw again).
            let mut others = vec![1u64];
            for (j, g) in factors.iter().enumerate() {
                if i != j {
                    others = big_mul(&others, g);
                }
            }
            let k = big_mul(&others, &R_LIMBS);
            let t = loop {
                let t = mul_limbs(&twist_point(&mut rng), &k);
                if !bool::from(t.is_identity()) {
                    break t;
                }
            };
            assert!(bool::from(mul_limbs(&t, f).is_identity()));
            assert!(!g2_in_subgroup(&t.to_affine()), "order {f:?}");
            assert!(
                !g2_in_subgroup(&(t + G2::from(q)).to_affine()),
                "order {f:?} plus G2"
            );
        }
        let p = twist_point(&mut rng).to_affine();
        assert!(!g2_in_subgroup(&p));
        assert!(!bool::from(G2::from(p).is_torsion_free()));
    }

    #[test]
    fn compressed_sign_follows_y() {
        let g = G1Affine::generator();
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        g1_compressed(&g, &mut a);
        g1_compressed(&-g, &mut b);
        assert_eq!(a[0] & 0x80 ^ b[0] & 0x80, 0x80);
        assert_eq!(a[1..], b[1..]);
    }
}
