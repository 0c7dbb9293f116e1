//! Prints the gas of each marketplace call, measured from the receipts of a
//! request's lifecycle on a local anvil:
//!
//! ```text
//! cargo run -p codex-market --example gas
//! ```
//!
//! Proofs go through the `Halo2Verifier` adapter to `EchoProofCheck`, which
//! checks only that the proof equals the public inputs: the generated halo2
//! verifier costs about 369k gas more per `fillSlot` and `submitProof`.

use codex_market::alloy::primitives::U256;
use codex_market::deploy::{TokenSource, VerifierSource, deploy, mint, signing_provider};
use codex_market::*;

async fn account(chain: &LocalChain, d: &Deployment, i: u64) -> anyhow::Result<MarketplaceClient> {
    let signer = chain.account(i).await?;
    mint(
        &signing_provider(chain.url(), &signer)?,
        d.token,
        signer.address(),
        U256::from(10u64.pow(15)),
    )
    .await?;
    Ok(MarketplaceClient::connect(chain.url(), &signer, d.marketplace).await?)
}

async fn echo(
    chain: &LocalChain,
    host: &MarketplaceClient,
    r: &StorageRequest,
    i: u64,
    period: u64,
) -> anyhow::Result<Vec<u8>> {
    let next = chain.block_number().await? + 1;
    let challenge = host.challenge_at(r.slot_id(i), next, period).await?;
    Ok(echo_proof(&public_inputs(
        &challenge,
        &r.content.merkle_root,
        i,
    )))
}

/// Mines until the pointer of `slot` in `period` is outside the downtime at the next block.
async fn leave_downtime(
    chain: &LocalChain,
    config: &MarketplaceConfig,
    slot: SlotId,
    period: u64,
) -> anyhow::Result<()> {
    let next = chain.block_number().await? + 1;
    let p = pointer(next, period, config.proofs.downtime_product, slot);
    let target = config.proofs.downtime.saturating_add(40);
    let k = u64::from(target.wrapping_sub(p));
    if k > 0 {
        chain.mine(k).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let chain = LocalChain::start().await?;
    let deployer = chain.account(0).await?;
    let config = MarketplaceConfig::default();
    let d = deploy(
        &chain.provider_for(&deployer),
        &config,
        TokenSource::TestToken,
        VerifierSource::Echo,
    )
    .await?;
    let client = account(&chain, &d, 1).await?;
    let (a, b, validator) = (
        account(&chain, &d, 2).await?,
        account(&chain, &d, 3).await?,
        account(&chain, &d, 4).await?,
    );
    let mut rows: Vec<(&str, u64)> = Vec::new();

    let request = StorageRequest {
        client: client.account(),
        ask: Ask {
            proof_probability: U256::from(1),
            price_per_byte_per_second: U256::from(1),
            collateral_per_byte: U256::from(1),
            slots: 4,
            slot_size: 1 << 30,
            duration: 36_000,
            max_slot_loss: 1,
        },
        content: Content {
            cid: vec![0x01; 36],
            merkle_root: [7; 32],
        },
        expiry: 3600,
        nonce: [1; 32],
    };
    let period = config.proofs.period;
    let p0 = config.period_of(chain.timestamp().await?) + 2;
    client.approve(request.ask.max_price()).await?;
    chain.set_next_block_timestamp(p0 * period).await?;
    let (id, r) = client.request_storage(&request).await?;
    rows.push(("requestStorage", r.gas_used));

    let r = a.reserve_slot(id, 0).await?;
    rows.push(("reserveSlot", r.gas_used));
    a.approve_collateral(id, 0).await?;
    let r = a
        .fill_slot(id, 0, &echo(&chain, &a, &request, 0, p0).await?)
        .await?;
    rows.push(("fillSlot (with proof)", r.gas_used));
    b.reserve_slot(id, 1).await?;
    b.approve_collateral(id, 1).await?;
    b.fill_slot(id, 1, &echo(&chain, &b, &request, 1, p0).await?)
        .await?;

    let (s0, s1) = (request.slot_id(0), request.slot_id(1));
    for p in [p0 + 1, p0 + 2] {
        chain.mine_at(p * period + 1).await?;
        leave_downtime(&chain, &config, s0, p).await?;
        let r = a
            .submit_proof(s0, &echo(&chain, &a, &request, 0, p).await?)
            .await?;
        if p == p0 + 1 {
            rows.push(("submitProof", r.gas_used));
        }
        leave_downtime(&chain, &config, s1, p).await?;
        chain
            .set_next_block_timestamp(config.period_end(p) + 1)
            .await?;
        let r = validator.mark_proof_as_missing(s1, p).await?;
        rows.push(if p == p0 + 1 {
            ("markProofAsMissing (slash)", r.gas_used)
        } else {
            ("markProofAsMissing (slash and free)", r.gas_used)
        });
    }
    b.reserve_slot(id, 1).await?;
    b.approve_collateral(id, 1).await?;
    let r = b
        .fill_slot(id, 1, &echo(&chain, &b, &request, 1, p0 + 3).await?)
        .await?;
    rows.push(("fillSlot (repair, with proof)", r.gas_used));

    let end = client.request_end(id).await?;
    chain.mine_at(end + 1).await?;
    let r = a.free_slot(s0).await?;
    rows.push(("freeSlot (payout)", r.gas_used));
    let r = client.withdraw_funds(id).await?;
    rows.push(("withdrawFunds", r.gas_used));

    // Leaving a running request: freeSlot of a filled slot.
    let second = StorageRequest {
        nonce: [2; 32],
        ..request.clone()
    };
    let (id2, _) = client.request_storage(&second).await?;
    a.reserve_slot(id2, 0).await?;
    a.fill_slot(
        id2,
        0,
        &echo(
            &chain,
            &a,
            &second,
            0,
            config.period_of(chain.timestamp().await?),
        )
        .await?,
    )
    .await?;
    let r = a.free_slot(second.slot_id(0)).await?;
    rows.push(("freeSlot (host leaves, slot to Repair)", r.gas_used));

    println!("| call | gas |");
    println!("|---|---:|");
    for (name, gas) in rows {
        println!("| {name} | {gas} |");
    }
    Ok(())
}
