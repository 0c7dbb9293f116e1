//! The marketplace with real storage proofs: anvil runs our contracts with the Solidity
//! verifier generated from the halo2 verifying key (compiled by the pinned solc 0.8.19);
//! a host fills a slot with a halo2 proof of the on-chain challenge, then proves again in
//! a later period; a proof of the wrong slot, a stale proof and tampered bytes are
//! refused. The gas of `fillSlot` and `submitProof` with the real verifier is printed.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use codex::market::alloy::primitives::U256;
use codex::market::{
    Ask, Content, LocalChain, MarketplaceClient, MarketplaceConfig, MarketplaceError, RequestState,
    SlotId, SlotState, StorageRequest, TokenSource, VerifierSource, deploy,
};
use codex::proofs::prover::compile_verifier;
use codex::proofs::slot::{SlotGeometry, Slots};
use codex::proofs::{ProofInput, Prover, Srs, entropy_from_challenge};
use rand::{RngCore, SeedableRng, rngs::StdRng};

mod common;

const BS: usize = 65536;
const SLOTS: u64 = 3;
const SLOT_BLOCKS: u64 = 4;

fn block(slot: u64, b: u64) -> Bytes {
    let mut data = vec![0u8; BS];
    StdRng::seed_from_u64(slot * 100 + b).fill_bytes(&mut data);
    Bytes::from(data)
}

fn dataset() -> anyhow::Result<Slots> {
    let geometry = SlotGeometry {
        num_slots: SLOTS,
        slot_blocks: SLOT_BLOCKS,
        pad_blocks: 0,
        block_size: BS as u32,
    };
    Ok(Slots::from_blocks(geometry, block)?)
}

/// A proof of slot `index` for `challenge`.
fn prove(
    prover: &Prover,
    slots: &Slots,
    index: u64,
    challenge: &[u8; 32],
) -> anyhow::Result<Vec<u8>> {
    let input = ProofInput::new(
        entropy_from_challenge(challenge),
        &slots.slot_roots(),
        index,
        &slots.slots()[index as usize],
        prover.samples(),
        |b| Ok(Some(block(index, b))),
    )?;
    Ok(prover.prove(&input)?.bytes)
}

/// A proof of slot `index` for the challenge of the block its submission (the host's
/// next transaction) lands in, with that challenge. Proving takes seconds: when the next
/// block's period changed meanwhile, or is about to, the proof would be for the wrong
/// challenge, so it is made again (in the next period).
async fn prove_next(
    host: &MarketplaceClient,
    config: &MarketplaceConfig,
    (prover, slots): (&Arc<Prover>, &Arc<Slots>),
    slot: SlotId,
    index: u64,
) -> anyhow::Result<(Vec<u8>, [u8; 32])> {
    for _ in 0..3 {
        let (number, time) = host.next_block().await?;
        let challenge = host.next_block_challenge(slot).await?;
        let (p, s) = (prover.clone(), slots.clone());
        let proof = tokio::task::spawn_blocking(move || prove(&p, &s, index, &challenge)).await??;
        let (after_number, after) = host.next_block().await?;
        let period = config.period_of(time);
        let left = config.period_end(period).saturating_sub(after);
        if after_number == number && config.period_of(after) == period && left > 5 {
            return Ok((proof, challenge));
        }
        // The period ended or is about to: prove for the next one.
        tokio::time::sleep(std::time::Duration::from_secs(left + 1)).await;
    }
    anyhow::bail!("the challenge kept moving while proving")
}

fn expect_revert<T: std::fmt::Debug>(r: codex::market::Result<T>, expected: MarketplaceError) {
    match r {
        Err(e) => assert_eq!(e.marketplace_error(), Some(expected), "{e}"),
        Ok(v) => panic!("expected {expected}, got {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_fill_and_prove_with_real_halo2_proofs() -> anyhow::Result<()> {
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("proof-keys");
    let (prover, slots, bytecode) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (prover, _) = Prover::new(&Srs::Development, 5, Some(&cache))?;
        let bytecode = compile_verifier(&prover.solidity_verifier(), Some(&cache))?;
        Ok((prover, dataset()?, bytecode))
    })
    .await??;
    println!("keys and verifier ready");
    let prover = Arc::new(prover);
    let slots = Arc::new(slots);

    let chain = LocalChain::start().await?;
    let deployer = chain.account(0).await?;
    let provider = chain.provider_for(&deployer);
    let mut config = MarketplaceConfig::default();
    config.proofs.zkey_hash = prover.verifying_key_digest().to_string();
    let d = deploy(
        &provider,
        &config,
        TokenSource::TestToken,
        VerifierSource::Halo2Bytecode(bytecode),
    )
    .await
    .context("deploying with the generated verifier")?;
    let account = |i: u64| {
        let chain = &chain;
        let d = &d;
        async move {
            let signer = common::funded(chain, d.token, i).await?;
            anyhow::Ok(MarketplaceClient::connect(chain.url(), &signer, d.marketplace).await?)
        }
    };
    println!("deployed");
    let client = account(1).await?;
    let host = account(2).await?;

    let request = StorageRequest {
        client: client.account(),
        ask: Ask {
            proof_probability: U256::from(1),
            price_per_byte_per_second: U256::from(1),
            collateral_per_byte: U256::from(2),
            slots: SLOTS,
            slot_size: SLOT_BLOCKS * BS as u64,
            duration: 3600,
            max_slot_loss: 1,
        },
        content: Content {
            cid: b"a manifest cid".to_vec(),
            merkle_root: slots.verify_root().to_le_bytes(),
        },
        expiry: 600,
        nonce: [7; 32],
    };
    println!("accounts funded");
    client.request_storage(&request).await?;
    println!("requested");
    let id = request.id();
    assert_eq!(client.request_state(id).await?, RequestState::New);

    // Slot 1: reserve, read the challenge of the block the fill lands in, prove, fill.
    let index = 1;
    let slot = request.slot_id(index);
    host.reserve_slot(id, index).await?;
    // Approve the collateral first, so that the fill is the next transaction.
    host.approve_collateral(id, index).await?;
    let (proof, challenge) = prove_next(&host, &config, (&prover, &slots), slot, index).await?;

    println!("proved");
    // Refused: a proof of another slot, and tampered bytes.
    let (p, s) = (prover.clone(), slots.clone());
    let other = tokio::task::spawn_blocking(move || prove(&p, &s, 2, &challenge)).await??;
    expect_revert(
        host.fill_slot(id, index, &other).await,
        MarketplaceError::InvalidProof,
    );
    let mut tampered = proof.clone();
    tampered[200] ^= 1;
    expect_revert(
        host.fill_slot(id, index, &tampered).await,
        MarketplaceError::InvalidProof,
    );

    let fill = host.fill_slot(id, index, &proof).await?;
    assert_eq!(host.slot_state(slot).await?, SlotState::Filled);
    assert_eq!(host.get_host(slot).await?, Some(host.account()));
    println!("fillSlot with a real proof: {} gas", fill.gas_used);

    // Next period: a new challenge. The fill's proof is stale; a fresh one is accepted.
    chain.increase_time(config.proofs.period).await?;
    chain.mine(1).await?;
    expect_revert(
        host.submit_proof(slot, &proof).await,
        MarketplaceError::InvalidProof,
    );
    let (fresh, _) = prove_next(&host, &config, (&prover, &slots), slot, index).await?;
    let submit = host.submit_proof(slot, &fresh).await?;
    println!("submitProof with a real proof: {} gas", submit.gas_used);
    expect_revert(
        host.submit_proof(slot, &fresh).await,
        MarketplaceError::ProofAlreadySubmitted,
    );
    assert!(fill.gas_used > 400_000 && submit.gas_used > 400_000);
    Ok(())
}
