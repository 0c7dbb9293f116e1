//! The trusted setup end to end: a powers-of-tau ceremony that snarkjs and our CLI
//! take turns in, checked by snarkjs and by us, imported as proving parameters, and a
//! proof of Codex's fixture made with them that verifies natively and through the
//! generated Solidity verifier on anvil, while a verifier of other parameters refuses
//! it. Also: a node with the marketplace flags and no parameters refuses to start.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, ensure};
use codex::market::LocalChain;
use codex::market::alloy::providers::Provider;
use codex::market::alloy::rpc::types::TransactionRequest;
use codex::proofs::prover::compile_verifier;
use codex::proofs::{ProofInput, Prover, Srs};

const BIN: &str = env!("CARGO_BIN_EXE_codex-node");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(program: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", program.display()))
}

/// Runs snarkjs (installed by `scripts/setup.sh`), returning its exit status and its
/// output.
fn snarkjs(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let bin = root().join("node_modules/.bin/snarkjs");
    ensure!(
        bin.exists(),
        "{} is missing: run scripts/setup.sh",
        bin.display()
    );
    let out = run(&bin, args)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// Runs codex-node, failing with its stderr when it fails; returns its stdout.
fn codex_node(args: &[&str]) -> anyhow::Result<String> {
    let out = run(Path::new(BIN), args)?;
    ensure!(
        out.status.success(),
        "codex-node {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The offset of the `index`-th tauG1 point (64 bytes each) in a `.ptau` file: the
/// file is `ptau`, a version and a section count, then sections (type u32, size u64,
/// data); tauG1 is section 2.
fn tau_g1_offset(bytes: &[u8], index: usize) -> anyhow::Result<usize> {
    let word = |at: usize, n: usize| -> anyhow::Result<u64> {
        let b = bytes.get(at..at + n).context("truncated ptau")?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    };
    let sections = word(8, 4)?;
    let mut at = 12;
    for _ in 0..sections {
        let (kind, size) = (word(at, 4)?, word(at + 4, 8)?);
        if kind == 2 {
            return Ok(at + 12 + 64 * index);
        }
        at += 12 + usize::try_from(size)?;
    }
    anyhow::bail!("no tauG1 section")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceremony_with_snarkjs_gives_params_whose_proofs_verify_on_chain() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = |name: &str| dir.path().join(name);
    // 2^15 rows: Codex's fixture has 5 samples.
    let (ok, text) = snarkjs(&["powersoftau", "new", "bn128", "15", &s(&p("p0.ptau"))])?;
    ensure!(ok, "snarkjs new: {text}");
    let (ok, text) = snarkjs(&[
        "powersoftau",
        "contribute",
        &s(&p("p0.ptau")),
        &s(&p("p1.ptau")),
        "--name=first by snarkjs",
        "-e=some entropy",
    ])?;
    ensure!(ok, "snarkjs contribute: {text}");
    std::fs::write(p("entropy"), b"our own entropy")?;
    let ours = codex_node(&[
        "ceremony",
        "contribute",
        &s(&p("p1.ptau")),
        &s(&p("p2.ptau")),
        "--name",
        "second by codex-node",
        "--entropy-file",
        &s(&p("entropy")),
    ])?;
    println!("our contribution:\n{ours}");
    let (ok, text) = snarkjs(&[
        "powersoftau",
        "contribute",
        &s(&p("p2.ptau")),
        &s(&p("p3.ptau")),
        "--name=third by snarkjs",
        "-e=more entropy",
    ])?;
    ensure!(ok, "snarkjs contribute on ours: {text}");

    // snarkjs accepts the whole chain, ours included; so do we.
    let (ok, text) = snarkjs(&["powersoftau", "verify", &s(&p("p3.ptau"))])?;
    assert!(ok && text.contains("Powers of Tau Ok!"), "{text}");
    assert!(text.contains("second by codex-node"), "{text}");
    let report = codex_node(&["ceremony", "verify", &s(&p("p3.ptau"))])?;
    for name in [
        "first by snarkjs",
        "second by codex-node",
        "third by snarkjs",
    ] {
        assert!(report.contains(name), "{report}");
    }

    // Imported as parameters, checked again.
    let digest = codex_node(&[
        "params",
        "import",
        &s(&p("p3.ptau")),
        "--k",
        "15",
        "-o",
        &s(&p("params.bin")),
    ])?;
    let digest = digest.trim();
    assert!(
        digest.len() == 66 && digest.starts_with("0x"),
        "a digest: {digest}"
    );
    let verified = codex_node(&["params", "verify", &s(&p("params.bin"))])?;
    assert!(verified.contains(digest), "{verified}");

    // The fixture proved from the CLI, once from the imported parameters and once from
    // the ceremony file itself (imported on first use): one verifying key.
    let fixture = root().join("codex-proofs/tests/fixtures/codex_input.json");
    let cache = p("cache");
    let vk_line = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("verifying key digest: "))
            .map(str::to_string)
    };
    let from_params = codex_node(&[
        "proof-input",
        "prove",
        &s(&fixture),
        "--circuit-params",
        &s(&p("params.bin")),
        "--cache-dir",
        &s(&cache),
    ])?;
    let from_ptau = codex_node(&[
        "proof-input",
        "prove",
        &s(&fixture),
        "--circuit-params",
        &s(&p("p3.ptau")),
        "--cache-dir",
        &s(&cache),
    ])?;
    assert!(vk_line(&from_params).is_some(), "{from_params}");
    assert_eq!(vk_line(&from_params), vk_line(&from_ptau));

    // The proof through the Solidity verifier of these parameters, on anvil; a
    // verifier generated from the development parameters refuses it.
    let (params, cache2) = (p("params.bin"), cache.clone());
    let (proof, ours, theirs, digests) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let input = ProofInput::from_json(&std::fs::read_to_string(&fixture)?)?;
            let (prover, _) = Prover::new(&Srs::File(params), 5, Some(&cache2))?;
            let proof = prover.prove(&input)?;
            prover.verify(&proof.public_inputs, &proof.bytes)?;
            let ours = compile_verifier(&prover.solidity_verifier(), Some(&cache2))?;
            let (dev, _) = Prover::new(&Srs::Development, 5, Some(&cache2))?;
            let theirs = compile_verifier(&dev.solidity_verifier(), Some(&cache2))?;
            // The development verifier refuses the proof natively too.
            assert!(dev.verify(&proof.public_inputs, &proof.bytes).is_err());
            let digests = (
                prover.verifying_key_digest().to_string(),
                dev.verifying_key_digest().to_string(),
            );
            Ok((proof, ours, theirs, digests))
        })
        .await??;
    assert_ne!(digests.0, digests.1, "other parameters, another key");
    assert!(
        vk_line(&from_params).is_some_and(|l| l.ends_with(&digests.0)),
        "the CLI and the library agree on the key"
    );
    let chain = LocalChain::start().await?;
    let deployer = chain.account(0).await?;
    let provider = chain.provider_for(&deployer);
    let call = |code: Vec<u8>| {
        let provider = provider.clone();
        let calldata = proof.calldata();
        async move {
            let at = codex::market::deploy::deploy_bytecode(&provider, &code).await?;
            let tx = TransactionRequest::default().to(at).input(calldata.into());
            anyhow::Ok(provider.call(tx).await.is_ok())
        }
    };
    assert!(
        call(ours).await?,
        "the verifier of these parameters accepts the proof"
    );
    assert!(
        !call(theirs).await?,
        "a verifier generated from other parameters refuses it"
    );

    // One altered point: tauG1[3] replaced by tauG1[4], a valid point but not the
    // right power. Both snarkjs and our import refuse the file.
    let mut bytes = std::fs::read(p("p3.ptau"))?;
    let (a, b) = (tau_g1_offset(&bytes, 3)?, tau_g1_offset(&bytes, 4)?);
    let next: Vec<u8> = bytes[b..b + 64].to_vec();
    bytes[a..a + 64].copy_from_slice(&next);
    std::fs::write(p("bad.ptau"), &bytes)?;
    let out = run(
        Path::new(BIN),
        &[
            "params",
            "import",
            &s(&p("bad.ptau")),
            "--k",
            "15",
            "-o",
            &s(&p("bad.bin")),
        ],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an altered file is refused");
    assert!(err.contains("tauG1"), "the failed check is named: {err}");
    assert!(!p("bad.bin").exists(), "nothing written");
    let (ok, text) = snarkjs(&["powersoftau", "verify", &s(&p("bad.ptau"))])?;
    assert!(!ok, "snarkjs refuses the altered file too: {text}");
    Ok(())
}

/// A node with the marketplace flags and neither --circuit-params nor --dev-params
/// exits non-zero before it starts, naming the flag.
#[test]
fn a_marketplace_node_needs_circuit_params() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = run(
        Path::new(BIN),
        &[
            "--data-dir",
            &s(dir.path()),
            "--api-port",
            "0",
            "--no-network",
            "--eth-provider",
            "http://127.0.0.1:9",
            "--marketplace-address",
            "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "--eth-private-key",
            "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        ],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--circuit-params"), "{err}");
    assert!(err.contains("--dev-params"), "{err}");
    Ok(())
}
