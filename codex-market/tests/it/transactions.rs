//! The transaction manager on anvil with automine off, blocks mined by the test: many
//! concurrent calls from one account, a transaction dropped from the pool, one priced
//! out by a base-fee spike, a fee cap, and a revert that only happens on chain.

use std::time::Duration;

use anyhow::{Result, ensure};
use codex_market::alloy::primitives::{B256, U256};
use codex_market::alloy::providers::Provider;
use codex_market::deploy::{VerifierSource, mint, signing_provider};
use codex_market::*;

use crate::common::*;

/// Fast settings for a chain the test mines: replacements after 1 s.
fn quick() -> TxConfig {
    TxConfig {
        receipt_timeout: Duration::from_secs(1),
        give_up_after: Duration::from_secs(30),
        poll_interval: Duration::from_millis(50),
        ..TxConfig::default()
    }
}

/// A market with automine off, and account 1 funded, connected with `txs`.
async fn manual_market(txs: TxConfig) -> Result<(Market, MarketplaceClient)> {
    let market = Market::start(MarketplaceConfig::default(), VerifierSource::Test).await?;
    // Funded while blocks are still mined per transaction.
    let signer = market.chain.account(1).await?;
    mint(
        &signing_provider(market.chain.url(), &signer)?,
        market.deployment.token,
        signer.address(),
        U256::from(TOKENS),
    )
    .await?;
    let client = MarketplaceClient::connect_with(
        market.chain.url(),
        &signer,
        market.deployment.marketplace,
        txs,
    )
    .await?;
    let _: serde_json::Value = market
        .chain
        .provider()
        .raw_request("evm_setAutomine".into(), (false,))
        .await?;
    Ok((market, client))
}

/// Hashes of the pending transactions in anvil's pool.
async fn pool(market: &Market) -> Result<Vec<B256>> {
    let content: serde_json::Value = market
        .chain
        .provider()
        .raw_request("txpool_content".into(), ())
        .await?;
    let mut hashes = Vec::new();
    if let Some(by_sender) = content["pending"].as_object() {
        for txs in by_sender.values() {
            for tx in txs.as_object().into_iter().flat_map(|m| m.values()) {
                if let Some(h) = tx["hash"].as_str() {
                    hashes.push(h.parse()?);
                }
            }
        }
    }
    Ok(hashes)
}

/// Waits until the pool holds `n` transactions (at most 20 s).
async fn pool_holds(market: &Market, n: usize) -> Result<Vec<B256>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let hashes = pool(market).await?;
        if hashes.len() >= n {
            return Ok(hashes);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the pool holds {} transactions, not {n}",
            hashes.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Mines a block every `every` until the returned handle is aborted.
fn miner(market: &Market, every: Duration) -> tokio::task::JoinHandle<()> {
    let provider = market.chain.provider().clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let _: Result<serde_json::Value, _> = provider.raw_request("evm_mine".into(), ()).await;
        }
    })
}

#[tokio::test]
async fn concurrent_calls_from_one_account_take_their_own_nonces_and_allowance() -> Result<()> {
    let (market, client) = manual_market(quick()).await?;
    let mine = miner(&market, Duration::from_millis(300));
    let account = client.account();
    let start = client.balance().await?;
    let requests: Vec<StorageRequest> = (0..8u8)
        .map(|i| request(account, 2, 3600, 600, 100 + i))
        .collect();
    // Eight clients' worth of work on one account at once: each pulls its own price,
    // so the approvals must add up; every call needs its own nonce.
    let calls: Vec<_> = requests
        .iter()
        .map(|r| {
            let (c, r) = (client.clone(), r.clone());
            tokio::spawn(async move { c.request_storage(&r).await })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await?);
    }
    mine.abort();
    for (r, result) in requests.iter().zip(results) {
        let (id, receipt) = result?;
        assert_eq!(id, r.id());
        assert!(receipt.block_number > 0);
        assert_eq!(client.request_state(id).await?, RequestState::New);
    }
    let paid: U256 = requests.iter().map(|r| r.ask.max_price()).sum();
    assert_eq!(
        client.balance().await?,
        start - paid,
        "every request paid once"
    );
    let stats = client.transactions().stats();
    assert_eq!(
        (stats.nonce_refused, stats.nonce_gaps, stats.nonce_taken),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.sent, stats.succeeded, "{stats:?}");
    assert!(stats.sent >= 9, "8 requests and an approval: {stats:?}");
    Ok(())
}

#[tokio::test]
async fn a_dropped_transaction_is_sent_again() -> Result<()> {
    let (market, client) = manual_market(quick()).await?;
    let sending = {
        let c = client.clone();
        tokio::spawn(async move { c.approve(U256::from(77)).await })
    };
    let first = pool_holds(&market, 1).await?;
    let dropped: Option<B256> = market
        .chain
        .provider()
        .raw_request("anvil_dropTransaction".into(), (first[0],))
        .await?;
    assert_eq!(dropped, Some(first[0]), "dropped from the pool");
    // The manager finds it gone and sends it again (the same transaction).
    let again = pool_holds(&market, 1).await?;
    assert_eq!(again, first);
    market.chain.mine(1).await?;
    let receipt = sending.await??;
    assert_eq!(receipt.hash, first[0]);
    assert_eq!(client.allowance().await?, U256::from(77));
    let stats = client.transactions().stats();
    assert_eq!(
        (stats.sent, stats.resent, stats.succeeded),
        (1, 1, 1),
        "{stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_receipt_read_that_fails_is_tried_again() -> Result<()> {
    let market = Market::start(MarketplaceConfig::default(), VerifierSource::Test).await?;
    // Every second receipt read through the proxy fails with HTTP 502.
    let proxy = crate::proxy::Proxy::start_with(market.chain.url(), 500, 0, 2).await?;
    let signer = market.chain.account(1).await?;
    let client = MarketplaceClient::connect_with(
        &proxy.url,
        &signer,
        market.deployment.marketplace,
        quick(),
    )
    .await?;
    for amount in [5u64, 6, 7] {
        client.approve(U256::from(amount)).await?;
        assert_eq!(client.allowance().await?, U256::from(amount));
    }
    let stats = client.transactions().stats();
    assert_eq!((stats.sent, stats.succeeded), (3, 3), "{stats:?}");
    assert!(stats.read_errors > 0, "{stats:?}");
    assert!(
        proxy
            .counts
            .failed_receipts
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    Ok(())
}

/// The next block's base fee, set far above what the first attempt offers.
async fn spike(market: &Market, wei: u128) -> Result<()> {
    let _: serde_json::Value = market
        .chain
        .provider()
        .raw_request("anvil_setNextBlockBaseFeePerGas".into(), (U256::from(wei),))
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_transaction_priced_out_by_a_base_fee_spike_is_replaced_and_lands() -> Result<()> {
    let (market, client) = manual_market(quick()).await?;
    let before = market
        .chain
        .provider()
        .estimate_eip1559_fees()
        .await?
        .max_fee_per_gas;
    let high = (before * 50).max(10_000_000_000);
    let sending = {
        let c = client.clone();
        tokio::spawn(async move { c.approve(U256::from(5)).await })
    };
    let first = pool_holds(&market, 1).await?;
    // The base fee jumps in the next block, which leaves the transaction out.
    spike(&market, high).await?;
    market.chain.mine(1).await?;
    let early = market
        .chain
        .provider()
        .get_transaction_receipt(first[0])
        .await?;
    assert!(early.is_none(), "mined in the spiked block: {early:?}");
    // After the receipt deadline the manager offers more than the new base fee.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = pool(&market).await?;
        if now.len() == 1 && now != first {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            for h in &now {
                let tx = market.chain.provider().get_transaction_by_hash(*h).await?;
                eprintln!("pending {h}: {tx:?}");
            }
            let block = market
                .chain
                .provider()
                .get_block_by_number(Default::default())
                .await?;
            eprintln!(
                "latest base fee {:?}, high {high}",
                block.map(|b| b.header.base_fee_per_gas)
            );
            anyhow::bail!("never replaced");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    market.chain.mine(1).await?;
    let receipt = sending.await??;
    assert_ne!(receipt.hash, first[0], "the replacement landed");
    let tx = market
        .chain
        .provider()
        .get_transaction_receipt(receipt.hash)
        .await?
        .expect("mined");
    assert!(
        tx.effective_gas_price >= high * 7 / 8,
        "paid the spiked base fee"
    );
    assert_eq!(client.allowance().await?, U256::from(5));
    let stats = client.transactions().stats();
    assert!(stats.resent >= 1, "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn the_fee_cap_holds_and_a_transaction_that_cannot_land_gives_up() -> Result<()> {
    let mut txs = quick();
    txs.give_up_after = Duration::from_secs(4);
    let (market, client) = manual_market(txs).await?;
    let first = market
        .chain
        .provider()
        .estimate_eip1559_fees()
        .await?
        .max_fee_per_gas;
    let cap = first * 2;
    drop(client);
    let signer = market.chain.account(1).await?;
    let capped = MarketplaceClient::connect_with(
        market.chain.url(),
        &signer,
        market.deployment.marketplace,
        TxConfig {
            max_fee_per_gas: Some(cap),
            give_up_after: Duration::from_secs(4),
            ..quick()
        },
    )
    .await?;
    let sending = {
        let c = capped.clone();
        tokio::spawn(async move { c.approve(U256::from(9)).await })
    };
    pool_holds(&market, 1).await?;
    // Base fees fall by at most 1/8 a block: keep them above the cap meanwhile.
    for _ in 0..6 {
        spike(&market, first * 100).await?;
        market.chain.mine(1).await?;
        tokio::time::sleep(Duration::from_millis(700)).await;
        for hash in pool(&market).await? {
            let tx = market
                .chain
                .provider()
                .get_transaction_by_hash(hash)
                .await?
                .expect("pending");
            use codex_market::alloy::consensus::Transaction;
            assert!(tx.max_fee_per_gas() <= cap, "offered above the cap");
        }
    }
    match sending.await? {
        Err(Error::Stuck { call, .. }) => assert_eq!(call, "approve"),
        other => panic!("expected Stuck, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_revert_that_happens_only_on_chain_is_decoded() -> Result<()> {
    let market = Market::start(MarketplaceConfig::default(), VerifierSource::Test).await?;
    let client = market.account(1).await?;
    let (a, b) = (market.account(2).await?, market.account(3).await?);
    let r = request(client.account(), 2, 3600, 600, 7);
    let (id, _) = client.request_storage(&r).await?;
    for host in [&a, &b] {
        host.reserve_slot(id, 0).await?;
        host.approve_collateral(id, 0).await?;
    }
    let _: serde_json::Value = market
        .chain
        .provider()
        .raw_request("evm_setAutomine".into(), (false,))
        .await?;
    // A's fill is estimated and sent; then B's, unestimated with a far higher tip,
    // goes first in the block: A's reverts on chain only.
    let filling = {
        let a = a.clone();
        tokio::spawn(async move { a.fill_slot(id, 0, ANY_PROOF).await })
    };
    pool_holds(&market, 1).await?;
    let fees = market.chain.provider().estimate_eip1559_fees().await?;
    let _sent = b
        .contract()
        .fillSlot(id.0, 0, ANY_PROOF.to_vec().into())
        .from(b.account())
        .gas(2_000_000)
        .max_fee_per_gas(fees.max_fee_per_gas * 10)
        .max_priority_fee_per_gas(fees.max_fee_per_gas * 5)
        .send()
        .await?;
    pool_holds(&market, 2).await?;
    market.chain.mine(1).await?;
    assert_reverts(filling.await?, MarketplaceError::SlotNotFree);
    let stats = a.transactions().stats();
    assert_eq!(stats.reverted, 1);
    assert_eq!(stats.reverts.len(), 1, "{stats:?}");
    assert_eq!(stats.reverts[0].call, "fillSlot");
    assert_eq!(
        stats.reverts[0].error,
        Some(codex_market::Revert::Marketplace(
            MarketplaceError::SlotNotFree
        )),
        "the record of the revert says why"
    );
    assert_eq!(
        b.get_host(r.slot_id(0)).await?,
        Some(b.account()),
        "B holds the slot"
    );
    Ok(())
}
