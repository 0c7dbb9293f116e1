//! A node stays responsive while it works on a large dataset: node A (with the network
//! and a marketplace on anvil) takes a 1 GiB upload through the REST API, then a storage
//! request for it (erasure coding, slot trees, `requestStorage`, all in the background).
//! Meanwhile one prober asks A's REST API (`GET /space`, `GET /debug/info`) every 50 ms
//! and another asks node B to fetch small manifests from A over libp2p; the bench prints
//! each phase's wall time and the latencies the probers saw (p50, p99, max).
//!
//! `cargo bench --bench responsive` (`CODEX_BENCH_BYTES` changes the size).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use codex::market::alloy::primitives::U256;
use codex::market::deploy::{mint, signing_provider};
use codex::market::{LocalChain, MarketplaceConfig, TokenSource, VerifierSource, deploy};
use codex::node::market::{EthKey, MarketConfig};
use codex::{Node, NodeConfig};
use serde_json::json;

const PIECE: usize = 1 << 20;

fn piece(seed: &[u8], i: u64) -> Bytes {
    let mut v = seed.to_vec();
    for (j, block) in v.chunks_mut(65536).enumerate() {
        block[..8].copy_from_slice(&(i * 16 + j as u64).to_le_bytes());
    }
    Bytes::from(v)
}

fn summary(name: &str, mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return format!("{name}: no samples");
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    format!(
        "{name}: {} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        v.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    )
}

/// How long a GET took; a failed one counts as the 30 s timeout.
async fn timed_get(http: &reqwest::Client, url: String) -> Duration {
    let t = Instant::now();
    let ok = http
        .get(url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    if ok {
        t.elapsed()
    } else {
        Duration::from_secs(30)
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let total: u64 = std::env::var("CODEX_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let pieces = total.div_ceil(PIECE as u64);
    let server = tokio::runtime::Runtime::new()?;
    let probes = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;

    let (chain, a, b) = server.block_on(async {
        let chain = LocalChain::start().await?;
        let deployer = chain.account(0).await?;
        let d = deploy(
            &chain.provider_for(&deployer),
            &MarketplaceConfig::default(),
            TokenSource::TestToken,
            VerifierSource::Test,
        )
        .await?;
        let signer = chain.account(1).await?;
        let p = signing_provider(chain.url(), &signer)?;
        mint(
            &p,
            d.token,
            signer.address(),
            U256::from(10u64).pow(U256::from(24)),
        )
        .await?;
        let net = |boot| codex::net::NetConfig {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
            bootstrap: boot,
            ..codex::net::NetConfig::default()
        };
        let a = Node::start(NodeConfig {
            data_dir: dir.path().join("a"),
            api_port: 0,
            storage_quota: total * 3 + (1 << 30),
            network: Some(net(vec![])),
            marketplace: Some(MarketConfig::new(
                chain.url(),
                d.marketplace,
                EthKey::from_signer(signer),
                codex::proofs::Srs::Development,
            )),
            ..NodeConfig::default()
        })
        .await?;
        let b = Node::start(NodeConfig {
            data_dir: dir.path().join("b"),
            api_port: 0,
            network: Some(net(a.addresses().await?)),
            ..NodeConfig::default()
        })
        .await?;
        anyhow::Ok((chain, a, b))
    })?;
    let (a_api, b_api) = (a.api_url(), b.api_url());

    // Small datasets on A that B fetches over the network while A is busy.
    let smalls: Vec<String> = probes.block_on(async {
        let http = reqwest::Client::new();
        let mut out = Vec::new();
        for i in 0..600u32 {
            let r = http
                .post(format!("{a_api}/data"))
                .body(format!("small dataset {i}"))
                .send()
                .await?;
            out.push(r.text().await?);
        }
        anyhow::Ok(out)
    })?;

    let busy = Arc::new(AtomicBool::new(true));
    let api_probe = {
        let (busy, url) = (Arc::clone(&busy), a_api.clone());
        probes.spawn(async move {
            let http = reqwest::Client::new();
            let mut lat = Vec::new();
            while busy.load(Ordering::Relaxed) {
                for path in ["space", "debug/info"] {
                    lat.push(timed_get(&http, format!("{url}/{path}")).await);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            lat
        })
    };
    let net_probe = {
        let (busy, url, smalls) = (Arc::clone(&busy), b_api.clone(), smalls.clone());
        probes.spawn(async move {
            let http = reqwest::Client::new();
            let mut lat = Vec::new();
            for cid in &smalls {
                if !busy.load(Ordering::Relaxed) {
                    break;
                }
                lat.push(timed_get(&http, format!("{url}/data/{cid}/network/manifest")).await);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            lat
        })
    };

    let seed: Vec<u8> = (0..PIECE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let phases = server.block_on(async {
        let http = reqwest::Client::new();
        let t = Instant::now();
        let body = futures::stream::iter(
            (0..pieces).map(move |i| Ok::<_, std::io::Error>(piece(&seed, i))),
        );
        let r = http
            .post(format!("{a_api}/data"))
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await?;
        ensure!(r.status().is_success(), "upload: {}", r.status());
        let cid = r.text().await?;
        let upload = t.elapsed();

        let t = Instant::now();
        let r = http
            .post(format!("{a_api}/storage/request/{cid}"))
            .json(&json!({
                "duration": "86400", "proofProbability": "4", "pricePerBytePerSecond": "1",
                "collateralPerByte": "1", "expiry": "3600", "nodes": 3, "tolerance": 1,
            }))
            .send()
            .await?;
        ensure!(r.status().is_success(), "request: {}", r.text().await?);
        let answered = t.elapsed();
        let id = r.text().await?;
        let p = loop {
            let p: serde_json::Value = http
                .get(format!("{a_api}/storage/purchases/{id}"))
                .send()
                .await?
                .json()
                .await?;
            match p["state"].as_str() {
                Some("pending") => tokio::time::sleep(Duration::from_millis(200)).await,
                Some("submitted") => break p,
                _ => anyhow::bail!("purchase: {p}"),
            }
        };
        anyhow::Ok((upload, answered, t.elapsed(), p["timingsMs"].clone()))
    })?;
    busy.store(false, Ordering::Relaxed);
    let api = probes.block_on(api_probe).context("api prober")?;
    let net = probes.block_on(net_probe).context("network prober")?;
    let (upload, answered, request, timings) = phases;
    let mb = (pieces * PIECE as u64) as f64 / 1e6;
    println!(
        "upload {mb:.0} MB through the REST API: {:.1} s ({:.0} MB/s)",
        upload.as_secs_f64(),
        mb / upload.as_secs_f64()
    );
    println!(
        "storage request answered in {:.1} ms; erasure coding + slots + requestStorage in the background: {:.1} s (ms: {timings})",
        answered.as_secs_f64() * 1e3,
        request.as_secs_f64()
    );
    println!("{}", summary("A's REST API (GET /space, /debug/info)", api));
    println!(
        "{}",
        summary("B fetching manifests from A over libp2p", net)
    );
    drop((a, b, chain));
    Ok(())
}
