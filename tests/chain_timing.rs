//! Proof timing on a chain with real block times: anvil mines a block every
//! `CODEX_BLOCK_TIME` seconds (2 by default; `scripts/chain-timing.sh` runs 12), a
//! host's [`Seller`] holds a slot and proves every period through the chain's own
//! clock, with a proof that takes a second. Every period from the fill to the end
//! must have exactly one `ProofSubmitted` landing in it (read from the chain's events
//! and block times, not from the host's book), and the host's marketplace calls per
//! block are counted. Two of those proofs meet faults: the first after the fill is
//! dropped from anvil's pool (`anvil_dropTransaction`), a later one is priced out by a
//! base-fee spike of ten times its fee cap (`anvil_setNextBlockBaseFeePerGas`); each
//! must be sent again and land in its period.
//!
//! A host down for three periods (and 600 blocks) while a request is made: restarted,
//! its seller reads the events from where its book says it stopped, in ranges the
//! endpoint allows, sees the request and fills a slot.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use codex::market::alloy::primitives::U256;
use codex::market::alloy::providers::Provider;
use codex::market::{
    Ask, Content, LocalChain, MarketEvent, MarketplaceClient, MarketplaceConfig, Metered, SlotId,
    StorageRequest, TokenSource, VerifierSource, deploy,
};
use codex::node::sales::{Availability, Fetched, SaleState, Sales, Seller, SellerConfig, SlotHost};
use codex_core::Cid;
use tokio_util::sync::CancellationToken;

mod common;

/// A host whose proofs `TestVerifier` accepts, taking a second each.
#[derive(Debug)]
struct SlowProver;

#[async_trait::async_trait]
impl SlotHost for SlowProver {
    async fn check(&self, _: &MarketplaceConfig) -> codex::Result<()> {
        Ok(())
    }
    async fn has_dataset(&self, _: &Cid) -> bool {
        false
    }
    async fn vet(&self, _: &StorageRequest) -> codex::Result<()> {
        Ok(())
    }
    async fn fetch(&self, _: &StorageRequest, _: u64, _: bool) -> codex::Result<Fetched> {
        Ok(Fetched::default())
    }
    async fn load(&self, _: &StorageRequest, _: u64) -> codex::Result<()> {
        Ok(())
    }
    async fn prove(&self, _: &StorageRequest, _: u64, _: [u8; 32]) -> codex::Result<Vec<u8>> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(vec![1; 64])
    }
    fn last_prove_ms(&self) -> Option<u64> {
        Some(1000)
    }
    async fn filled(&self, _: &StorageRequest, _: u64) {}
    async fn forget(&self, _: SlotId) {}
    async fn delete_dataset(&self, _: &Cid) -> codex::Result<()> {
        Ok(())
    }
}

/// The marketplace deployed on `chain` with `period`-second periods and the test
/// verifier; a client and a host, funded.
async fn market(
    chain: &LocalChain,
    period: u64,
) -> anyhow::Result<(MarketplaceConfig, MarketplaceClient, MarketplaceClient)> {
    let deployer = chain.account(0).await?;
    let mut config = MarketplaceConfig::default();
    config.proofs.period = period;
    config.proofs.timeout = period / 2;
    config.proofs.downtime = 16;
    let d = deploy(
        &chain.provider_for(&deployer),
        &config,
        TokenSource::TestToken,
        VerifierSource::Test,
    )
    .await
    .context("deploying")?;
    let mut accounts = Vec::new();
    for i in [1, 2] {
        let signer = common::funded(chain, d.token, i).await?;
        accounts.push(MarketplaceClient::connect(chain.url(), &signer, d.marketplace).await?);
    }
    let host = accounts.pop().context("the host")?;
    let client = accounts.pop().context("the client")?;
    Ok((config, client, host))
}

/// `sales` offers 1 MiB for 100 periods.
async fn offer(sales: &Sales, period: u64) -> anyhow::Result<()> {
    sales
        .add_availability(Availability::new(
            "a".into(),
            1 << 20,
            100 * period,
            U256::from(1),
            U256::from(10u64).pow(U256::from(12)),
        )?)
        .await;
    Ok(())
}

/// A request of `client` for one slot of 1 KiB, a proof each period.
fn one_slot(client: &MarketplaceClient, duration: u64, expiry: u64, nonce: u8) -> StorageRequest {
    StorageRequest {
        client: client.account(),
        ask: Ask {
            proof_probability: U256::from(1),
            price_per_byte_per_second: U256::from(1),
            collateral_per_byte: U256::from(1),
            slots: 1,
            slot_size: 1024,
            duration,
            max_slot_loss: 0,
        },
        content: Content {
            cid: Cid::for_manifest(&[nonce]).to_bytes(),
            merkle_root: [nonce; 32],
        },
        expiry,
        nonce: [nonce; 32],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proof_lands_in_its_period_on_a_chain_with_real_block_times() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CODEX_LOG")
                .unwrap_or_else(|_| "warn,codex=info".into()),
        )
        .with_test_writer()
        .try_init();
    let block_time: u64 = std::env::var("CODEX_BLOCK_TIME")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let periods: u64 = std::env::var("CODEX_PERIODS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    // Ten blocks a period at least, and room for a proof and two blocks.
    let period = (10 * block_time).max(20);
    let chain = LocalChain::start_with_block_time(block_time).await?;
    let (config, client, host) = market(&chain, period).await?;
    let host = Metered::new(host);

    let sales = Arc::new(Sales::in_memory());
    offer(&sales, period).await?;
    let stop = CancellationToken::new();
    let seller =
        Seller::new(host.clone(), Arc::new(SlowProver), Arc::clone(&sales)).config(SellerConfig {
            poll_interval: Duration::from_secs(1),
            ..SellerConfig::default()
        });
    let task = tokio::spawn(seller.run(stop.clone()));

    let from = client.block_number().await?;
    let request = one_slot(&client, (periods + 3) * period, 4 * period, 9);
    let (id, _) = client.request_storage(&request).await?;
    let slot = request.slot_id(0);
    // Filled, then `periods` whole periods after the fill's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs((periods + 6) * period);
    let filled_in = loop {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the slot was not filled"
        );
        if let Some(s) = sales.sales().into_iter().find(|s| s.request == id)
            && s.state == SaleState::Proving
        {
            break config.period_of(client.timestamp().await?);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let faults = Arc::new(std::sync::Mutex::new(Faults::default()));
    let injector = tokio::spawn(inject_faults(
        chain.provider().clone(),
        host.inner().account(),
        config.clone(),
        filled_in,
        Arc::clone(&faults),
    ));
    const NODE_POLLS: [&str; 4] = ["next_block", "block_number", "block_hash", "events"];
    let node_calls = || -> u64 {
        let by = host.counts().by_method();
        NODE_POLLS.iter().filter_map(|m| by.get(m)).sum()
    };
    let blocks_from = client.block_number().await?;
    let calls_from = host.counts().calls();
    let node_from = node_calls();
    let last = filled_in + periods;
    while config.period_of(client.timestamp().await?) <= last {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the periods did not pass"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let calls = host.counts().calls() - calls_from;
    let node = node_calls() - node_from;
    let blocks = client.block_number().await? - blocks_from;
    stop.cancel();
    task.await?;
    injector.abort();
    let _ = injector.await;
    let faults = faults.lock().map(|f| f.clone()).unwrap_or_default();

    // The periods the proofs landed in, from the chain.
    let mut landed = Vec::new();
    for e in client.events(from, client.block_number().await?).await? {
        if matches!(e.event, MarketEvent::ProofSubmitted { slot: s } if s == slot) {
            let block = chain
                .provider()
                .get_block_by_number(e.block_number.into())
                .await?
                .context("a mined block")?;
            landed.push(config.period_of(block.header.timestamp));
        }
    }
    let sale = sales
        .sales()
        .into_iter()
        .find(|s| s.request == id)
        .context("the sale")?;
    println!(
        "{block_time} s blocks, {period} s periods: filled in period {filled_in}; proofs landed in {landed:?}; \
         the host meant {:?}; over {blocks} blocks the host's own polls made {node} calls ({:.2} a block), \
         its slot {} ({:.2} a block): {:?}",
        sale.proof_periods,
        node as f64 / blocks.max(1) as f64,
        calls - node,
        (calls - node) as f64 / blocks.max(1) as f64,
        host.counts().by_method()
    );
    // The fill's proof (the fill itself) counts for its period; each later one lands
    // in the period it was made for, once.
    let expected: Vec<u64> = (filled_in + 1..=last).collect();
    let after_fill: Vec<u64> = landed
        .iter()
        .copied()
        .filter(|p| (filled_in + 1..=last).contains(p))
        .collect();
    assert_eq!(
        after_fill, expected,
        "a proof in each period, in that period"
    );
    for p in &expected {
        assert!(
            sale.proof_periods.contains(p),
            "the host's book: {:?}",
            sale.proof_periods
        );
    }
    let stats = host.inner().transactions().stats();
    println!("faults: {faults:?}; the host's transactions: {stats:?}");
    if periods >= 2 {
        assert!(
            faults.dropped.is_some() && faults.spiked.is_some(),
            "both faults met a proof: {faults:?}"
        );
        assert!(
            stats.resent >= 2,
            "the dropped proof sent again and the priced-out one replaced: {stats:?}"
        );
    }
    assert!(
        calls - node <= blocks,
        "the slot cost {} calls over {blocks} blocks",
        calls - node
    );
    assert_eq!(
        host.counts().errors(),
        0,
        "no call failed: {:?}",
        host.counts().by_method()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_down_for_three_periods_fills_a_request_made_meanwhile() -> anyhow::Result<()> {
    // Blocks mined on each transaction, and by the test: three periods and 600 blocks
    // (more than one range of logs) pass while the host is down.
    let period = 200;
    let chain = LocalChain::start().await?;
    let (config, client, host) = market(&chain, period).await?;
    let dir = tempfile::tempdir()?;
    let book = dir.path().join("sales.json");
    let seller = |sales: &Arc<Sales>| {
        let stop = CancellationToken::new();
        let seller = Seller::new(host.clone(), Arc::new(SlowProver), Arc::clone(sales)).config(
            SellerConfig {
                poll_interval: Duration::from_millis(250),
                ..SellerConfig::default()
            },
        );
        (stop.clone(), tokio::spawn(seller.run(stop)))
    };
    let sales = Arc::new(Sales::open(book.clone()));
    offer(&sales, period).await?;
    let (stop, task) = seller(&sales);
    let wait = |what: &'static str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        move || -> anyhow::Result<()> {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            Ok(())
        }
    };
    let timeout = wait("the seller's first poll");
    while sales.events_position().is_none() {
        timeout()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    task.await?;
    drop(sales);

    // While the host is down: a request, then three periods.
    let request = one_slot(&client, 20 * period, 10 * period, 8);
    let (id, receipt) = client.request_storage(&request).await?;
    let t = client.timestamp().await?;
    chain.mine(3 * period).await?;
    chain.mine_at(t + 3 * period).await?;
    let now = client.timestamp().await?;
    assert!(
        config.period_of(now) >= config.period_of(t) + 3,
        "three periods passed: {t} -> {now}"
    );

    let sales = Arc::new(Sales::open(book));
    let from = sales
        .events_position()
        .context("the book keeps where the seller stopped")?
        .next_block();
    assert!(
        from <= receipt.block_number,
        "the restart reads from block {from}, before the request's {}",
        receipt.block_number
    );
    assert!(sales.sales().is_empty(), "the request was not seen before");
    let (stop, task) = seller(&sales);
    let timeout = wait("the restarted host fills the slot");
    let sale = loop {
        timeout()?;
        if let Some(s) = sales.sales().into_iter().find(|s| s.request == id)
            && s.state == SaleState::Proving
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop.cancel();
    task.await?;
    assert_eq!(sale.slot, request.slot_id(0));
    assert_eq!(host.get_host(sale.slot).await?, Some(host.account()));
    println!(
        "restarted {} blocks after the request, read from block {from}; filled",
        client.block_number().await? - receipt.block_number
    );
    Ok(())
}

/// What [`inject_faults`] did: the periods of the proof it dropped and of the one it
/// priced out.
#[derive(Clone, Debug, Default)]
struct Faults {
    dropped: Option<u64>,
    spiked: Option<u64>,
}

/// Watches anvil's pool for `host`'s `submitProof`: drops the first one of a period
/// after `filled_in` from the pool, and prices out the first one of a later period
/// (the next block's base fee set to ten times its fee cap). Records both in `faults`.
async fn inject_faults(
    provider: codex::market::alloy::providers::DynProvider,
    host: codex::market::alloy::primitives::Address,
    config: MarketplaceConfig,
    filled_in: u64,
    faults: Arc<std::sync::Mutex<Faults>>,
) {
    use codex::market::alloy::sol_types::SolCall;
    let selector = hex::encode(codex::market::bindings::Marketplace::submitProofCall::SELECTOR);
    let raw = |method: &'static str, params: serde_json::Value| {
        let provider = provider.clone();
        async move {
            provider
                .raw_request::<_, serde_json::Value>(method.into(), params)
                .await
                .ok()
        }
    };
    let mut dropped: Option<(String, u64)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(content) = raw("txpool_content", serde_json::json!([])).await else {
            continue;
        };
        let Some(block) = raw("eth_getBlockByNumber", serde_json::json!(["latest", false])).await
        else {
            continue;
        };
        let Some(now) = block["timestamp"]
            .as_str()
            .and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok())
        else {
            continue;
        };
        let period = config.period_of(now);
        let pending = content["pending"]
            .as_object()
            .into_iter()
            .flat_map(|by| by.iter())
            .filter(|(from, _)| from.eq_ignore_ascii_case(&host.to_string()))
            .flat_map(|(_, txs)| {
                txs.as_object()
                    .into_iter()
                    .flat_map(|m| m.values().cloned())
            });
        for tx in pending.collect::<Vec<_>>() {
            let input = tx["input"].as_str().unwrap_or_default();
            if !input.trim_start_matches("0x").starts_with(&selector) {
                continue;
            }
            let hash = tx["hash"].as_str().unwrap_or_default().to_string();
            match &dropped {
                None if period > filled_in => {
                    let done = raw("anvil_dropTransaction", serde_json::json!([hash]))
                        .await
                        .is_some();
                    if done {
                        if let Ok(mut f) = faults.lock() {
                            f.dropped = Some(period);
                        }
                        dropped = Some((hash, period));
                    }
                }
                Some((h, p)) if *h != hash && period > *p => {
                    let Some(cap) = tx["maxFeePerGas"]
                        .as_str()
                        .and_then(|f| u128::from_str_radix(f.trim_start_matches("0x"), 16).ok())
                    else {
                        continue;
                    };
                    let spike = codex::market::alloy::primitives::U256::from(cap * 10);
                    if raw(
                        "anvil_setNextBlockBaseFeePerGas",
                        serde_json::json!([spike]),
                    )
                    .await
                    .is_some()
                    {
                        if let Ok(mut f) = faults.lock() {
                            f.spiked = Some(period);
                        }
                        return;
                    }
                }
                _ => {}
            }
        }
    }
}
