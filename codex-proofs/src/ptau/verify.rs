//! Checking a whole ceremony, as `snarkjs powersoftau verify` does, and a little more
//! (G2 subgroup membership, the last response hash against the points).

use std::fmt;

use halo2curves_axiom::CurveAffine;
use halo2curves_axiom::bn256::{Fr, G1Affine, G2Affine};
use halo2curves_axiom::ff::Field;
use halo2curves_axiom::group::Curve;
use halo2curves_axiom::msm::msm_best;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rayon::prelude::*;

use super::blake2b::Blake2b;
use super::contribute::{beacon_key, g2_sp};
use super::curve;
use super::{Contribution, Ptau, PtauCheck, fail, first_challenge_hash};
use crate::error::Result;

/// What [`Ptau::verify`] found: the ceremony's contributions with their hashes.
/// `Display` prints it the way snarkjs does.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The file's power.
    pub power: u32,
    /// The ceremony's power (larger for a reduced file).
    pub ceremony_power: u32,
    /// Every contribution, oldest first.
    pub contributions: Vec<ContributionReport>,
    /// BLAKE2b-512 of the last response hash and the file's points: the challenge of
    /// the next contribution.
    pub next_challenge: [u8; 64],
    /// Whether the points' hashes were compared with the last contribution's (not
    /// possible for a reduced file, whose points are a prefix of the ceremony's).
    pub hashes_checked: bool,
}

/// One contribution in a [`VerifyReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContributionReport {
    /// 1-based, as snarkjs numbers them.
    pub index: usize,
    /// The contributor's name.
    pub name: String,
    /// The challenge it answered (the previous next challenge).
    pub challenge_hash: [u8; 64],
    /// Its response hash.
    pub response_hash: [u8; 64],
    /// Its next challenge hash.
    pub next_challenge: [u8; 64],
    /// For a beacon: the beacon hash (hex) and the exponent of its iterations.
    pub beacon: Option<(String, u8)>,
}

/// A 64-byte hash as snarkjs prints it: four lines of four 8-hex-digit words, each line
/// indented by two tabs.
pub fn format_hash(hash: &[u8; 64]) -> String {
    let mut out = String::new();
    for (i, line) in hash.chunks_exact(16).enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str("\t\t");
        for (j, word) in line.chunks_exact(4).enumerate() {
            if j > 0 {
                out.push(' ');
            }
            out.push_str(&hex::encode(word));
        }
    }
    out
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "power: 2**{} (ceremony 2**{})",
            self.power, self.ceremony_power
        )?;
        for c in self.contributions.iter().rev() {
            writeln!(f, "-----------------------------------------------------")?;
            writeln!(f, "Contribution #{}: {}", c.index, c.name)?;
            writeln!(f, "Next Challenge:\n{}", format_hash(&c.next_challenge))?;
            writeln!(f, "Response Hash:\n{}", format_hash(&c.response_hash))?;
            writeln!(f, "Challenge Hash:\n{}", format_hash(&c.challenge_hash))?;
            if let Some((hash, exp)) = &c.beacon {
                writeln!(f, "Beacon generator: {hash}")?;
                writeln!(f, "Beacon iterations Exp: {exp}")?;
            }
        }
        writeln!(f, "-----------------------------------------------------")?;
        if !self.hashes_checked {
            writeln!(f, "(reduced file: the points' hash is not the ceremony's)")?;
        }
        write!(
            f,
            "Next challenge hash:\n{}",
            format_hash(&self.next_challenge)
        )
    }
}

/// What the contribution before the first one is: a blank file.
struct Prev {
    tau_g1: G1Affine,
    tau_g2: G2Affine,
    alpha_g1: G1Affine,
    beta_g1: G1Affine,
    beta_g2: G2Affine,
    next_challenge: [u8; 64],
}

impl Prev {
    fn of(c: &Contribution) -> Prev {
        Prev {
            tau_g1: c.tau_g1,
            tau_g2: c.tau_g2,
            alpha_g1: c.alpha_g1,
            beta_g1: c.beta_g1,
            beta_g2: c.beta_g2,
            next_challenge: c.next_challenge,
        }
    }
}

/// snarkjs's `verifyContribution`: the beacon derivation, the three proofs of knowledge,
/// and that each recorded point is the previous one times the secret. We also check the
/// G2 points are in the subgroup (snarkjs does not), which the pairing arguments assume.
fn verify_contribution(
    index: usize,
    cur: &Contribution,
    prev: &Prev,
) -> std::result::Result<(), PtauCheck> {
    let g2_points: [(&G2Affine, &str); 5] = [
        (&cur.tau_g2, "tauG2"),
        (&cur.beta_g2, "betaG2"),
        (&cur.key.tau.g2_spx, "tau.g2_spx"),
        (&cur.key.alpha.g2_spx, "alpha.g2_spx"),
        (&cur.key.beta.g2_spx, "beta.g2_spx"),
    ];
    for (p, name) in g2_points {
        if !curve::g2_in_subgroup(p) {
            return Err(PtauCheck::NotInSubgroup {
                point: format!("contribution {index} {name}"),
            });
        }
    }
    if let Some(beacon) = &cur.beacon
        && cur.kind == 1
    {
        if beacon.iterations_exp > 32 {
            return Err(PtauCheck::BeaconIterations {
                contribution: index,
                exp: beacon.iterations_exp,
            });
        }
        let expected = beacon_key(beacon, &prev.next_challenge);
        let pairs: [(bool, &'static str); 9] = [
            (expected.tau.g1_s == cur.key.tau.g1_s, "tau.g1_s"),
            (expected.tau.g1_sx == cur.key.tau.g1_sx, "tau.g1_sx"),
            (expected.tau.g2_spx == cur.key.tau.g2_spx, "tau.g2_spx"),
            (expected.alpha.g1_s == cur.key.alpha.g1_s, "alpha.g1_s"),
            (expected.alpha.g1_sx == cur.key.alpha.g1_sx, "alpha.g1_sx"),
            (
                expected.alpha.g2_spx == cur.key.alpha.g2_spx,
                "alpha.g2_spx",
            ),
            (expected.beta.g1_s == cur.key.beta.g1_s, "beta.g1_s"),
            (expected.beta.g1_sx == cur.key.beta.g1_sx, "beta.g1_sx"),
            (expected.beta.g2_spx == cur.key.beta.g2_spx, "beta.g2_spx"),
        ];
        if let Some((_, key)) = pairs.iter().find(|(ok, _)| !ok) {
            return Err(PtauCheck::Beacon {
                contribution: index,
                key,
            });
        }
    }
    let k = &cur.key;
    let tau_sp = g2_sp(0, &prev.next_challenge, &k.tau.g1_s, &k.tau.g1_sx);
    let alpha_sp = g2_sp(1, &prev.next_challenge, &k.alpha.g1_s, &k.alpha.g1_sx);
    let beta_sp = g2_sp(2, &prev.next_challenge, &k.beta.g1_s, &k.beta.g1_sx);
    let pok = |ok: bool, secret: &'static str| {
        if ok {
            Ok(())
        } else {
            Err(PtauCheck::ProofOfKnowledge {
                contribution: index,
                secret,
            })
        }
    };
    pok(
        curve::same_ratio(&k.tau.g1_s, &k.tau.g1_sx, &tau_sp, &k.tau.g2_spx),
        "tau",
    )?;
    pok(
        curve::same_ratio(&k.alpha.g1_s, &k.alpha.g1_sx, &alpha_sp, &k.alpha.g2_spx),
        "alpha",
    )?;
    pok(
        curve::same_ratio(&k.beta.g1_s, &k.beta.g1_sx, &beta_sp, &k.beta.g2_spx),
        "beta",
    )?;
    let chain = |ok: bool, point: &'static str| {
        if ok {
            Ok(())
        } else {
            Err(PtauCheck::Chain {
                contribution: index,
                point,
            })
        }
    };
    chain(
        curve::same_ratio(&prev.tau_g1, &cur.tau_g1, &tau_sp, &k.tau.g2_spx),
        "tau·G1",
    )?;
    chain(
        curve::same_ratio(&k.tau.g1_s, &k.tau.g1_sx, &prev.tau_g2, &cur.tau_g2),
        "tau·G2",
    )?;
    chain(
        curve::same_ratio(&prev.alpha_g1, &cur.alpha_g1, &alpha_sp, &k.alpha.g2_spx),
        "alpha·G1",
    )?;
    chain(
        curve::same_ratio(&prev.beta_g1, &cur.beta_g1, &beta_sp, &k.beta.g2_spx),
        "beta·G1",
    )?;
    chain(
        curve::same_ratio(&k.beta.g1_s, &k.beta.g1_sx, &prev.beta_g2, &cur.beta_g2),
        "beta·G2",
    )?;
    Ok(())
}

/// Random scalars for a linear combination.
pub(crate) fn random_scalars(n: usize) -> Vec<Fr> {
    let mut seed = ChaCha20Rng::from_entropy();
    let seeds: Vec<u64> = (0..n.div_ceil(4096))
        .map(|_| rand_chacha::rand_core::RngCore::next_u64(&mut seed))
        .collect();
    seeds
        .par_iter()
        .enumerate()
        .flat_map_iter(|(i, s)| {
            let mut rng = ChaCha20Rng::seed_from_u64(*s);
            let count = 4096.min(n - i * 4096);
            (0..count).map(move |_| Fr::random(&mut rng))
        })
        .collect()
}

/// `Σ r_i·p[i]` and `Σ r_i·p[i+1]` for random `r`: two points that are `1·X` and `τ·X`
/// for one `X` exactly when (with overwhelming probability) `p[i+1] = τ·p[i]` for all
/// `i`.
pub(crate) fn shifted_combinations<C: CurveAffine<ScalarExt = Fr>>(points: &[C]) -> (C, C) {
    let n = points.len().saturating_sub(1);
    let r = random_scalars(n);
    let (a, b) = rayon::join(
        || msm_best(&r, &points[..n]),
        || msm_best(&r, &points[1..=n]),
    );
    (a.to_affine(), b.to_affine())
}

/// Whether `p[i+1] = τ·p[i]` throughout a G1 section, `tau_g2` being `τ·G2`.
pub(crate) fn g1_powers_consistent(points: &[G1Affine], tau_g2: &G2Affine) -> bool {
    if points.len() < 2 {
        return true;
    }
    let (r1, r2) = shifted_combinations(points);
    curve::same_ratio(&r1, &r2, &G2Affine::generator(), tau_g2)
}

impl Ptau {
    /// Checks the ceremony as `snarkjs powersoftau verify` does: every contribution's
    /// proofs of knowledge of `τ, α, β` (the G2 points they pair with are derived from
    /// the previous challenge, which chains the contributions), beacon keys, that each
    /// contribution's points follow from the previous ones, that the file's points are
    /// the last contribution's (first points, successive powers by pairing checks on
    /// random linear combinations) and that hashing them gives its next challenge. We
    /// also check every G2 point is in the subgroup and, when the file is not reduced,
    /// that the last contribution's saved response hash state is the hash of the points.
    /// The Lagrange sections of files prepared for phase 2 are not checked.
    ///
    /// # Errors
    /// [`PtauCheck::NoContribution`] for a file without contributions (snarkjs refuses
    /// those too), else the failed check (points first, then contributions, then
    /// hashes). Cost on two cores: a G2 subgroup check per tauG2 point (~80 µs each),
    /// four multi-scalar multiplications the size of the sections, a dozen pairings per
    /// contribution and hashing the points twice: about 3 s at power 15, 40 s at power
    /// 19. The first contribution's challenge hashes a blank file of the ceremony's
    /// power, concurrently (about 150 s of one core at power 28).
    pub fn verify(&self) -> Result<VerifyReport> {
        let Some(last) = self.contributions.last() else {
            return Err(fail(None, PtauCheck::NoContribution));
        };
        let n = self.contributions.len();
        let hashes_checked = self.power == self.ceremony_power;

        // The blank file's hash (minutes for a ceremony of power 28) and the next
        // challenge hash run while the points are checked; then the contributions and the
        // response hash state.
        let (first_challenge, (next_challenge, points)) = rayon::join(
            || first_challenge_hash(self.ceremony_power),
            || {
                rayon::join(
                    || {
                        let mut next = Blake2b::new();
                        next.update(&last.response_hash);
                        self.hash_uncompressed(&mut next);
                        next.finalize()
                    },
                    || self.verify_points(),
                )
            },
        );
        points?;
        let prev_challenge = if n > 1 {
            self.contributions[n - 2].next_challenge
        } else {
            first_challenge
        };
        let (response_ok, checks) = rayon::join(
            || {
                !hashes_checked || {
                    let mut response = Blake2b::new();
                    response.update(&prev_challenge);
                    self.hash_compressed(&mut response);
                    response.same_state(&last.partial_hash)
                }
            },
            || self.verify_contributions(&first_challenge),
        );
        let reports = checks?;
        if hashes_checked {
            if !response_ok {
                return Err(fail(None, PtauCheck::ResponseHash { contribution: n }));
            }
            if next_challenge != last.next_challenge {
                return Err(fail(None, PtauCheck::NextChallenge { contribution: n }));
            }
        }
        Ok(VerifyReport {
            power: self.power,
            ceremony_power: self.ceremony_power,
            contributions: reports,
            next_challenge,
            hashes_checked,
        })
    }

    /// Every contribution against the one before.
    fn verify_contributions(&self, first_challenge: &[u8; 64]) -> Result<Vec<ContributionReport>> {
        let n = self.contributions.len();
        let blank = Prev {
            tau_g1: G1Affine::generator(),
            tau_g2: G2Affine::generator(),
            alpha_g1: G1Affine::generator(),
            beta_g1: G1Affine::generator(),
            beta_g2: G2Affine::generator(),
            next_challenge: *first_challenge,
        };
        let results: Vec<std::result::Result<(), PtauCheck>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let prev = if i == 0 {
                    &blank
                } else {
                    &Prev::of(&self.contributions[i - 1])
                };
                verify_contribution(i + 1, &self.contributions[i], prev)
            })
            .collect();
        if let Some(Err(check)) = results.into_iter().find(Result::is_err) {
            return Err(fail(None, check));
        }
        Ok(self
            .contributions
            .iter()
            .enumerate()
            .map(|(i, c)| ContributionReport {
                index: i + 1,
                name: c.name.clone(),
                challenge_hash: if i == 0 {
                    *first_challenge
                } else {
                    self.contributions[i - 1].next_challenge
                },
                response_hash: c.response_hash,
                next_challenge: c.next_challenge,
                beacon: c
                    .beacon
                    .as_ref()
                    .map(|b| (hex::encode(&b.hash), b.iterations_exp)),
            })
            .collect())
    }

    /// The points: on the curves and in the subgroups, the first ones against the last
    /// contribution, successive powers.
    fn verify_points(&self) -> Result<()> {
        let n = self.contributions.len();
        let Some(last) = self.contributions.last() else {
            return Err(fail(None, PtauCheck::NoContribution));
        };
        // Curve and subgroup membership of every point.
        let g1_sections: [(&[G1Affine], &str); 3] = [
            (&self.tau_g1, "tauG1"),
            (&self.alpha_tau_g1, "alphaTauG1"),
            (&self.beta_tau_g1, "betaTauG1"),
        ];
        for (points, name) in g1_sections {
            if let Some(i) = points
                .par_iter()
                .position_first(|p| !bool::from(p.is_on_curve()))
            {
                return Err(fail(
                    None,
                    PtauCheck::NotOnCurve {
                        point: format!("{name}[{i}]"),
                    },
                ));
            }
        }
        if let Some(i) = self
            .tau_g2
            .par_iter()
            .position_first(|p| !curve::g2_in_subgroup(p))
        {
            return Err(fail(
                None,
                PtauCheck::NotInSubgroup {
                    point: format!("tauG2[{i}]"),
                },
            ));
        }
        if !curve::g2_in_subgroup(&self.beta_g2) {
            return Err(fail(
                None,
                PtauCheck::NotInSubgroup {
                    point: "betaG2".into(),
                },
            ));
        }

        // The file's first points against the last contribution.
        let mismatch = |point: &'static str| {
            fail(
                None,
                PtauCheck::ContributionMismatch {
                    contribution: n,
                    point,
                },
            )
        };
        if self.tau_g1[0] != G1Affine::generator() {
            return Err(fail(
                None,
                PtauCheck::NotGenerator {
                    point: "tauG1[0]".into(),
                },
            ));
        }
        if self.tau_g2[0] != G2Affine::generator() {
            return Err(fail(
                None,
                PtauCheck::NotGenerator {
                    point: "tauG2[0]".into(),
                },
            ));
        }
        if self.tau_g1[1] != last.tau_g1 {
            return Err(mismatch("tauG1[1]"));
        }
        if self.tau_g2[1] != last.tau_g2 {
            return Err(mismatch("tauG2[1]"));
        }
        if self.alpha_tau_g1[0] != last.alpha_g1 {
            return Err(mismatch("alphaTauG1[0]"));
        }
        if self.beta_tau_g1[0] != last.beta_g1 {
            return Err(mismatch("betaTauG1[0]"));
        }
        if self.beta_g2 != last.beta_g2 {
            return Err(mismatch("betaG2"));
        }

        // Successive powers.
        let tau_g2 = last.tau_g2;
        let inconsistent =
            |section: &'static str| fail(None, PtauCheck::PowersInconsistent { section });
        if !g1_powers_consistent(&self.tau_g1, &tau_g2) {
            return Err(inconsistent("tauG1"));
        }
        let (s1, s2) = shifted_combinations(&self.tau_g2);
        if !curve::same_ratio(&G1Affine::generator(), &last.tau_g1, &s1, &s2) {
            return Err(inconsistent("tauG2"));
        }
        if !g1_powers_consistent(&self.alpha_tau_g1, &tau_g2) {
            return Err(inconsistent("alphaTauG1"));
        }
        if !g1_powers_consistent(&self.beta_tau_g1, &tau_g2) {
            return Err(inconsistent("betaTauG1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_print_like_snarkjs() {
        let mut h = [0u8; 64];
        for (i, b) in h.iter_mut().enumerate() {
            *b = i as u8;
        }
        let s = format_hash(&h);
        assert_eq!(s.lines().count(), 4);
        assert!(s.starts_with("\t\t00010203 04050607 08090a0b 0c0d0e0f\n\t\t10111213"));
    }

    #[test]
    fn a_blank_file_is_refused_and_a_contribution_verifies() {
        let blank = Ptau::new(3).expect("power 3");
        let err = blank.verify().expect_err("no contribution");
        assert!(err.to_string().contains("no contribution"), "{err}");
        let one = blank.contribute("test", b"entropy").expect("contribute");
        let report = one.verify().expect("verifies");
        assert_eq!(report.contributions.len(), 1);
        assert_eq!(
            report.next_challenge,
            *one.contributions()[0].next_challenge()
        );
        let two = one.contribute("second", b"more").expect("contribute");
        let report = two.verify().expect("verifies");
        assert_eq!(
            report.contributions[1].challenge_hash,
            report.contributions[0].next_challenge
        );
    }

    #[test]
    fn tampering_is_named() {
        let one = Ptau::new(3)
            .and_then(|p| p.contribute("a", b"x"))
            .expect("contribute");
        let mut bad = one.clone();
        bad.tau_g1[5] = bad.tau_g1[6];
        let err = bad.verify().expect_err("tampered");
        assert!(
            err.to_string().contains("tauG1 powers are not consistent"),
            "{err}"
        );
        let mut bad = one.clone();
        bad.contributions[0].key.alpha.g1_sx = bad.contributions[0].key.alpha.g1_s;
        let err = bad.verify().expect_err("tampered");
        assert!(
            err.to_string()
                .contains("proof of knowledge for alpha fails"),
            "{err}"
        );
        let mut bad = one;
        bad.contributions[0].next_challenge[0] ^= 1;
        let err = bad.verify().expect_err("tampered");
        assert!(
            err.to_string()
                .contains("next challenge hash does not match"),
            "{err}"
        );
    }
}
