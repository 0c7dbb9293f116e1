//! Interoperability of `codex_proofs::ptau` with snarkjs 0.7.6 (`node_modules/.bin/snarkjs`
//! at the workspace root, installed by `scripts/setup.sh`), at small powers: ceremonies
//! made by either side verify on both, in either order, with beacons and with reduced
//! and prepared files like Hermez's; tampered files are refused by both with the check
//! named; halo2 parameters imported from them verify.

use std::path::{Path, PathBuf};
use std::process::Command;

use codex_proofs::ptau::{Ptau, import_params, verify_params};
use codex_proofs::{Error, PtauCheck};
use halo2_proofs::poly::commitment::{Params, ParamsProver};
use halo2curves_axiom::bn256::{Fq, Fq2, G2Affine};
use halo2curves_axiom::ff::{Field, PrimeField};
use halo2curves_axiom::group::Curve;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

const POWER: u32 = 6;

fn snarkjs_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node_modules/.bin/snarkjs");
    assert!(
        bin.exists(),
        "snarkjs not found at {}: run scripts/setup.sh (it installs the workspace's npm packages)",
        bin.display()
    );
    bin
}

/// Runs snarkjs; returns whether it exited 0 and its output (stdout and stderr).
fn snarkjs(args: &[&str]) -> (bool, String) {
    let out = Command::new(snarkjs_bin())
        .args(args)
        .output()
        .expect("snarkjs runs (node installed?)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs snarkjs and insists it succeeded (some commands print an error and exit 0).
fn snarkjs_ok(args: &[&str]) -> String {
    let (ok, text) = snarkjs(args);
    assert!(
        ok && !text.contains("ERROR"),
        "snarkjs {args:?} failed:\n{text}"
    );
    text
}

/// `snarkjs powersoftau verify`: exit status 0, "Powers of Tau Ok!", no error printed.
fn snarkjs_accepts(path: &Path) -> bool {
    let (ok, text) = snarkjs(&["powersoftau", "verify", s(path)]);
    let clean =
        !text.contains("INVALID") && !text.contains("ERROR") && text.contains("Powers of Tau Ok!");
    assert_eq!(ok, clean, "exit status and output disagree:\n{text}");
    ok
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The hash snarkjs prints after `title` (four lines of four words).
fn printed_hash(text: &str, title: &str) -> [u8; 64] {
    let at = text
        .find(title)
        .unwrap_or_else(|| panic!("{title} not in:\n{text}"));
    let hex: String = text[at + title.len()..]
        .lines()
        .skip(1)
        .take(4)
        .flat_map(|l| l.split_whitespace())
        .collect();
    let bytes = hex::decode(&hex).expect("hex");
    bytes.try_into().expect("64 bytes")
}

fn check_of(err: &Error) -> &PtauCheck {
    match err {
        Error::Ptau { check, .. } => check,
        other => panic!("expected a ptau check, got {other}"),
    }
}

/// A LEM (little-endian Montgomery) coordinate, as snarkjs stores it.
fn lem(x: &Fq) -> [u8; 32] {
    let r = Fq::from(2u64).pow_vartime([256]);
    (*x * r).to_repr()
}

/// Byte offset of a point in a section of a file written by us or snarkjs: the header
/// (12 bytes), section 1 (12 + 44), then sections in order with 12-byte headers.
fn section_offset(bytes: &[u8], id: u32) -> usize {
    let mut pos = 12;
    loop {
        let ty = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4"));
        let len = u64::from_le_bytes(bytes[pos + 4..pos + 12].try_into().expect("8")) as usize;
        if ty == id {
            return pos + 12;
        }
        pos += 12 + len;
    }
}

#[test]
fn a_snarkjs_ceremony_verifies_and_imports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p0 = dir.path().join("p0.ptau");
    let p1 = dir.path().join("p1.ptau");
    let p2 = dir.path().join("p2.ptau");
    let new_out = snarkjs_ok(&["powersoftau", "new", "bn128", "6", s(&p0)]);
    let first = printed_hash(&new_out, "First Contribution Hash:");
    let out1 = snarkjs_ok(&[
        "powersoftau",
        "contribute",
        s(&p0),
        s(&p1),
        "--name=first",
        "-e=one",
    ]);
    let out2 = snarkjs_ok(&[
        "powersoftau",
        "contribute",
        s(&p1),
        s(&p2),
        "--name=second",
        "-e=two",
    ]);

    // Our blank file is snarkjs's, byte for byte.
    let ours = dir.path().join("ours0.ptau");
    Ptau::new(POWER).expect("new").write(&ours).expect("write");
    assert_eq!(
        std::fs::read(&ours).expect("read"),
        std::fs::read(&p0).expect("read")
    );

    let ptau = Ptau::read(&p2).expect("snarkjs's file reads");
    assert_eq!(ptau.power(), POWER);
    let report = ptau.verify().expect("snarkjs's ceremony verifies");
    assert_eq!(report.contributions.len(), 2);
    assert_eq!(report.contributions[0].name, "first");
    assert_eq!(report.contributions[1].name, "second");
    assert_eq!(report.contributions[0].challenge_hash, first);
    assert_eq!(
        report.contributions[0].response_hash,
        printed_hash(&out1, "Contribution Response Hash imported:")
    );
    assert_eq!(
        report.contributions[0].next_challenge,
        printed_hash(&out1, "Next Challenge Hash:")
    );
    assert_eq!(
        report.contributions[1].response_hash,
        printed_hash(&out2, "Contribution Response Hash imported:")
    );
    assert_eq!(
        report.next_challenge,
        printed_hash(&out2, "Next Challenge Hash:")
    );
    assert!(report.hashes_checked);
    assert!(report.to_string().contains("Contribution #2: second"));

    // Reading and writing again gives the same bytes.
    let again = dir.path().join("again.ptau");
    ptau.write(&again).expect("write");
    assert_eq!(
        std::fs::read(&again).expect("read"),
        std::fs::read(&p2).expect("read")
    );

    for k in [1, 5, POWER] {
        let params = import_params(&p2, k).expect("imports");
        assert_eq!(params.k(), k);
        assert_eq!(params.get_g()[..], ptau.tau_g1()[..1 << k]);
        assert_eq!(params.s_g2(), ptau.tau_g2()[1]);
        verify_params(&params).expect("imported parameters verify");
    }
}

#[test]
fn our_ceremony_passes_snarkjs_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ours1.ptau");
    let ptau = Ptau::new(POWER)
        .and_then(|p| p.contribute("codex", b"our entropy"))
        .expect("contribute");
    ptau.write(&path).expect("write");
    assert!(snarkjs_accepts(&path), "snarkjs refuses our contribution");
    let (_, text) = snarkjs(&["powersoftau", "verify", s(&path)]);
    let c = &ptau.contributions()[0];
    assert_eq!(c.name(), "codex");
    assert!(text.contains("Contribution #1: codex"), "{text}");
    assert_eq!(printed_hash(&text, "Response Hash:"), *c.response_hash());
    assert_eq!(printed_hash(&text, "Next Challenge:"), *c.next_challenge());
    let read = Ptau::read(&path).expect("reads back");
    assert_eq!(read.contributions()[0].response_hash(), c.response_hash());
    read.verify().expect("verifies");
    // A file with no contribution is refused by both.
    let blank = dir.path().join("blank.ptau");
    Ptau::new(3).expect("new").write(&blank).expect("write");
    assert!(!snarkjs_accepts(&blank));
    let err = import_params(&blank, 3).expect_err("tau = 1");
    assert_eq!(check_of(&err), &PtauCheck::NoContribution);
}

#[test]
fn mixed_chains_verify_on_both_sides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.ptau");
    let b = dir.path().join("b.ptau");
    let c = dir.path().join("c.ptau");
    let d = dir.path().join("d.ptau");
    let e = dir.path().join("e.ptau");
    // ours -> snarkjs -> ours -> snarkjs beacon -> ours
    Ptau::new(POWER)
        .and_then(|p| p.contribute("ours 1", b"x"))
        .and_then(|p| p.write(&a))
        .expect("ours");
    snarkjs_ok(&[
        "powersoftau",
        "contribute",
        s(&a),
        s(&b),
        "--name=snarkjs 2",
        "-e=y",
    ]);
    Ptau::read(&b)
        .and_then(|p| p.contribute("ours 3", b"z"))
        .and_then(|p| p.write(&c))
        .expect("ours on snarkjs");
    assert!(snarkjs_accepts(&c));
    let beacon = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    snarkjs_ok(&[
        "powersoftau",
        "beacon",
        s(&c),
        s(&d),
        beacon,
        "10",
        "--name=beacon",
    ]);
    let ptau = Ptau::read(&d).expect("reads");
    let report = ptau.verify().expect("a beacon from snarkjs verifies");
    assert_eq!(report.contributions.len(), 4);
    assert!(ptau.contributions()[3].is_beacon());
    assert_eq!(
        report.contributions[3].beacon,
        Some((beacon.to_string(), 10))
    );
    ptau.contribute("ours 5", b"w")
        .and_then(|p| p.write(&e))
        .expect("ours on a beacon");
    assert!(snarkjs_accepts(&e));
    let report = Ptau::read(&e).and_then(|p| p.verify()).expect("verifies");
    let names: Vec<&str> = report
        .contributions
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["ours 1", "snarkjs 2", "ours 3", "beacon", "ours 5"]);

    // A beacon whose key was altered is refused, naming the beacon.
    let mut bytes = std::fs::read(&d).expect("read");
    let at = section_offset(&bytes, 7) + 4;
    // contribution 4's record: skip three contributions, then tauG1 (its bytes change
    // the chain, so alter the key's first point instead: 64+128+64+64+128 bytes in).
    let mut pos = at;
    for _ in 0..3 {
        pos += 64 + 128 + 64 + 64 + 128 + 6 * 64 + 3 * 128 + 216 + 64 + 4;
        let plen = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4")) as usize;
        pos += 4 + plen;
    }
    let key_at = pos + 64 + 128 + 64 + 64 + 128;
    // Replace tau.g1_s by tau.g1_sx: still points on the curve.
    let sx: Vec<u8> = bytes[key_at + 64..key_at + 128].to_vec();
    bytes[key_at..key_at + 64].copy_from_slice(&sx);
    let bad = dir.path().join("bad_beacon.ptau");
    std::fs::write(&bad, &bytes).expect("write");
    let err = Ptau::read(&bad)
        .and_then(|p| p.verify())
        .expect_err("altered beacon key");
    assert_eq!(
        check_of(&err),
        &PtauCheck::Beacon {
            contribution: 4,
            key: "tau.g1_s"
        }
    );
    assert!(!snarkjs_accepts(&bad));
}

#[test]
fn altered_points_are_refused_by_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.ptau");
    Ptau::new(POWER)
        .and_then(|p| p.contribute("x", b"x"))
        .and_then(|p| p.write(&good))
        .expect("ceremony");
    let bytes = std::fs::read(&good).expect("read");
    let tau_g1 = section_offset(&bytes, 2);
    let tau_g2 = section_offset(&bytes, 3);

    // tauG1[5] replaced by tauG1[6]: a valid point, the wrong power.
    let mut swapped = bytes.clone();
    let six: Vec<u8> = bytes[tau_g1 + 6 * 64..tau_g1 + 7 * 64].to_vec();
    swapped[tau_g1 + 5 * 64..tau_g1 + 6 * 64].copy_from_slice(&six);
    let path = dir.path().join("swapped.ptau");
    std::fs::write(&path, &swapped).expect("write");
    let err = import_params(&path, POWER).expect_err("swapped point");
    assert_eq!(
        check_of(&err),
        &PtauCheck::PowersInconsistent { section: "tauG1" }
    );
    assert!(
        err.to_string().contains("tauG1 powers are not consistent"),
        "{err}"
    );
    let err = Ptau::read(&path)
        .and_then(|p| p.verify())
        .expect_err("swapped point");
    assert_eq!(
        check_of(&err),
        &PtauCheck::PowersInconsistent { section: "tauG1" }
    );
    assert!(!snarkjs_accepts(&path));

    // A byte of tauG1[37]'s y flipped: off the curve.
    let mut flipped = bytes.clone();
    flipped[tau_g1 + 37 * 64 + 40] ^= 0x10;
    let path = dir.path().join("flipped.ptau");
    std::fs::write(&path, &flipped).expect("write");
    let err = import_params(&path, POWER).expect_err("flipped byte");
    assert_eq!(
        err.to_string(),
        format!("{}: tauG1[37] is not on the curve", path.display())
    );
    let err = Ptau::read(&path).expect_err("flipped byte");
    assert_eq!(
        check_of(&err),
        &PtauCheck::NotOnCurve {
            point: "tauG1[37]".into()
        }
    );
    assert!(!snarkjs_accepts(&path));

    // tauG2[1] replaced by a point of the twist outside G2.
    let mut off = bytes.clone();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let point = loop {
        let x = Fq2 {
            c0: Fq::from(7u64),
            c1: Fq::random(&mut rng),
        };
        let b = <G2Affine as halo2curves_axiom::CurveAffine>::b();
        if let Some(y) = Option::<Fq2>::from((x.square() * x + b).sqrt()) {
            break G2Affine { x, y };
        }
    };
    let mut enc = Vec::new();
    for c in [point.x.c0, point.x.c1, point.y.c0, point.y.c1] {
        enc.extend_from_slice(&lem(&c));
    }
    off[tau_g2 + 128..tau_g2 + 256].copy_from_slice(&enc);
    let path = dir.path().join("subgroup.ptau");
    std::fs::write(&path, &off).expect("write");
    let err = import_params(&path, 2).expect_err("outside G2");
    assert_eq!(
        check_of(&err),
        &PtauCheck::NotInSubgroup {
            point: "tauG2[1]".into()
        }
    );
    let err = Ptau::read(&path)
        .and_then(|p| p.verify())
        .expect_err("outside G2");
    assert!(
        err.to_string().contains("is not in the G2 subgroup"),
        "{err}"
    );
    assert!(!snarkjs_accepts(&path));

    // A truncated file.
    let path = dir.path().join("short.ptau");
    std::fs::write(&path, &bytes[..bytes.len() - 10]).expect("write");
    let err = import_params(&path, 2).expect_err("truncated");
    assert!(
        matches!(check_of(&err), PtauCheck::Truncated { .. }),
        "{err}"
    );
}

#[test]
fn k_above_the_power_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.ptau");
    Ptau::new(POWER)
        .and_then(|p| p.contribute("x", b"x"))
        .and_then(|p| p.write(&path))
        .expect("ceremony");
    let err = import_params(&path, POWER + 1).expect_err("k too large");
    assert_eq!(
        check_of(&err),
        &PtauCheck::PowerTooSmall {
            power: POWER,
            k: POWER + 1
        }
    );
    assert!(
        err.to_string().ends_with("file power 6 < circuit k 7"),
        "{err}"
    );
    let err = import_params(&dir.path().join("missing.ptau"), 3).expect_err("no file");
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn verify_params_rejects_an_altered_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.ptau");
    Ptau::new(POWER)
        .and_then(|p| p.contribute("x", b"x"))
        .and_then(|p| p.write(&path))
        .expect("ceremony");
    let params = import_params(&path, 5).expect("imports");
    verify_params(&params).expect("verifies");
    let mut g = params.get_g().to_vec();
    g[9] = (g[9] + g[1]).to_affine();
    let bad = params.from_parts(5, g, None, params.g2(), params.s_g2());
    let err = verify_params(&bad).expect_err("altered g[9]");
    assert_eq!(
        check_of(&err),
        &PtauCheck::PowersInconsistent { section: "g" }
    );
    let mut g = params.get_g().to_vec();
    g[0] = (g[0] + g[0]).to_affine();
    let bad = params.from_parts(5, g, None, params.g2(), params.s_g2());
    let err = verify_params(&bad).expect_err("altered g[0]");
    assert_eq!(
        check_of(&err),
        &PtauCheck::NotGenerator {
            point: "g[0]".into()
        }
    );
    let bad = params.from_parts(
        5,
        params.get_g().to_vec(),
        None,
        params.g2(),
        (params.s_g2() + G2Affine::generator()).to_affine(),
    );
    let err = verify_params(&bad).expect_err("altered s_g2");
    assert_eq!(check_of(&err), &PtauCheck::TauG2Mismatch);
}

#[test]
fn prepared_and_reduced_files_like_hermez() {
    // Hermez's files are a ceremony ending in a beacon, prepared for phase 2 (Lagrange
    // sections) and cut to each power ("truncate"): the importer takes the Lagrange
    // basis from the file.
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.ptau");
    let b = dir.path().join("b.ptau");
    let prepared = dir.path().join("final.ptau");
    Ptau::new(POWER)
        .and_then(|p| p.contribute("x", b"x"))
        .and_then(|p| p.write(&a))
        .expect("ceremony");
    snarkjs_ok(&[
        "powersoftau",
        "beacon",
        s(&a),
        s(&b),
        "ab".repeat(32).as_str(),
        "10",
        "--name=final beacon",
    ]);
    snarkjs_ok(&["powersoftau", "prepare", "phase2", s(&b), s(&prepared)]);
    assert!(snarkjs_accepts(&prepared));
    let full = Ptau::read(&prepared).expect("reads a prepared file");
    full.verify().expect("verifies");
    for k in [2, 5, POWER] {
        // With the Lagrange section and without: the same parameters.
        let from_section = import_params(&prepared, k).expect("imports with the Lagrange section");
        let computed = import_params(&b, k).expect("imports computing the basis");
        let bytes = |p: &halo2_proofs::poly::kzg::commitment::ParamsKZG<
            halo2curves_axiom::bn256::Bn256,
        >| {
            let mut v = Vec::new();
            p.write(&mut v).expect("serialize");
            v
        };
        assert_eq!(bytes(&from_section), bytes(&computed), "k = {k}");
        verify_params(&from_section).expect("verifies");
    }
    // A Lagrange point altered (another valid point) is caught.
    let mut bytes = std::fs::read(&prepared).expect("read");
    let lagrange = section_offset(&bytes, 12);
    let k = 4usize;
    let first = lagrange + ((1 << k) - 1) * 64;
    let other: Vec<u8> = bytes[first + 64..first + 128].to_vec();
    bytes[first + 2 * 64..first + 3 * 64].copy_from_slice(&other);
    let bad = dir.path().join("bad_lagrange.ptau");
    std::fs::write(&bad, &bytes).expect("write");
    let err = import_params(&bad, k as u32).expect_err("altered Lagrange point");
    assert_eq!(check_of(&err), &PtauCheck::Lagrange { k: 4 });

    // Truncated copies: power < ceremony power.
    let (ok, text) = snarkjs(&["powersoftau", "truncate", s(&prepared)]);
    assert!(ok, "{text}");
    let small = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with("04.ptau"))
        .expect("a power-4 file from truncate");
    let reduced = Ptau::read(&small).expect("reads a reduced file");
    assert_eq!((reduced.power(), reduced.ceremony_power()), (4, POWER));
    let report = reduced.verify().expect("a reduced file verifies");
    assert!(!report.hashes_checked);
    let params = import_params(&small, 4).expect("imports");
    assert_eq!(params.get_g()[..], full.tau_g1()[..16]);
    let err = reduced.contribute("no", b"no").expect_err("reduced");
    assert!(matches!(check_of(&err), PtauCheck::Reduced { .. }));
    assert!(snarkjs_accepts(&small));
    assert!(G2Affine::generator() == reduced.tau_g2()[0]);
}
