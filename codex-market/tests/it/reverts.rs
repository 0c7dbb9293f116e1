//! Every custom error of the contracts, each from a real call on anvil, decoded
//! into `MarketplaceError` with the request or slot the call was about; and the
//! same errors from the same calls on the in-memory marketplace.

use std::collections::HashSet;

use anyhow::Result;
use codex_market::alloy::primitives::{Address, B256, U256};
use codex_market::deploy::{TokenSource, VerifierSource, deploy};
use codex_market::memory::{MemoryMarketplace, TestVerifier};
use codex_market::*;

use crate::common::*;

use MarketplaceError as E;

/// A change that makes a valid value invalid.
type Change<T> = fn(&mut T);

/// The custom errors seen so far.
#[derive(Default)]
struct Seen(HashSet<MarketplaceError>);

impl Seen {
    #[track_caller]
    fn expect<T: std::fmt::Debug>(&mut self, result: Result<T, Error>, expected: MarketplaceError) {
        assert_reverts(result, expected);
        self.0.insert(expected);
    }
}

/// Every custom error of the contracts, produced by a real call: the scenarios
/// below run one after the other, each on its own chain.
#[tokio::test]
async fn every_custom_error_is_produced_and_decoded() -> Result<()> {
    let mut seen = Seen::default();
    configuration_errors_at_deployment(&mut seen).await?;
    deployment_needs_block_257(&mut seen).await?;
    let config = MarketplaceConfig::default();
    request_errors(
        &Market::start(config.clone(), VerifierSource::Test).await?,
        &mut seen,
    )
    .await?;
    slot_and_proof_errors(
        &Market::start(config.clone(), VerifierSource::Test).await?,
        &mut seen,
    )
    .await?;
    let refusing = Market::start_with(config, TokenSource::Refusing, VerifierSource::Test).await?;
    refused_transfers(&refusing, &mut seen).await?;
    seen.all()
}

/// The same calls on the in-memory marketplace revert with the same errors.
#[tokio::test]
async fn every_custom_error_is_produced_in_memory() -> Result<()> {
    let mut seen = Seen::default();
    memory_configuration_errors(&mut seen)?;
    let config = MarketplaceConfig::default();
    request_errors(&Memory::start(config.clone(), TestVerifier)?, &mut seen).await?;
    slot_and_proof_errors(&Memory::start(config.clone(), TestVerifier)?, &mut seen).await?;
    refused_transfers(&Memory::start(config, TestVerifier)?, &mut seen).await?;
    seen.all()
}

impl Seen {
    fn all(&self) -> Result<()> {
        let all: HashSet<_> = MarketplaceError::ALL.iter().copied().collect();
        let missing: Vec<_> = all.difference(&self.0).collect();
        assert!(
            missing.is_empty(),
            "custom errors no scenario produced: {missing:?}"
        );
        Ok(())
    }
}

/// The configuration changes of `configuration_errors_at_deployment`.
fn configuration_cases() -> [(Change<MarketplaceConfig>, E); 5] {
    [
        (
            |c| c.collateral.repair_reward_percentage = 101,
            E::RepairRewardPercentageTooHigh,
        ),
        (
            |c| c.collateral.slash_percentage = 101,
            E::SlashPercentageTooHigh,
        ),
        (
            |c| c.collateral.max_number_of_slashes = 6,
            E::MaximumSlashingTooHigh,
        ), // 6 * 20 > 100
        (
            |c| c.collateral.validator_reward_percentage = 101,
            E::ValidatorRewardPercentageTooHigh,
        ),
        (|c| c.proofs.period = 0, E::InvalidSecondsPerPeriod),
    ]
}

fn memory_configuration_errors(seen: &mut Seen) -> Result<()> {
    for (change, error) in configuration_cases() {
        let mut config = MarketplaceConfig::default();
        change(&mut config);
        let result = MemoryMarketplace::deploy(config, TestVerifier);
        let e = result.as_ref().err().and_then(|e| e.target());
        seen.expect(result, error);
        assert_eq!(e, Some(Target::Contract("Marketplace")));
    }
    let mut config = MarketplaceConfig::default();
    config.collateral.max_number_of_slashes = 5;
    config.collateral.repair_reward_percentage = 100;
    MemoryMarketplace::deploy(config, TestVerifier)?;
    // a chain of 256 blocks is too short; the next block is enough
    seen.expect(
        MemoryMarketplace::builder().deploy_block(256).deploy(),
        E::InsufficientBlockHeight,
    );
    MemoryMarketplace::builder().deploy_block(257).deploy()?;
    Ok(())
}

async fn configuration_errors_at_deployment(seen: &mut Seen) -> Result<()> {
    let chain = LocalChain::start().await?;
    let deployer = chain.account(0).await?;
    let provider = chain.provider_for(&deployer);
    for (change, error) in configuration_cases() {
        let mut config = MarketplaceConfig::default();
        change(&mut config);
        let result = deploy(
            &provider,
            &config,
            TokenSource::TestToken,
            VerifierSource::Test,
        )
        .await;
        let e = result.as_ref().err().and_then(|e| e.target());
        seen.expect(result, error);
        assert_eq!(e, Some(Target::Contract("Marketplace")));
    }
    // The limits themselves are allowed.
    let mut config = MarketplaceConfig::default();
    config.collateral.max_number_of_slashes = 5;
    config.collateral.repair_reward_percentage = 100;
    deploy(
        &provider,
        &config,
        TokenSource::TestToken,
        VerifierSource::Test,
    )
    .await?;
    Ok(())
}

async fn deployment_needs_block_257(seen: &mut Seen) -> Result<()> {
    let chain = LocalChain::start_empty().await?;
    let deployer = chain.account(0).await?;
    let provider = chain.provider_for(&deployer);
    let config = MarketplaceConfig::default();
    seen.expect(
        deploy(
            &provider,
            &config,
            TokenSource::TestToken,
            VerifierSource::Test,
        )
        .await,
        E::InsufficientBlockHeight,
    );
    chain.mine(256).await?;
    deploy(
        &provider,
        &config,
        TokenSource::TestToken,
        VerifierSource::Test,
    )
    .await?;
    Ok(())
}

async fn request_errors<F: Fixture>(m: &F, seen: &mut Seen) -> Result<()> {
    let client = m.account(1).await?;
    let other = m.account(2).await?;
    let good = request(client.account(), 2, 3600, 600, 9);
    let cases: [(Change<StorageRequest>, E); 10] = [
        (
            |r| r.client = Address::repeat_byte(1),
            E::InvalidClientAddress,
        ),
        (|r| r.ask.duration = 0, E::InsufficientDuration),
        (
            |r| r.ask.duration = 30 * 24 * 3600 + 1,
            E::DurationExceedsLimit,
        ),
        (|r| r.expiry = 0, E::InvalidExpiry),
        (|r| r.ask.slots = 0, E::InsufficientSlots),
        (|r| r.ask.max_slot_loss = 3, E::InvalidMaxSlotLoss),
        (
            |r| r.ask.proof_probability = U256::ZERO,
            E::InsufficientProofProbability,
        ),
        (
            |r| r.ask.collateral_per_byte = U256::ZERO,
            E::InsufficientCollateral,
        ),
        (
            |r| r.ask.price_per_byte_per_second = U256::ZERO,
            E::InsufficientReward,
        ),
        (|r| r.content.cid.clear(), E::InvalidCid),
    ];
    for (change, error) in cases {
        let mut r = good.clone();
        change(&mut r);
        if error == E::InsufficientSlots {
            r.ask.max_slot_loss = 0;
        }
        let result = client.request_storage(&r).await;
        if let Err(e) = &result {
            assert_eq!(e.target(), Some(Target::Request(r.id())));
        }
        seen.expect(result, error);
    }
    // expiry not below the duration
    let mut r = good.clone();
    r.expiry = r.ask.duration;
    seen.expect(client.request_storage(&r).await, E::InvalidExpiry);

    let (id, _) = client.request_storage(&good).await?;
    seen.expect(client.request_storage(&good).await, E::RequestAlreadyExists);
    let unknown = RequestId(B256::repeat_byte(0xee));
    seen.expect(client.get_request(unknown).await, E::UnknownRequest);
    seen.expect(client.request_state(unknown).await, E::UnknownRequest);
    seen.expect(client.withdraw_funds(unknown).await, E::UnknownRequest);
    seen.expect(client.withdraw_funds(id).await, E::InvalidState);
    seen.expect(other.withdraw_funds(id).await, E::InvalidClientAddress);
    Ok(())
}

async fn slot_and_proof_errors<F: Fixture>(m: &F, seen: &mut Seen) -> Result<()> {
    let config = m.config().clone();
    let client = m.account(1).await?;
    let (a, b, c, validator) = (
        m.account(2).await?,
        m.account(3).await?,
        m.account(4).await?,
        m.account(5).await?,
    );
    let request = request(client.account(), 2, 3600, 3000, 10);
    let p0 = m.future_period().await?;
    client.approve(request.ask.max_price()).await?;
    m.at(m.period_start(p0) + 1).await?;
    let (id, _) = client.request_storage(&request).await?;
    let (slot0, slot1) = (request.slot_id(0), request.slot_id(1));

    // reservations and fills
    seen.expect(a.fill_slot(id, 2, ANY_PROOF).await, E::InvalidSlot);
    seen.expect(
        a.fill_slot(RequestId(B256::ZERO), 0, ANY_PROOF).await,
        E::UnknownRequest,
    );
    let no_reservation = a.fill_slot(id, 0, ANY_PROOF).await;
    assert_eq!(
        no_reservation.as_ref().err().and_then(|e| e.target()),
        Some(Target::Slot {
            slot: slot0,
            index: Some(0)
        })
    );
    seen.expect(no_reservation, E::ReservationRequired);
    a.reserve_slot(id, 0).await?;
    seen.expect(a.reserve_slot(id, 0).await, E::ReservationNotAllowed);
    seen.expect(a.reserve_slot(id, 2).await, E::ReservationNotAllowed);
    b.reserve_slot(id, 0).await?;
    seen.expect(a.fill_slot(id, 0, &[]).await, E::InvalidProof);
    seen.expect(a.fill_slot(id, 0, &[0, 1]).await, E::InvalidProof);
    a.approve_collateral(id, 0).await?;
    b.approve_collateral(id, 0).await?;
    m.at(m.period_start(p0) + 20).await?;
    a.fill_slot(id, 0, ANY_PROOF).await?;
    seen.expect(b.fill_slot(id, 0, ANY_PROOF).await, E::SlotNotFree);
    seen.expect(b.reserve_slot(id, 0).await, E::ReservationNotAllowed);

    // proofs: one per period, by the host only
    seen.expect(
        a.submit_proof(slot0, ANY_PROOF).await,
        E::ProofAlreadySubmitted,
    );
    seen.expect(
        b.submit_proof(slot0, ANY_PROOF).await,
        E::ProofNotSubmittedByHost,
    );
    seen.expect(
        a.submit_proof(slot1, ANY_PROOF).await,
        E::ProofNotSubmittedByHost,
    );

    // free slots
    seen.expect(a.free_slot(slot1).await, E::SlotIsFree);
    seen.expect(a.current_collateral(slot1).await, E::SlotIsFree);
    seen.expect(a.get_active_slot(slot1).await, E::SlotIsFree);
    seen.expect(b.free_slot(slot0).await, E::InvalidSlotHost);
    seen.expect(
        validator.mark_proof_as_missing(slot1, p0).await,
        E::SlotNotAcceptingProofs,
    );

    // missing proofs: period p0 has not ended
    seen.expect(
        validator.mark_proof_as_missing(slot0, p0).await,
        E::PeriodNotEnded,
    );
    seen.expect(
        validator.can_mark_proof_as_missing(slot0, p0).await,
        E::PeriodNotEnded,
    );
    // p0 had the proof of the fill
    m.at(m.period_start(p0 + 1) + 1).await?;
    seen.expect(
        validator.mark_proof_as_missing(slot0, p0).await,
        E::ProofNotMissing,
    );
    // p1: a proof in p1 makes it not missing; none in p2, whose pointer is in the downtime
    m.leave_downtime(slot0, p0 + 1).await?;
    a.submit_proof(slot0, ANY_PROOF).await?;
    seen.expect(
        a.submit_proof(slot0, ANY_PROOF).await,
        E::ProofAlreadySubmitted,
    );
    m.enter_downtime(slot0, p0 + 2).await?;
    m.at(m.period_start(p0 + 3) + 1).await?;
    seen.expect(
        validator.mark_proof_as_missing(slot0, p0 + 2).await,
        E::ProofNotRequired,
    );
    // p3 missed and marked; marking it again is refused
    m.leave_downtime(slot0, p0 + 3).await?;
    m.mine_at(m.period_start(p0 + 4) + 1).await?;
    validator.can_mark_proof_as_missing(slot0, p0 + 3).await?;
    validator.mark_proof_as_missing(slot0, p0 + 3).await?;
    m.leave_downtime(slot0, p0 + 3).await?;
    seen.expect(
        validator.mark_proof_as_missing(slot0, p0 + 3).await,
        E::ProofAlreadyMarkedMissing,
    );
    // p4 missed but the timeout passed
    m.at(m.period_start(p0 + 5) + config.proofs.timeout).await?;
    m.mine(1).await?;
    seen.expect(
        validator.mark_proof_as_missing(slot0, p0 + 4).await,
        E::ValidationTimedOut,
    );

    // a request that expires before its slot is filled
    let late = request_with_nonce(&client, 11).await?;
    c.reserve_slot(late.id(), 0).await?;
    c.approve_collateral(late.id(), 0).await?;
    let expiry = c.request_expiry(late.id()).await?;
    m.mine_at(expiry + 1).await?;
    seen.expect(
        c.fill_slot(late.id(), 0, ANY_PROOF).await,
        E::StartNotBeforeExpiry,
    );

    // finished: paid once, no proofs any more
    let end = client.request_end(id).await?;
    m.mine_at(end + 1).await?;
    seen.expect(
        a.submit_proof(slot0, ANY_PROOF).await,
        E::SlotNotAcceptingProofs,
    );
    a.free_slot(slot0).await?;
    seen.expect(a.free_slot(slot0).await, E::AlreadyPaid);
    client.withdraw_funds(id).await?;
    seen.expect(client.withdraw_funds(id).await, E::NothingToWithdraw);
    Ok(())
}

async fn request_with_nonce(client: &impl Marketplace, nonce: u8) -> Result<StorageRequest> {
    let r = request(client.account(), 1, 3600, 300, nonce);
    client.request_storage(&r).await?;
    Ok(r)
}

async fn refused_transfers<F: Fixture>(m: &F, seen: &mut Seen) -> Result<()> {
    let client = m.account(1).await?;
    let r = request(client.account(), 1, 3600, 300, 12);
    client.approve(r.ask.max_price()).await?;
    m.set_refusing(true).await?;
    seen.expect(client.request_storage(&r).await, E::TransferFailed);
    m.set_refusing(false).await?;
    client.request_storage(&r).await?;
    // ERC-20 errors of the token are decoded too.
    let poor = m.reader().await?;
    let r2 = request(poor.account(), 1, 3600, 300, 13);
    let err = poor.request_storage(&r2).await.unwrap_err();
    assert!(
        matches!(
            err.revert(),
            Some(Revert::Token(TokenError::InsufficientBalance { .. }))
        ),
        "{err}"
    );
    Ok(())
}
