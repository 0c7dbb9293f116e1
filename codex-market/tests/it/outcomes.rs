//! Cancellation after expiry and failure after too many lost slots, with the
//! refunds and payouts of each; each scenario on anvil and on the in-memory marketplace.

use anyhow::Result;
use codex_market::alloy::primitives::U256;
use codex_market::deploy::VerifierSource;
use codex_market::memory::TestVerifier;
use codex_market::*;

use crate::common::*;

fn u(x: u64) -> U256 {
    U256::from(x)
}

#[tokio::test]
async fn cancelled_after_expiry_refunds_client_and_pays_early_host() -> Result<()> {
    let m = Market::start(MarketplaceConfig::default(), VerifierSource::Test).await?;
    cancelled_after_expiry(&m).await
}

#[tokio::test]
async fn cancelled_after_expiry_refunds_client_and_pays_early_host_in_memory() -> Result<()> {
    cancelled_after_expiry(&Memory::start(MarketplaceConfig::default(), TestVerifier)?).await
}

async fn cancelled_after_expiry<F: Fixture>(m: &F) -> Result<()> {
    let client = m.account(1).await?;
    let a = m.account(2).await?;
    let b = m.account(3).await?;
    let market = m.market_address();
    let who = [client.account(), a.account(), b.account(), market];
    let t = u(TOKENS);

    let expiry = 600;
    let request = request(client.account(), 2, 3600, expiry, 2);
    let ask = &request.ask;
    let (pps, collateral, max_price) = (
        ask.price_per_slot_per_second(),
        ask.collateral_per_slot(),
        ask.max_price(),
    );
    let p0 = m.future_period().await?;
    client.approve(max_price).await?;
    m.at(m.period_start(p0)).await?;
    let (id, r) = client.request_storage(&request).await?;
    let expires_at = m.block_timestamp(r.block_number).await? + expiry;
    assert_eq!(client.request_expiry(id).await?, expires_at);

    // A fills slot 0; B reserves slot 1 but is too late to fill it.
    a.reserve_slot(id, 0).await?;
    b.reserve_slot(id, 1).await?;
    a.approve_collateral(id, 0).await?;
    b.approve_collateral(id, 1).await?;
    let filled_at = m.period_start(p0) + 100;
    m.at(filled_at).await?;
    a.fill_slot(id, 0, ANY_PROOF).await?;
    assert_eq!(
        m.balances(&who).await?,
        vec![t - max_price, t - collateral, t, max_price + collateral]
    );

    m.mine_at(expires_at + 1).await?;
    assert_eq!(client.request_state(id).await?, RequestState::Cancelled);
    assert_eq!(
        a.slot_state(request.slot_id(0)).await?,
        SlotState::Cancelled
    );
    assert_eq!(client.request_end(id).await?, expires_at);
    assert_reverts(
        b.fill_slot(id, 1, ANY_PROOF).await,
        MarketplaceError::StartNotBeforeExpiry,
    );
    assert!(!b.can_reserve_slot(id, 0).await?);

    // The host is paid until expiry and gets its collateral back.
    a.free_slot(request.slot_id(0)).await?;
    let host_pay = u(expires_at - filled_at) * pps;
    // The client gets back everything no host earned.
    let first = client.block_number().await? + 1;
    client.withdraw_funds(id).await?;
    let refund = max_price - host_pay;
    assert_eq!(
        m.balances(&who).await?,
        vec![t - max_price + refund, t + host_pay, t, U256::ZERO]
    );
    let events = client.events(first, client.block_number().await?).await?;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].event,
        MarketEvent::RequestCancelled { request: id }
    );
    assert_reverts(
        client.withdraw_funds(id).await,
        MarketplaceError::NothingToWithdraw,
    );
    Ok(())
}

#[tokio::test]
async fn cancelled_without_hosts_refunds_everything_to_another_account() -> Result<()> {
    let m = Market::start(MarketplaceConfig::default(), VerifierSource::Test).await?;
    cancelled_without_hosts(&m).await
}

#[tokio::test]
async fn cancelled_without_hosts_refunds_everything_to_another_account_in_memory() -> Result<()> {
    cancelled_without_hosts(&Memory::start(MarketplaceConfig::default(), TestVerifier)?).await
}

async fn cancelled_without_hosts<F: Fixture>(m: &F) -> Result<()> {
    let client = m.account(1).await?;
    let other = m.account(2).await?;
    let request = request(client.account(), 2, 3600, 100, 3);
    let (id, _) = client.request_storage(&request).await?;
    let expiry = client.request_expiry(id).await?;
    m.mine_at(expiry + 1).await?;
    client.withdraw_funds_to(id, other.account()).await?;
    let t = u(TOKENS);
    assert_eq!(
        m.balances(&[client.account(), other.account(), m.market_address()])
            .await?,
        vec![
            t - request.ask.max_price(),
            t + request.ask.max_price(),
            U256::ZERO
        ]
    );
    Ok(())
}

#[tokio::test]
async fn failed_request_refunds_client_in_full_and_hosts_lose_collateral() -> Result<()> {
    let m = Market::start(MarketplaceConfig::default(), VerifierSource::Test).await?;
    failed_request(&m).await
}

#[tokio::test]
async fn failed_request_refunds_client_in_full_and_hosts_lose_collateral_in_memory() -> Result<()> {
    failed_request(&Memory::start(MarketplaceConfig::default(), TestVerifier)?).await
}

async fn failed_request<F: Fixture>(m: &F) -> Result<()> {
    let client = m.account(1).await?;
    let a = m.account(2).await?;
    let b = m.account(3).await?;
    let market = m.market_address();
    let who = [client.account(), a.account(), b.account(), market];
    let t = u(TOKENS);

    let mut request = request(client.account(), 2, 3600, 600, 4);
    request.ask.max_slot_loss = 0;
    let (collateral, max_price) = (request.ask.collateral_per_slot(), request.ask.max_price());
    let (id, _) = client.request_storage(&request).await?;
    for (i, h) in [&a, &b].iter().enumerate() {
        h.reserve_slot(id, i as u64).await?;
        h.fill_slot(id, i as u64, ANY_PROOF).await?;
    }
    assert_eq!(client.request_state(id).await?, RequestState::Started);
    assert_eq!(
        m.balances(&who).await?,
        vec![
            t - max_price,
            t - collateral,
            t - collateral,
            max_price + collateral * u(2)
        ]
    );
    // Withdrawing while the request runs is not allowed.
    assert_reverts(
        client.withdraw_funds(id).await,
        MarketplaceError::InvalidState,
    );

    // B gives up its slot: 100 % of its collateral is lost, and with maxSlotLoss 0
    // the request fails.
    let first = client.block_number().await? + 1;
    b.free_slot(request.slot_id(1)).await?;
    assert_eq!(client.request_state(id).await?, RequestState::Failed);
    assert_eq!(a.slot_state(request.slot_id(0)).await?, SlotState::Failed);
    let events: Vec<_> = client
        .events(first, client.block_number().await?)
        .await?
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        vec![
            MarketEvent::SlotFreed {
                request: id,
                slot_index: 1
            },
            MarketEvent::RequestFailed { request: id }
        ]
    );
    // No one can reserve or fill a slot of a failed request.
    assert!(!b.can_reserve_slot(id, 1).await?);

    // A frees its slot of the failed request and gets nothing.
    a.free_slot(request.slot_id(0)).await?;
    assert_eq!(a.my_slots().await?, vec![]);
    assert_eq!(
        m.balances(&who).await?,
        vec![
            t - max_price,
            t - collateral,
            t - collateral,
            max_price + collateral * u(2)
        ]
    );

    // The client gets the full price back; both collaterals stay in the contract.
    client.withdraw_funds(id).await?;
    assert_eq!(
        m.balances(&who).await?,
        vec![t, t - collateral, t - collateral, collateral * u(2)]
    );
    Ok(())
}

/// A node drives the marketplace through the trait.
async fn node_flow(
    client: &impl Marketplace,
    host: &impl Marketplace,
    request: &StorageRequest,
) -> Result<()> {
    let (id, _) = client.request_storage(request).await?;
    assert_eq!(client.my_requests().await?, vec![id]);
    host.reserve_slot(id, 0).await?;
    host.fill_slot(id, 0, ANY_PROOF).await?;
    let slot = request.slot_id(0);
    assert_eq!(host.slot_state(slot).await?, SlotState::Filled);
    assert_eq!(host.get_host(slot).await?, Some(host.account()));
    assert_eq!(host.my_slots().await?, vec![slot]);
    assert_eq!(client.request_state(id).await?, RequestState::Started);
    assert_eq!(client.get_request(id).await?, *request);
    let (events, next) = host.events_since(0).await?;
    assert!(
        events
            .iter()
            .any(|e| e.event == MarketEvent::RequestFulfilled { request: id })
    );
    assert_eq!(host.events_since(next).await?.0, vec![]);
    // the fill's period needs no further proof; submitting again in it is refused
    assert!(!host.is_proof_required(slot).await?);
    assert_reverts(
        host.submit_proof(slot, ANY_PROOF).await,
        MarketplaceError::ProofAlreadySubmitted,
    );
    assert_eq!(host.next_block_challenge(slot).await?.len(), 32);
    assert!(host.current_period().await? > 0);
    Ok(())
}

#[tokio::test]
async fn marketplace_trait_on_chain() -> Result<()> {
    let m = Market::start(MarketplaceConfig::default(), VerifierSource::Test).await?;
    let client = m.account(1).await?;
    let host = m.account(2).await?;
    let r = request(client.account(), 1, 3600, 600, 5);
    node_flow(&client, &host, &r).await
}

#[tokio::test]
async fn marketplace_trait_in_memory() -> Result<()> {
    let m = Memory::start(MarketplaceConfig::default(), TestVerifier)?;
    let client = m.account(1).await?;
    let host = m.account(2).await?;
    let r = request(client.account(), 1, 3600, 600, 5);
    node_flow(&client, &host, &r).await
}
