//! halo2 KZG parameters from a `.ptau` file, and their checks.

use std::fs::File;
use std::path::Path;

use halo2_proofs::SerdeFormat;
use halo2_proofs::arithmetic::best_multiexp;
use halo2_proofs::poly::EvaluationDomain;
use halo2_proofs::poly::commitment::{Params, ParamsProver};
use halo2_proofs::poly::kzg::commitment::ParamsKZG;
use halo2curves_axiom::CurveAffine;
use halo2curves_axiom::bn256::{Bn256, Fr, G1Affine, G2Affine};
use halo2curves_axiom::group::Curve;
use halo2curves_axiom::group::prime::PrimeCurveAffine;
use halo2curves_axiom::serde::SerdeObject;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rayon::prelude::*;

use super::curve::{self, G1_LEN, G2_LEN};
use super::file::{self, MAX_POWER, SECTION_LAGRANGE_G1, SECTION_TAU_G1, SECTION_TAU_G2, Sections};
use super::lagrange::lagrange_basis;
use super::verify::{g1_powers_consistent, random_scalars};
use super::{PtauCheck, fail, io_err};
use crate::error::Result;

/// snarkjs's FFT domains use the 2^28-th root of unity `5^t` (5 being the smallest
/// non-residue), halo2's `7^t`; `7^(t·J) = 5^t` with `J` below. So snarkjs's Lagrange
/// point `i` (at `ω_s^i = ω_h^(J·i)`) is halo2's point `J·i mod 2^k`, and halo2's point
/// `m` is snarkjs's point `J⁻¹·m mod 2^k`.
#[cfg(test)]
const ROOT_LOG: u64 = 48_078_113;
const ROOT_LOG_INV: u64 = 52_831_969;

/// Reads what halo2 needs for `2^k` rows from a `.ptau` file of power `>= k`, checks it
/// and returns the parameters: `g = tauG1[0..2^k]`, `g2` the G2 generator, `s_g2 =
/// tauG2[1]`, and `g_lagrange` the Lagrange basis of `g`. The file is not loaded: only
/// the header, the section table, the contributions, `2^k` points of tauG1, two of
/// tauG2 and, in a file prepared for phase 2 (like Hermez's), `2^k` points of the
/// Lagrange section are read.
///
/// Checks, each failing with [`Error::Ptau`](crate::Error::Ptau) naming it: the header
/// (BN254, the powers) and the section sizes; `power >= k`; every point read is a
/// canonical encoding, on the curve, not infinity and (tauG2) in the G2 subgroup;
/// `tauG1[0]` and `tauG2[0]` are the generators; the file has a contribution and its
/// `tauG1[1]`, `tauG2[1]` are the last contribution's; `e(tauG1[1], G2) = e(G1,
/// tauG2[1])`; the powers are consistent (`e(Σ r_i·g[i], tauG2[1]) = e(Σ r_i·g[i+1],
/// G2)` for random `r`); a Lagrange section is the Lagrange basis of `g` (`Σ r_i·L_i =
/// Σ c_j·g[j]` where `c` is the inverse FFT of `r`). The contributions' proofs of
/// knowledge and hash chain are [`Ptau::verify`](super::Ptau::verify)'s job: compare
/// the last contribution's hash with the ceremony's published one.
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) when the file cannot be read, [`Error::Ptau`](crate::Error::Ptau)
/// for a failed check. Cost on two cores: reading `2^k · 64` bytes (twice that with a
/// Lagrange section), two or four multi-scalar multiplications of `2^k` points and a
/// few pairings: 5 s at k = 19 from a prepared file, peak memory about 300 MB. A file
/// without a Lagrange section (a ceremony not prepared for phase 2, like our own
/// output) needs an FFT over G1 points, about `2^k·k/2` scalar multiplications (in
/// batch-affine lockstep): with `asm`, 2.6 s at k = 15 and 54 s at k = 19 in all
/// (`snarkjs powersoftau prepare phase2` adds the section).
pub fn import_params(path: &Path, k: u32) -> Result<ParamsKZG<Bn256>> {
    let mut f = File::open(path).map_err(|e| io_err(path, e))?;
    let file_len = f.metadata().map_err(|e| io_err(path, e))?.len();
    let sections = Sections::scan(&mut f, path)?;
    let header = file::read_header(&mut f, &sections, path)?;
    let power = header.power;
    if k == 0 || k > MAX_POWER {
        return Err(fail(Some(path), PtauCheck::CircuitK { k }));
    }
    if power < k {
        return Err(fail(Some(path), PtauCheck::PowerTooSmall { power, k }));
    }
    let n = 1usize << k;
    let big_n = 1u64 << power;
    let g1 = G1_LEN as u64;
    let g2 = G2_LEN as u64;
    let tau_g1_offset =
        sections.sized(SECTION_TAU_G1, file::tau_g1_count(power) as u64 * g1, path)?;
    let tau_g2_offset = sections.sized(SECTION_TAU_G2, big_n * g2, path)?;
    sections.sized(file::SECTION_ALPHA_TAU_G1, big_n * g1, path)?;
    sections.sized(file::SECTION_BETA_TAU_G1, big_n * g1, path)?;
    sections.sized(file::SECTION_BETA_G2, g2, path)?;

    let contributions = file::read_contributions(&mut f, &sections, path)?;

    let mut bytes = vec![0u8; n * G1_LEN];
    file::read_at(
        &mut f,
        path,
        tau_g1_offset,
        &mut bytes,
        file_len,
        Some(SECTION_TAU_G1),
    )?;
    let g = file::decode_g1s(&bytes, "tauG1", 0, Some(path))?;
    drop(bytes);
    let mut bytes = vec![0u8; 2 * G2_LEN];
    file::read_at(
        &mut f,
        path,
        tau_g2_offset,
        &mut bytes,
        file_len,
        Some(SECTION_TAU_G2),
    )?;
    let tau_g2 = file::decode_g2s(&bytes, "tauG2", 0, Some(path))?;
    let s_g2 = tau_g2[1];

    check_powers(&g, &tau_g2[0], &s_g2, "tauG1", "tauG2", Some(path))?;
    let Some(last) = contributions.last() else {
        return Err(fail(Some(path), PtauCheck::NoContribution));
    };
    let mismatch = |point| {
        fail(
            Some(path),
            PtauCheck::ContributionMismatch {
                contribution: contributions.len(),
                point,
            },
        )
    };
    if g[1] != last.tau_g1 {
        return Err(mismatch("tauG1[1]"));
    }
    if s_g2 != last.tau_g2 {
        return Err(mismatch("tauG2[1]"));
    }

    // The Lagrange basis: from the file when it has one (checked), else by FFT.
    let lagrange_size = ((1u64 << (power + 2)) - 1) * g1;
    let g_lagrange = match sections.optional(SECTION_LAGRANGE_G1, path)? {
        Some((_, size)) if size != lagrange_size => {
            return Err(fail(
                Some(path),
                PtauCheck::SectionSize {
                    section: SECTION_LAGRANGE_G1,
                    expected: lagrange_size,
                    found: size,
                },
            ));
        }
        Some((offset, _)) => {
            let mut bytes = vec![0u8; n * G1_LEN];
            let at = offset + (n as u64 - 1) * g1;
            file::read_at(
                &mut f,
                path,
                at,
                &mut bytes,
                file_len,
                Some(SECTION_LAGRANGE_G1),
            )?;
            let snark = file::decode_g1s(&bytes, "lagrangeG1", n - 1, Some(path))?;
            drop(bytes);
            let inv = ROOT_LOG_INV % n as u64;
            let lagrange: Vec<G1Affine> = (0..n as u64)
                .into_par_iter()
                .map(|m| snark[((m * inv) % n as u64) as usize])
                .collect();
            if !lagrange_consistent(&g, &lagrange, k) {
                return Err(fail(Some(path), PtauCheck::Lagrange { k }));
            }
            lagrange
        }
        None => lagrange_basis(&g, k),
    };
    // `from_parts` is a method; a throwaway k = 1 setup provides the receiver.
    let shell = ParamsKZG::<Bn256>::setup(1, ChaCha20Rng::seed_from_u64(0));
    Ok(shell.from_parts(k, g, Some(g_lagrange), G2Affine::generator(), s_g2))
}

/// The checks shared by the importer and [`verify_params`]: points, generators, `τ·G2`
/// against `τ·G1`, the powers.
fn check_powers(
    g: &[G1Affine],
    g2: &G2Affine,
    s_g2: &G2Affine,
    g_name: &'static str,
    g2_name: &'static str,
    path: Option<&Path>,
) -> Result<()> {
    if let Some(i) = g
        .par_iter()
        .position_first(|p| !bool::from(p.is_on_curve()))
    {
        return Err(fail(
            path,
            PtauCheck::NotOnCurve {
                point: format!("{g_name}[{i}]"),
            },
        ));
    }
    if let Some(i) = g.par_iter().position_first(|p| bool::from(p.is_identity())) {
        return Err(fail(
            path,
            PtauCheck::Infinity {
                point: format!("{g_name}[{i}]"),
            },
        ));
    }
    for (p, i) in [(g2, 0), (s_g2, 1)] {
        let point = format!("{g2_name}[{i}]");
        if !bool::from(p.is_on_curve()) {
            return Err(fail(path, PtauCheck::NotOnCurve { point }));
        }
        if bool::from(p.is_identity()) {
            return Err(fail(path, PtauCheck::Infinity { point }));
        }
        if !curve::g2_in_subgroup(p) {
            return Err(fail(path, PtauCheck::NotInSubgroup { point }));
        }
    }
    if g[0] != G1Affine::generator() {
        return Err(fail(
            path,
            PtauCheck::NotGenerator {
                point: format!("{g_name}[0]"),
            },
        ));
    }
    if *g2 != G2Affine::generator() {
        return Err(fail(
            path,
            PtauCheck::NotGenerator {
                point: format!("{g2_name}[0]"),
            },
        ));
    }
    if g.len() < 2 {
        return Err(fail(
            path,
            PtauCheck::ParamsSize {
                what: g_name,
                expected: 2,
                found: g.len() as u64,
            },
        ));
    }
    if !curve::pairing_eq(&g[1], g2, &g[0], s_g2) {
        return Err(fail(path, PtauCheck::TauG2Mismatch));
    }
    if !g1_powers_consistent(g, s_g2) {
        return Err(fail(
            path,
            PtauCheck::PowersInconsistent { section: g_name },
        ));
    }
    Ok(())
}

/// Whether `lagrange` is the Lagrange basis of `g` over halo2's domain of size `2^k`:
/// `Σ r_i·L_i = Σ c_j·g_j` with `c` the inverse FFT of random `r` (since `L_i = (1/n)
/// Σ_j ω^(-ij)·g_j`, both sides are `Σ_j (1/n) Σ_i r_i ω^(-ij)·g_j`); a wrong point
/// makes them differ except with probability 1/r.
fn lagrange_consistent(g: &[G1Affine], lagrange: &[G1Affine], k: u32) -> bool {
    let n = 1usize << k;
    if g.len() != n || lagrange.len() != n {
        return false;
    }
    let r = random_scalars(n);
    let domain = EvaluationDomain::<Fr>::new(1, k);
    let c = domain.lagrange_to_coeff(domain.lagrange_from_vec(r.clone()));
    let (lhs, rhs) = rayon::join(|| best_multiexp(&r, lagrange), || best_multiexp(&c, g));
    lhs.to_affine() == rhs.to_affine()
}

/// Checks halo2 KZG parameters: `g` and `g_lagrange` hold `2^k` points on the curve,
/// `g[0]` and `g2` are the generators, `s_g2` is in the G2 subgroup, `e(g[1], g2) =
/// e(g[0], s_g2)`, the powers are consistent (a pairing check on a random linear
/// combination, as in [`import_params`]) and `g_lagrange` is the Lagrange basis of `g`
/// (a random linear combination against the inverse FFT of its scalars).
///
/// # Errors
/// [`Error::Ptau`](crate::Error::Ptau) naming the failed check. Cost: four multi-scalar
/// multiplications of `2^k` points, a copy of the parameters, a few pairings (about a
/// second at k = 15, ten at k = 19, on two cores).
pub fn verify_params(params: &ParamsKZG<Bn256>) -> Result<()> {
    let k = params.k();
    let n = 1u64 << k;
    let g = params.get_g();
    if g.len() as u64 != n || params.n() != n {
        return Err(fail(
            None,
            PtauCheck::ParamsSize {
                what: "g",
                expected: n,
                found: g.len() as u64,
            },
        ));
    }
    // halo2 does not expose g_lagrange; its raw serialization does (k, g, g_lagrange,
    // g2, s_g2), and parsing it checks every point is on the curve.
    let mut raw = Vec::with_capacity(4 + 2 * g.len() * G1_LEN + 2 * G2_LEN);
    params
        .write_custom(&mut raw, SerdeFormat::RawBytesUnchecked)
        .map_err(|e| crate::Error::Plonk(format!("serializing parameters: {e}")))?;
    let start = 4 + g.len() * G1_LEN;
    let end = start + g.len() * G1_LEN;
    let lagrange_raw = raw.get(start..end).ok_or_else(|| {
        fail(
            None,
            PtauCheck::ParamsSize {
                what: "g_lagrange",
                expected: n,
                found: (raw.len().saturating_sub(start) / G1_LEN) as u64,
            },
        )
    })?;
    let parsed: Vec<Option<G1Affine>> = lagrange_raw
        .par_chunks_exact(G1_LEN)
        .map(G1Affine::from_raw_bytes)
        .collect();
    drop(raw);
    let mut lagrange = Vec::with_capacity(parsed.len());
    for (i, p) in parsed.into_iter().enumerate() {
        match p {
            Some(p) => lagrange.push(p),
            None => {
                return Err(fail(
                    None,
                    PtauCheck::NotOnCurve {
                        point: format!("g_lagrange[{i}]"),
                    },
                ));
            }
        }
    }
    check_powers(g, &params.g2(), &params.s_g2(), "g", "g2", None)?;
    if !lagrange_consistent(g, &lagrange, k) {
        return Err(fail(None, PtauCheck::GLagrange));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo2_proofs::arithmetic::g_to_lagrange;
    use halo2curves_axiom::ff::{Field, PrimeField};

    #[test]
    fn lagrange_basis_matches_halo2() {
        let params = ParamsKZG::<Bn256>::setup(10, ChaCha20Rng::seed_from_u64(2));
        for k in [1, 2, 3, 4, 5, 6, 7, 10] {
            let g = &params.get_g()[..1 << k];
            let ours = lagrange_basis(g, k);
            let theirs: Vec<G1Affine> =
                g_to_lagrange(g.iter().map(PrimeCurveAffine::to_curve).collect(), k);
            assert_eq!(ours, theirs, "k = {k}");
        }
    }

    #[test]
    fn root_of_unity_relation() {
        // 5^t = (7^t)^J, t = (r - 1) / 2^28.
        let t_shift = |x: Fr| {
            // x^t = x^((r-1)/2^28)
            let mut e = [0u64; 4];
            let r_minus_1 = (-Fr::ONE).to_repr();
            for (i, limb) in e.iter_mut().enumerate() {
                let mut b = [0u8; 8];
                b.copy_from_slice(&r_minus_1[8 * i..8 * i + 8]);
                *limb = u64::from_le_bytes(b);
            }
            for i in 0..4 {
                e[i] >>= 28;
                if i < 3 {
                    e[i] |= e[i + 1] << 36;
                }
            }
            x.pow_vartime(e)
        };
        let w5 = t_shift(Fr::from(5));
        let w7 = t_shift(Fr::from(7));
        assert_eq!(w7, Fr::ROOT_OF_UNITY);
        assert_eq!(w7.pow_vartime([ROOT_LOG]), w5);
        assert_eq!((ROOT_LOG * ROOT_LOG_INV) % (1 << 28), 1);
    }

    #[test]
    fn development_parameters_verify_and_a_changed_point_does_not() {
        let params = ParamsKZG::<Bn256>::setup(4, ChaCha20Rng::seed_from_u64(1));
        verify_params(&params).expect("setup parameters verify");
        let mut g = params.get_g().to_vec();
        g[3] = g[4];
        let bad = params.from_parts(4, g, None, params.g2(), params.s_g2());
        let err = verify_params(&bad).expect_err("altered");
        assert!(
            err.to_string().contains("g powers are not consistent"),
            "{err}"
        );
        let mut g = params.get_g().to_vec();
        let lagrange = g_to_lagrange(g.iter().map(PrimeCurveAffine::to_curve).collect(), 4);
        let mut wrong = lagrange.clone();
        wrong.swap(1, 2);
        g.truncate(16);
        let bad = params.from_parts(4, g, Some(wrong), params.g2(), params.s_g2());
        let err = verify_params(&bad).expect_err("altered");
        assert!(err.to_string().contains("g_lagrange"), "{err}");
    }
}
