//! The ChaCha20 stream snarkjs (ffjavascript's `ChaCha`) draws its keys and the
//! proof-of-knowledge G2 points from, and the values it derives from it.
//!
//! The generator is plain ChaCha20 (10 double rounds) with the eight seed words as the
//! key, a 128-bit block counter starting at 0 in words 12-15 and no nonce; it hands out
//! the 16 output words of a block in order. ffjavascript's derived draws:
//! - `nextBool`: the low bit of the next word;
//! - `nextU64`: two words, the first one the high half;
//! - a field element (`F.fromRng`): four `nextU64`s as the little-endian limbs of an
//!   integer `v`, masked to the modulus' bit length and drawn again while `v >= p`,
//!   then **used as a Montgomery representation**: the element is `v·2^-256 mod p`;
//! - a curve point (`G.fromRng`): `x` as above (`c0` then `c1` in Fq2), a `nextBool`
//!   `greatest`, again until `x³ + b` is a square; `y` is the root whose "sign" (greater
//!   than `(p-1)/2`, on `c1` unless it is zero) equals `greatest`; G2 points are then
//!   multiplied by the cofactor.

use halo2curves_axiom::bn256::{Fq, Fq2, Fr, G1Affine, G2, G2Affine};
use halo2curves_axiom::ff::Field;
use halo2curves_axiom::group::Curve;
use halo2curves_axiom::group::cofactor::CofactorGroup;

use super::curve::{fq_from_montgomery, fq_is_negative, fq2_is_negative, fr_from_montgomery, g2_b};

/// ffjavascript's ChaCha generator.
#[derive(Clone)]
pub(crate) struct ChaCha {
    state: [u32; 16],
    block: [u32; 16],
    idx: usize,
}

impl std::fmt::Debug for ChaCha {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChaCha").finish_non_exhaustive()
    }
}

impl ChaCha {
    /// A generator keyed with `seed`.
    pub(crate) fn new(seed: [u32; 8]) -> Self {
        let mut state = [0u32; 16];
        state[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
        state[4..12].copy_from_slice(&seed);
        ChaCha {
            state,
            block: [0; 16],
            idx: 16,
        }
    }

    /// A generator keyed with the first 32 bytes of `hash`, read as eight big-endian
    /// words (how snarkjs seeds it from a BLAKE2b or SHA-256 digest).
    pub(crate) fn from_hash(hash: &[u8]) -> Self {
        let mut seed = [0u32; 8];
        for (w, chunk) in seed.iter_mut().zip(hash.chunks_exact(4)) {
            *w = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Self::new(seed)
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        if self.idx == 16 {
            self.refill();
        }
        let w = self.block[self.idx];
        self.idx += 1;
        w
    }

    fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    fn next_bool(&mut self) -> bool {
        self.next_u32() & 1 == 1
    }

    fn refill(&mut self) {
        #[inline(always)]
        fn qr(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
            s[a] = s[a].wrapping_add(s[b]);
            s[d] = (s[d] ^ s[a]).rotate_left(16);
            s[c] = s[c].wrapping_add(s[d]);
            s[b] = (s[b] ^ s[c]).rotate_left(12);
            s[a] = s[a].wrapping_add(s[b]);
            s[d] = (s[d] ^ s[a]).rotate_left(8);
            s[c] = s[c].wrapping_add(s[d]);
            s[b] = (s[b] ^ s[c]).rotate_left(7);
        }
        let mut x = self.state;
        for _ in 0..10 {
            qr(&mut x, 0, 4, 8, 12);
            qr(&mut x, 1, 5, 9, 13);
            qr(&mut x, 2, 6, 10, 14);
            qr(&mut x, 3, 7, 11, 15);
            qr(&mut x, 0, 5, 10, 15);
            qr(&mut x, 1, 6, 11, 12);
            qr(&mut x, 2, 7, 8, 13);
            qr(&mut x, 3, 4, 9, 14);
        }
        for (out, (a, b)) in self.block.iter_mut().zip(x.iter().zip(self.state.iter())) {
            *out = a.wrapping_add(*b);
        }
        self.idx = 0;
        for w in &mut self.state[12..16] {
            *w = w.wrapping_add(1);
            if *w != 0 {
                break;
            }
        }
    }

    /// Four `nextU64` limbs masked to 254 bits (both BN254 moduli have 254 bits).
    fn limbs_254(&mut self) -> [u64; 4] {
        let mut v = [0u64; 4];
        for limb in &mut v {
            *limb = self.next_u64();
        }
        v[3] &= (1u64 << 62) - 1;
        v
    }

    /// ffjavascript's `Fq.fromRng`.
    pub(crate) fn fq(&mut self) -> Fq {
        loop {
            if let Some(x) = fq_from_montgomery(self.limbs_254()) {
                return x;
            }
        }
    }

    /// ffjavascript's `Fr.fromRng`.
    pub(crate) fn fr(&mut self) -> Fr {
        loop {
            if let Some(x) = fr_from_montgomery(self.limbs_254()) {
                return x;
            }
        }
    }

    /// ffjavascript's `G1.fromRng` (no cofactor on BN254's G1).
    pub(crate) fn g1(&mut self) -> G1Affine {
        let three = Fq::from(3u64);
        loop {
            let x = self.fq();
            let greatest = self.next_bool();
            let rhs = x.square() * x + three;
            if let Some(y) = Option::<Fq>::from(rhs.sqrt()) {
                let y = if fq_is_negative(&y) == greatest {
                    y
                } else {
                    -y
                };
                return G1Affine { x, y };
            }
        }
    }

    /// ffjavascript's `G2.fromRng`: a point of the twist, times the cofactor.
    pub(crate) fn g2(&mut self) -> G2Affine {
        loop {
            let c0 = self.fq();
            let c1 = self.fq();
            let x = Fq2 { c0, c1 };
            let greatest = self.next_bool();
            let rhs = x.square() * x + g2_b();
            if let Some(y) = Option::<Fq2>::from(rhs.sqrt()) {
                let y = if fq2_is_negative(&y) == greatest {
                    y
                } else {
                    -y
                };
                let point = G2::from(G2Affine { x, y });
                return point.clear_cofactor().to_affine();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chacha20_block_matches_rfc_8439_keystream() {
        // RFC 8439 2.3.2 uses a nonce; with an all-zero key and nonce and counter 0,
        // the first ChaCha20 block starts 0x76b8e0ad... (RFC 7539 appendix A.1 #1).
        let mut rng = ChaCha::new([0; 8]);
        let first = rng.next_u32();
        assert_eq!(first.to_le_bytes(), [0x76, 0xb8, 0xe0, 0xad]);
        let mut rng = ChaCha::new([0; 8]);
        let words: Vec<u32> = (0..32).map(|_| rng.next_u32()).collect();
        // Second block (counter 1), A.1 #2: 9f07e7be 5551387a ...
        assert_eq!(words[16].to_le_bytes(), [0x9f, 0x07, 0xe7, 0xbe]);
    }

    #[test]
    fn drawn_points_are_on_the_curves_and_in_the_subgroups() {
        let mut rng = ChaCha::from_hash(&[7u8; 64]);
        for _ in 0..3 {
            let p = rng.g1();
            assert!(bool::from(halo2curves_axiom::CurveAffine::is_on_curve(&p)));
            let q = rng.g2();
            assert!(bool::from(halo2curves_axiom::CurveAffine::is_on_curve(&q)));
            assert!(bool::from(G2::from(q).is_torsion_free()));
        }
    }
}
