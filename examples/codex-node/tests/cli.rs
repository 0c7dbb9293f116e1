//! The reference node as a user runs it: a real process, its CLI, and `kill -9`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use codex_core::{BlockStore, Cid, Manifest};
use codex_store::{SledStore, StoreConfig};
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

const BIN: &str = env!("CARGO_BIN_EXE_codex-node");

/// Starts `codex-node` on a free port; returns the process and its API URL.
fn spawn_node(dir: &Path) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(BIN)
        .args([
            "--data-dir",
            &dir.display().to_string(),
            "--api-port",
            "0",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    anyhow::ensure!(line.starts_with("http://"), "node printed {line:?}");
    Ok((child, line.trim().to_string()))
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
    child.kill()?;
    child.wait()?;
    Ok(())
}
