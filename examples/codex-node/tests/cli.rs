//! The reference node as a user runs it: a real process, its CLI, and `kill -9`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use codex_core::prelude::*;
use codex_core::{Cid, Manifest};
use codex_store::{SledStore, StoreConfig};
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

const BIN: &str = env!("CARGO_BIN_EXE_codex-node");

/// Starts `codex-node` on a free port, its network on loopback; returns the process and
/// its API URL.
fn spawn_node(dir: &Path) -> anyhow::Result<(Child, String)> {
    spawn_node_with(dir, &[])
}

fn spawn_node_with(dir: &Path, extra: &[&str]) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(BIN)
        .args([
            "--data-dir",
            &dir.display().to_string(),
            "--api-port",
            "0",
            "--log-level",
            "warn",
        ])
        .args(["--listen-addrs", "/ip4/127.0.0.1/tcp/0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let url = api_url(&mut child)?;
    Ok((child, url))
}

/// The API URL a node prints as its first line on stdout.
fn api_url(child: &mut Child) -> anyhow::Result<String> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    anyhow::ensure!(line.starts_with("http://"), "node printed {line:?}");
    Ok(line.trim().to_string())
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// `kill -9` at random moments while uploads stream in: after every kill the store
/// reopens consistent (counters equal what is stored, no manifest without its blocks,
/// no leftovers of unfinished uploads) and every upload the node acknowledged is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_upload_the_store_stays_consistent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut acknowledged: Vec<(String, u64, usize)> = Vec::new();
    let mut seed = 0u64;
    for round in 0..6 {
        let (mut child, url) = spawn_node(dir.path())?;
        let kill_after = Duration::from_millis(rng.random_range(150..1200));
        let deadline = tokio::time::Instant::now() + kill_after;
        let client = reqwest::Client::new();
        // Upload one file after another until the deadline; the kill lands wherever
        // the current upload is (body, hashing, leaves, commit).
        let uploads = async {
            let mut done = Vec::new();
            loop {
                seed += 1;
                let len = rng.random_range(1..12 << 20);
                let res = client
                    .post(format!("{url}/data"))
                    .body(data(seed, len))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_success() => done.push((r.text().await?, seed, len)),
                    _ => break,
                }
            }
            anyhow::Ok(done)
        };
        let done = tokio::select! {
            done = uploads => done?,
            _ = tokio::time::sleep_until(deadline) => Vec::new(),
        };
        // The select above drops the in-flight upload; collect what finished first.
        acknowledged.extend(done);
        child.kill()?; // SIGKILL
        child.wait()?;

        let store = SledStore::open(dir.path().join("repo"), StoreConfig::default())?;
        let problems = store.check()?;
        assert!(problems.is_empty(), "round {round}: {problems:#?}");
        let store: Arc<dyn BlockStore> = Arc::new(store);
        let manifests = store.manifests().await?;
        for (cid, seed, len) in &acknowledged {
            let cid: Cid = cid.parse()?;
            let manifest = manifests
                .iter()
                .find(|(c, _)| *c == cid)
                .map(|(_, m): &(Cid, Manifest)| m.clone())
                .ok_or_else(|| anyhow::anyhow!("round {round}: acknowledged upload {cid} lost"))?;
            assert_eq!(manifest.dataset_size, *len as u64);
            let mut got = Vec::with_capacity(*len);
            for i in 0..manifest.blocks_count() {
                got.extend_from_slice(store.get_leaf(&manifest.tree_cid, i).await?.0.data());
            }
            got.truncate(*len);
            assert!(got == data(*seed, *len), "round {round}: {cid} corrupted");
        }
        // Every manifest left is one the node acknowledged, or one whose commit the
        // kill caught after it became durable; either way it is complete (check above).
        assert!(manifests.len() >= acknowledged.len());
    }
    Ok(())
}

/// The CLI's client commands against a running node: upload, list, space, download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_upload_download_list_space() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut child, url) = spawn_node(&dir.path().join("node"))?;
    let file = dir.path().join("input.bin");
    let bytes = data(42, 3 * 65536 + 17);
    std::fs::write(&file, &bytes)?;

    let out = Command::new(BIN)
        .args(["upload", &file.display().to_string(), "--api", &url])
        .output()?;
    assert!(
        out.status.success(),
        "upload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cid = String::from_utf8(out.stdout)?.trim().to_string();
    assert!(cid.starts_with("zDvZRwz"));

    let list = Command::new(BIN).args(["list", "--api", &url]).output()?;
    let list: serde_json::Value = serde_json::from_slice(&list.stdout)?;
    assert_eq!(list["content"][0]["cid"], cid.as_str());
    assert_eq!(list["content"][0]["manifest"]["filename"], "input.bin");

    let space = Command::new(BIN).args(["space", "--api", &url]).output()?;
    let space: serde_json::Value = serde_json::from_slice(&space.stdout)?;
    assert_eq!(space["totalBlocks"], 5);

    let output = dir.path().join("output.bin");
    let out = Command::new(BIN)
        .args([
            "download",
            &cid,
            "-o",
            &output.display().to_string(),
            "--api",
            &url,
        ])
        .output()?;
    assert!(
        out.status.success(),
        "download failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&output)?, bytes);

    let bad = Command::new(BIN)
        .args(["download", "nonsense", "-o", "x", "--api", &url])
        .output()?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("400"));

    // A second node on the same data directory stops with an error that says why,
    // and the first goes on serving.
    let mut second = Command::new(BIN)
        .args(["--data-dir", &dir.path().join("node").display().to_string()])
        .args(["--api-port", "0", "--log-level", "warn"])
        .args(["--listen-addrs", "/ip4/127.0.0.1/tcp/0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = second.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            second.kill()?;
            anyhow::bail!("a second node on the same data directory kept running");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(
        &mut second
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?,
        &mut stderr,
    )?;
    assert!(!status.success());
    assert!(stderr.contains("is in use"), "{stderr}");
    let list = Command::new(BIN).args(["list", "--api", &url]).output()?;
    let list: serde_json::Value = serde_json::from_slice(&list.stdout)?;
    assert_eq!(list["content"][0]["cid"], cid.as_str());
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// The peer address of a running node, from its `/debug/info`.
async fn peer_address(url: &str) -> anyhow::Result<String> {
    let info: serde_json::Value = reqwest::get(format!("{url}/debug/info"))
        .await?
        .json()
        .await?;
    info["addrs"][0]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no address in {info}"))
}

/// Three node processes: B bootstraps the others; A stores a file; C knows only B, finds A
/// through the DHT and downloads the file with `codex-node download`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_find_each_other_and_download() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut b, b_url) = spawn_node(&dir.path().join("b"))?;
    let b_addr = peer_address(&b_url).await?;
    let (mut a, a_url) = spawn_node_with(&dir.path().join("a"), &["--bootstrap-node", &b_addr])?;
    let (mut c, c_url) = spawn_node_with(&dir.path().join("c"), &["--bootstrap-node", &b_addr])?;
    let bytes = data(77, 2 * 1024 * 1024 + 3);
    let cid = reqwest::Client::new()
        .post(format!("{a_url}/data"))
        .body(bytes.clone())
        .send()
        .await?
        .text()
        .await?;
    let output = dir.path().join("from-network.bin");
    let mut ok = false;
    for _ in 0..20 {
        let out = Command::new(BIN)
            .args([
                "download",
                &cid,
                "-o",
                &output.display().to_string(),
                "--api",
                &c_url,
            ])
            .output()?;
        if out.status.success() {
            ok = true;
            break;
        }
        // The provider record may still be on its way through the DHT.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(ok, "download through the network failed");
    assert_eq!(std::fs::read(&output)?, bytes);
    // C now holds the dataset itself (its store may finish writing just after the
    // stream ends: asked for up to 10 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let exists: serde_json::Value = reqwest::get(format!("{c_url}/data/{cid}/exists"))
            .await?
            .json()
            .await?;
        if exists == serde_json::json!({"has": true}) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "C does not hold {cid}: {exists}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for child in [&mut a, &mut b, &mut c] {
        child.kill()?;
        child.wait()?;
    }
    Ok(())
}

/// `proof-input check` on the circuit input rebuilt from Codex's own fixture generator,
/// and on a tampered copy.
#[test]
fn proof_input_check_accepts_codex_input_and_rejects_tampering() -> anyhow::Result<()> {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../codex-proofs/tests/fixtures/codex_input.json");
    let out = Command::new(BIN)
        .args(["proof-input", "check", &fixture.display().to_string()])
        .output()?;
    assert!(
        out.status.success(),
        "check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    // reference §9 / the fixture: slot 3 of 11, 512 cells, 5 samples.
    assert!(
        text.contains("slot 3 of 11, 512 cells per slot, 5 samples"),
        "{text}"
    );
    assert!(
        text.contains("sample indices: [287, 21, 307, 157, 508]"),
        "{text}"
    );

    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&fixture)?)?;
    json["entropy"] = serde_json::Value::String("1234568".into());
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_string(&json)?)?;
    let out = Command::new(BIN)
        .args(["proof-input", "check", &bad.display().to_string()])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not check out"));
    std::fs::write(&bad, "{\"entropy\": \"x\"}")?;
    let out = Command::new(BIN)
        .args(["proof-input", "check", &bad.display().to_string()])
        .output()?;
    assert!(!out.status.success());
    Ok(())
}

/// `proof-input prove` proves Codex's fixture with the halo2 circuit, verifies it, and
/// prints the public inputs of reference §C.7; a tampered input is refused.
#[test]
fn proof_input_prove_proves_codex_input() -> anyhow::Result<()> {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../codex-proofs/tests/fixtures/codex_input.json");
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-proof-cache");
    let dir = tempfile::tempdir()?;
    let proof_file = dir.path().join("proof.hex");
    // Without parameters it refuses, naming the flag.
    let out = Command::new(BIN)
        .args(["proof-input", "prove", &fixture.display().to_string()])
        .args(["--cache-dir", &cache.display().to_string()])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--circuit-params"));
    let out = Command::new(BIN)
        .args(["proof-input", "prove", &fixture.display().to_string()])
        .args(["--dev-params", "--cache-dir", &cache.display().to_string()])
        .args(["--output", &proof_file.display().to_string()])
        .output()?;
    assert!(
        out.status.success(),
        "prove failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    // The fixture's public inputs: ENTROPY 1234567, its dataSetRoot, SLOTINDEX 3.
    assert!(text.contains("entropy      1234567\n"), "{text}");
    assert!(
        text.contains(
            "dataSetRoot  16074246370508166450132968585287196391860062495017081813239200574579640171677\n"
        ),
        "{text}"
    );
    assert!(text.contains("slotIndex    3\n"), "{text}");
    assert!(
        text.contains("prove: ") && text.contains("verify: "),
        "{text}"
    );
    let proof = hex::decode(std::fs::read_to_string(&proof_file)?.trim())?;
    assert!(
        text.contains(&format!("proof: {} bytes", proof.len())),
        "{text}"
    );

    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&fixture)?)?;
    json["cellData"][0][0] = serde_json::Value::String("1".into());
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_string(&json)?)?;
    let out = Command::new(BIN)
        .args(["proof-input", "prove", &bad.display().to_string()])
        .args(["--dev-params", "--cache-dir", &cache.display().to_string()])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not check out"));
    Ok(())
}

#[tokio::test]
async fn a_config_file_sets_flags_and_the_command_line_wins() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("from-config");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = {:?}\napi-port = 1\nstorage-quota = \"3M\"\nlisten-addrs = [\"/ip4/127.0.0.1/tcp/0\"]\nno-network = false\n",
            data_dir.display().to_string()
        ),
    )?;
    // api-port 1 from the file would fail to bind: the command line's 0 wins.
    let mut child = Command::new(BIN)
        .args(["--config-file", &config.display().to_string()])
        .args(["--api-port", "0", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let url = api_url(&mut child)?;
    let space: serde_json::Value = reqwest::get(format!("{url}/space")).await?.json().await?;
    let _ = child.kill();
    let _ = child.wait();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(
        data_dir.join("repo").exists(),
        "the store is in the config's data-dir"
    );
    assert_eq!(space["quotaMaxBytes"], 3 << 20, "{space}");

    std::fs::write(&config, "api-port = { nested = 1 }\n")?;
    let bad = Command::new(BIN)
        .args(["--config-file", &config.display().to_string()])
        .output()?;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("api-port"),
        "the error names the key"
    );
    Ok(())
}

/// A node process killed when dropped, so that a failed assertion leaves none behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the CLI; its exit status and stderr, with stdout trimmed.
fn cli(args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = Command::new(BIN).args(args).output()?;
    Ok((
        out.status.success(),
        String::from_utf8(out.stdout)?.trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn datasets(url: &str) -> anyhow::Result<usize> {
    let (ok, out, err) = cli(&["list", "--api", url])?;
    anyhow::ensure!(ok, "list failed: {err}");
    let list: serde_json::Value = serde_json::from_str(&out)?;
    Ok(list["content"].as_array().map_or(0, Vec::len))
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

#[cfg(unix)]
fn mode(path: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

/// `upload --encrypt --key-file K` and `download --key-file K` (and with a passphrase,
/// and with the key the node kept): the key file is written once with mode 0600 and
/// never overwritten (refused before anything is uploaded); a wrong key is refused as
/// such; a dataset with an altered block is cut off mid-stream; a failed download leaves
/// no file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_encrypts_and_decrypts_and_leaves_nothing_partial() -> anyhow::Result<()> {
    use codex::crypto::{Cipher, Metadata, NewKey, encrypt, new_dataset};
    use futures::TryStreamExt;

    let dir = tempfile::tempdir()?;
    let node_dir = dir.path().join("node");
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir)?;
    let path = |name: &str| out_dir.join(name).display().to_string();

    // A dataset with an altered block, put in the node's store before it starts: the
    // altered block's checksum is its own (the store serves it), only its tag is wrong.
    let (bad_key, params) = new_dataset(&NewKey::Random)?;
    let cipher = std::sync::Arc::new(Cipher::new(&bad_key, &params)?);
    let source = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(data(
        9,
        5 * 65536,
    )))]);
    let sealed: Vec<bytes::Bytes> = encrypt(source, cipher, &Metadata::default(), 65536)?
        .try_collect()
        .await?;
    let mut sealed = sealed.concat();
    sealed[3 * 65536 + 100] ^= 1;
    let tampered = {
        let store = SledStore::open(node_dir.join("repo"), StoreConfig::default())?;
        let added = codex_store::dataset::add_stream(
            &store,
            futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(sealed))]),
            codex_store::dataset::AddOptions {
                encryption: Some(params),
                ..Default::default()
            },
        )
        .await?;
        added.cid.to_string()
    };
    std::fs::write(
        dir.path().join("bad.key"),
        format!("{}\n", bad_key.to_hex()),
    )?;

    let (child, url) = spawn_node_with(&node_dir, &["--keep-keys"])?;
    let _node = Running(child);
    let input = dir.path().join("secret.bin");
    let bytes = data(43, 3 * 65536 + 17);
    std::fs::write(&input, &bytes)?;
    let input = input.display().to_string();
    let key_file = dir.path().join("secret.key");
    let key_arg = key_file.display().to_string();

    let (ok, cid, err) = cli(&[
        "upload",
        &input,
        "--encrypt",
        "--key-file",
        &key_arg,
        "--api",
        &url,
    ])?;
    assert!(ok, "upload failed: {err}");
    assert!(cid.starts_with("zDvZRwz"), "{cid}");
    let key = std::fs::read_to_string(&key_file)?;
    assert!(
        key.trim().len() == 64 && key.trim().chars().all(|c| c.is_ascii_hexdigit()),
        "the key file holds 64 hex digits"
    );
    #[cfg(unix)]
    assert_eq!(mode(&key_file)?, 0o600);
    #[cfg(unix)]
    assert_eq!(
        mode(&node_dir.join("keys"))?,
        0o600,
        "--keep-keys keeps them 0600"
    );
    let held = datasets(&url)?;

    // The key file exists: refused before uploading, and left as it was.
    let (ok, _, err) = cli(&[
        "upload",
        &input,
        "--encrypt",
        "--key-file",
        &key_arg,
        "--api",
        &url,
    ])?;
    assert!(!ok && err.contains("exists"), "{err}");
    assert_eq!(datasets(&url)?, held, "nothing was uploaded");
    assert_eq!(std::fs::read_to_string(&key_file)?, key);
    // --encrypt alone is refused by the parser, before anything is uploaded.
    let (ok, _, _) = cli(&["upload", &input, "--encrypt", "--api", &url])?;
    assert!(!ok);
    assert_eq!(datasets(&url)?, held);

    let (ok, _, err) = cli(&[
        "download",
        &cid,
        "-o",
        &path("plain.bin"),
        "--key-file",
        &key_arg,
        "--api",
        &url,
    ])?;
    assert!(ok, "download failed: {err}");
    assert_eq!(std::fs::read(out_dir.join("plain.bin"))?, bytes);
    assert!(err.contains("uploaded as secret.bin"), "{err}");
    #[cfg(unix)]
    assert_eq!(
        mode(&out_dir.join("plain.bin"))?,
        0o600,
        "decrypted files are the owner's"
    );
    // The key the node kept opens it too.
    let (ok, _, err) = cli(&[
        "download",
        &cid,
        "-o",
        &path("kept.bin"),
        "--decrypt",
        "--api",
        &url,
    ])?;
    assert!(ok, "download --decrypt failed: {err}");
    assert_eq!(std::fs::read(out_dir.join("kept.bin"))?, bytes);
    // Without a key: the ciphertext.
    let (ok, _, err) = cli(&["download", &cid, "-o", &path("cipher.bin"), "--api", &url])?;
    assert!(ok, "{err}");
    let cipher = std::fs::read(out_dir.join("cipher.bin"))?;
    assert!(cipher.len() > bytes.len() && !cipher.windows(64).any(|w| w == &bytes[..64]));

    // A wrong key: refused as such, and no file.
    let before = names(&out_dir)?;
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, format!("{}\n", "ab".repeat(32)))?;
    let (ok, _, err) = cli(&[
        "download",
        &cid,
        "-o",
        &path("wrong.bin"),
        "--key-file",
        &wrong.display().to_string(),
        "--api",
        &url,
    ])?;
    assert!(
        !ok && err.contains("403") && err.contains("wrong key"),
        "{err}"
    );
    // A block that fails authentication mid-way: the stream is cut, nothing is left.
    let (ok, _, err) = cli(&[
        "download",
        &tampered,
        "-o",
        &path("tampered.bin"),
        "--key-file",
        &dir.path().join("bad.key").display().to_string(),
        "--api",
        &url,
    ])?;
    assert!(!ok && err.contains("cut the download off"), "{err}");
    // Not a key at all: refused before asking the node, without echoing it.
    std::fs::write(&wrong, "not-a-key-at-all")?;
    let (ok, _, err) = cli(&[
        "download",
        &cid,
        "-o",
        &path("x.bin"),
        "--key-file",
        &wrong.display().to_string(),
        "--api",
        &url,
    ])?;
    assert!(
        !ok && err.contains("invalid key") && !err.contains("not-a-key"),
        "{err}"
    );
    assert_eq!(
        names(&out_dir)?,
        before,
        "no file and no temporary file left"
    );

    // A passphrase instead of a key file.
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n")?;
    let pass_arg = pass.display().to_string();
    let (ok, cid, err) = cli(&[
        "upload",
        &input,
        "--encrypt",
        "--passphrase-file",
        &pass_arg,
        "--api",
        &url,
    ])?;
    assert!(ok, "upload with a passphrase failed: {err}");
    let (ok, _, err) = cli(&[
        "download",
        &cid,
        "-o",
        &path("pass.bin"),
        "--passphrase-file",
        &pass_arg,
        "--api",
        &url,
    ])?;
    assert!(ok, "download with a passphrase failed: {err}");
    assert_eq!(std::fs::read(out_dir.join("pass.bin"))?, bytes);
    std::fs::write(&pass, "wrong horse\n")?;
    let (ok, _, err) = cli(&[
        "download",
        &cid,
        "-o",
        &path("pass2.bin"),
        "--passphrase-file",
        &pass_arg,
        "--api",
        &url,
    ])?;
    assert!(!ok && err.contains("wrong key"), "{err}");
    assert!(!out_dir.join("pass2.bin").exists());
    Ok(())
}

/// The chain flags refuse what no chain can use, naming the flag, before anything
/// starts: a zero or absurd poll interval or receipt timeout, a fee cap that is not a
/// positive number, a provider URL of another scheme.
#[test]
fn chain_flags_refuse_bad_values() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    let run = |extra: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(BIN)
            .args([
                "--data-dir",
                &dir.path().display().to_string(),
                "--no-network",
            ])
            .args(["--eth-provider", "http://127.0.0.1:9"])
            .args([
                "--marketplace-address",
                "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            ])
            .args(["--eth-private-key", key, "--dev-params"])
            .args(extra)
            .output()?;
        assert!(!out.status.success(), "{extra:?} was accepted");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert!(run(&["--eth-poll-interval", "0"])?.contains("--eth-poll-interval"));
    assert!(run(&["--eth-poll-interval", "1e9"])?.contains("--eth-poll-interval"));
    assert!(run(&["--eth-receipt-timeout=-3"])?.contains("--eth-receipt-timeout"));
    assert!(run(&["--eth-receipt-timeout", "NaN"])?.contains("--eth-receipt-timeout"));
    assert!(run(&["--eth-max-fee-gwei", "0"])?.contains("--eth-max-fee-gwei"));
    let e = run(&["--eth-provider", "ftp://127.0.0.1:9"])?;
    assert!(e.contains("neither http(s) nor ws(s)"), "{e}");
    Ok(())
}

/// The peer id of a running node (`GET /peerid`).
async fn peer_id(url: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("{url}/peerid")).await?.text().await?)
}

fn stop(mut child: Child) -> anyhow::Result<()> {
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// `--net-privkey` and `--net-key-type`: a new secp256k1 key goes to the file named
/// relative to the data directory (mode 0600, libp2p's protobuf: type 2 and the 32-byte
/// secret) and gives the same peer id at the next start, without the type flag too,
/// and from its absolute path; the default file `key` holds an Ed25519 key that lasts;
/// a malformed key file or an unknown type stops the node with an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net_key_flags_choose_the_key_file_and_its_type() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let secp = [
        "--net-privkey",
        "ids/node.key",
        "--net-key-type",
        "secp256k1",
    ];
    let (child, url) = spawn_node_with(&data, &secp)?;
    let id = peer_id(&url).await?;
    stop(child)?;
    let key = data.join("ids/node.key");
    assert_eq!(mode(&key)?, 0o600);
    let bytes = std::fs::read(&key)?;
    assert_eq!(bytes[..4], [0x08, 0x02, 0x12, 0x20]);
    assert_eq!(bytes.len(), 36);
    assert!(id.starts_with("16Uiu2"), "not a secp256k1 peer id: {id}");
    assert!(!data.join("key").exists());

    let (child, url) = spawn_node_with(&data, &["--net-privkey", "ids/node.key"])?;
    assert_eq!(peer_id(&url).await?, id);
    stop(child)?;
    let absolute = key.display().to_string();
    let (child, url) = spawn_node_with(&dir.path().join("other"), &["--net-privkey", &absolute])?;
    assert_eq!(peer_id(&url).await?, id);
    stop(child)?;

    // The default: `key` in the data directory, Ed25519, kept across restarts.
    let (child, url) = spawn_node(&data)?;
    let ed = peer_id(&url).await?;
    stop(child)?;
    assert!(ed.starts_with("12D3KooW"), "not an Ed25519 peer id: {ed}");
    assert_eq!(mode(&data.join("key"))?, 0o600);
    let (child, url) = spawn_node(&data)?;
    assert_eq!(peer_id(&url).await?, ed);
    stop(child)?;

    std::fs::write(data.join("bad.key"), b"not a key")?;
    let run = |extra: &[&str]| -> anyhow::Result<(bool, String)> {
        let out = Command::new(BIN)
            .args(["--data-dir", &data.display().to_string(), "--api-port", "0"])
            .args(["--listen-addrs", "/ip4/127.0.0.1/tcp/0"])
            .args(extra)
            .stdout(Stdio::null())
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (ok, err) = run(&["--net-privkey", "bad.key"])?;
    assert!(
        !ok && err.contains("bad.key") && err.contains("malformed"),
        "{err}"
    );
    let (ok, err) = run(&["--net-key-type", "rsa"])?;
    assert!(!ok && err.contains("--net-key-type"), "{err}");
    Ok(())
}

/// The log lines of `file` as JSON objects (every line must be one).
fn json_lines(file: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str(l).map_err(|e| anyhow::anyhow!("not a JSON line: {l:?}: {e}"))
        })
        .collect()
}

/// `--log-level` in Codex's syntax, `--log-format json`, `--log-file`, and
/// `POST /debug/chronicles/loglevel`: the file holds one JSON object per line; at
/// `WARN;INFO: codex::node` the node's own start lines are there and no other INFO
/// line; the API's level change takes effect at once (its own INFO line is written);
/// at NONE nothing more is written; a bad or missing level is refused with 400 and
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_flags_and_the_runtime_level() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("node.log");
    let mut child = Command::new(BIN)
        .args(["--data-dir", &dir.path().join("d").display().to_string()])
        .args(["--api-port", "0", "--listen-addrs", "/ip4/127.0.0.1/tcp/0"])
        .args([
            "--log-level",
            "WARN;INFO: codex::node",
            "--log-format",
            "json",
        ])
        .args(["--log-file", &log.display().to_string()])
        .env_remove("CODEX_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let url = api_url(&mut child)?;
    // Stopped however the test ends (a node left running holds the test's ports and
    // files).
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let lines = json_lines(&log)?;
    let level = |l: &serde_json::Value| l["level"].as_str().unwrap_or_default().to_string();
    let target = |l: &serde_json::Value| l["target"].as_str().unwrap_or_default().to_string();
    let message = |l: &serde_json::Value| l["fields"]["message"].as_str().map(str::to_string);
    assert!(
        lines
            .iter()
            .any(|l| message(l).as_deref() == Some("API started") && level(l) == "INFO"),
        "the node's INFO lines are in the file: {lines:?}"
    );
    for l in &lines {
        assert!(
            level(l) != "INFO" || target(l).starts_with("codex::node"),
            "an INFO line of another target: {l}"
        );
        assert!(level(l) != "DEBUG" && level(l) != "TRACE", "{l}");
    }

    let client = reqwest::Client::new();
    // Levels as a query parameter: `;`, `:`, `,` and spaces percent-encoded.
    let set = |level: &str| {
        let encoded: String = level
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        client
            .post(format!("{url}/debug/chronicles/loglevel?level={encoded}"))
            .send()
    };
    for bad in ["LOUD", "INFO;DEBUG", "info,codex_net=loud"] {
        let res = set(bad).await?;
        assert_eq!(res.status(), reqwest::StatusCode::BAD_REQUEST, "{bad}");
        assert!(res.text().await?.contains("bad log level"), "{bad}");
    }
    let res = client
        .post(format!("{url}/debug/chronicles/loglevel"))
        .send()
        .await?;
    assert_eq!(res.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(
        !json_lines(&log)?
            .iter()
            .any(|l| message(l).as_deref() == Some("log level changed")),
        "refused levels change nothing"
    );
    let lines = json_lines(&log)?;

    let res = set("NOTICE;DEBUG: codex_net").await?;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    assert_eq!(res.text().await?, "info,codex_net=debug");
    let after = json_lines(&log)?;
    assert!(
        after[lines.len()..].iter().any(|l| {
            message(l).as_deref() == Some("log level changed")
                && level(l) == "INFO"
                && target(l).starts_with("codex::logging")
        }),
        "the new level took effect: {after:?}"
    );

    assert_eq!(set("NONE").await?.status(), reqwest::StatusCode::OK);
    let silent = json_lines(&log)?.len();
    assert_eq!(set("none").await?.status(), reqwest::StatusCode::OK);
    let upload = client
        .post(format!("{url}/data"))
        .body("quiet")
        .send()
        .await?;
    assert!(upload.status().is_success());
    assert_eq!(json_lines(&log)?.len(), silent, "NONE writes nothing");
    Ok(())
}

/// `--nat extip:IP` announces every listen address with that IP (its port kept), which
/// `/debug/info` shows as the announced and external addresses with the node's
/// reachability; `--announce-addr` adds one; a `--nat` Codex's flag does not take (pmp,
/// a bad IP) and a relay without its peer id stop the node with an error naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_flags_set_what_the_node_announces() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (child, url) = spawn_node_with(
        dir.path(),
        &[
            "--nat",
            "extip:203.0.113.7",
            "--announce-addr",
            "/dns4/node.example/tcp/8070",
        ],
    )?;
    let info: serde_json::Value = reqwest::get(format!("{url}/debug/info"))
        .await?
        .json()
        .await?;
    stop(child)?;
    let port = info["addrs"][0]
        .as_str()
        .and_then(|a| a.split("/tcp/").nth(1))
        .and_then(|p| p.split('/').next())
        .ok_or_else(|| anyhow::anyhow!("no TCP listen address: {info}"))?
        .to_string();
    let announced: Vec<&str> = info["announceAddresses"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(
        announced.contains(&format!("/ip4/203.0.113.7/tcp/{port}").as_str()),
        "{info}"
    );
    assert!(announced.contains(&"/dns4/node.example/tcp/8070"), "{info}");
    assert_eq!(
        info["nat"]["externalAddrs"].as_array().map(Vec::len),
        Some(announced.len())
    );
    assert!(
        ["unknown", "public", "private"]
            .contains(&info["nat"]["reachability"].as_str().unwrap_or("")),
        "{info}"
    );
    assert_eq!(info["nat"]["connections"], serde_json::json!([]), "{info}");

    for (flags, named) in [
        (&["--nat", "pmp"][..], "pmp"),
        (&["--nat", "extip:1.2.3"][..], "extip:1.2.3"),
        (&["--relay", "/ip4/127.0.0.1/tcp/1"][..], "relay"),
    ] {
        let out = Command::new(BIN)
            .args([
                "--data-dir",
                &dir.path().display().to_string(),
                "--api-port",
                "0",
            ])
            .args(flags)
            .output()?;
        assert!(!out.status.success(), "{flags:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{flags:?}: {err}");
    }
    Ok(())
}
