//! The fixture: a chain, a deployment, funded accounts, and helpers to steer
//! time and the proof pointer.

use anyhow::Result;
use codex_market::alloy::primitives::{Address, U256};
use codex_market::deploy::{TokenSource, VerifierSource, mint, signing_provider};
use codex_market::*;

/// Tokens minted to every account.
pub const TOKENS: u64 = 1_000_000_000_000;

pub struct Market {
    pub chain: LocalChain,
    pub deployment: Deployment,
    pub config: MarketplaceConfig,
}

impl Market {
    pub async fn start(config: MarketplaceConfig, verifier: VerifierSource) -> Result<Self> {
        Self::start_with(config, TokenSource::TestToken, verifier).await
    }

    pub async fn start_with(
        config: MarketplaceConfig,
        token: TokenSource,
        verifier: VerifierSource,
    ) -> Result<Self> {
        let chain = LocalChain::start().await?;
        let deployer = chain.account(0).await?;
        let provider = chain.provider_for(&deployer);
        let deployment = deploy(&provider, &config, token, verifier).await?;
        Ok(Market {
            chain,
            deployment,
            config,
        })
    }

    /// Account `index` (1 and up; 0 is the deployer) with Ether and [`TOKENS`].
    pub async fn account(&self, index: u64) -> Result<MarketplaceClient> {
        let signer = self.chain.account(index).await?;
        let provider = signing_provider(self.chain.url(), &signer)?;
        mint(
            &provider,
            self.deployment.token,
            signer.address(),
            U256::from(TOKENS),
        )
        .await?;
        Ok(
            MarketplaceClient::connect(self.chain.url(), &signer, self.deployment.marketplace)
                .await?,
        )
    }

    pub fn period_start(&self, period: u64) -> u64 {
        period * self.config.proofs.period
    }

    /// A period that starts at least two periods after the latest block.
    pub async fn future_period(&self) -> Result<u64> {
        let now = self.chain.timestamp().await?;
        Ok(self.config.period_of(now) + 2)
    }

    /// The next transaction lands at `timestamp`.
    pub async fn at(&self, timestamp: u64) -> Result<()> {
        self.chain.set_next_block_timestamp(timestamp).await?;
        Ok(())
    }

    pub async fn block_timestamp(&self, block: u64) -> Result<u64> {
        use codex_market::alloy::providers::Provider;
        let b = self
            .chain
            .provider()
            .get_block_by_number(block.into())
            .await?
            .unwrap();
        Ok(b.header.timestamp)
    }

    /// Mines blocks until the pointer of `slot` for `period` at the next block
    /// is `target` (the next transaction sees that pointer).
    pub async fn steer_pointer(&self, slot: SlotId, period: u64, target: u8) -> Result<()> {
        let next = self.chain.block_number().await? + 1;
        let now = pointer(next, period, self.config.proofs.downtime_product, slot);
        let k = u64::from(target.wrapping_sub(now));
        if k > 0 {
            self.chain.mine(k).await?;
        }
        let next = self.chain.block_number().await? + 1;
        assert_eq!(
            pointer(next, period, self.config.proofs.downtime_product, slot),
            target
        );
        Ok(())
    }

    /// The next transaction for `slot` in `period` sees a pointer outside the downtime.
    pub async fn leave_downtime(&self, slot: SlotId, period: u64) -> Result<()> {
        self.steer_pointer(slot, period, self.config.proofs.downtime.saturating_add(40))
            .await
    }

    /// The next transaction for `slot` in `period` sees a pointer in the downtime.
    pub async fn enter_downtime(&self, slot: SlotId, period: u64) -> Result<()> {
        assert!(self.config.proofs.downtime > 10);
        self.steer_pointer(slot, period, 5).await
    }

    /// The proof `EchoProofCheck` accepts for slot `index` of `request` in the
    /// next block, which lands in `period`.
    pub async fn echo_proof_for(
        &self,
        client: &MarketplaceClient,
        request: &StorageRequest,
        index: u64,
        period: u64,
    ) -> Result<Vec<u8>> {
        let slot = request.slot_id(index);
        let next = self.chain.block_number().await? + 1;
        let challenge = client.challenge_at(slot, next, period).await?;
        Ok(echo_proof(&public_inputs(
            &challenge,
            &request.content.merkle_root,
            index,
        )))
    }

    pub async fn balances(&self, who: &[Address]) -> Result<Vec<U256>> {
        let reader = self.reader().await?;
        let mut out = Vec::new();
        for a in who {
            out.push(reader.balance_of(*a).await?);
        }
        Ok(out)
    }

    /// A client that only reads (the deployer).
    pub async fn reader(&self) -> Result<MarketplaceClient> {
        let signer = self.chain.account(0).await?;
        Ok(
            MarketplaceClient::connect(self.chain.url(), &signer, self.deployment.marketplace)
                .await?,
        )
    }
}

/// A request of `slots` slots of 1 KiB for `duration` seconds.
pub fn request(
    client: Address,
    slots: u64,
    duration: u64,
    expiry: u64,
    nonce: u8,
) -> StorageRequest {
    let mut merkle_root = [0u8; 32];
    for (i, b) in merkle_root.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(nonce);
    }
    merkle_root[31] &= 0x1f; // keep it below the BN254 modulus, like a real root
    StorageRequest {
        client,
        ask: Ask {
            proof_probability: U256::from(1),
            price_per_byte_per_second: U256::from(1),
            collateral_per_byte: U256::from(10),
            slots,
            slot_size: 1024,
            duration,
            max_slot_loss: 1.min(slots),
        },
        content: Content {
            cid: b"zDvZRwzmAbCdEfGhIjKlMnOpQrStUvWxYz123456789".to_vec(),
            merkle_root,
        },
        expiry,
        nonce: [nonce; 32],
    }
}

/// A non-empty proof that `TestVerifier` accepts.
pub const ANY_PROOF: &[u8] = &[1, 2, 3];

/// Asserts that `result` is a revert with the custom error `expected`.
#[track_caller]
pub fn assert_reverts<T: std::fmt::Debug>(result: Result<T, Error>, expected: MarketplaceError) {
    match result {
        Err(e) => assert_eq!(e.marketplace_error(), Some(expected), "{e}"),
        Ok(v) => panic!("expected {expected}, got Ok({v:?})"),
    }
}
