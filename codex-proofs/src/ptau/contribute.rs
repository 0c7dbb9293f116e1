//! Adding a contribution, and deriving the keys the proofs of knowledge check.

use halo2curves_axiom::CurveExt;
use halo2curves_axiom::bn256::{Fr, G1, G1Affine, G2, G2Affine};
use halo2curves_axiom::ff::Field;
use halo2curves_axiom::group::Curve;
use halo2curves_axiom::group::prime::PrimeCurveAffine;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{OsRng, RngCore, SeedableRng};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::blake2b::Blake2b;
use super::chacha::ChaCha;
use super::curve::{self, G1_LEN};
use super::{Beacon, Contribution, KeyPart, Ptau, PtauCheck, PublicKey, fail};
use crate::error::Result;

/// The secrets of one contribution, overwritten when dropped (best effort: copies made
/// along the way are not).
struct Secrets {
    tau: Fr,
    alpha: Fr,
    beta: Fr,
}

impl Drop for Secrets {
    fn drop(&mut self) {
        self.tau = Fr::ZERO;
        self.alpha = Fr::ZERO;
        self.beta = Fr::ZERO;
    }
}

/// snarkjs's `getG2sp`: the G2 point a proof of knowledge pairs with, drawn from a
/// ChaCha stream seeded by BLAKE2b-512(personalization, challenge, g1_s, g1_sx) (the
/// points uncompressed). Personalization 0 is τ, 1 α, 2 β.
pub(crate) fn g2_sp(
    personalization: u8,
    challenge: &[u8; 64],
    g1_s: &G1Affine,
    g1_sx: &G1Affine,
) -> G2Affine {
    let mut h = Blake2b::new();
    h.update(&[personalization]);
    h.update(challenge);
    let mut b = [0u8; G1_LEN];
    curve::g1_uncompressed(g1_s, &mut b);
    h.update(&b);
    curve::g1_uncompressed(g1_sx, &mut b);
    h.update(&b);
    ChaCha::from_hash(&h.finalize()).g2()
}

fn key_part(secret: &Fr, g1_s: G1Affine, personalization: u8, challenge: &[u8; 64]) -> KeyPart {
    let g1_sx = curve::g1_affine_mul(&g1_s, secret);
    let sp = g2_sp(personalization, challenge, &g1_s, &g1_sx);
    KeyPart {
        g1_s,
        g1_sx,
        g2_spx: curve::g2_affine_mul(&sp, secret),
    }
}

/// A nonzero scalar from `rng`.
fn secret(rng: &mut ChaCha20Rng) -> Fr {
    loop {
        let s = Fr::random(&mut *rng);
        if !bool::from(s.is_zero()) {
            return s;
        }
    }
}

/// The key a beacon contribution must have: snarkjs's `keyFromBeacon`. SHA-256 applied
/// `2^iterations_exp` times to the beacon hash seeds the ChaCha stream; the secrets and
/// the `g1_s` points are drawn from it in snarkjs's order.
pub(crate) fn beacon_key(beacon: &Beacon, challenge: &[u8; 64]) -> PublicKey {
    let mut h: Vec<u8> = beacon.hash.clone();
    let iterations = 1u64 << beacon.iterations_exp.min(63);
    for _ in 0..iterations {
        h = Sha256::digest(&h).to_vec();
    }
    let mut rng = ChaCha::from_hash(&h);
    let tau = rng.fr();
    let alpha = rng.fr();
    let beta = rng.fr();
    let mut part = |s: &Fr, personalization: u8| {
        let g1_s = rng.g1();
        key_part(s, g1_s, personalization, challenge)
    };
    let tau = part(&tau, 0);
    let alpha = part(&alpha, 1);
    let beta = part(&beta, 2);
    PublicKey { tau, alpha, beta }
}

/// `first·τ^i·points[i]` for every `i`, in parallel chunks (each chunk starts from
/// `first·τ^start` and multiplies by `τ` as it goes), normalized to affine per chunk.
fn scale<C: CurveExt<ScalarExt = Fr>>(
    points: &[C::AffineExt],
    first: Fr,
    tau: Fr,
) -> Vec<C::AffineExt> {
    const CHUNK: usize = 1024;
    let chunks: Vec<Vec<C::AffineExt>> = points
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(c, pts)| {
            let mut s = first * tau.pow_vartime([(c * CHUNK) as u64]);
            let proj: Vec<C> = pts
                .iter()
                .map(|p| {
                    let r = curve::mul(&p.to_curve(), &s);
                    s *= tau;
                    r
                })
                .collect();
            let mut out = vec![C::AffineExt::identity(); pts.len()];
            C::batch_normalize(&proj, &mut out);
            out
        })
        .collect();
    chunks.concat()
}

impl Ptau {
    /// Adds a contribution: draws secrets `τ, α, β` from the operating system's RNG
    /// mixed (BLAKE2b) with `entropy`, multiplies every point by its power of them,
    /// and records, as snarkjs does, the proof of knowledge of the secrets, the response
    /// hash (over the challenge, the new points compressed and the public key; the
    /// hasher's state before the key is kept in the file) and the next challenge hash.
    /// `snarkjs powersoftau verify` accepts the result. The secrets live only inside
    /// this call. `name` is kept to 64 characters.
    ///
    /// The input is not verified first (call [`Ptau::verify`]). The scalar
    /// multiplications are not constant-time: contribute on a machine you trust.
    ///
    /// # Errors
    /// [`PtauCheck::Reduced`] for a file cut from a larger ceremony. Cost: one scalar
    /// multiplication per point on rayon, `2^power · 5` of them (G2 counting thrice):
    /// seconds at power 12, minutes at power 20.
    pub fn contribute(&self, name: &str, entropy: &[u8]) -> Result<Ptau> {
        if self.power != self.ceremony_power {
            return Err(fail(
                None,
                PtauCheck::Reduced {
                    power: self.power,
                    ceremony_power: self.ceremony_power,
                },
            ));
        }
        let mut seed = [0u8; 64];
        OsRng.fill_bytes(&mut seed);
        let mut h = Blake2b::new();
        h.update(&seed);
        h.update(entropy);
        let digest = h.finalize();
        let mut rng_seed = [0u8; 32];
        rng_seed.copy_from_slice(&digest[..32]);
        let mut rng = ChaCha20Rng::from_seed(rng_seed);
        seed.fill(0);
        rng_seed.fill(0);

        let challenge = self.challenge();
        let secrets = Secrets {
            tau: secret(&mut rng),
            alpha: secret(&mut rng),
            beta: secret(&mut rng),
        };
        let mut random_g1 = || (G1::generator() * secret(&mut rng)).to_affine();
        let (s_tau, s_alpha, s_beta) = (random_g1(), random_g1(), random_g1());
        let key = PublicKey {
            tau: key_part(&secrets.tau, s_tau, 0, &challenge),
            alpha: key_part(&secrets.alpha, s_alpha, 1, &challenge),
            beta: key_part(&secrets.beta, s_beta, 2, &challenge),
        };

        let tau = secrets.tau;
        let ((tau_g1, tau_g2), (alpha_tau_g1, beta_tau_g1)) = rayon::join(
            || {
                rayon::join(
                    || scale::<G1>(&self.tau_g1, Fr::ONE, tau),
                    || scale::<G2>(&self.tau_g2, Fr::ONE, tau),
                )
            },
            || {
                rayon::join(
                    || scale::<G1>(&self.alpha_tau_g1, secrets.alpha, tau),
                    || scale::<G1>(&self.beta_tau_g1, secrets.beta, tau),
                )
            },
        );
        let beta_g2 = curve::g2_affine_mul(&self.beta_g2, &secrets.beta);
        drop(secrets);

        let mut next = Ptau {
            power: self.power,
            ceremony_power: self.ceremony_power,
            tau_g1,
            tau_g2,
            alpha_tau_g1,
            beta_tau_g1,
            beta_g2,
            contributions: self.contributions.clone(),
        };

        let mut response = Blake2b::new();
        response.update(&challenge);
        next.hash_compressed(&mut response);
        let partial_hash = response.to_partial();
        response.update(&key.uncompressed());
        let response_hash = response.finalize();

        let mut hasher = Blake2b::new();
        hasher.update(&response_hash);
        next.hash_uncompressed(&mut hasher);
        let next_challenge = hasher.finalize();

        next.contributions.push(Contribution {
            name: super::file::truncated_name(name).to_string(),
            tau_g1: next.tau_g1[1],
            tau_g2: next.tau_g2[1],
            alpha_g1: next.alpha_tau_g1[0],
            beta_g1: next.beta_tau_g1[0],
            beta_g2: next.beta_g2,
            key,
            partial_hash,
            next_challenge,
            kind: 0,
            beacon: None,
            response_hash,
        });
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_gives_successive_powers() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let tau = Fr::random(&mut rng);
        let first = Fr::random(&mut rng);
        let points = vec![G1Affine::generator(); 2500];
        let out = scale::<G1>(&points, first, tau);
        for i in [0usize, 1, 1023, 1024, 1025, 2499] {
            let expected = (G1::generator() * (first * tau.pow_vartime([i as u64]))).to_affine();
            assert_eq!(out[i], expected, "point {i}");
        }
    }

    #[test]
    fn keys_pass_their_own_proof_of_knowledge() {
        let mut rng = ChaCha20Rng::seed_from_u64(10);
        let challenge = [5u8; 64];
        let s = secret(&mut rng);
        let g1_s = (G1::generator() * secret(&mut rng)).to_affine();
        let part = key_part(&s, g1_s, 1, &challenge);
        let sp = g2_sp(1, &challenge, &part.g1_s, &part.g1_sx);
        assert!(curve::same_ratio(
            &part.g1_s,
            &part.g1_sx,
            &sp,
            &part.g2_spx
        ));
        // Another personalization draws another point.
        let other = g2_sp(2, &challenge, &part.g1_s, &part.g1_sx);
        assert!(!curve::same_ratio(
            &part.g1_s,
            &part.g1_sx,
            &other,
            &part.g2_spx
        ));
    }
}
