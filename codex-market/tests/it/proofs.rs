//! The proof clock against its formulas: pointer, challenge, probability and
//! downtime; the public inputs through the Halo2Verifier adapter; event polling. The
//! proof clock and the polling also on the in-memory marketplace.

use anyhow::Result;
use codex_market::alloy::primitives::{Address, U256};
use codex_market::deploy::VerifierSource;
use codex_market::memory::{EchoVerifier, TestVerifier};
use codex_market::*;

use crate::common::*;

#[tokio::test]
async fn pointer_challenge_and_requirement_follow_the_formulas() -> Result<()> {
    let m = Market::start(MarketplaceConfig::default(), VerifierSource::Test).await?;
    proof_clock(&m).await
}

#[tokio::test]
async fn pointer_challenge_and_requirement_follow_the_formulas_in_memory() -> Result<()> {
    proof_clock(&Memory::start(MarketplaceConfig::default(), TestVerifier)?).await
}

async fn proof_clock<F: Fixture>(m: &F) -> Result<()> {
    let config = m.config().clone();
    let client = m.account(1).await?;
    let host = m.account(2).await?;
    // proofProbability 4: slotProbability = 4 * (256 - 64) / 256 = 3
    let mut request = request(client.account(), 1, 100 * config.proofs.period, 600, 20);
    request.ask.proof_probability = U256::from(4);
    let (id, _) = client.request_storage(&request).await?;
    let slot = request.slot_id(0);
    host.reserve_slot(id, 0).await?;
    let p0 = m.future_period().await?;
    host.approve_collateral(id, 0).await?;
    m.at(m.period_start(p0) + 1).await?;
    host.fill_slot(id, 0, ANY_PROOF).await?;
    assert_eq!(m.slot_probability(slot).await?, U256::from(3));
    assert_eq!(config.slot_probability(&request.ask), U256::from(3));
    // not in the period of the fill
    assert!(!host.is_proof_required(slot).await?);
    assert!(!host.will_proof_be_required(slot).await?);

    // In each period, look at the slot with its pointer at a few positions in
    // and out of the downtime, until every outcome was seen: a challenge that
    // requires a proof (out of the downtime, and in it: "will be required"), and
    // one that does not.
    let (mut required, mut coming, mut missed) = (0, 0, 0);
    for p in p0 + 1..p0 + 61 {
        m.mine_at(m.period_start(p) + 1).await?;
        for target in [5u8, 150, 40, 220] {
            m.steer_pointer(slot, p, target).await?;
            m.mine(1).await?;
            let n = m.block_number().await?;
            let ptr = pointer(n, p, config.proofs.downtime_product, slot);
            assert_eq!(ptr, target);
            assert_eq!(host.pointer(slot).await?, ptr);
            let challenge = challenge_from_block_hash(m.block_hash(n - 1 - u64::from(ptr)).await?);
            assert_eq!(m.latest_challenge(slot).await?, challenge);
            assert_eq!(m.challenge_at(slot, n, p).await?, challenge);
            let hit = U256::from_be_bytes(challenge) % U256::from(3) == U256::ZERO;
            let in_downtime = ptr < config.proofs.downtime;
            assert_eq!(
                host.is_proof_required(slot).await?,
                hit && !in_downtime,
                "block {n}"
            );
            assert_eq!(
                host.will_proof_be_required(slot).await?,
                hit && in_downtime,
                "block {n}"
            );
            required += usize::from(hit && !in_downtime);
            coming += usize::from(hit && in_downtime);
            missed += usize::from(!hit);
            // the challenge of the next block, known before it is mined
            let next = host.next_block_challenge(slot).await?;
            m.mine(1).await?;
            assert_eq!(m.latest_challenge(slot).await?, next);
        }
        if required > 0 && coming > 0 && missed > 0 {
            break;
        }
    }
    assert!(
        required > 0 && coming > 0 && missed > 0,
        "{required} {coming} {missed}"
    );
    Ok(())
}

#[tokio::test]
async fn public_inputs_reach_the_verifier_as_big_endian_words_before_the_proof() -> Result<()> {
    let m = Market::start(MarketplaceConfig::default(), VerifierSource::Echo).await?;
    public_inputs_checked(&m).await
}

#[tokio::test]
async fn public_inputs_are_checked_in_memory() -> Result<()> {
    public_inputs_checked(&Memory::start(MarketplaceConfig::default(), EchoVerifier)?).await
}

async fn public_inputs_checked<F: Fixture>(m: &F) -> Result<()> {
    let client = m.account(1).await?;
    let host = m.account(2).await?;
    let request = request(client.account(), 2, 3600, 600, 21);
    let (id, _) = client.request_storage(&request).await?;
    host.reserve_slot(id, 1).await?;
    host.approve_collateral(id, 1).await?;
    let root = request.content.merkle_root;
    let challenge = host.next_block_challenge(request.slot_id(1)).await?;
    // wrong slot index, wrong root, challenge as a big-endian number: all refused
    for wrong in [
        public_inputs(&challenge, &root, 0),
        public_inputs(&challenge, &[0u8; 32], 1),
        [
            U256::from_be_bytes(challenge) >> 8,
            root_to_field(&root),
            U256::from(1),
        ],
    ] {
        assert_reverts(
            host.fill_slot(id, 1, &echo_proof(&wrong)).await,
            MarketplaceError::InvalidProof,
        );
    }
    let period = m.pin_next_block().await?;
    host.fill_slot(id, 1, &m.echo_proof_for(&request, 1, period).await?)
        .await?;
    assert_eq!(
        host.slot_state(request.slot_id(1)).await?,
        SlotState::Filled
    );
    Ok(())
}

#[tokio::test]
async fn adapter_without_code_behind_refuses_every_proof() -> Result<()> {
    let nothing = Address::repeat_byte(0x42);
    // A halo2 verifier is deployed only with the digest of its verifying key.
    let e = Market::start(
        MarketplaceConfig::default(),
        VerifierSource::Halo2At(nothing),
    )
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("zkey_hash"), "{e}");
    let mut config = MarketplaceConfig::default();
    config.proofs.zkey_hash = format!("0x{}", "ab".repeat(32));
    let m = Market::start(config.clone(), VerifierSource::Halo2At(nothing)).await?;
    assert_eq!(m.deployment.halo2_verifier, Some(nothing));
    let client = m.account(1).await?;
    // Hosts read the digest back from the chain.
    assert_eq!(client.config().proofs.zkey_hash, config.proofs.zkey_hash);
    let host = m.account(2).await?;
    let request = request(client.account(), 1, 3600, 600, 22);
    let (id, _) = client.request_storage(&request).await?;
    host.reserve_slot(id, 0).await?;
    assert_reverts(
        host.fill_slot(id, 0, ANY_PROOF).await,
        MarketplaceError::InvalidProof,
    );
    Ok(())
}

#[tokio::test]
async fn poller_returns_each_event_once() -> Result<()> {
    let m = Market::start(MarketplaceConfig::default(), VerifierSource::Test).await?;
    let client = m.account(1).await?;
    let host = m.account(2).await?;
    let kinds = |v: Vec<LoggedEvent>| v.into_iter().map(|e| e.event).collect::<Vec<_>>();
    let mut poller = Events::from_block(client.block_number().await? + 1);
    assert_eq!(poller.poll(&client).await?, vec![]);
    let request = request(client.account(), 1, 3600, 600, 23);
    let (id, _) = client.request_storage(&request).await?;
    let events = kinds(poller.poll(&client).await?);
    assert!(
        matches!(events.as_slice(), [MarketEvent::StorageRequested { request, .. }] if *request == id)
    );
    host.reserve_slot(id, 0).await?;
    host.fill_slot(id, 0, ANY_PROOF).await?;
    let events = kinds(poller.poll(&client).await?);
    assert_eq!(
        events,
        vec![
            MarketEvent::ProofSubmitted {
                slot: request.slot_id(0)
            },
            MarketEvent::SlotFilled {
                request: id,
                slot_index: 0
            },
            MarketEvent::RequestFulfilled { request: id },
        ]
    );
    assert_eq!(poller.poll(&client).await?, vec![]);
    Ok(())
}

#[tokio::test]
async fn fill_and_submit_with_a_prover_callback() -> Result<()> {
    let config = MarketplaceConfig::default();
    let m = Market::start(config.clone(), VerifierSource::Echo).await?;
    let client = m.account(1).await?;
    let host = m.account(2).await?;
    let request = request(client.account(), 1, 3600, 600, 24);
    let (id, _) = client.request_storage(&request).await?;
    host.reserve_slot(id, 0).await?;
    host.approve_collateral(id, 0).await?;
    m.pin_next_block().await?;
    let root = request.content.merkle_root;
    // the callback is called after the approval, with the challenge of the fill's block
    host.fill_slot_with(id, 0, |challenge| async move {
        Ok(echo_proof(&public_inputs(&challenge, &root, 0)))
    })
    .await?;
    let slot = request.slot_id(0);
    let p1 = config.period_of(m.chain.timestamp().await?) + 1;
    m.chain.mine_at(m.period_start(p1) + 1).await?;
    host.submit_proof_with(slot, |challenge| async move {
        Ok(echo_proof(&public_inputs(&challenge, &root, 0)))
    })
    .await?;
    let failing = host
        .submit_proof_with(slot, |_| async { Err("no proof today".into()) })
        .await;
    assert!(matches!(failing, Err(Error::Prover { .. })));
    Ok(())
}

#[tokio::test]
async fn events_are_polled_once_in_memory() -> Result<()> {
    let m = Memory::start(MarketplaceConfig::default(), TestVerifier)?;
    let client = m.account(1).await?;
    let host = m.account(2).await?;
    let mut events = Events::from_block(client.block_number().await? + 1);
    assert_eq!(events.poll(&client).await?, vec![]);
    let request = request(client.account(), 1, 3600, 600, 23);
    let (id, _) = client.request_storage(&request).await?;
    let got: Vec<_> = events
        .poll(&host)
        .await?
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert!(
        matches!(got.as_slice(), [MarketEvent::StorageRequested { request, .. }] if *request == id)
    );
    host.reserve_slot(id, 0).await?;
    host.fill_slot(id, 0, ANY_PROOF).await?;
    let got: Vec<_> = events
        .poll(&host)
        .await?
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        got,
        vec![
            MarketEvent::ProofSubmitted {
                slot: request.slot_id(0)
            },
            MarketEvent::SlotFilled {
                request: id,
                slot_index: 0
            },
            MarketEvent::RequestFulfilled { request: id },
        ]
    );
    assert_eq!(events.poll(&host).await?, vec![]);
    Ok(())
}
