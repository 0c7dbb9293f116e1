//! The `.ptau` container (iden3's binfile) and the codecs of its sections.
//!
//! A binfile is the 4-byte magic `ptau`, a `u32` version (1), a `u32` section count,
//! then the sections, each a `u32` type, a `u64` length and the data (all integers
//! little-endian). A powers-of-tau file has:
//!
//! | id | content                                                               |
//! |----|-----------------------------------------------------------------------|
//! | 1  | header: `u32` field size (32), the prime q (32 bytes LE), `u32` power, `u32` ceremony power |
//! | 2  | tauG1: `2^(p+1) - 1` G1 points `τ^i·G1`                               |
//! | 3  | tauG2: `2^p` G2 points `τ^i·G2`                                       |
//! | 4  | alphaTauG1: `2^p` G1 points `α·τ^i·G1`                                |
//! | 5  | betaTauG1: `2^p` G1 points `β·τ^i·G1`                                 |
//! | 6  | betaG2: one G2 point `β·G2`                                           |
//! | 7  | contributions: a `u32` count, then each contribution (below)          |
//! | 12-15 | (files "prepared for phase 2" only) the Lagrange bases of sections 2-5 for every power `0..=p` (and `p+1` for section 12) |
//!
//! A contribution: its `τ·G1`, `τ·G2`, `α·G1`, `β·G1`, `β·G2` (LEM), its public key (LEM:
//! `τ`, `α`, `β` each as `g1_s, g1_sx` (G1), then the three `g2_spx` (G2)), the 216-byte
//! partial response hash, the 64-byte next challenge hash, a `u32` type (1 for a
//! beacon) and a `u32` length of parameters: sorted `type` bytes, 1 = name (`u8`
//! length, UTF-8), 2 = beacon iterations exponent (`u8`), 3 = beacon hash (`u8`
//! length, bytes).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use halo2curves_axiom::bn256::{G1Affine, G2Affine};
use rayon::prelude::*;

use super::blake2b::{Blake2b, PARTIAL_LEN};
use super::curve::{self, Bad, G1_LEN, G2_LEN, Q_LIMBS};
use super::{Beacon, Contribution, KeyPart, PtauCheck, PublicKey, fail, io_err};
use crate::error::Result;

/// Highest power snarkjs supports for bn128 (the scalar field's 2-adicity).
pub(crate) const MAX_POWER: u32 = 28;

pub(crate) const SECTION_HEADER: u32 = 1;
pub(crate) const SECTION_TAU_G1: u32 = 2;
pub(crate) const SECTION_TAU_G2: u32 = 3;
pub(crate) const SECTION_ALPHA_TAU_G1: u32 = 4;
pub(crate) const SECTION_BETA_TAU_G1: u32 = 5;
pub(crate) const SECTION_BETA_G2: u32 = 6;
pub(crate) const SECTION_CONTRIBUTIONS: u32 = 7;
pub(crate) const SECTION_LAGRANGE_G1: u32 = 12;

/// Size of a contribution's public key in the file (LEM) and when hashed (uncompressed).
pub(crate) const KEY_LEN: usize = 6 * G1_LEN + 3 * G2_LEN;

/// Where each section's data sits in the file.
#[derive(Debug)]
pub(crate) struct Sections {
    map: BTreeMap<u32, Vec<(u64, u64)>>,
}

impl Sections {
    /// Reads the magic, the version and the section headers (seeking over the data).
    pub(crate) fn scan(file: &mut File, path: &Path) -> Result<Sections> {
        let len = file.metadata().map_err(|e| io_err(path, e))?.len();
        let mut head = [0u8; 12];
        read_at(file, path, 0, &mut head, len, None)?;
        if &head[..4] != b"ptau" {
            return Err(fail(Some(path), PtauCheck::Magic));
        }
        let version = u32_at(&head, 4);
        if version > 1 {
            return Err(fail(Some(path), PtauCheck::Version { version }));
        }
        let count = u32_at(&head, 8);
        let mut map: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
        let mut pos = 12u64;
        for _ in 0..count {
            let mut h = [0u8; 12];
            read_at(file, path, pos, &mut h, len, None)?;
            let id = u32_at(&h, 0);
            let size = u64::from_le_bytes([h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11]]);
            let start = pos + 12;
            let end = start.checked_add(size).filter(|&e| e <= len);
            let Some(end) = end else {
                return Err(fail(Some(path), PtauCheck::Truncated { section: Some(id) }));
            };
            map.entry(id).or_default().push((start, size));
            pos = end;
        }
        Ok(Sections { map })
    }

    /// Offset and size of a section that must be present exactly once.
    pub(crate) fn unique(&self, id: u32, path: &Path) -> Result<(u64, u64)> {
        match self.map.get(&id).map(Vec::as_slice) {
            None | Some([]) => Err(fail(Some(path), PtauCheck::MissingSection { section: id })),
            Some([one]) => Ok(*one),
            Some(_) => Err(fail(
                Some(path),
                PtauCheck::DuplicateSection { section: id },
            )),
        }
    }

    /// Offset and size of a section that may be absent (but not repeated).
    pub(crate) fn optional(&self, id: u32, path: &Path) -> Result<Option<(u64, u64)>> {
        match self.map.get(&id).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([one]) => Ok(Some(*one)),
            Some(_) => Err(fail(
                Some(path),
                PtauCheck::DuplicateSection { section: id },
            )),
        }
    }

    /// A section of exactly `expected` bytes.
    pub(crate) fn sized(&self, id: u32, expected: u64, path: &Path) -> Result<u64> {
        let (offset, size) = self.unique(id, path)?;
        if size != expected {
            return Err(fail(
                Some(path),
                PtauCheck::SectionSize {
                    section: id,
                    expected,
                    found: size,
                },
            ));
        }
        Ok(offset)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads `buf.len()` bytes at `offset`, refusing to read past `len` (a truncated file).
pub(crate) fn read_at(
    file: &mut File,
    path: &Path,
    offset: u64,
    buf: &mut [u8],
    len: u64,
    section: Option<u32>,
) -> Result<()> {
    if offset.saturating_add(buf.len() as u64) > len {
        return Err(fail(Some(path), PtauCheck::Truncated { section }));
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io_err(path, e))?;
    file.read_exact(buf).map_err(|e| io_err(path, e))
}

/// The `size` bytes of section `id` at `offset` (its size already checked).
pub(crate) fn read_section(
    file: &mut File,
    path: &Path,
    id: u32,
    offset: u64,
    size: u64,
) -> Result<Vec<u8>> {
    let len = usize::try_from(size).map_err(|_| {
        fail(
            Some(path),
            PtauCheck::SectionSize {
                section: id,
                expected: usize::MAX as u64,
                found: size,
            },
        )
    })?;
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut buf = vec![0u8; len];
    read_at(file, path, offset, &mut buf, file_len, Some(id))?;
    Ok(buf)
}

/// Reads and parses section 7 (refused above 1 GiB, some 700 000 contributions).
pub(crate) fn read_contributions(
    file: &mut File,
    sections: &Sections,
    path: &Path,
) -> Result<Vec<Contribution>> {
    const LIMIT: u64 = 1 << 30;
    let (offset, size) = sections.unique(SECTION_CONTRIBUTIONS, path)?;
    if size > LIMIT {
        return Err(fail(
            Some(path),
            PtauCheck::SectionSize {
                section: SECTION_CONTRIBUTIONS,
                expected: LIMIT,
                found: size,
            },
        ));
    }
    let bytes = read_section(file, path, SECTION_CONTRIBUTIONS, offset, size)?;
    parse_contributions(&bytes, Some(path))
}

/// The header's content.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub(crate) power: u32,
    pub(crate) ceremony_power: u32,
}

/// The header section's bytes.
pub(crate) fn header_bytes(power: u32, ceremony_power: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(44);
    out.extend_from_slice(&32u32.to_le_bytes());
    for limb in Q_LIMBS {
        out.extend_from_slice(&limb.to_le_bytes());
    }
    out.extend_from_slice(&power.to_le_bytes());
    out.extend_from_slice(&ceremony_power.to_le_bytes());
    out
}

/// Reads and checks the header: BN254's base field, `1 <= power <= ceremony power <= 28`.
pub(crate) fn read_header(file: &mut File, sections: &Sections, path: &Path) -> Result<Header> {
    let (offset, size) = sections.unique(SECTION_HEADER, path)?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut n8 = [0u8; 4];
    read_at(file, path, offset, &mut n8, len, Some(SECTION_HEADER))?;
    let n8 = u32::from_le_bytes(n8);
    if n8 != 32 {
        return Err(fail(
            Some(path),
            PtauCheck::Curve {
                reason: format!("field elements of {n8} bytes, bn128 has 32"),
            },
        ));
    }
    if size != 44 {
        return Err(fail(
            Some(path),
            PtauCheck::SectionSize {
                section: SECTION_HEADER,
                expected: 44,
                found: size,
            },
        ));
    }
    let mut b = [0u8; 44];
    read_at(file, path, offset, &mut b, len, Some(SECTION_HEADER))?;
    let expected = header_bytes(0, 0);
    if b[4..36] != expected[4..36] {
        let mut q = b[4..36].to_vec();
        q.reverse();
        return Err(fail(
            Some(path),
            PtauCheck::Curve {
                reason: format!("prime 0x{} is not bn128's", hex::encode(q)),
            },
        ));
    }
    let power = u32_at(&b, 36);
    let ceremony_power = u32_at(&b, 40);
    check_powers(power, ceremony_power, Some(path))?;
    Ok(Header {
        power,
        ceremony_power,
    })
}

pub(crate) fn check_powers(power: u32, ceremony_power: u32, path: Option<&Path>) -> Result<()> {
    if power == 0 || power > MAX_POWER || ceremony_power < power || ceremony_power > MAX_POWER {
        return Err(fail(
            path,
            PtauCheck::Power {
                power,
                ceremony_power,
            },
        ));
    }
    Ok(())
}

/// Point counts of sections 2-5 for `power`.
pub(crate) fn tau_g1_count(power: u32) -> usize {
    (1usize << (power + 1)) - 1
}

pub(crate) fn bad_point(bad: Bad, point: String) -> PtauCheck {
    match bad {
        Bad::NotCanonical => PtauCheck::NotCanonical { point },
        Bad::NotOnCurve => PtauCheck::NotOnCurve { point },
    }
}

const CHUNK: usize = 1 << 14;

/// Decodes LEM G1 points (in parallel), naming the first bad one `name[i]`, `i` counted
/// from `first`.
pub(crate) fn decode_g1s(
    bytes: &[u8],
    name: &str,
    first: usize,
    path: Option<&Path>,
) -> Result<Vec<G1Affine>> {
    decode_points(bytes, G1_LEN, curve::g1_from_lem, name, first, path)
}

/// Decodes LEM G2 points (in parallel; on the curve, the subgroup is checked apart).
pub(crate) fn decode_g2s(
    bytes: &[u8],
    name: &str,
    first: usize,
    path: Option<&Path>,
) -> Result<Vec<G2Affine>> {
    decode_points(bytes, G2_LEN, curve::g2_from_lem, name, first, path)
}

/// Decodes points of `len` bytes each with `decode`, in parallel chunks, naming the
/// first bad one.
fn decode_points<P: Send>(
    bytes: &[u8],
    len: usize,
    decode: fn(&[u8]) -> std::result::Result<P, Bad>,
    name: &str,
    first: usize,
    path: Option<&Path>,
) -> Result<Vec<P>> {
    let chunks: Vec<std::result::Result<Vec<P>, (usize, Bad)>> = bytes
        .par_chunks(CHUNK * len)
        .enumerate()
        .map(|(c, chunk)| {
            chunk
                .chunks_exact(len)
                .enumerate()
                .map(|(i, b)| decode(b).map_err(|bad| (c * CHUNK + i, bad)))
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(bytes.len() / len);
    for chunk in chunks {
        match chunk {
            Ok(points) => out.extend(points),
            Err((i, bad)) => {
                return Err(fail(path, bad_point(bad, format!("{name}[{}]", first + i))));
            }
        }
    }
    Ok(out)
}

/// Encodes points with `encode` (`size` bytes each) in parallel.
pub(crate) fn encode_all<P: Sync>(
    points: &[P],
    size: usize,
    encode: impl Fn(&P, &mut [u8]) + Sync,
) -> Vec<u8> {
    let mut out = vec![0u8; points.len() * size];
    out.par_chunks_mut(CHUNK * size)
        .zip(points.par_chunks(CHUNK))
        .for_each(|(o, p)| {
            for (b, point) in o.chunks_exact_mut(size).zip(p) {
                encode(point, b);
            }
        });
    out
}

/// Feeds `hasher` the encodings of `points`, encoded in parallel a batch at a time.
pub(crate) fn hash_points<P: Sync>(
    hasher: &mut Blake2b,
    points: &[P],
    size: usize,
    encode: impl Fn(&P, &mut [u8]) + Sync + Copy,
) {
    for batch in points.chunks(CHUNK * 8) {
        hasher.update(&encode_all(batch, size, encode));
    }
}

/// A cursor over a contribution section.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32_at(b, 0))
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
}

/// Parses section 7: every contribution, with its response hash computed.
pub(crate) fn parse_contributions(bytes: &[u8], path: Option<&Path>) -> Result<Vec<Contribution>> {
    let short = |contribution: usize| {
        fail(
            path,
            PtauCheck::ContributionFormat {
                contribution,
                reason: "section 7 ends inside it".to_string(),
            },
        )
    };
    let mut cur = Cursor { bytes, pos: 0 };
    let count = cur.u32().ok_or_else(|| short(0))?;
    let mut out = Vec::new();
    for index in 1..=count as usize {
        let truncated = || short(index);
        let format_err = |reason: &str| {
            fail(
                path,
                PtauCheck::ContributionFormat {
                    contribution: index,
                    reason: reason.to_string(),
                },
            )
        };
        let g1 = |cur: &mut Cursor<'_>, what: &str| -> Result<G1Affine> {
            let b = cur.take(G1_LEN).ok_or_else(truncated)?;
            curve::g1_from_lem(b)
                .map_err(|bad| fail(path, bad_point(bad, format!("contribution {index} {what}"))))
        };
        let g2 = |cur: &mut Cursor<'_>, what: &str| -> Result<G2Affine> {
            let b = cur.take(G2_LEN).ok_or_else(truncated)?;
            curve::g2_from_lem(b)
                .map_err(|bad| fail(path, bad_point(bad, format!("contribution {index} {what}"))))
        };
        let tau_g1 = g1(&mut cur, "tauG1")?;
        let tau_g2 = g2(&mut cur, "tauG2")?;
        let alpha_g1 = g1(&mut cur, "alphaG1")?;
        let beta_g1 = g1(&mut cur, "betaG1")?;
        let beta_g2 = g2(&mut cur, "betaG2")?;
        let tau_s = g1(&mut cur, "tau.g1_s")?;
        let tau_sx = g1(&mut cur, "tau.g1_sx")?;
        let alpha_s = g1(&mut cur, "alpha.g1_s")?;
        let alpha_sx = g1(&mut cur, "alpha.g1_sx")?;
        let beta_s = g1(&mut cur, "beta.g1_s")?;
        let beta_sx = g1(&mut cur, "beta.g1_sx")?;
        let tau_spx = g2(&mut cur, "tau.g2_spx")?;
        let alpha_spx = g2(&mut cur, "alpha.g2_spx")?;
        let beta_spx = g2(&mut cur, "beta.g2_spx")?;
        let key = PublicKey {
            tau: KeyPart {
                g1_s: tau_s,
                g1_sx: tau_sx,
                g2_spx: tau_spx,
            },
            alpha: KeyPart {
                g1_s: alpha_s,
                g1_sx: alpha_sx,
                g2_spx: alpha_spx,
            },
            beta: KeyPart {
                g1_s: beta_s,
                g1_sx: beta_sx,
                g2_spx: beta_spx,
            },
        };
        let mut partial_hash = [0u8; PARTIAL_LEN];
        partial_hash.copy_from_slice(cur.take(PARTIAL_LEN).ok_or_else(truncated)?);
        let mut next_challenge = [0u8; 64];
        next_challenge.copy_from_slice(cur.take(64).ok_or_else(truncated)?);
        let kind = cur.u32().ok_or_else(truncated)?;
        let params_len = cur.u32().ok_or_else(truncated)? as usize;
        let params = cur.take(params_len).ok_or_else(truncated)?;
        let mut p = Cursor {
            bytes: params,
            pos: 0,
        };
        let mut last = 0u8;
        let mut name = String::new();
        let mut exp = None;
        let mut beacon_hash = None;
        while p.pos < params.len() {
            let ty = p
                .u8()
                .ok_or_else(|| format_err("parameters end inside a parameter"))?;
            if ty <= last {
                return Err(format_err("parameters are not sorted"));
            }
            last = ty;
            match ty {
                1 => {
                    let n = p
                        .u8()
                        .ok_or_else(|| format_err("parameters end inside the name"))?;
                    let b = p
                        .take(n.into())
                        .ok_or_else(|| format_err("parameters end inside the name"))?;
                    name = String::from_utf8_lossy(b).into_owned();
                }
                2 => {
                    exp =
                        Some(p.u8().ok_or_else(|| {
                            format_err("parameters end inside the beacon exponent")
                        })?)
                }
                3 => {
                    let n = p
                        .u8()
                        .ok_or_else(|| format_err("parameters end inside the beacon hash"))?;
                    let b = p
                        .take(n.into())
                        .ok_or_else(|| format_err("parameters end inside the beacon hash"))?;
                    beacon_hash = Some(b.to_vec());
                }
                other => return Err(format_err(&format!("unknown parameter type {other}"))),
            }
        }
        let beacon = match (exp, beacon_hash) {
            (Some(iterations_exp), Some(hash)) => Some(Beacon {
                hash,
                iterations_exp,
            }),
            (None, None) => None,
            _ => {
                return Err(format_err(
                    "a beacon needs both its hash and its iterations",
                ));
            }
        };
        if kind == 1 && beacon.is_none() {
            return Err(format_err(
                "a beacon contribution without beacon parameters",
            ));
        }
        let mut hasher = Blake2b::from_partial(&partial_hash)
            .ok_or_else(|| format_err("impossible partial hash state"))?;
        hasher.update(&key.uncompressed());
        let response_hash = hasher.finalize();
        out.push(Contribution {
            name,
            tau_g1,
            tau_g2,
            alpha_g1,
            beta_g1,
            beta_g2,
            key,
            partial_hash,
            next_challenge,
            kind,
            beacon,
            response_hash,
        });
    }
    if cur.pos != bytes.len() {
        return Err(fail(
            path,
            PtauCheck::SectionSize {
                section: SECTION_CONTRIBUTIONS,
                expected: cur.pos as u64,
                found: bytes.len() as u64,
            },
        ));
    }
    Ok(out)
}

/// Section 7's bytes.
pub(crate) fn contributions_bytes(contributions: &[Contribution]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(contributions.len() as u32).to_le_bytes());
    let mut g1 = [0u8; G1_LEN];
    let mut g2 = [0u8; G2_LEN];
    for c in contributions {
        let mut put1 = |p: &G1Affine, out: &mut Vec<u8>| {
            curve::g1_to_lem(p, &mut g1);
            out.extend_from_slice(&g1);
        };
        put1(&c.tau_g1, &mut out);
        curve::g2_to_lem(&c.tau_g2, &mut g2);
        out.extend_from_slice(&g2);
        put1(&c.alpha_g1, &mut out);
        put1(&c.beta_g1, &mut out);
        curve::g2_to_lem(&c.beta_g2, &mut g2);
        out.extend_from_slice(&g2);
        for part in [&c.key.tau, &c.key.alpha, &c.key.beta] {
            put1(&part.g1_s, &mut out);
            put1(&part.g1_sx, &mut out);
        }
        for part in [&c.key.tau, &c.key.alpha, &c.key.beta] {
            curve::g2_to_lem(&part.g2_spx, &mut g2);
            out.extend_from_slice(&g2);
        }
        out.extend_from_slice(&c.partial_hash);
        out.extend_from_slice(&c.next_challenge);
        out.extend_from_slice(&c.kind.to_le_bytes());
        let mut params = Vec::new();
        if !c.name.is_empty() {
            let name = truncated_name(&c.name);
            params.push(1u8);
            params.push(name.len() as u8);
            params.extend_from_slice(name.as_bytes());
        }
        if let Some(b) = &c.beacon {
            params.push(2);
            params.push(b.iterations_exp);
            params.push(3);
            let hash = &b.hash[..b.hash.len().min(255)];
            params.push(hash.len() as u8);
            params.extend_from_slice(hash);
        }
        out.extend_from_slice(&(params.len() as u32).to_le_bytes());
        out.extend_from_slice(&params);
    }
    out
}

/// snarkjs keeps the first 64 UTF-16 units of a name (at most 192 UTF-8 bytes).
pub(crate) fn truncated_name(name: &str) -> &str {
    let mut units = 0;
    for (i, ch) in name.char_indices() {
        units += ch.len_utf16();
        if units > 64 {
            return &name[..i];
        }
    }
    name
}

impl PublicKey {
    /// The key as snarkjs hashes it: the six G1 points, then the three G2 points,
    /// uncompressed.
    pub(crate) fn uncompressed(&self) -> [u8; KEY_LEN] {
        let mut out = [0u8; KEY_LEN];
        let mut at = 0;
        for part in [&self.tau, &self.alpha, &self.beta] {
            for p in [&part.g1_s, &part.g1_sx] {
                curve::g1_uncompressed(p, &mut out[at..at + G1_LEN]);
                at += G1_LEN;
            }
        }
        for part in [&self.tau, &self.alpha, &self.beta] {
            curve::g2_uncompressed(&part.g2_spx, &mut out[at..at + G2_LEN]);
            at += G2_LEN;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_at_64_utf16_units() {
        assert_eq!(truncated_name("abc"), "abc");
        let long = "x".repeat(70);
        assert_eq!(truncated_name(&long).len(), 64);
        let astral = "😀".repeat(40); // two UTF-16 units each
        assert_eq!(truncated_name(&astral).chars().count(), 32);
    }
}
