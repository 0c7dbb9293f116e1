//! The whole lifecycle of a request, with exact balances after every step:
//! request, reserve, fill with proofs, proofs over periods, two missed proofs
//! marked and slashed, the slot freed by force, refilled by another host with
//! the repair reward, the request finished, hosts paid, the client's funds withdrawn.
//! The same scenario runs on anvil and on the in-memory marketplace.

use anyhow::Result;
use codex_market::alloy::primitives::{Address, U256};
use codex_market::deploy::VerifierSource;
use codex_market::memory::EchoVerifier;
use codex_market::*;

use crate::common::*;

fn u(x: u64) -> U256 {
    U256::from(x)
}

#[tokio::test]
async fn whole_lifecycle_with_exact_balances() -> Result<()> {
    // The Echo verifier behind the Halo2Verifier adapter checks the public inputs.
    let m = Market::start(MarketplaceConfig::default(), VerifierSource::Echo).await?;
    whole_lifecycle(&m).await
}

#[tokio::test]
async fn whole_lifecycle_with_exact_balances_in_memory() -> Result<()> {
    let m = Memory::start(MarketplaceConfig::default(), EchoVerifier)?;
    whole_lifecycle(&m).await
}

async fn whole_lifecycle<F: Fixture>(m: &F) -> Result<()> {
    let config = m.config().clone();
    let client = m.account(1).await?;
    let (a, b, c, d, e) = (
        m.account(2).await?,
        m.account(3).await?,
        m.account(4).await?,
        m.account(5).await?,
        m.account(6).await?,
    );
    let validator = m.account(7).await?;
    let market = m.market_address();
    let who: Vec<Address> = [&client, &a, &b, &c, &d, &validator]
        .iter()
        .map(|x| x.account())
        .collect();
    let who = [who, vec![market]].concat();
    // indices into `who`
    const CLIENT: usize = 0;
    const A: usize = 1;
    const B: usize = 2;
    const C: usize = 3;
    const D: usize = 4;
    const V: usize = 5;
    const M: usize = 6;
    let t = U256::from(TOKENS);
    assert_eq!(m.balances(&who).await?, vec![t, t, t, t, t, t, U256::ZERO]);

    let duration = 3600;
    let request = request(client.account(), 3, duration, 600, 1);
    let ask = request.ask.clone();
    let pps = ask.price_per_slot_per_second();
    let collateral = ask.collateral_per_slot();
    assert_eq!(pps, u(1024));
    assert_eq!(collateral, u(10 * 1024));
    let max_price = ask.max_price();
    assert_eq!(max_price, u(3 * 3600 * 1024));
    let first_block = m.block_number().await? + 1;

    // --- request
    let p0 = m.future_period().await?;
    client.approve(max_price).await?;
    m.at(m.period_start(p0) + 10).await?;
    let (id, receipt) = client.request_storage(&request).await?;
    let t_request = m.block_timestamp(receipt.block_number).await?;
    assert_eq!(t_request, m.period_start(p0) + 10);
    let ends_at = t_request + duration;
    assert_eq!(client.request_end(id).await?, ends_at);
    assert_eq!(client.request_expiry(id).await?, t_request + 600);
    assert_eq!(client.request_state(id).await?, RequestState::New);
    assert_eq!(client.my_requests().await?, vec![id]);
    assert_eq!(client.get_request(id).await?, request);
    let mut expected = m.balances(&who).await?;
    assert_eq!(expected[CLIENT], t - max_price);
    assert_eq!(expected[M], max_price);

    // --- reserve: A, B, C one slot each; D and E also reserve slot 0, which fills it up
    let hosts = [&a, &b, &c];
    for (i, h) in hosts.iter().enumerate() {
        assert!(h.can_reserve_slot(id, i as u64).await?);
        h.reserve_slot(id, i as u64).await?;
    }
    d.reserve_slot(id, 0).await?;
    e.reserve_slot(id, 0).await?;
    assert!(!validator.can_reserve_slot(id, 0).await?);
    assert_eq!(m.balances(&who).await?, expected);

    // --- fill with proofs, in period p0 (no proof is due in the period of the fill)
    let mut filled_at = [0u64; 3];
    for (i, h) in hosts.iter().enumerate() {
        let index = i as u64;
        h.approve_collateral(id, index).await?;
        let proof = m.echo_proof_for(&request, index, p0).await?;
        let ts = m.period_start(p0) + 40 + 10 * index;
        m.at(ts).await?;
        let r = h.fill_slot(id, index, &proof).await?;
        filled_at[i] = m.block_timestamp(r.block_number).await?;
        assert_eq!(filled_at[i], ts);
        expected[A + i] -= collateral;
        expected[M] += collateral;
        assert_eq!(m.balances(&who).await?, expected, "after fill {i}");
        assert_eq!(
            h.slot_state(request.slot_id(index)).await?,
            SlotState::Filled
        );
        assert_eq!(h.get_host(request.slot_id(index)).await?, Some(h.account()));
        assert_eq!(
            h.current_collateral(request.slot_id(index)).await?,
            collateral
        );
        assert_eq!(h.my_slots().await?, vec![request.slot_id(index)]);
    }
    assert_eq!(client.request_state(id).await?, RequestState::Started);
    let (active, index) = a.get_active_slot(request.slot_id(0)).await?;
    assert_eq!((active, index), (request.clone(), 0));

    // --- periods p1 and p2: A and B prove when required, C stays silent; a
    // validator marks C's missed proofs after each period.
    let slot_c = request.slot_id(2);
    let reward = config.validator_reward(&ask);
    let slashed = config.slash_amount(&ask);
    assert_eq!(slashed, u(2048));
    assert_eq!(reward, u(409));
    for (round, p) in [p0 + 1, p0 + 2].into_iter().enumerate() {
        m.mine_at(m.period_start(p) + 1).await?;
        for (i, h) in [&a, &b].iter().enumerate() {
            let slot = request.slot_id(i as u64);
            // in the downtime no proof is required, but one will be
            m.enter_downtime(slot, p).await?;
            m.mine(1).await?;
            assert!(!h.is_proof_required(slot).await?);
            assert!(h.will_proof_be_required(slot).await?);
            m.leave_downtime(slot, p).await?;
            m.mine(1).await?;
            assert!(h.is_proof_required(slot).await?);
            assert!(!h.will_proof_be_required(slot).await?);
            let proof = m.echo_proof_for(&request, i as u64, p).await?;
            h.submit_proof(slot, &proof).await?;
        }
        assert_eq!(m.balances(&who).await?, expected);

        // the validator marks C's proof of period p just after p ends
        m.leave_downtime(slot_c, p).await?;
        m.at(config.period_end(p) + 1).await?;
        validator.mark_proof_as_missing(slot_c, p).await?;
        expected[V] += reward;
        expected[M] -= reward;
        assert_eq!(
            m.balances(&who).await?,
            expected,
            "after missed proof {round}"
        );
        if round == 0 {
            assert_eq!(c.missing_proofs(slot_c).await?, 1);
            assert_eq!(c.current_collateral(slot_c).await?, collateral - slashed);
            assert_eq!(c.slot_state(slot_c).await?, SlotState::Filled);
        }
    }

    // --- two missed proofs = maxNumberOfSlashes: the slot is freed into Repair
    assert_eq!(c.slot_state(slot_c).await?, SlotState::Repair);
    assert_eq!(c.get_host(slot_c).await?, None);
    assert_eq!(c.missing_proofs(slot_c).await?, 0);
    assert_eq!(c.my_slots().await?, vec![]);
    assert_eq!(
        client.request_state(id).await?,
        RequestState::Started,
        "one lost slot is within maxSlotLoss"
    );

    // --- D refills slot 2 and posts the collateral less the repair reward
    let p3 = p0 + 3;
    assert!(d.can_reserve_slot(id, 2).await?);
    d.reserve_slot(id, 2).await?;
    let repair_collateral = config.repair_collateral(&ask);
    assert_eq!(repair_collateral, collateral - collateral * u(10) / u(100));
    assert_eq!(d.collateral_to_fill(id, 2).await?, repair_collateral);
    d.approve_collateral(id, 2).await?;
    let proof = m.echo_proof_for(&request, 2, p3).await?;
    let t_refill = m.period_start(p3) + 10;
    m.at(t_refill).await?;
    d.fill_slot(id, 2, &proof).await?;
    expected[D] -= repair_collateral;
    expected[M] += repair_collateral;
    assert_eq!(m.balances(&who).await?, expected, "after refill");
    assert_eq!(
        d.current_collateral(slot_c).await?,
        collateral,
        "the full collateral is owed back"
    );

    // --- the request finishes
    m.mine_at(ends_at + 1).await?;
    assert_eq!(client.request_state(id).await?, RequestState::Finished);
    for (i, h) in [&a, &b].iter().enumerate() {
        let slot = request.slot_id(i as u64);
        assert_eq!(h.slot_state(slot).await?, SlotState::Finished);
        h.free_slot(slot).await?;
        let payout = u(ends_at - filled_at[i]) * pps + collateral;
        expected[A + i] += payout;
        expected[M] -= payout;
        assert_eq!(m.balances(&who).await?, expected, "after payout {i}");
        assert_eq!(h.slot_state(slot).await?, SlotState::Paid);
    }
    assert_reverts(c.free_slot(slot_c).await, MarketplaceError::InvalidSlotHost);
    d.free_slot(slot_c).await?;
    let payout_d = u(ends_at - t_refill) * pps + collateral;
    expected[D] += payout_d;
    expected[M] -= payout_d;
    assert_eq!(
        m.balances(&who).await?,
        expected,
        "after payout of the repairing host"
    );

    // --- the client withdraws what no host earned
    let paid: U256 = u(ends_at - filled_at[0]) * pps
        + u(ends_at - filled_at[1]) * pps
        + u(ends_at - t_refill) * pps;
    client.withdraw_funds(id).await?;
    expected[CLIENT] += max_price - paid;
    expected[M] -= max_price - paid;
    assert_eq!(m.balances(&who).await?, expected, "after withdraw");
    assert_reverts(
        client.withdraw_funds(id).await,
        MarketplaceError::NothingToWithdraw,
    );
    assert_eq!(client.my_requests().await?, vec![]);

    // What stays in the contract: C's collateral, less the two validator rewards
    // and the repair reward paid to D.
    assert_eq!(
        expected[M],
        collateral - reward * u(2) - collateral * u(10) / u(100)
    );
    assert_eq!(expected[M], u(8398));
    // Hosts: A and B earned their time and got their collateral back; C lost its
    // collateral; D earned its time plus the repair reward.
    assert_eq!(expected[A], t + u(ends_at - filled_at[0]) * pps);
    assert_eq!(expected[B], t + u(ends_at - filled_at[1]) * pps);
    assert_eq!(expected[C], t - collateral);
    assert_eq!(
        expected[D],
        t + u(ends_at - t_refill) * pps + collateral * u(10) / u(100)
    );

    // --- events, in order
    let events: Vec<MarketEvent> = client
        .events(first_block, m.block_number().await?)
        .await?
        .into_iter()
        .map(|e| e.event)
        .collect();
    let slots: Vec<SlotId> = (0..3).map(|i| request.slot_id(i)).collect();
    let summary: Vec<String> = events
        .iter()
        .map(|e| match e {
            MarketEvent::StorageRequested {
                request: r,
                ask: x,
                expiry,
            } => {
                assert_eq!((*r, x, *expiry), (id, &ask, t_request + 600));
                "requested".to_string()
            }
            MarketEvent::SlotReservationsFull { slot_index, .. } => format!("full {slot_index}"),
            MarketEvent::SlotFilled { slot_index, .. } => format!("filled {slot_index}"),
            MarketEvent::RequestFulfilled { .. } => "fulfilled".into(),
            MarketEvent::ProofSubmitted { slot } => {
                format!("proof {}", slots.iter().position(|s| s == slot).unwrap())
            }
            MarketEvent::SlotFreed { slot_index, .. } => format!("freed {slot_index}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "requested",
            "full 0",
            "proof 0",
            "filled 0",
            "proof 1",
            "filled 1",
            "proof 2",
            "filled 2",
            "fulfilled",
            "proof 0",
            "proof 1",
            "proof 0",
            "proof 1",
            "freed 2",
            "proof 2",
            "filled 2",
        ]
    );
    Ok(())
}
