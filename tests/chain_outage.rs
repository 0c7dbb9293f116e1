//! The chain's RPC going away and coming back (issue 9). A TCP proxy stands between
//! the nodes and anvil: every node's `--eth-provider` is the proxy, which forwards to
//! anvil until the test cuts it (existing connections are closed, new ones are
//! accepted and closed at once) and again once it is restored. The test itself reads
//! the chain and moves its clock through anvil's own URL.
//!
//! A client and two hosts (nodes = 2, tolerance = 1) start a request with real
//! proofs and prove once more; then the RPC is cut while the clock moves two proof
//! periods (25 s of wall time: every node's loops fail and retry dozens of times).
//! During the outage every node's REST API answers, the hosts' sales are listed, and
//! the client, its local copy deleted, downloads its data from the hosts over libp2p.
//! Once the RPC
//! is back no proof is found in the outage's periods, every host proves again in a
//! later period, and the purchase is still `started` (before the fix in
//! `purchasing::watch` the client gave the purchase up as `errored` after 30 failed
//! polls, about 15 s).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use codex::market::{
    LocalChain, MarketplaceClient, MarketplaceConfig, RequestState, TokenSource, VerifierSource,
    deploy,
};
use codex::proofs::prover::compile_verifier;
use codex::proofs::{Prover, Srs};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

mod common;
use common::{get_json, next_period_proved, node, proving_sale};

/// A TCP proxy to one address that can be cut and restored.
struct RpcProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped on each cut: the open connections end when they see it.
    cuts: watch::Sender<u64>,
    /// Connections forwarded, and connections closed unanswered while cut.
    forwarded: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RpcProxy {
    async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let (forwarded, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let task = tokio::spawn({
            let (up, cuts, forwarded, refused) = (
                Arc::clone(&up),
                cuts.clone(),
                Arc::clone(&forwarded),
                Arc::clone(&refused),
            );
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        refused.fetch_add(1, Ordering::Relaxed);
                        drop(inbound);
                        continue;
                    }
                    forwarded.fetch_add(1, Ordering::Relaxed);
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        Ok(RpcProxy {
            addr,
            up,
            cuts,
            forwarded,
            refused,
            task,
        })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every open connection and every new one, until [`RpcProxy::restore`].
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.forwarded.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_data_through_a_chain_outage_and_prove_again_after_it() -> anyhow::Result<()> {
    // The nodes' logs, for a failure's story: `RUST_LOG=codex=info`.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let t0 = Instant::now();
    let at = || format!("[{:>6.1?}]", t0.elapsed());
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("proof-keys");
    let c = cache.clone();
    let (bytecode, zkey_hash) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (prover, _) = Prover::new(&Srs::Development, 5, Some(&c))?;
        let bytecode = compile_verifier(&prover.solidity_verifier(), Some(&c))?;
        Ok((bytecode, prover.verifying_key_digest().to_string()))
    })
    .await??;
    println!("{} keys and verifier ready", at());

    let chain = LocalChain::start().await?;
    let deployer = chain.account(0).await?;
    let mut config = MarketplaceConfig::default();
    config.proofs.zkey_hash = zkey_hash;
    config.proofs.period = 30;
    config.proofs.timeout = 10;
    let d = deploy(
        &chain.provider_for(&deployer),
        &config,
        TokenSource::TestToken,
        VerifierSource::Halo2Bytecode(bytecode),
    )
    .await
    .context("deploying with the generated verifier")?;
    // The test's own view of the chain, past the proxy.
    let direct = MarketplaceClient::connect(chain.url(), &deployer, d.marketplace).await?;
    let proxy = RpcProxy::start(format!("127.0.0.1:{}", chain.port()).parse()?).await?;
    let rpc = proxy.url();
    let funded = |i: u64| common::host_market(&chain, &d, i, (&rpc, 5, &cache));
    println!(
        "{} marketplace deployed on anvil {}, nodes use the proxy {}",
        at(),
        chain.url(),
        proxy.url()
    );

    let dir = tempfile::tempdir()?;
    let client = node(&dir.path().join("client"), vec![], funded(1).await?).await?;
    let boot = client.addresses().await?;
    let mut hosts = Vec::new();
    for i in 0..2u64 {
        hosts.push(
            node(
                &dir.path().join(format!("host{i}")),
                boot.clone(),
                funded(2 + i).await?,
            )
            .await?,
        );
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    for h in &hosts {
        let r = http
            .post(format!("{}/sales/availability", h.api_url()))
            .json(&json!({
                "totalSize": "10000000", "duration": 7200,
                "minPricePerBytePerSecond": "1", "totalCollateral": "1000000000000",
            }))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "availability: {}", r.text().await?);
    }
    println!("{} client and 2 hosts running, availabilities posted", at());

    // A file of 3.5 blocks; K = 1, M = 1.
    let mut bytes = vec![0u8; 3 * 65536 + 32_000];
    StdRng::seed_from_u64(9).fill_bytes(&mut bytes);
    let cid = client
        .upload(
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes.clone()))]),
            Default::default(),
        )
        .await?;
    let r = http
        .post(format!("{}/storage/request/{cid}", client.api_url()))
        .json(&json!({
            "duration": "3600", "proofProbability": "1", "pricePerBytePerSecond": "1",
            "collateralPerByte": "1", "expiry": "600", "nodes": 2, "tolerance": 1,
        }))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "request: {}", r.text().await?);
    let purchase = r.text().await?;
    let purchase_url = format!("{}/storage/purchases/{purchase}", client.api_url());
    let (mut last, waiting) = (String::new(), Instant::now());
    let p = loop {
        let p = get_json(&http, purchase_url.clone()).await?;
        let state = format!("{} {}", p["state"], p["step"]);
        if last != state {
            println!("{} purchase: {state}", at());
            last = state;
        }
        match p["state"].as_str() {
            Some("started") => break p,
            Some("errored" | "failed" | "cancelled") => bail!("purchase ended: {p}"),
            _ if waiting.elapsed() > Duration::from_secs(240) => {
                bail!("the request did not start: {p}")
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let request_id: codex::market::alloy::primitives::B256 =
        p["requestId"].as_str().context("no request id")?.parse()?;
    let request_id = codex::market::RequestId(request_id);
    let verifiable = p["verifiableCid"]
        .as_str()
        .context("no verifiable cid")?
        .to_string();
    for (i, h) in hosts.iter().enumerate() {
        let sale = proving_sale(&http, h, &format!("host {i}")).await?;
        println!(
            "host {i}: slot {} proofs in periods {}",
            sale["slotIndex"], sale["proofPeriods"]
        );
    }
    println!("{} request started, both slots filled", at());

    // Before the outage: a later period, and every host proves in it.
    let period = direct.current_period().await?;
    let sales = next_period_proved(
        &chain,
        config.proofs.period,
        (&http, &hosts),
        period,
        "a proof before the outage",
        Duration::from_secs(120),
    )
    .await?;
    for (i, sale) in sales.iter().enumerate() {
        println!(
            "{} host {i}: proofs in periods {}",
            at(),
            sale["proofPeriods"]
        );
    }

    // The outage: two periods pass on the clock while no node reaches the chain.
    let cut_at = Instant::now();
    proxy.cut();
    let before = proxy.counts();
    let cut_period = direct.current_period().await?;
    println!("{} RPC cut (connections so far: {})", at(), before.0);
    chain.increase_time(config.proofs.period).await?;
    chain.mine(1).await?;

    // Every node answers; the sales are listed; the purchase is as it was.
    let nodes = [
        ("client", &client),
        ("host 0", &hosts[0]),
        ("host 1", &hosts[1]),
    ];
    let answers = |label: &'static str| {
        let (http, nodes) = (&http, &nodes);
        async move {
            for (name, n) in nodes {
                let asked = Instant::now();
                get_json(http, format!("{}/debug/info", n.api_url())).await?;
                get_json(http, format!("{}/space", n.api_url())).await?;
                get_json(http, format!("{}/sales/slots", n.api_url())).await?;
                let took = asked.elapsed();
                anyhow::ensure!(took < Duration::from_secs(5), "{name} took {took:?}");
            }
            println!("{} {label}: every node's API answers", at());
            anyhow::Ok(())
        }
    };
    answers("outage").await?;
    for (i, h) in hosts.iter().enumerate() {
        let sales = get_json(&http, format!("{}/sales/slots", h.api_url())).await?;
        anyhow::ensure!(
            sales
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s["state"] == "SaleProving")),
            "host {i} during the outage: {sales}"
        );
    }
    let p = get_json(&http, purchase_url.clone()).await?;
    assert_eq!(p["state"], "started", "{p}");

    // The client forgets its data and fetches it back from the hosts.
    let listed = get_json(&http, format!("{}/data", client.api_url())).await?;
    let stored: Vec<String> = listed["content"]
        .as_array()
        .context("no content")?
        .iter()
        .filter_map(|d| d["cid"].as_str().map(str::to_string))
        .collect();
    let held = get_json(&http, format!("{}/space", client.api_url())).await?;
    for c in &stored {
        let r = http
            .delete(format!("{}/data/{c}", client.api_url()))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 204, "delete {c}: {}", r.status());
    }
    let listed = get_json(&http, format!("{}/data", client.api_url())).await?;
    assert_eq!(listed["content"], json!([]), "{listed}");
    let space = get_json(&http, format!("{}/space", client.api_url())).await?;
    assert!(held["quotaUsedBytes"].as_u64() > Some(0), "{held}");
    assert_eq!(
        space["quotaUsedBytes"], 0,
        "the client holds no data: {space}"
    );
    let fetched = Instant::now();
    let r = http
        .get(format!(
            "{}/data/{verifiable}/network/stream",
            client.api_url()
        ))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "network stream: {}", r.status());
    let body = r.bytes().await?;
    assert!(body[..] == bytes[..], "the data came back changed");
    println!(
        "{} outage: the client deleted {} datasets and downloaded {} bytes from the hosts in {:?}",
        at(),
        stored.len(),
        body.len(),
        fetched.elapsed()
    );

    // The second period, and long enough that every node retried many times.
    chain.increase_time(config.proofs.period).await?;
    chain.mine(1).await?;
    let outage = Duration::from_secs(25);
    tokio::time::sleep(outage.saturating_sub(cut_at.elapsed())).await;
    answers("outage, later").await?;
    let p = get_json(&http, purchase_url.clone()).await?;
    assert_eq!(p["state"], "started", "after {:?} of outage: {p}", outage);
    let during = proxy.counts();
    assert_eq!(during.0, before.0, "nothing passed the cut proxy");
    assert!(during.1 > 10, "the nodes kept trying: {during:?}");
    proxy.restore();
    println!(
        "{} RPC restored after {:.1?}: {} connections refused meanwhile",
        at(),
        cut_at.elapsed(),
        during.1 - before.1
    );

    // No proof landed while the chain was out of reach.
    let period = direct.current_period().await?;
    for (i, h) in hosts.iter().enumerate() {
        let sales = get_json(&http, format!("{}/sales/slots", h.api_url())).await?;
        let during: Vec<u64> = sales[0]["proofPeriods"]
            .as_array()
            .context("no proof periods")?
            .iter()
            .filter_map(Value::as_u64)
            .filter(|p| (cut_period + 1..period).contains(p))
            .collect();
        assert!(during.is_empty(), "host {i} proved in {during:?} while cut");
    }
    println!(
        "{} no proofs in periods {}..{period} (the outage)",
        at(),
        cut_period + 1
    );

    // A later period: every host proves again.
    let sales = next_period_proved(
        &chain,
        config.proofs.period,
        (&http, &hosts),
        period,
        "a proof after the outage",
        Duration::from_secs(120),
    )
    .await?;
    for (i, sale) in sales.iter().enumerate() {
        println!(
            "{} host {i}: proofs in periods {} (after period {period})",
            at(),
            sale["proofPeriods"]
        );
    }
    assert_eq!(
        direct.request_state(request_id).await?,
        RequestState::Started
    );
    let p = get_json(&http, purchase_url).await?;
    assert_eq!(p["state"], "started", "{p}");
    answers("after").await?;
    println!(
        "{} every host proved after the outage; purchase still started",
        at()
    );

    for h in hosts {
        h.shutdown().await?;
    }
    client.shutdown().await?;
    Ok(())
}
