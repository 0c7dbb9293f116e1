//! A node under load: 50 stored datasets downloaded at once through the REST API, 20
//! uploads at the same time (each read back), and a second node downloading several of
//! the datasets from the first over libp2p, every byte checked by SHA-256; meanwhile a
//! prober asks `GET /debug/info` and `GET /space` over and over and every probe must
//! answer (within a generous bound: this checks that the node keeps answering, not
//! how fast).

#[path = "common/loopback.rs"]
mod loopback;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use codex::{Node, NodeConfig};
use futures::StreamExt;
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};
use sha2::{Digest, Sha256};

/// Datasets stored before the load starts, each downloaded once under load.
const STORED: usize = 50;
/// Uploads of new data under load.
const UPLOADS: usize = 20;
/// Stored datasets the second node downloads over the network under load.
const OVER_NETWORK: usize = 8;
/// The longest any probe may take.
const PROBE_BOUND: Duration = Duration::from_secs(5);

/// 256 KiB to 1 MiB of random bytes from `seed` (lengths not block-aligned).
fn dataset(seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; rng.random_range(256 << 10..=1 << 20)];
    rng.fill_bytes(&mut v);
    v
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

async fn start(
    dir: &std::path::Path,
    bootstrap: Vec<codex_net::Multiaddr>,
) -> anyhow::Result<Node> {
    Ok(Node::start(NodeConfig {
        storage_quota: 1 << 30,
        ..loopback::loopback(dir, bootstrap)?
    })
    .await?)
}

/// The node's peer addresses, once it listens (just after start it may not yet, and a
/// node bootstrapped from no address would never find it).
async fn listening(node: &Node) -> anyhow::Result<Vec<codex_net::Multiaddr>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let addrs = node.addresses().await?;
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        ensure!(Instant::now() < deadline, "the node does not listen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn upload(http: &reqwest::Client, api: &str, data: Vec<u8>) -> anyhow::Result<String> {
    let res = http.post(format!("{api}/data")).body(data).send().await?;
    ensure!(res.status().is_success(), "upload: {}", res.status());
    Ok(res.text().await?)
}

/// GETs `url` and returns the length and SHA-256 of the body, read as a stream.
async fn download(http: &reqwest::Client, url: String) -> anyhow::Result<(usize, [u8; 32])> {
    let res = http.get(&url).send().await?;
    ensure!(res.status().is_success(), "GET {url}: {}", res.status());
    let mut stream = res.bytes_stream();
    let (mut len, mut hasher) = (0, Sha256::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("reading {url}"))?;
        len += chunk.len();
        hasher.update(&chunk);
    }
    Ok((len, hasher.finalize().into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_under_concurrent_load_serves_every_byte_and_keeps_answering() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let a = start(&dir.path().join("a"), vec![]).await?;
    let b = start(&dir.path().join("b"), listening(&a).await?).await?;
    let (a_api, b_api) = (a.api_url(), b.api_url());
    let http = reqwest::Client::new();

    // The stored datasets, uploaded one after another.
    let mut stored = Vec::new();
    for i in 0..STORED {
        let data = dataset(i as u64);
        let digest = (data.len(), sha256(&data));
        stored.push((upload(&http, &a_api, data).await?, digest));
    }

    // The prober: /debug/info and /space in turn until the load is over.
    let busy = Arc::new(AtomicBool::new(true));
    let prober = tokio::spawn({
        let (busy, api) = (Arc::clone(&busy), a_api.clone());
        async move {
            let http = reqwest::Client::new();
            let (mut count, mut slowest) = (0usize, Duration::ZERO);
            while busy.load(Ordering::Relaxed) {
                for path in ["debug/info", "space"] {
                    let t = Instant::now();
                    let res = http
                        .get(format!("{api}/{path}"))
                        .timeout(PROBE_BOUND)
                        .send()
                        .await
                        .with_context(|| format!("probe {count}: GET /{path}"))?;
                    ensure!(res.status().is_success(), "GET /{path}: {}", res.status());
                    let body: serde_json::Value = res.json().await?;
                    ensure!(body.is_object(), "GET /{path} answered {body}");
                    let took = t.elapsed();
                    ensure!(took <= PROBE_BOUND, "GET /{path} took {took:?}");
                    slowest = slowest.max(took);
                    count += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok((count, slowest))
        }
    });

    let started = Instant::now();
    // 50 downloads of different datasets at once.
    let downloads = stored.iter().map(|(cid, expected)| {
        let (http, url) = (http.clone(), format!("{a_api}/data/{cid}"));
        let (cid, expected) = (cid.clone(), *expected);
        tokio::spawn(async move {
            let got = download(&http, url).await?;
            ensure!(got == expected, "download of {cid}: bytes differ");
            anyhow::Ok(())
        })
    });
    // 20 uploads of new data at once, each read back.
    let uploads = (0..UPLOADS).map(|i| {
        let (http, api) = (http.clone(), a_api.clone());
        tokio::spawn(async move {
            let data = dataset(1000 + i as u64);
            let expected = (data.len(), sha256(&data));
            let cid = upload(&http, &api, data).await?;
            let got = download(&http, format!("{api}/data/{cid}")).await?;
            ensure!(
                got == expected,
                "upload {i} read back as {cid}: bytes differ"
            );
            anyhow::Ok(())
        })
    });
    // The second node fetches some of the datasets from the first over libp2p.
    let network = stored
        .iter()
        .step_by(STORED / OVER_NETWORK)
        .map(|(cid, expected)| {
            let (http, url) = (http.clone(), format!("{b_api}/data/{cid}/network/stream"));
            let (cid, expected) = (cid.clone(), *expected);
            tokio::spawn(async move {
                let got = download(&http, url).await?;
                ensure!(got == expected, "network download of {cid}: bytes differ");
                anyhow::Ok(())
            })
        });
    let tasks: Vec<_> = downloads.chain(uploads).chain(network).collect();
    let count = tasks.len();
    ensure!(count >= STORED + UPLOADS + OVER_NETWORK, "{count} tasks");
    for (i, task) in futures::future::join_all(tasks)
        .await
        .into_iter()
        .enumerate()
    {
        task.with_context(|| format!("task {i}"))??;
    }
    let load = started.elapsed();
    busy.store(false, Ordering::Relaxed);
    let (probes, slowest) = prober.await??;
    ensure!(probes >= 2, "only {probes} probes answered");
    eprintln!(
        "{count} transfers in {load:.1?}; {probes} probes answered, the slowest in {slowest:.1?}"
    );

    b.shutdown().await?;
    a.shutdown().await?;
    Ok(())
}
