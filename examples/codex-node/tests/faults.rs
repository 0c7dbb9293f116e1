//! Faults a real `codex-node` process survives: `kill -9` while it erasure-codes a
//! dataset and builds its slots. After every kill the store reopens consistent, the
//! original dataset is intact, every manifest left is complete (a protected or
//! verifiable one with all its blocks and slot leaves), and the work, run again after
//! the restart, finishes and reads back the original bytes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use codex::proofs::SlotGeometry;
use codex_core::Cid;
use codex_core::prelude::*;
use codex_store::{SledStore, StoreConfig};
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_codex-node");

/// Starts `codex-node` on a free port without networking; returns it and its API URL.
fn spawn_node(dir: &Path) -> anyhow::Result<(Child, String)> {
    spawn(dir, None)
}

/// Starts `codex-node` whose files may not grow past `limit_kib` (`ulimit -f`, with
/// SIGXFSZ ignored so that a write past it fails with EFBIG as on a full disk).
fn spawn_node_on_a_small_disk(dir: &Path, limit_kib: u64) -> anyhow::Result<(Child, String)> {
    spawn(dir, Some(limit_kib))
}

fn spawn(dir: &Path, file_limit_kib: Option<u64>) -> anyhow::Result<(Child, String)> {
    let limit = file_limit_kib.map_or(String::new(), |k| format!("trap '' XFSZ; ulimit -f {k}; "));
    let mut child = Command::new("bash")
        .args(["-c", &format!("{limit}exec \"$0\" \"$@\""), BIN])
        .args(["--data-dir", &dir.display().to_string()])
        .args(["--api-port", "0", "--log-level", "warn", "--no-network"])
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

/// Every manifest in the store is complete: `check` (counters, leaves, trees), and a
/// verifiable manifest has the record of every real leaf of every slot tree.
async fn assert_consistent(dir: &Path, round: usize) -> anyhow::Result<Vec<Cid>> {
    let store = SledStore::open(dir.join("repo"), StoreConfig::default())?;
    let problems = store.check()?;
    assert!(problems.is_empty(), "round {round}: {problems:#?}");
    let store: Arc<dyn BlockStore> = Arc::new(store);
    let mut cids = Vec::new();
    for (cid, m) in store.manifests().await? {
        if let Some(v) = m.protection.as_ref().and_then(|p| p.verification.as_ref()) {
            let g = SlotGeometry::new(&m)?;
            for root in &v.slot_roots {
                for i in 0..g.slot_blocks {
                    // A slot leaf refers to a cell digest, not a stored block: its
                    // record (with the proof) is what must be there.
                    let leaf = store.get_leaf_meta(root, i).await;
                    assert!(
                        leaf.is_ok_and(|l| l.index == i),
                        "round {round}: verifiable {cid} lacks leaf {i} of slot tree {root}"
                    );
                }
            }
        }
        cids.push(cid);
    }
    Ok(cids)
}

fn data(seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; 12 << 20];
    StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_erasure_coding_and_slot_building_nothing_is_lost() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::new();
    // How long the work takes on this machine (slot building is several times faster
    // where Poseidon2 runs on AVX-512 IFMA): timed once on a store of its own, so that
    // the kills below land in the work wherever it runs.
    let work_time = {
        let scratch = tempfile::tempdir()?;
        let (mut child, url) = spawn_node(scratch.path())?;
        let r = http
            .post(format!("{url}/data"))
            .body(data(99))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "upload: {}", r.status());
        let cid: Cid = r.text().await?.parse()?;
        let t = std::time::Instant::now();
        let r = http
            .post(format!("{url}/data/{cid}/verifiable"))
            .json(&serde_json::json!({"k": 3, "m": 2}))
            .send()
            .await?;
        let took = t.elapsed();
        child.kill()?;
        child.wait()?;
        anyhow::ensure!(r.status().is_success(), "verifiable: {}", r.status());
        took
    };
    println!("the work alone: {work_time:?}");

    // Each round uploads a new dataset and starts making it verifiable (erasure coding
    // first, then the slot trees, the longer part), then kills the node at a random
    // (seeded) moment within the first 80% of the time the work took alone.
    let mut rng = StdRng::seed_from_u64(0xfa17);
    let mut originals: Vec<(Cid, u64)> = Vec::new();
    let mut mid_work = 0;
    for round in 0..5u64 {
        let (mut child, url) = spawn_node(dir.path())?;
        let r = http
            .post(format!("{url}/data"))
            .body(data(round))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "upload: {}", r.status());
        let cid: Cid = r.text().await?.parse()?;
        originals.push((cid, round));
        let pause = work_time.mul_f64(rng.random_range(0.02..0.8));
        let work = http
            .post(format!("{url}/data/{cid}/verifiable"))
            .json(&serde_json::json!({"k": 3, "m": 2}))
            .send();
        let done = tokio::select! {
            r = work => Some(r?.status()),
            _ = tokio::time::sleep(pause) => None,
        };
        child.kill()?; // SIGKILL, wherever the work is
        child.wait()?;
        mid_work += usize::from(done.is_none());
        let cids = assert_consistent(dir.path(), round as usize).await?;
        for (c, _) in &originals {
            assert!(cids.contains(c), "round {round}: the original {c} was lost");
        }
        println!(
            "round {round}: killed after {pause:?} ({}), {} manifests, consistent",
            if done.is_some() {
                "the work had finished"
            } else {
                "mid-work"
            },
            cids.len()
        );
    }
    assert!(mid_work >= 2, "only {mid_work} kills landed mid-work");

    // After the last restart the work runs to the end for every dataset, and both the
    // original and the verifiable dataset read back as the original bytes.
    let (mut child, url) = spawn_node(dir.path())?;
    for (cid, seed) in &originals {
        let r = http
            .post(format!("{url}/data/{cid}/verifiable"))
            .json(&serde_json::json!({"k": 3, "m": 2}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "verifiable: {}", r.status());
        let v: serde_json::Value = r.json().await?;
        let verifiable = v["cid"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no cid in {v}"))?
            .to_string();
        let digest = Sha256::digest(data(*seed));
        for c in [cid.to_string(), verifiable] {
            let got = http.get(format!("{url}/data/{c}")).send().await?;
            anyhow::ensure!(got.status().is_success(), "GET {c}: {}", got.status());
            let got = got.bytes().await?;
            assert!(Sha256::digest(&got) == digest, "{c} reads back other bytes");
        }
    }
    child.kill()?;
    child.wait()?;
    assert_consistent(dir.path(), 99).await?;
    Ok(())
}

/// The disk fills up mid-upload: the upload fails with an error, what was stored
/// before stays intact and the store reopens consistent; with room again the same
/// upload succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_upload_and_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::new();
    let small = data(100)[..2 << 20].to_vec();
    let big = data(101);
    let (mut child, url) = spawn_node_on_a_small_disk(dir.path(), 8 << 10)?;
    let r = http
        .post(format!("{url}/data"))
        .body(small.clone())
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "small upload: {}", r.status());
    let first: Cid = r.text().await?.parse()?;

    // 12 MiB into files that may not pass 8 MiB.
    let r = http
        .post(format!("{url}/data"))
        .body(big.clone())
        .send()
        .await;
    let refused = match r {
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            println!("the upload on a full disk: {status} {text}");
            assert_eq!(status, 507, "an upload past the disk's end: {text}");
            true
        }
        Err(e) => {
            println!("the upload on a full disk: connection ended: {e}");
            false
        }
    };
    if refused {
        // The node still answers, and still serves what it stored before (on a new
        // connection: the refused upload's may be closed under a pooled client).
        let got = reqwest::Client::new()
            .get(format!("{url}/data/{first}"))
            .send()
            .await?;
        assert!(
            got.status().is_success(),
            "GET after the full disk: {}",
            got.status()
        );
        assert!(
            got.bytes().await? == small,
            "the first upload reads back other bytes"
        );
    }
    child.kill()?;
    child.wait()?;
    let cids = assert_consistent(dir.path(), 0).await?;
    assert!(
        cids.contains(&first),
        "the upload before the disk filled was lost"
    );
    assert_eq!(cids.len(), 1, "a half-stored upload was left: {cids:?}");

    // Room again: the same upload goes through and reads back.
    let (mut child, url) = spawn_node(dir.path())?;
    let r = http
        .post(format!("{url}/data"))
        .body(big.clone())
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "upload with room: {}", r.status());
    let cid: Cid = r.text().await?.parse()?;
    let got = http
        .get(format!("{url}/data/{cid}"))
        .send()
        .await?
        .bytes()
        .await?;
    assert!(got == big, "the upload reads back other bytes");
    let got = http
        .get(format!("{url}/data/{first}"))
        .send()
        .await?
        .bytes()
        .await?;
    assert!(got == small, "the first upload reads back other bytes");
    child.kill()?;
    child.wait()?;
    assert_consistent(dir.path(), 1).await?;
    Ok(())
}
