//! The marketplace end to end on loopback: anvil runs our contracts with the Solidity
//! verifier generated from the halo2 verifying key; a client node uploads a file and
//! requests storage through the REST API (nodes = 3, tolerance = 1); three host nodes
//! see the request, each reserves a slot, downloads the slot's blocks over libp2p,
//! checks the slot root, fills the slot with a real halo2 proof; the request starts;
//! after the clock moves to a later period every host submits a proof again; a host's
//! availability is patched, and the host restarted resumes its sale from the chain and
//! proves again. Invalid requests are refused with a 4xx before anything is spent.
//!
//! The chain is run as a public one is met: anvil starts with 100 000 blocks of history
//! and mines a block a second, and every node reaches it through a JSON-RPC proxy that behaves like a hosted
//! endpoint (`eth_getLogs` over 500 blocks refused with -32005, every 10th request
//! answered HTTP 429, every 13th receipt read HTTP 502). Every answer of the REST API is checked against Codex's OpenAPI
//! file.

#[path = "../codex-market/tests/it/proxy.rs"]
mod proxy;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use codex::market::{
    LocalChain, MarketplaceConfig, RequestState, SlotState, TokenSource, VerifierSource, deploy,
};
use codex::proofs::prover::compile_verifier;
use codex::proofs::{Prover, Srs};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

mod common;
#[path = "common/dashboard.rs"]
mod dashboard;
use common::codex_openapi::send;
use common::{get_json, next_period_proved, node, proving_sale, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_fill_a_request_with_real_proofs_and_prove_again() -> anyhow::Result<()> {
    // The nodes' logs, for a failure's story: `RUST_LOG=codex=info`.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let t0 = Instant::now();
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("proof-keys");
    let c = cache.clone();
    let (bytecode, zkey_hash) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (prover, _) = Prover::new(&Srs::Development, 5, Some(&c))?;
        let bytecode = compile_verifier(&prover.solidity_verifier(), Some(&c))?;
        Ok((bytecode, prover.verifying_key_digest().to_string()))
    })
    .await??;
    println!("[{:>6.1?}] keys and verifier ready", t0.elapsed());

    // A live chain: 100 000 blocks of history, and a block a second whether or not
    // anyone sends a transaction.
    let chain = LocalChain::start_live(100_000, 1).await?;
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
    let deployed_at = chain.block_number().await?;
    let rpc = proxy::Proxy::start_with(chain.url(), 500, 10, 13).await?;
    let funded = |i: u64| common::host_market(&chain, &d, i, (&rpc.url, 5, &cache));
    println!(
        "[{:>6.1?}] marketplace deployed on anvil at block {}; nodes use {}",
        t0.elapsed(),
        chain.block_number().await?,
        rpc.url
    );

    let dir = tempfile::tempdir()?;
    let client = node(&dir.path().join("client"), vec![], funded(1).await?).await?;
    let boot = client.addresses().await?;
    let mut hosts = Vec::new();
    for i in 0..3u64 {
        let h = node(
            &dir.path().join(format!("host{i}")),
            boot.clone(),
            funded(2 + i).await?,
        )
        .await?;
        hosts.push(h);
    }
    // A fourth host whose verifying key is not the marketplace's (keys for another
    // sample count): it refuses to sell, naming both digests, and reserves nothing.
    let mut mc = funded(5).await?;
    mc.proof_samples = 6;
    let mismatched = node(&dir.path().join("mismatched"), boot.clone(), mc).await?;
    let http = reqwest::Client::new();
    // Every answer of the REST API below is checked against Codex's OpenAPI file
    // (`send` and `get_json`: status, content type, schema).
    for h in hosts.iter().chain([&mismatched]) {
        let (s, _, body) = send(
            http.post(format!("{}/sales/availability", h.api_url()))
                .json(&json!({
                    "totalSize": 10000000, "duration": 7200,
                    "minPricePerBytePerSecond": "1", "totalCollateral": "1000000000000",
                })),
        )
        .await?;
        let body = String::from_utf8_lossy(&body);
        anyhow::ensure!(s == 201, "availability: {body}");
        let a: Value = serde_json::from_str(&body)?;
        assert_eq!(
            (a["totalSize"].as_u64(), a["until"].as_u64()),
            (Some(10000000), Some(0)),
            "{a}"
        );
    }
    println!(
        "[{:>6.1?}] client and 3 hosts running, availabilities posted",
        t0.elapsed()
    );

    // A file of 3.5 blocks; K = 2, M = 1.
    let mut bytes = vec![0u8; 3 * 65536 + 32_000];
    StdRng::seed_from_u64(8).fill_bytes(&mut bytes);
    let cid = client
        .upload(
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]),
            Default::default(),
        )
        .await?;

    // Refused before anything is spent.
    let market = client.market().context("no market")?.client().clone();
    let balance = market.balance_of(market.account()).await?;
    let ok = json!({
        "duration": "3600", "proofProbability": "1", "pricePerBytePerSecond": "1",
        "collateralPerByte": "1", "expiry": "600", "nodes": 3, "tolerance": 1,
    });
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let unknown = "zDvZRwzkvwapyNeL4mzw5gBsZvyWjAT6JvbxKudbXZ5W6cJxQxTm";
    for (target, body, status) in [
        (cid.to_string(), with("duration", json!(0)), 422),
        (cid.to_string(), with("tolerance", json!(4)), 422),
        (cid.to_string(), with("expiry", json!("3600")), 422),
        (unknown.to_string(), ok.clone(), 404),
    ] {
        let (s, _, text) = send(
            http.post(format!("{}/storage/request/{target}", client.api_url()))
                .json(&body),
        )
        .await?;
        let text = String::from_utf8_lossy(&text).to_string();
        println!("refused {body}: {s} {text}");
        assert_eq!(s, status, "{body}: {text}");
        assert!(!text.is_empty(), "a message says why");
    }
    assert_eq!(
        market.balance_of(market.account()).await?,
        balance,
        "nothing was spent"
    );

    let (s, _, purchase) = send(
        http.post(format!("{}/storage/request/{cid}", client.api_url()))
            .json(&ok),
    )
    .await?;
    let purchase = String::from_utf8_lossy(&purchase).to_string();
    anyhow::ensure!(s == 200, "request: {purchase}");
    println!("[{:>6.1?}] purchase {purchase}", t0.elapsed());
    let url = format!("{}/storage/purchases/{purchase}", client.api_url());
    // The request is built before the answer: the purchase has it from the first call.
    let first = get_json(&http, url.clone()).await?;
    assert!(
        first["requestId"].is_string() && first["request"]["ask"]["slots"] == 3,
        "{first}"
    );
    let mut last = String::new();
    let waiting = Instant::now();
    let p = loop {
        let p = get_json(&http, url.clone()).await?;
        let state = format!("{} {}", p["state"], p["step"]);
        if last != state {
            println!("[{:>6.1?}] purchase: {state}", t0.elapsed());
            last = state;
        }
        match p["state"].as_str() {
            Some("started") => break p,
            Some("errored" | "failed" | "cancelled") => bail!("purchase ended: {p}"),
            _ if waiting.elapsed() > Duration::from_secs(300) => {
                bail!("the request did not start: {p}")
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    println!("purchase timings (ms): {}", p["timingsMs"]);
    let request_id: codex::market::alloy::primitives::B256 =
        p["requestId"].as_str().context("no request id")?.parse()?;
    let request_id = codex::market::RequestId(request_id);
    assert_eq!(
        market.request_state(request_id).await?,
        RequestState::Started
    );
    let ids = get_json(&http, format!("{}/storage/purchases", client.api_url())).await?;
    assert_eq!(ids, json!([purchase]));

    // Each host holds one distinct slot, filled with a real proof.
    let mut indices = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let sale = proving_sale(&http, h, &format!("host {i}")).await?;
        println!(
            "host {i}: slot {} timings (ms) {}",
            sale["slotIndex"], sale["timingsMs"]
        );
        let index = sale["slotIndex"].as_u64().context("index")?;
        // The slot by id, as Codex's `SlotAgent`, with the space it holds.
        let one = get_json(
            &http,
            format!(
                "{}/sales/slots/{}",
                h.api_url(),
                sale["id"].as_str().context("slot id")?
            ),
        )
        .await?;
        assert_eq!(
            (&one["state"], &one["slotIndex"]),
            (&json!("SaleProving"), &json!(index)),
            "{one}"
        );
        assert_eq!(
            one["reservation"]["size"], sale["request"]["ask"]["slotSize"],
            "{one}"
        );
        assert_eq!(one["request"]["id"], p["requestId"], "{one}");
        let host = h.market().context("no market")?.client();
        let slot = codex::market::SlotId::new(request_id, index);
        assert_eq!(host.slot_state(slot).await?, SlotState::Filled);
        assert_eq!(host.get_host(slot).await?, Some(host.account()));
        indices.push(index);
    }
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2]);
    println!("[{:>6.1?}] every slot filled", t0.elapsed());

    // A reorganisation drops the last fill (anvil_reorg replaces the blocks from the
    // fill's on with empty ones): the slot is free again on chain, and its host, which
    // still holds the data, proves and fills it again.
    use codex::market::alloy::providers::Provider as _;
    let provider = chain.provider();
    let raw = |method: &'static str, params: Value| async move {
        let v: Value = provider.raw_request(method.into(), params).await?;
        anyhow::Ok(v)
    };
    // Mining stops while the fill's block is found and replaced, so that the depth
    // measured is the depth reorganised.
    let _: Value = raw("evm_setIntervalMining", json!([0])).await?;
    let latest = chain.block_number().await?;
    let topic = codex::market::alloy::primitives::keccak256("SlotFilled(bytes32,uint64)");
    let logs = raw(
        "eth_getLogs",
        json!([{
            "fromBlock": format!("0x{:x}", latest.saturating_sub(20)),
            "toBlock": format!("0x{latest:x}"),
            "topics": [topic.to_string()],
        }]),
    )
    .await?;
    let last_fill = logs
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l["blockNumber"].as_str())
        .and_then(|b| u64::from_str_radix(b.trim_start_matches("0x"), 16).ok())
        .context("no SlotFilled in the last 20 blocks")?;
    let depth = latest - last_fill + 1;
    raw("anvil_reorg", json!([depth, []])).await?;
    let _: Value = raw("evm_setIntervalMining", json!([1])).await?;
    let free: Vec<u64> = {
        let mut free = Vec::new();
        for i in 0..3 {
            let slot = codex::market::SlotId::new(request_id, i);
            if market.slot_state(slot).await? == SlotState::Free {
                free.push(i);
            }
        }
        free
    };
    // The last fill at least (fills landing in the same or following blocks go with it).
    assert!(
        !free.is_empty(),
        "no fill dropped by a reorg of {depth} blocks"
    );
    println!(
        "[{:>6.1?}] reorg of {depth} blocks dropped the fills of slots {free:?}",
        t0.elapsed(),
    );
    for &index in &free {
        let dropped = codex::market::SlotId::new(request_id, index);
        // Filled on chain, and proving at a host (its sale sees the fill's receipt;
        // another host's attempt at the slot may have left a record that ended).
        let holder = wait_for(
            "the dropped fill sent again",
            Duration::from_secs(90),
            || async {
                if market.slot_state(dropped).await? != SlotState::Filled {
                    return Ok(None);
                }
                Ok(hosts.iter().find(|h| {
                    h.market().is_some_and(|m| {
                        m.sales()
                            .sale(dropped)
                            .is_some_and(|s| s.state == codex::node::sales::SaleState::Proving)
                    })
                }))
            },
        )
        .await?;
        let host = holder.market().context("no market")?.client();
        assert_eq!(host.get_host(dropped).await?, Some(host.account()));
    }
    assert_eq!(
        market.request_state(request_id).await?,
        RequestState::Started
    );
    println!(
        "[{:>6.1?}] the same hosts filled the slots again",
        t0.elapsed()
    );
    let refusal = wait_for("the refusal", Duration::from_secs(60), || async {
        Ok(mismatched.market().context("no market")?.sales().refusal())
    })
    .await?;
    println!("mismatched host: {refusal}");
    assert!(refusal.contains(&config.proofs.zkey_hash), "{refusal}");
    assert!(
        refusal.matches("0x").count() >= 2,
        "both digests: {refusal}"
    );
    let sales = get_json(&http, format!("{}/sales/slots", mismatched.api_url())).await?;
    assert_eq!(sales, json!([]), "the mismatched host took nothing");
    mismatched.shutdown().await?;

    // A later period: every host proves again (probability 1: a proof each period).
    let period = market.current_period().await?;
    let sales = next_period_proved(
        &chain,
        config.proofs.period,
        (&http, &hosts),
        period,
        "a proof in a later period",
        Duration::from_secs(180),
    )
    .await?;
    for (i, sale) in sales.iter().enumerate() {
        println!("host {i}: proofs in periods {}", sale["proofPeriods"]);
    }
    println!(
        "[{:>6.1?}] every host proved in a later period",
        t0.elapsed()
    );

    // A reorganisation drops the last proof (its block replaced by an empty one): the
    // host's book follows the chain. It proves again while the period lasts; after,
    // the period is missed and leaves its book.
    let _: Value = raw("evm_setIntervalMining", json!([0])).await?;
    let latest = chain.block_number().await?;
    let proof_topic = codex::market::alloy::primitives::keccak256("ProofSubmitted(bytes32)");
    let hex_number = |v: &Value| {
        v.as_str()
            .and_then(|b| u64::from_str_radix(b.trim_start_matches("0x"), 16).ok())
    };
    let logs = raw(
        "eth_getLogs",
        json!([{
            "fromBlock": format!("0x{:x}", latest.saturating_sub(40)),
            "toBlock": format!("0x{latest:x}"),
            "topics": [proof_topic.to_string()],
        }]),
    )
    .await?;
    let last = logs
        .as_array()
        .and_then(|l| l.last())
        .context("no ProofSubmitted in the last 40 blocks")?;
    let proof_block = hex_number(&last["blockNumber"]).context("block number")?;
    let proved_slot = last["data"].as_str().context("slot id")?.to_string();
    let depth = latest - proof_block + 1;
    raw("anvil_reorg", json!([depth, []])).await?;
    let _: Value = raw("evm_setIntervalMining", json!([1])).await?;
    let prover = sales
        .iter()
        .position(|s| s["slotId"].as_str() == Some(proved_slot.as_str()))
        .context("no host proved the slot of the last ProofSubmitted")?;
    // The periods of the slot's proofs on chain, the fill's left out (a fill carries
    // a proof, and the host's book counts the proofs after it).
    let proved_index = sales[prover]["slotIndex"].as_u64().context("slot index")?;
    let chain_periods = || async {
        let fills = raw(
            "eth_getLogs",
            json!([{
                "fromBlock": format!("0x{deployed_at:x}"),
                "toBlock": "latest",
                "topics": [topic.to_string(), request_id.to_string()],
            }]),
        )
        .await?;
        let fill_txs: Vec<Value> = fills
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| hex_number(&l["data"]) == Some(proved_index))
            .map(|l| l["transactionHash"].clone())
            .collect();
        let logs = raw(
            "eth_getLogs",
            json!([{
                "fromBlock": format!("0x{deployed_at:x}"),
                "toBlock": "latest",
                "topics": [proof_topic.to_string()],
            }]),
        )
        .await?;
        let mut periods = Vec::new();
        for log in logs.as_array().into_iter().flatten() {
            if log["data"].as_str() != Some(proved_slot.as_str())
                || fill_txs.contains(&log["transactionHash"])
            {
                continue;
            }
            let block = raw("eth_getBlockByNumber", json!([log["blockNumber"], false])).await?;
            let time = hex_number(&block["timestamp"]).context("block time")?;
            periods.push(time / config.proofs.period);
        }
        anyhow::Ok(periods)
    };
    let url = format!("{}/sales/slots", hosts[prover].api_url());
    let (book, on_chain) = wait_for(
        "the host's proofs to follow the chain",
        Duration::from_secs(90),
        || async {
            let sales = get_json(&http, url.clone()).await?;
            let sale = sales
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|s| s["slotId"].as_str() == Some(proved_slot.as_str()))
                })
                .context("the sale is gone")?;
            let mut book: Vec<u64> = serde_json::from_value(sale["proofPeriods"].clone())?;
            book.sort_unstable();
            let on_chain = chain_periods().await?;
            Ok((book == on_chain).then_some((book, on_chain)))
        },
    )
    .await?;
    println!(
        "[{:>6.1?}] reorg of {depth} blocks dropped host {prover}'s proof; its book {book:?}, the chain {on_chain:?}",
        t0.elapsed()
    );

    // A client whose requests disagree with their dataset (the verifiable manifest of
    // the request above, with one slot fewer; with another root): every host vets
    // them before reserving, skips them, and no slot is filled.
    let mut fewer = market.get_request(request_id).await?;
    fewer.nonce = [0x5a; 32];
    fewer.ask.slots = 2;
    fewer.ask.max_slot_loss = 0;
    let mut rooted = market.get_request(request_id).await?;
    rooted.nonce = [0x5b; 32];
    rooted.content.merkle_root = [1; 32];
    let mut bad = Vec::new();
    for r in [&fewer, &rooted] {
        bad.push((market.request_storage(r).await?.0, r.ask.slots));
    }
    wait_for(
        "every host to skip both requests",
        Duration::from_secs(90),
        || async {
            let skipped = hosts.iter().all(|h| {
                let sales = h.market().map(|m| m.sales().sales()).unwrap_or_default();
                bad.iter().all(|(id, _)| {
                    sales.iter().any(|s| {
                        s.request == *id
                            && s.state == codex::node::sales::SaleState::Ignored
                            && s.error
                                .as_deref()
                                .is_some_and(|e| e.contains("does not match"))
                    })
                })
            });
            Ok(skipped.then_some(()))
        },
    )
    .await?;
    for (id, slots) in &bad {
        assert_eq!(market.request_state(*id).await?, RequestState::New);
        for i in 0..*slots {
            assert_eq!(
                market
                    .slot_state(codex::market::SlotId::new(*id, i))
                    .await?,
                SlotState::Free
            );
        }
        for h in &hosts {
            let sales = h.market().context("no market")?.sales().sales();
            assert!(
                sales
                    .iter()
                    .filter(|s| s.request == *id)
                    .all(|s| s.state == codex::node::sales::SaleState::Ignored),
                "only skipped: {sales:?}"
            );
        }
    }
    println!(
        "[{:>6.1?}] requests that disagree with their dataset: skipped by every host",
        t0.elapsed()
    );

    // Availabilities are changed in place and kept across a restart.
    let avail = get_json(&http, format!("{}/sales/availability", hosts[0].api_url())).await?;
    let id = avail[0]["id"]
        .as_str()
        .context("availability id")?
        .to_string();
    let patch = |body: Value| {
        send(
            http.patch(format!("{}/sales/availability/{id}", hosts[0].api_url()))
                .json(&body),
        )
    };
    let (s, _, text) = patch(json!({"totalSize": 1})).await?;
    assert_eq!(
        s,
        422,
        "below what the slot holds: {}",
        String::from_utf8_lossy(&text)
    );
    let (s, _, text) = patch(json!({"totalSize": 20000000, "enabled": false})).await?;
    assert_eq!(s, 204, "{}", String::from_utf8_lossy(&text));
    let reservations = get_json(
        &http,
        format!(
            "{}/sales/availability/{id}/reservations",
            hosts[0].api_url()
        ),
    )
    .await?;
    assert_eq!(
        reservations.as_array().map(Vec::len),
        Some(1),
        "{reservations}"
    );
    assert_eq!(
        reservations[0]["availabilityId"],
        id.as_str(),
        "{reservations}"
    );
    assert_eq!(
        reservations[0]["size"], p["request"]["ask"]["slotSize"],
        "{reservations}"
    );

    // A host restarted mid-request resumes its sale from the chain and proves again.
    let restarted = hosts.remove(0);
    restarted.shutdown().await?;
    let h = node(&dir.path().join("host0"), boot.clone(), funded(2).await?).await?;
    let avail = get_json(&http, format!("{}/sales/availability", h.api_url())).await?;
    assert_eq!(avail[0]["totalSize"], 20000000, "{avail}");
    assert_eq!(avail[0]["enabled"], false, "{avail}");
    let period = market.current_period().await?;
    let sales = next_period_proved(
        &chain,
        config.proofs.period,
        (&http, std::slice::from_ref(&h)),
        period,
        "a proof after the restart",
        Duration::from_secs(180),
    )
    .await?;
    println!(
        "[{:>6.1?}] restarted host proved: {}",
        t0.elapsed(),
        sales[0]
    );
    // The Grafana dashboard's marketplace panels show what a host serves.
    let scrape = codex::metrics::encode(&h.handle()).await?;
    for name in dashboard::metric_names()?
        .iter()
        .filter(|n| n.starts_with("codex_"))
    {
        assert!(
            dashboard::served(&scrape, name),
            "the dashboard's {name} is not served by a host:\n{scrape}"
        );
    }
    hosts.push(h);
    for h in hosts {
        h.shutdown().await?;
    }
    client.shutdown().await?;
    // Everything went through the limited endpoint, rate limits included.
    let counts = &rpc.counts;
    let (calls, limited, refused, failed) = (
        counts.calls.load(std::sync::atomic::Ordering::Relaxed),
        counts.limited.load(std::sync::atomic::Ordering::Relaxed),
        counts.refused.load(std::sync::atomic::Ordering::Relaxed),
        counts
            .failed_receipts
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    println!(
        "proxy: {calls} calls, {limited} answered 429, {refused} log ranges refused, {failed} receipt reads failed"
    );
    // The nodes met the rate limit and failed reads and got through them, and kept
    // to the log range.
    assert!(
        calls > 100 && limited > 0 && failed > 0,
        "{calls} calls, {limited} limited, {failed} failed"
    );
    assert_eq!(
        refused, 0,
        "log ranges over the endpoint's limit were asked for"
    );
    Ok(())
}
