//! The fixtures: a chain, a deployment, funded accounts, and helpers to steer
//! time and the proof pointer; on anvil ([`Market`]) and in memory ([`Memory`]),
//! both behind [`Fixture`] so that one scenario runs on each.

use anyhow::Result;
use codex_market::alloy::primitives::{Address, B256, U256};
use codex_market::chain::dev_signer;
use codex_market::deploy::{TokenSource, VerifierSource, mint, set_refusing, signing_provider};
use codex_market::memory::{MemoryMarketplace, ProofVerifier};
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
        Self::start_on_with(LocalChain::start().await?, config, token, verifier).await
    }

    /// A deployment on `chain`.
    pub async fn start_on(
        chain: LocalChain,
        config: MarketplaceConfig,
        verifier: VerifierSource,
    ) -> Result<Self> {
        Self::start_on_with(chain, config, TokenSource::TestToken, verifier).await
    }

    async fn start_on_with(
        chain: LocalChain,
        config: MarketplaceConfig,
        token: TokenSource,
        verifier: VerifierSource,
    ) -> Result<Self> {
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

/// What a scenario needs of a chain besides the marketplace: funded accounts, the
/// clock, blocks, and the pointer.
#[allow(async_fn_in_trait)]
pub trait Fixture {
    /// The marketplace as one account.
    type M: Marketplace;

    fn config(&self) -> &MarketplaceConfig;

    /// Account `index` (1 and up) with [`TOKENS`].
    async fn account(&self, index: u64) -> Result<Self::M>;

    /// Account 0, without tokens.
    async fn reader(&self) -> Result<Self::M>;

    /// Where the marketplace holds its tokens.
    fn market_address(&self) -> Address;

    /// The next transaction lands at `timestamp`.
    async fn at(&self, timestamp: u64) -> Result<()>;

    async fn mine(&self, blocks: u64) -> Result<()>;

    async fn mine_at(&self, timestamp: u64) -> Result<()>;

    async fn block_number(&self) -> Result<u64>;

    async fn timestamp(&self) -> Result<u64>;

    async fn block_timestamp(&self, block: u64) -> Result<u64>;

    async fn block_hash(&self, block: u64) -> Result<B256>;

    /// The challenge of `slot` in block `block_number`, which falls in `period`.
    async fn challenge_at(&self, slot: SlotId, block_number: u64, period: u64) -> Result<[u8; 32]>;

    /// `getChallenge` at the latest block.
    async fn latest_challenge(&self, slot: SlotId) -> Result<[u8; 32]>;

    /// `slotProbability`.
    async fn slot_probability(&self, slot: SlotId) -> Result<U256>;

    /// Makes the token's transfers fail (a chain started with the refusing token).
    async fn set_refusing(&self, refusing: bool) -> Result<()>;

    fn period_start(&self, period: u64) -> u64 {
        period * self.config().proofs.period
    }

    /// A period that starts at least two periods after the latest block.
    async fn future_period(&self) -> Result<u64> {
        let now = self.timestamp().await?;
        Ok(self.config().period_of(now) + 2)
    }

    /// Pins the time of the next block at least 10 s before the end of its period
    /// and returns that period: a challenge read now holds for that block however
    /// long a loaded machine takes to send the transaction (a period boundary
    /// crossed in between changes the pointer, and the proof is refused).
    async fn pin_next_block(&self) -> Result<u64> {
        let period = self.config().proofs.period;
        let mut t = self.timestamp().await? + 1;
        if t % period + 10 >= period {
            t = t - t % period + period + 1;
        }
        self.at(t).await?;
        Ok(self.config().period_of(t))
    }

    /// Mines blocks until the pointer of `slot` for `period` at the next block
    /// is `target` (the next transaction sees that pointer).
    async fn steer_pointer(&self, slot: SlotId, period: u64, target: u8) -> Result<()> {
        let dp = self.config().proofs.downtime_product;
        let next = self.block_number().await? + 1;
        let now = pointer(next, period, dp, slot);
        let k = u64::from(target.wrapping_sub(now));
        if k > 0 {
            self.mine(k).await?;
        }
        let next = self.block_number().await? + 1;
        assert_eq!(pointer(next, period, dp, slot), target);
        Ok(())
    }

    /// The next transaction for `slot` in `period` sees a pointer outside the downtime.
    async fn leave_downtime(&self, slot: SlotId, period: u64) -> Result<()> {
        let target = self.config().proofs.downtime.saturating_add(40);
        self.steer_pointer(slot, period, target).await
    }

    /// The next transaction for `slot` in `period` sees a pointer in the downtime.
    async fn enter_downtime(&self, slot: SlotId, period: u64) -> Result<()> {
        assert!(self.config().proofs.downtime > 10);
        self.steer_pointer(slot, period, 5).await
    }

    /// The proof `EchoProofCheck` accepts for slot `index` of `request` in the
    /// next block, which lands in `period`.
    async fn echo_proof_for(
        &self,
        request: &StorageRequest,
        index: u64,
        period: u64,
    ) -> Result<Vec<u8>> {
        let next = self.block_number().await? + 1;
        let challenge = self
            .challenge_at(request.slot_id(index), next, period)
            .await?;
        Ok(echo_proof(&public_inputs(
            &challenge,
            &request.content.merkle_root,
            index,
        )))
    }

    async fn balances(&self, who: &[Address]) -> Result<Vec<U256>> {
        let reader = self.reader().await?;
        let mut out = Vec::new();
        for a in who {
            out.push(reader.balance_of(*a).await?);
        }
        Ok(out)
    }
}

impl Fixture for Market {
    type M = MarketplaceClient;

    fn config(&self) -> &MarketplaceConfig {
        &self.config
    }

    async fn account(&self, index: u64) -> Result<MarketplaceClient> {
        Market::account(self, index).await
    }

    async fn reader(&self) -> Result<MarketplaceClient> {
        Market::reader(self).await
    }

    fn market_address(&self) -> Address {
        self.deployment.marketplace
    }

    async fn at(&self, timestamp: u64) -> Result<()> {
        Market::at(self, timestamp).await
    }

    async fn mine(&self, blocks: u64) -> Result<()> {
        Ok(self.chain.mine(blocks).await?)
    }

    async fn mine_at(&self, timestamp: u64) -> Result<()> {
        Ok(self.chain.mine_at(timestamp).await?)
    }

    async fn block_number(&self) -> Result<u64> {
        Ok(self.chain.block_number().await?)
    }

    async fn timestamp(&self) -> Result<u64> {
        Ok(self.chain.timestamp().await?)
    }

    async fn block_timestamp(&self, block: u64) -> Result<u64> {
        Market::block_timestamp(self, block).await
    }

    async fn block_hash(&self, block: u64) -> Result<B256> {
        use codex_market::alloy::providers::Provider;
        let b = self
            .chain
            .provider()
            .get_block_by_number(block.into())
            .await?
            .unwrap();
        Ok(b.header.hash)
    }

    async fn challenge_at(&self, slot: SlotId, block_number: u64, period: u64) -> Result<[u8; 32]> {
        Ok(self
            .reader()
            .await?
            .challenge_at(slot, block_number, period)
            .await?)
    }

    async fn latest_challenge(&self, slot: SlotId) -> Result<[u8; 32]> {
        Ok(self.reader().await?.challenge(slot).await?)
    }

    async fn slot_probability(&self, slot: SlotId) -> Result<U256> {
        Ok(self.reader().await?.slot_probability(slot).await?)
    }

    async fn set_refusing(&self, refusing: bool) -> Result<()> {
        let provider = self.chain.provider_for(&self.chain.account(0).await?);
        Ok(set_refusing(&provider, self.deployment.token, refusing).await?)
    }
}

/// The marketplace in memory, with the same accounts as on anvil.
pub struct Memory {
    pub chain: MemoryMarketplace,
    pub config: MarketplaceConfig,
}

impl Memory {
    pub fn start(
        config: MarketplaceConfig,
        verifier: impl ProofVerifier + 'static,
    ) -> Result<Self> {
        let chain = MemoryMarketplace::deploy(config.clone(), verifier)?;
        Ok(Memory { chain, config })
    }

    fn handle(&self, index: u64) -> Result<MemoryMarketplace> {
        Ok(self.chain.connect(dev_signer(index)?.address()))
    }
}

impl Fixture for Memory {
    type M = MemoryMarketplace;

    fn config(&self) -> &MarketplaceConfig {
        &self.config
    }

    async fn account(&self, index: u64) -> Result<MemoryMarketplace> {
        let m = self.handle(index)?;
        self.chain.mint(m.account(), U256::from(TOKENS));
        Ok(m)
    }

    async fn reader(&self) -> Result<MemoryMarketplace> {
        self.handle(0)
    }

    fn market_address(&self) -> Address {
        self.chain.address()
    }

    async fn at(&self, timestamp: u64) -> Result<()> {
        Ok(self.chain.set_next_block_timestamp(timestamp)?)
    }

    async fn mine(&self, blocks: u64) -> Result<()> {
        self.chain.mine(blocks);
        Ok(())
    }

    async fn mine_at(&self, timestamp: u64) -> Result<()> {
        Ok(self.chain.set_time(timestamp)?)
    }

    async fn block_number(&self) -> Result<u64> {
        Ok(self.chain.block_number().await?)
    }

    async fn timestamp(&self) -> Result<u64> {
        Ok(self.chain.timestamp().await?)
    }

    async fn block_timestamp(&self, block: u64) -> Result<u64> {
        self.chain
            .block_timestamp(block)
            .ok_or_else(|| anyhow::anyhow!("block {block} not mined"))
    }

    async fn block_hash(&self, block: u64) -> Result<B256> {
        Ok(codex_market::memory::block_hash(block))
    }

    async fn challenge_at(&self, slot: SlotId, block_number: u64, period: u64) -> Result<[u8; 32]> {
        Ok(self.chain.challenge_at(slot, block_number, period))
    }

    async fn latest_challenge(&self, slot: SlotId) -> Result<[u8; 32]> {
        let (n, t) = (self.block_number().await?, self.timestamp().await?);
        Ok(self.chain.challenge_at(slot, n, self.config.period_of(t)))
    }

    async fn slot_probability(&self, slot: SlotId) -> Result<U256> {
        Ok(self.chain.slot_probability(slot))
    }

    async fn set_refusing(&self, refusing: bool) -> Result<()> {
        self.chain.set_refusing(refusing);
        Ok(())
    }
}
