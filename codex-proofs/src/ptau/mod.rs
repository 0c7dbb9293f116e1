//! Powers-of-tau ceremonies in snarkjs's `.ptau` format (BN254, "bn128"), and KZG
//! parameters for halo2 from them.
//!
//! A `.ptau` file holds `τ^i·G1` for `i < 2^(p+1) - 1`, `τ^i·G2`, `α·τ^i·G1` and
//! `β·τ^i·G1` for `i < 2^p`, and `β·G2`, for secrets `τ, α, β` that are the products of
//! every contributor's secrets: as long as one contributor destroyed theirs, nobody
//! knows `τ`. Each contribution records a proof of knowledge of its secrets and a hash
//! chain (challenge → response → next challenge) so that a ceremony can be checked end
//! to end, which is what `snarkjs powersoftau verify` and [`Ptau::verify`] do. The
//! Perpetual Powers of Tau and Hermez ceremonies publish their files in this format.
//!
//! - [`Ptau`]: a whole file in memory. [`Ptau::new`] starts a ceremony,
//!   [`Ptau::contribute`] adds a contribution, [`Ptau::read`] / [`Ptau::write`] load and
//!   store files `snarkjs` reads and writes, [`Ptau::verify`] checks a ceremony.
//! - [`import_params`]: what a prover needs, read from a file of any power at or above
//!   the circuit's `k` without loading the rest, checked, as halo2's
//!   [`ParamsKZG`](halo2_proofs::poly::kzg::commitment::ParamsKZG).
//! - [`verify_params`]: the same checks on parameters already in memory.
//!
//! The formats (encodings, hashes, the generator the proof of knowledge draws from)
//! were taken from snarkjs 0.7.6, ffjavascript 0.3 and wasmcurves 0.2; the tests run
//! snarkjs against this module in both directions.
//!
//! ```no_run
//! use codex_proofs::ptau::{Ptau, import_params};
//! # fn main() -> codex_proofs::Result<()> {
//! let start = Ptau::new(12)?;
//! let mine = start.contribute("alice", b"some keyboard mashing")?;
//! println!("{}", mine.verify()?);
//! mine.write("ceremony_0001.ptau".as_ref())?;
//! let params = import_params("ceremony_0001.ptau".as_ref(), 10)?;
//! # let _ = params;
//! # Ok(())
//! # }
//! ```

mod blake2b;
mod chacha;
mod contribute;
mod curve;
mod file;
mod lagrange;
mod params;
mod verify;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use halo2curves_axiom::bn256::{G1Affine, G2Affine};

use crate::error::{Error, Result};
use blake2b::Blake2b;
use curve::{G1_LEN, G2_LEN};
use file::{
    SECTION_ALPHA_TAU_G1, SECTION_BETA_G2, SECTION_BETA_TAU_G1, SECTION_CONTRIBUTIONS,
    SECTION_TAU_G1, SECTION_TAU_G2, Sections,
};

pub use params::{import_params, verify_params};
pub use verify::{ContributionReport, VerifyReport, format_hash};

/// A check that a `.ptau` file, a ceremony or KZG parameters failed; carried by
/// [`Error::Ptau`]. The message names the check (`tauG1[37] is not on the curve`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PtauCheck {
    /// The file does not start with the magic bytes `ptau`.
    #[error("not a .ptau file (no `ptau` magic bytes)")]
    Magic,
    /// A container version snarkjs does not read (above 1).
    #[error("binfile version {version} is not supported (1 is)")]
    Version {
        /// The version found.
        version: u32,
    },
    /// The file ends inside a section (or inside the section table).
    #[error("the file ends inside {}", match section { Some(s) => format!("section {s}"), None => "the section table".to_string() })]
    Truncated {
        /// The section, when known.
        section: Option<u32>,
    },
    /// A section the format needs is absent.
    #[error("section {section} is missing")]
    MissingSection {
        /// Its id (1 header, 2 tauG1, 3 tauG2, 4 alphaTauG1, 5 betaTauG1, 6 betaG2, 7
        /// contributions, 12 Lagrange tauG1).
        section: u32,
    },
    /// A section present more than once.
    #[error("section {section} appears more than once")]
    DuplicateSection {
        /// Its id.
        section: u32,
    },
    /// A section whose size does not fit the file's power.
    #[error("section {section} has {found} bytes, expected {expected}")]
    SectionSize {
        /// Its id.
        section: u32,
        /// The size the power implies.
        expected: u64,
        /// The size found.
        found: u64,
    },
    /// Not a file over BN254 ("bn128").
    #[error("not a bn128 file: {reason}")]
    Curve {
        /// What differs.
        reason: String,
    },
    /// A power outside `1..=28`, or above the ceremony's power.
    #[error(
        "power {power} (ceremony power {ceremony_power}) is outside 1..=28 or above the ceremony's"
    )]
    Power {
        /// The file's power.
        power: u32,
        /// The power of the ceremony it was cut from.
        ceremony_power: u32,
    },
    /// A file with fewer powers than the circuit needs.
    #[error("file power {power} < circuit k {k}")]
    PowerTooSmall {
        /// The file's power.
        power: u32,
        /// The circuit's `k`.
        k: u32,
    },
    /// A circuit size outside `1..=28`.
    #[error("circuit k {k} is outside 1..=28")]
    CircuitK {
        /// The `k` asked for.
        k: u32,
    },
    /// A coordinate that is not below the field modulus.
    #[error("{point} has a coordinate that is not a canonical field element")]
    NotCanonical {
        /// The point (`tauG1[37]`, `contribution 2 tau.g1_s`).
        point: String,
    },
    /// A point that is not on the curve.
    #[error("{point} is not on the curve")]
    NotOnCurve {
        /// The point.
        point: String,
    },
    /// A G2 point on the twist but outside the order-r subgroup.
    #[error("{point} is not in the G2 subgroup")]
    NotInSubgroup {
        /// The point.
        point: String,
    },
    /// The point at infinity where a power of a nonzero secret belongs.
    #[error("{point} is the point at infinity")]
    Infinity {
        /// The point.
        point: String,
    },
    /// A point that must be the group's generator and is not.
    #[error("{point} is not the generator")]
    NotGenerator {
        /// The point.
        point: String,
    },
    /// `e(τ·G1, G2) != e(G1, τ·G2)`.
    #[error("tau·G2 does not match tauG1[1]")]
    TauG2Mismatch,
    /// The points of a section are not successive powers of one secret (a pairing check
    /// on a random linear combination failed).
    #[error("{section} powers are not consistent")]
    PowersInconsistent {
        /// The section (`tauG1`, `tauG2`, `alphaTauG1`, `betaTauG1`, `g`).
        section: &'static str,
    },
    /// A file without contributions: its secret is 1, known to all.
    #[error("the file has no contribution (tau = 1): it cannot be used")]
    NoContribution,
    /// A file point that differs from what the last contribution recorded.
    #[error("{point} does not match contribution {contribution}'s record of it")]
    ContributionMismatch {
        /// The contribution (1-based).
        contribution: usize,
        /// The point (`tauG1[1]`, `betaG2`, ...).
        point: &'static str,
    },
    /// A contribution's proof of knowledge of one of its secrets fails.
    #[error("contribution {contribution}: proof of knowledge for {secret} fails")]
    ProofOfKnowledge {
        /// The contribution (1-based).
        contribution: usize,
        /// `tau`, `alpha` or `beta`.
        secret: &'static str,
    },
    /// A contribution's point is not the previous one times its secret.
    #[error("contribution {contribution}: {point} does not follow from the previous contribution")]
    Chain {
        /// The contribution (1-based).
        contribution: usize,
        /// `tau·G1`, `tau·G2`, `alpha·G1`, `beta·G1` or `beta·G2`.
        point: &'static str,
    },
    /// The last contribution's saved response hash state is not the hash of the file's
    /// points.
    #[error("contribution {contribution}: response hash does not match the points")]
    ResponseHash {
        /// The contribution (1-based).
        contribution: usize,
    },
    /// The hash of the file's points is not the last contribution's next challenge.
    #[error("contribution {contribution}: next challenge hash does not match the points")]
    NextChallenge {
        /// The contribution (1-based).
        contribution: usize,
    },
    /// A beacon contribution whose key is not the one its beacon derives.
    #[error("contribution {contribution}: beacon key {key} is not derived from the beacon")]
    Beacon {
        /// The contribution (1-based).
        contribution: usize,
        /// The key point (`tau.g1_s`, ...).
        key: &'static str,
    },
    /// A beacon asking for more hash iterations than we run (2^32).
    #[error("contribution {contribution}: 2^{exp} beacon iterations exceed the limit 2^32")]
    BeaconIterations {
        /// The contribution (1-based).
        contribution: usize,
        /// The iterations' exponent.
        exp: u8,
    },
    /// A contribution record that cannot be parsed.
    #[error("contribution {contribution}: {reason}")]
    ContributionFormat {
        /// The contribution (1-based).
        contribution: usize,
        /// What is wrong.
        reason: String,
    },
    /// A reduced file (cut from a larger ceremony) cannot take contributions.
    #[error(
        "the file was reduced to power {power} from {ceremony_power}: it cannot take contributions"
    )]
    Reduced {
        /// The file's power.
        power: u32,
        /// The ceremony's.
        ceremony_power: u32,
    },
    /// The file's Lagrange section does not hold the Lagrange basis of its powers.
    #[error("Lagrange section (12) at k = {k} does not match tauG1")]
    Lagrange {
        /// The size used.
        k: u32,
    },
    /// KZG parameters with the wrong number of points.
    #[error("parameters: {what} has {found} points, expected {expected}")]
    ParamsSize {
        /// `g` or `g_lagrange`.
        what: &'static str,
        /// `2^k`.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// KZG parameters whose Lagrange points are not the Lagrange basis of `g`.
    #[error("g_lagrange is not the Lagrange basis of g")]
    GLagrange,
}

pub(crate) fn fail(path: Option<&Path>, check: PtauCheck) -> Error {
    Error::Ptau {
        path: path.map(Path::to_path_buf),
        check,
    }
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One secret's part of a contribution's public key: `g1_s` a random G1 point,
/// `g1_sx = s·g1_s`, `g2_spx = s·g2_sp` where `g2_sp` is derived from the challenge and
/// the two G1 points.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct KeyPart {
    pub(crate) g1_s: G1Affine,
    pub(crate) g1_sx: G1Affine,
    pub(crate) g2_spx: G2Affine,
}

/// A contribution's public key, for `τ`, `α` and `β`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PublicKey {
    pub(crate) tau: KeyPart,
    pub(crate) alpha: KeyPart,
    pub(crate) beta: KeyPart,
}

/// What a beacon contribution derives its secrets from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Beacon {
    pub(crate) hash: Vec<u8>,
    pub(crate) iterations_exp: u8,
}

/// One contribution to a ceremony, as snarkjs records it.
#[derive(Clone, Debug)]
pub struct Contribution {
    pub(crate) name: String,
    pub(crate) tau_g1: G1Affine,
    pub(crate) tau_g2: G2Affine,
    pub(crate) alpha_g1: G1Affine,
    pub(crate) beta_g1: G1Affine,
    pub(crate) beta_g2: G2Affine,
    pub(crate) key: PublicKey,
    pub(crate) partial_hash: [u8; blake2b::PARTIAL_LEN],
    pub(crate) next_challenge: [u8; 64],
    pub(crate) kind: u32,
    pub(crate) beacon: Option<Beacon>,
    pub(crate) response_hash: [u8; 64],
}

impl Contribution {
    /// The contributor's name (empty when none was given; snarkjs keeps 64 characters).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The response hash: BLAKE2b-512 of the challenge, the points this contribution
    /// produced (compressed) and its public key. Contributors publish it.
    pub fn response_hash(&self) -> &[u8; 64] {
        &self.response_hash
    }

    /// The next challenge hash: BLAKE2b-512 of the response hash and the points
    /// (uncompressed); the next contribution builds on it.
    pub fn next_challenge(&self) -> &[u8; 64] {
        &self.next_challenge
    }

    /// Whether the secrets come from a public random beacon (snarkjs `powersoftau beacon`).
    pub fn is_beacon(&self) -> bool {
        self.kind == 1
    }

    /// A beacon contribution's beacon hash and the exponent of its SHA-256 iterations.
    pub fn beacon(&self) -> Option<(&[u8], u8)> {
        self.beacon
            .as_ref()
            .map(|b| (b.hash.as_slice(), b.iterations_exp))
    }

    /// `τ·G1` after this contribution (the second point of tauG1).
    pub fn tau_g1(&self) -> &G1Affine {
        &self.tau_g1
    }

    /// `τ·G2` after this contribution.
    pub fn tau_g2(&self) -> &G2Affine {
        &self.tau_g2
    }

    /// `α·G1` after this contribution.
    pub fn alpha_g1(&self) -> &G1Affine {
        &self.alpha_g1
    }

    /// `β·G1` after this contribution.
    pub fn beta_g1(&self) -> &G1Affine {
        &self.beta_g1
    }

    /// `β·G2` after this contribution.
    pub fn beta_g2(&self) -> &G2Affine {
        &self.beta_g2
    }
}

/// A whole powers-of-tau file in memory: `2^p · 384` bytes (384 MiB at power 20).
#[derive(Clone)]
pub struct Ptau {
    pub(crate) power: u32,
    pub(crate) ceremony_power: u32,
    pub(crate) tau_g1: Vec<G1Affine>,
    pub(crate) tau_g2: Vec<G2Affine>,
    pub(crate) alpha_tau_g1: Vec<G1Affine>,
    pub(crate) beta_tau_g1: Vec<G1Affine>,
    pub(crate) beta_g2: G2Affine,
    pub(crate) contributions: Vec<Contribution>,
}

impl std::fmt::Debug for Ptau {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ptau")
            .field("power", &self.power)
            .field("ceremony_power", &self.ceremony_power)
            .field("contributions", &self.contributions.len())
            .finish_non_exhaustive()
    }
}

impl Ptau {
    /// A new ceremony of power `power` (`2^power` powers), every point the generator and
    /// no contribution: what `snarkjs powersoftau new bn128 <power>` writes. Such a file
    /// has `τ = 1` and is only a starting point.
    ///
    /// # Errors
    /// [`PtauCheck::Power`] unless `1 <= power <= 28`. Memory: `2^power · 384` bytes.
    pub fn new(power: u32) -> Result<Ptau> {
        file::check_powers(power, power, None)?;
        let n = 1usize << power;
        Ok(Ptau {
            power,
            ceremony_power: power,
            tau_g1: vec![G1Affine::generator(); file::tau_g1_count(power)],
            tau_g2: vec![G2Affine::generator(); n],
            alpha_tau_g1: vec![G1Affine::generator(); n],
            beta_tau_g1: vec![G1Affine::generator(); n],
            beta_g2: G2Affine::generator(),
            contributions: Vec::new(),
        })
    }

    /// Reads a whole `.ptau` file: checks the container, the header (BN254, the powers),
    /// the size of every section, that every coordinate is a canonical field element
    /// and every point is on its curve, and parses the contributions. G2 subgroup
    /// membership and everything cryptographic are left to [`Ptau::verify`]. The
    /// Lagrange sections of files prepared for phase 2 (12-15) are not read.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::Ptau`] naming the first
    /// check that fails. Cost: reads and converts the whole file (about 0.5 s per 100 MB
    /// on two cores); memory about the file's size.
    pub fn read(path: &Path) -> Result<Ptau> {
        let mut f = File::open(path).map_err(|e| io_err(path, e))?;
        let sections = Sections::scan(&mut f, path)?;
        let header = file::read_header(&mut f, &sections, path)?;
        let power = header.power;
        let n = 1u64 << power;
        let n1 = file::tau_g1_count(power) as u64;
        let g1 = G1_LEN as u64;
        let g2 = G2_LEN as u64;
        // Every size is checked before anything large is read.
        let sizes = [
            (SECTION_TAU_G1, n1 * g1),
            (SECTION_TAU_G2, n * g2),
            (SECTION_ALPHA_TAU_G1, n * g1),
            (SECTION_BETA_TAU_G1, n * g1),
            (SECTION_BETA_G2, g2),
        ];
        let mut offsets = [0u64; 5];
        for (offset, (id, size)) in offsets.iter_mut().zip(sizes) {
            *offset = sections.sized(id, size, path)?;
        }
        let contributions = file::read_contributions(&mut f, &sections, path)?;
        let mut section = |i: usize| {
            let (id, size) = sizes[i];
            file::read_section(&mut f, path, id, offsets[i], size)
        };
        let tau_g1 = file::decode_g1s(&section(0)?, "tauG1", 0, Some(path))?;
        let tau_g2 = file::decode_g2s(&section(1)?, "tauG2", 0, Some(path))?;
        let alpha_tau_g1 = file::decode_g1s(&section(2)?, "alphaTauG1", 0, Some(path))?;
        let beta_tau_g1 = file::decode_g1s(&section(3)?, "betaTauG1", 0, Some(path))?;
        let beta_g2 = curve::g2_from_lem(&section(4)?)
            .map_err(|bad| fail(Some(path), file::bad_point(bad, "betaG2".to_string())))?;
        Ok(Ptau {
            power,
            ceremony_power: header.ceremony_power,
            tau_g1,
            tau_g2,
            alpha_tau_g1,
            beta_tau_g1,
            beta_g2,
            contributions,
        })
    }

    /// Writes the file as snarkjs does (sections 1-7; the Lagrange sections of a file
    /// prepared for phase 2 are not kept), to a temporary file next to `path` renamed
    /// over it once complete and synced, so that readers never see half a file.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written. Cost: the file's size in memory a
    /// section at a time.
    pub fn write(&self, path: &Path) -> Result<()> {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nth = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_file_name(format!(".{file_name}.tmp-{}-{nth}", std::process::id()));
        let result = self
            .write_to(&tmp)
            .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| io_err(path, e)));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn write_to(&self, tmp: &Path) -> Result<()> {
        let f = File::create(tmp).map_err(|e| io_err(tmp, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut put = |bytes: &[u8]| w.write_all(bytes).map_err(|e| io_err(tmp, e));
        put(b"ptau")?;
        put(&1u32.to_le_bytes())?;
        put(&7u32.to_le_bytes())?;
        let mut section = |id: u32, data: &[u8]| -> Result<()> {
            put(&id.to_le_bytes())?;
            put(&(data.len() as u64).to_le_bytes())?;
            put(data)
        };
        section(
            file::SECTION_HEADER,
            &file::header_bytes(self.power, self.ceremony_power),
        )?;
        section(
            SECTION_TAU_G1,
            &file::encode_all(&self.tau_g1, G1_LEN, curve::g1_to_lem),
        )?;
        section(
            SECTION_TAU_G2,
            &file::encode_all(&self.tau_g2, G2_LEN, curve::g2_to_lem),
        )?;
        section(
            SECTION_ALPHA_TAU_G1,
            &file::encode_all(&self.alpha_tau_g1, G1_LEN, curve::g1_to_lem),
        )?;
        section(
            SECTION_BETA_TAU_G1,
            &file::encode_all(&self.beta_tau_g1, G1_LEN, curve::g1_to_lem),
        )?;
        let mut b = [0u8; G2_LEN];
        curve::g2_to_lem(&self.beta_g2, &mut b);
        section(SECTION_BETA_G2, &b)?;
        section(
            SECTION_CONTRIBUTIONS,
            &file::contributions_bytes(&self.contributions),
        )?;
        let f = w.into_inner().map_err(|e| io_err(tmp, e.into_error()))?;
        f.sync_all().map_err(|e| io_err(tmp, e))
    }

    /// `2^power` is the number of powers of `τ` in G2 (and the largest circuit the file
    /// serves).
    pub fn power(&self) -> u32 {
        self.power
    }

    /// The power of the ceremony the file comes from (larger than [`Ptau::power`] for a
    /// file cut from a larger one, like Hermez's `powersOfTau28_hez_final_*.ptau`).
    pub fn ceremony_power(&self) -> u32 {
        self.ceremony_power
    }

    /// The contributions, oldest first.
    pub fn contributions(&self) -> &[Contribution] {
        &self.contributions
    }

    /// `τ^i·G1` for `i < 2^(power+1) - 1`.
    pub fn tau_g1(&self) -> &[G1Affine] {
        &self.tau_g1
    }

    /// `τ^i·G2` for `i < 2^power`.
    pub fn tau_g2(&self) -> &[G2Affine] {
        &self.tau_g2
    }

    /// `α·τ^i·G1` for `i < 2^power`.
    pub fn alpha_tau_g1(&self) -> &[G1Affine] {
        &self.alpha_tau_g1
    }

    /// `β·τ^i·G1` for `i < 2^power`.
    pub fn beta_tau_g1(&self) -> &[G1Affine] {
        &self.beta_tau_g1
    }

    /// `β·G2`.
    pub fn beta_g2(&self) -> &G2Affine {
        &self.beta_g2
    }

    /// The challenge the next contribution answers: the last contribution's next
    /// challenge, or for a new ceremony the hash of the blank one.
    pub(crate) fn challenge(&self) -> [u8; 64] {
        match self.contributions.last() {
            Some(c) => c.next_challenge,
            None => first_challenge_hash(self.ceremony_power),
        }
    }

    /// Every point, uncompressed, as the next challenge hashes them.
    pub(crate) fn hash_uncompressed(&self, hasher: &mut Blake2b) {
        file::hash_points(hasher, &self.tau_g1, G1_LEN, curve::g1_uncompressed);
        file::hash_points(hasher, &self.tau_g2, G2_LEN, curve::g2_uncompressed);
        file::hash_points(hasher, &self.alpha_tau_g1, G1_LEN, curve::g1_uncompressed);
        file::hash_points(hasher, &self.beta_tau_g1, G1_LEN, curve::g1_uncompressed);
        let mut b = [0u8; G2_LEN];
        curve::g2_uncompressed(&self.beta_g2, &mut b);
        hasher.update(&b);
    }

    /// Every point, compressed, as the response hashes them.
    pub(crate) fn hash_compressed(&self, hasher: &mut Blake2b) {
        file::hash_points(hasher, &self.tau_g1, G1_LEN / 2, curve::g1_compressed);
        file::hash_points(hasher, &self.tau_g2, G2_LEN / 2, curve::g2_compressed);
        file::hash_points(hasher, &self.alpha_tau_g1, G1_LEN / 2, curve::g1_compressed);
        file::hash_points(hasher, &self.beta_tau_g1, G1_LEN / 2, curve::g1_compressed);
        let mut b = [0u8; G2_LEN / 2];
        curve::g2_compressed(&self.beta_g2, &mut b);
        hasher.update(&b);
    }
}

/// The challenge of a ceremony's first contribution: BLAKE2b-512 of the hash of nothing
/// followed by a blank file's points (all generators), uncompressed. Cost: hashes
/// `2^power · 384` bytes at about 650 MB/s (0.6 s at power 20, 150 s at power 28).
pub(crate) fn first_challenge_hash(power: u32) -> [u8; 64] {
    let mut h = Blake2b::new();
    h.update(&Blake2b::digest(&[]));
    let mut g1 = [0u8; G1_LEN];
    let mut g2 = [0u8; G2_LEN];
    curve::g1_uncompressed(&G1Affine::generator(), &mut g1);
    curve::g2_uncompressed(&G2Affine::generator(), &mut g2);
    let repeat = |h: &mut Blake2b, point: &[u8], count: u64| {
        const BATCH: u64 = 1 << 12;
        let block: Vec<u8> = point.repeat(BATCH as usize);
        let mut left = count;
        while left > 0 {
            let n = left.min(BATCH);
            h.update(&block[..n as usize * point.len()]);
            left -= n;
        }
    };
    let n = 1u64 << power;
    repeat(&mut h, &g1, 2 * n - 1);
    repeat(&mut h, &g2, n);
    repeat(&mut h, &g1, n);
    repeat(&mut h, &g1, n);
    h.update(&g2);
    h.finalize()
}
