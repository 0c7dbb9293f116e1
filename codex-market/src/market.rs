//! The `Marketplace` trait: everything a node's roles (purchasing, sales, the
//! validator) need of the marketplace. [`MarketplaceClient`] implements it on chain,
//! [`crate::memory::MemoryMarketplace`] in memory with the contracts' rules and a
//! clock that tests move.
//!
//! The trait is object safe (`Arc<dyn Marketplace>`), so a node holds whichever
//! implementation it was given without being generic over it.

use alloy::primitives::{Address, U256};

use crate::client::{LoggedEvent, MarketplaceClient, TxReceipt};
use crate::error::Result;
use crate::types::{MarketplaceConfig, RequestId, RequestState, SlotId, SlotState, StorageRequest};

/// The marketplace as a node uses it, acting as one account: as a client (request,
/// withdraw), a host (reserve, fill, prove, free), a validator (mark missing proofs),
/// with the token, the states, the proof clock and the events (by polling).
///
/// Calls that pull tokens (`request_storage`, `fill_slot`) approve the amount first
/// when the allowance does not cover it. Reverts are [`crate::Error::Reverted`] with
/// the contract's custom error ([`crate::Error::marketplace_error`]).
///
/// Views read the latest block; a transaction sent now lands in the next block
/// ([`Marketplace::next_block`]), whose number and time decide its challenge and period.
///
/// Implemented for `Arc<T>` (and so `Arc<dyn Marketplace>`) as well as for
/// [`MarketplaceClient`] and [`crate::memory::MemoryMarketplace`].
///
/// # Errors
/// Every call: [`crate::Error::Reverted`] when the contract (or the token) reverts,
/// naming the call and the request or slot it was about; on chain also
/// [`crate::Error::Rpc`] when the node cannot be reached or answers with an error, and
/// [`crate::Error::Failed`] for a transaction mined as failed without revert data.
///
/// # Cancel safety
/// Views are cancel safe. A transaction dropped after it was sent may still be mined:
/// read the state again (or poll [`Events`]) rather than assume it failed.
#[async_trait::async_trait]
pub trait Marketplace: Send + Sync + std::fmt::Debug {
    /// The account calls are made from.
    fn account(&self) -> Address;

    /// The marketplace's configuration.
    fn config(&self) -> &MarketplaceConfig;

    /// What the account's transaction manager has done (transactions sent, replaced,
    /// refused for their nonce...), where transactions go through one; `None` otherwise.
    fn transaction_stats(&self) -> Option<crate::TxStats> {
        None
    }

    // ------------------------------------------------------------ token

    /// The token balance of `holder`.
    async fn balance_of(&self, holder: Address) -> Result<U256>;

    /// Lets the marketplace take `amount` from this account (ERC-20 `approve`).
    async fn approve(&self, amount: U256) -> Result<TxReceipt>;

    /// Approves the collateral that filling slot `index` takes, unless the allowance
    /// covers it: call it before reading the challenge, so the fill is one transaction.
    async fn approve_collateral(&self, request: RequestId, index: u64)
    -> Result<Option<TxReceipt>>;

    // ------------------------------------------------------------ client

    /// Creates a request and pays its full price (`maxPrice`).
    async fn request_storage(&self, request: &StorageRequest) -> Result<(RequestId, TxReceipt)>;

    /// Withdraws the client's funds of a Cancelled, Failed or Finished request.
    async fn withdraw_funds(&self, request: RequestId) -> Result<TxReceipt>;

    /// Withdraws the client's funds to `recipient`.
    async fn withdraw_funds_to(&self, request: RequestId, recipient: Address) -> Result<TxReceipt>;

    // ------------------------------------------------------------ host

    /// Whether this account may reserve slot `index` of `request` now.
    async fn can_reserve_slot(&self, request: RequestId, index: u64) -> Result<bool>;

    /// Reserves slot `index` of `request`.
    async fn reserve_slot(&self, request: RequestId, index: u64) -> Result<TxReceipt>;

    /// The collateral filling slot `index` takes now (less the repair reward in Repair).
    async fn collateral_to_fill(&self, request: RequestId, index: u64) -> Result<U256>;

    /// Fills a reserved slot with a proof of [`Marketplace::next_block_challenge`] and
    /// posts the collateral.
    async fn fill_slot(&self, request: RequestId, index: u64, proof: &[u8]) -> Result<TxReceipt>;

    /// Submits the proof of the current period.
    async fn submit_proof(&self, slot: SlotId, proof: &[u8]) -> Result<TxReceipt>;

    /// Frees a slot: collects the payout of a Finished or Cancelled slot, lets go of a
    /// Failed one, or gives up a Filled one (its collateral is lost).
    async fn free_slot(&self, slot: SlotId) -> Result<TxReceipt>;

    // ------------------------------------------------------------ validator

    /// `Ok` when the proof of `period` can be marked missing now; the revert says why not.
    async fn can_mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<()>;

    /// Marks the proof of `period` missing; this account gets the validator reward.
    async fn mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<TxReceipt>;

    // ------------------------------------------------------------ views

    /// A request by id.
    async fn get_request(&self, request: RequestId) -> Result<StorageRequest>;

    /// The request and index of a slot that was filled once.
    async fn get_active_slot(&self, slot: SlotId) -> Result<(StorageRequest, u64)>;

    /// The state of a request, with expiry and end applied.
    async fn request_state(&self, request: RequestId) -> Result<RequestState>;

    /// The state of a slot, with its request's state applied.
    async fn slot_state(&self, slot: SlotId) -> Result<SlotState>;

    /// When the request ends (or ended, when cancelled or failed).
    async fn request_end(&self, request: RequestId) -> Result<u64>;

    /// When the request is cancelled unless all its slots are filled.
    async fn request_expiry(&self, request: RequestId) -> Result<u64>;

    /// The host of a slot, if it has one.
    async fn get_host(&self, slot: SlotId) -> Result<Option<Address>>;

    /// The collateral the slot's host would get back now.
    async fn current_collateral(&self, slot: SlotId) -> Result<U256>;

    /// Proofs the slot's current host missed (and were marked).
    async fn missing_proofs(&self, slot: SlotId) -> Result<u64>;

    /// The slots this account holds and has not been paid for.
    async fn my_slots(&self) -> Result<Vec<SlotId>>;

    /// This account's requests that have not been withdrawn.
    async fn my_requests(&self) -> Result<Vec<RequestId>>;

    // ------------------------------------------------------------ proof clock

    /// The slot's pointer at the latest block.
    async fn pointer(&self, slot: SlotId) -> Result<u8>;

    /// The challenge a proof sent now must answer: the one of the next block (32
    /// bytes; the prover's entropy is [`crate::challenge_to_field`] of it).
    async fn next_block_challenge(&self, slot: SlotId) -> Result<[u8; 32]>;

    /// Whether a proof is due in the current period.
    async fn is_proof_required(&self, slot: SlotId) -> Result<bool>;

    /// Whether a proof will be due once the pointer leaves the downtime.
    async fn will_proof_be_required(&self, slot: SlotId) -> Result<bool>;

    // ------------------------------------------------------------ time

    /// The latest block's number.
    async fn block_number(&self) -> Result<u64>;

    /// The latest block's timestamp.
    async fn timestamp(&self) -> Result<u64>;

    /// The number and timestamp of the block a transaction sent now lands in.
    async fn next_block(&self) -> Result<(u64, u64)>;

    /// The period of the latest block.
    async fn current_period(&self) -> Result<u64> {
        Ok(self.config().period_of(self.timestamp().await?))
    }

    /// The period a transaction sent now counts in.
    async fn next_period(&self) -> Result<u64> {
        Ok(self.config().period_of(self.next_block().await?.1))
    }

    // ------------------------------------------------------------ events

    /// The marketplace's events in blocks `from..=to`, oldest first.
    async fn events(&self, from: u64, to: u64) -> Result<Vec<LoggedEvent>>;

    /// The hash of block `number`, `None` past the head.
    async fn block_hash(&self, number: u64) -> Result<Option<alloy::primitives::B256>>;

    /// The events from block `from` on, and the block to read from next time.
    async fn events_since(&self, from: u64) -> Result<(Vec<LoggedEvent>, u64)> {
        let latest = self.block_number().await?;
        if latest < from {
            return Ok((Vec::new(), from));
        }
        Ok((self.events(from, latest).await?, latest + 1))
    }
}

/// Hashes of handled blocks an [`Events`] keeps, to find where a reorganisation forked.
const KEPT_HASHES: usize = 64;

/// Blocks one [`Events::poll`] reads at most, so a poller far behind catches up in
/// steps and its caller stays responsive.
pub const MAX_BLOCKS_PER_POLL: u64 = 10_000;

/// A position in the marketplace's events: each [`Events::poll`] returns the events
/// of the blocks mined since the last one (the roles' "subscription").
///
/// It reads only blocks with [`Events::with_confirmations`] blocks on top, and keeps
/// the hashes of the last blocks it handled: when the chain no longer has one of them
/// (a reorganisation), the next poll reads again from where the chains forked and
/// counts it in [`Events::reorgs`]. Serialize it (serde) to continue after a restart
/// from the last block handled.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Events {
    next_block: u64,
    #[serde(default)]
    confirmations: u64,
    /// `(number, hash)` of the last handled blocks, oldest first.
    #[serde(default)]
    recent: std::collections::VecDeque<(u64, alloy::primitives::B256)>,
    #[serde(skip)]
    reorgs: u64,
}

impl Events {
    /// Events from block `from_block` on.
    pub fn from_block(from_block: u64) -> Self {
        Events {
            next_block: from_block,
            confirmations: 0,
            recent: std::collections::VecDeque::new(),
            reorgs: 0,
        }
    }

    /// Reads only blocks with `n` blocks on top of them (0: up to the latest).
    #[must_use]
    pub fn with_confirmations(mut self, n: u64) -> Self {
        self.confirmations = n;
        self
    }

    /// The events of the blocks mined (and confirmed) since the last poll, oldest
    /// first; at most [`MAX_BLOCKS_PER_POLL`] blocks' worth. After a reorganisation,
    /// the events of the blocks since the fork, as the chain has them now (events
    /// returned before from the abandoned blocks may be among them again or gone:
    /// handle events idempotently and read the state when it matters).
    ///
    /// # Errors
    /// As [`Marketplace::events`]; the next poll reads the same blocks again.
    ///
    /// # Cancel safety
    /// Cancel safe: the position only moves when the events are returned.
    pub async fn poll<M: Marketplace + ?Sized>(&mut self, market: &M) -> Result<Vec<LoggedEvent>> {
        // No new block, one call: a reorganisation that replaced the latest block
        // without a new one on top is found with the next block.
        let latest = market.block_number().await?;
        let safe = latest.saturating_sub(self.confirmations);
        if safe < self.next_block {
            return Ok(Vec::new());
        }
        // A rewind only moves the position back: `safe` stays ahead of it.
        if let Some(&(number, hash)) = self.recent.back()
            && market.block_hash(number).await? != Some(hash)
        {
            self.rewind(market).await?;
        }
        let to = safe.min(self.next_block.saturating_add(MAX_BLOCKS_PER_POLL - 1));
        // The hash first: if the chain reorganises while the logs are read, the next
        // poll finds this hash gone and reads again.
        let hash = market.block_hash(to).await?;
        let events = market.events(self.next_block, to).await?;
        if let Some(hash) = hash {
            self.recent.push_back((to, hash));
            while self.recent.len() > KEPT_HASHES {
                self.recent.pop_front();
            }
        }
        self.next_block = to + 1;
        Ok(events)
    }

    /// Goes back to the newest kept block the chain still has (or the oldest kept).
    async fn rewind<M: Marketplace + ?Sized>(&mut self, market: &M) -> Result<()> {
        self.reorgs += 1;
        while let Some(&(number, hash)) = self.recent.back() {
            if market.block_hash(number).await? == Some(hash) {
                self.next_block = number + 1;
                tracing::warn!(
                    fork = number,
                    "the chain reorganised: reading its blocks again"
                );
                return Ok(());
            }
            self.next_block = number;
            self.recent.pop_back();
        }
        tracing::warn!(
            from = self.next_block,
            "the chain reorganised deeper than the blocks kept: reading again"
        );
        Ok(())
    }

    /// The first block the next poll reads.
    pub fn next_block(&self) -> u64 {
        self.next_block
    }

    /// The confirmations a block needs before it is read.
    pub fn confirmations(&self) -> u64 {
        self.confirmations
    }

    /// Reorganisations seen since this position was made or loaded.
    pub fn reorgs(&self) -> u64 {
        self.reorgs
    }
}

#[async_trait::async_trait]
impl Marketplace for MarketplaceClient {
    fn account(&self) -> Address {
        MarketplaceClient::account(self)
    }

    fn config(&self) -> &MarketplaceConfig {
        MarketplaceClient::config(self)
    }

    fn transaction_stats(&self) -> Option<crate::TxStats> {
        Some(self.transactions().stats())
    }

    async fn balance_of(&self, holder: Address) -> Result<U256> {
        MarketplaceClient::balance_of(self, holder).await
    }

    async fn approve(&self, amount: U256) -> Result<TxReceipt> {
        MarketplaceClient::approve(self, amount).await
    }

    async fn approve_collateral(
        &self,
        request: RequestId,
        index: u64,
    ) -> Result<Option<TxReceipt>> {
        MarketplaceClient::approve_collateral(self, request, index).await
    }

    async fn request_storage(&self, request: &StorageRequest) -> Result<(RequestId, TxReceipt)> {
        MarketplaceClient::request_storage(self, request).await
    }

    async fn withdraw_funds(&self, request: RequestId) -> Result<TxReceipt> {
        MarketplaceClient::withdraw_funds(self, request).await
    }

    async fn withdraw_funds_to(&self, request: RequestId, recipient: Address) -> Result<TxReceipt> {
        MarketplaceClient::withdraw_funds_to(self, request, recipient).await
    }

    async fn can_reserve_slot(&self, request: RequestId, index: u64) -> Result<bool> {
        MarketplaceClient::can_reserve_slot(self, request, index).await
    }

    async fn reserve_slot(&self, request: RequestId, index: u64) -> Result<TxReceipt> {
        MarketplaceClient::reserve_slot(self, request, index).await
    }

    async fn collateral_to_fill(&self, request: RequestId, index: u64) -> Result<U256> {
        MarketplaceClient::collateral_to_fill(self, request, index).await
    }

    async fn fill_slot(&self, request: RequestId, index: u64, proof: &[u8]) -> Result<TxReceipt> {
        MarketplaceClient::fill_slot(self, request, index, proof).await
    }

    async fn submit_proof(&self, slot: SlotId, proof: &[u8]) -> Result<TxReceipt> {
        MarketplaceClient::submit_proof(self, slot, proof).await
    }

    async fn free_slot(&self, slot: SlotId) -> Result<TxReceipt> {
        MarketplaceClient::free_slot(self, slot).await
    }

    async fn can_mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<()> {
        MarketplaceClient::can_mark_proof_as_missing(self, slot, period).await
    }

    async fn mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<TxReceipt> {
        MarketplaceClient::mark_proof_as_missing(self, slot, period).await
    }

    async fn get_request(&self, request: RequestId) -> Result<StorageRequest> {
        MarketplaceClient::get_request(self, request).await
    }

    async fn get_active_slot(&self, slot: SlotId) -> Result<(StorageRequest, u64)> {
        MarketplaceClient::get_active_slot(self, slot).await
    }

    async fn request_state(&self, request: RequestId) -> Result<RequestState> {
        MarketplaceClient::request_state(self, request).await
    }

    async fn slot_state(&self, slot: SlotId) -> Result<SlotState> {
        MarketplaceClient::slot_state(self, slot).await
    }

    async fn request_end(&self, request: RequestId) -> Result<u64> {
        MarketplaceClient::request_end(self, request).await
    }

    async fn request_expiry(&self, request: RequestId) -> Result<u64> {
        MarketplaceClient::request_expiry(self, request).await
    }

    async fn get_host(&self, slot: SlotId) -> Result<Option<Address>> {
        MarketplaceClient::get_host(self, slot).await
    }

    async fn current_collateral(&self, slot: SlotId) -> Result<U256> {
        MarketplaceClient::current_collateral(self, slot).await
    }

    async fn missing_proofs(&self, slot: SlotId) -> Result<u64> {
        MarketplaceClient::missing_proofs(self, slot).await
    }

    async fn my_slots(&self) -> Result<Vec<SlotId>> {
        MarketplaceClient::my_slots(self).await
    }

    async fn my_requests(&self) -> Result<Vec<RequestId>> {
        MarketplaceClient::my_requests(self).await
    }

    async fn pointer(&self, slot: SlotId) -> Result<u8> {
        MarketplaceClient::pointer(self, slot).await
    }

    async fn next_block_challenge(&self, slot: SlotId) -> Result<[u8; 32]> {
        MarketplaceClient::next_block_challenge(self, slot).await
    }

    async fn is_proof_required(&self, slot: SlotId) -> Result<bool> {
        MarketplaceClient::is_proof_required(self, slot).await
    }

    async fn will_proof_be_required(&self, slot: SlotId) -> Result<bool> {
        MarketplaceClient::will_proof_be_required(self, slot).await
    }

    async fn block_number(&self) -> Result<u64> {
        MarketplaceClient::block_number(self).await
    }

    async fn timestamp(&self) -> Result<u64> {
        MarketplaceClient::timestamp(self).await
    }

    async fn next_block(&self) -> Result<(u64, u64)> {
        MarketplaceClient::next_block(self).await
    }

    async fn current_period(&self) -> Result<u64> {
        MarketplaceClient::current_period(self).await
    }

    async fn next_period(&self) -> Result<u64> {
        MarketplaceClient::next_period(self).await
    }

    async fn events(&self, from: u64, to: u64) -> Result<Vec<LoggedEvent>> {
        MarketplaceClient::events(self, from, to).await
    }

    async fn block_hash(&self, number: u64) -> Result<Option<alloy::primitives::B256>> {
        MarketplaceClient::block_hash(self, number).await
    }
}

/// A shared marketplace is one: `Arc<MemoryMarketplace>`, `Arc<dyn Marketplace>`.
#[async_trait::async_trait]
impl<T: Marketplace + ?Sized> Marketplace for std::sync::Arc<T> {
    fn account(&self) -> Address {
        (**self).account()
    }

    fn config(&self) -> &MarketplaceConfig {
        (**self).config()
    }

    fn transaction_stats(&self) -> Option<crate::TxStats> {
        (**self).transaction_stats()
    }

    async fn balance_of(&self, holder: Address) -> Result<U256> {
        (**self).balance_of(holder).await
    }

    async fn approve(&self, amount: U256) -> Result<TxReceipt> {
        (**self).approve(amount).await
    }

    async fn approve_collateral(
        &self,
        request: RequestId,
        index: u64,
    ) -> Result<Option<TxReceipt>> {
        (**self).approve_collateral(request, index).await
    }

    async fn request_storage(&self, request: &StorageRequest) -> Result<(RequestId, TxReceipt)> {
        (**self).request_storage(request).await
    }

    async fn withdraw_funds(&self, request: RequestId) -> Result<TxReceipt> {
        (**self).withdraw_funds(request).await
    }

    async fn withdraw_funds_to(&self, request: RequestId, recipient: Address) -> Result<TxReceipt> {
        (**self).withdraw_funds_to(request, recipient).await
    }

    async fn can_reserve_slot(&self, request: RequestId, index: u64) -> Result<bool> {
        (**self).can_reserve_slot(request, index).await
    }

    async fn reserve_slot(&self, request: RequestId, index: u64) -> Result<TxReceipt> {
        (**self).reserve_slot(request, index).await
    }

    async fn collateral_to_fill(&self, request: RequestId, index: u64) -> Result<U256> {
        (**self).collateral_to_fill(request, index).await
    }

    async fn fill_slot(&self, request: RequestId, index: u64, proof: &[u8]) -> Result<TxReceipt> {
        (**self).fill_slot(request, index, proof).await
    }

    async fn submit_proof(&self, slot: SlotId, proof: &[u8]) -> Result<TxReceipt> {
        (**self).submit_proof(slot, proof).await
    }

    async fn free_slot(&self, slot: SlotId) -> Result<TxReceipt> {
        (**self).free_slot(slot).await
    }

    async fn can_mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<()> {
        (**self).can_mark_proof_as_missing(slot, period).await
    }

    async fn mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<TxReceipt> {
        (**self).mark_proof_as_missing(slot, period).await
    }

    async fn get_request(&self, request: RequestId) -> Result<StorageRequest> {
        (**self).get_request(request).await
    }

    async fn get_active_slot(&self, slot: SlotId) -> Result<(StorageRequest, u64)> {
        (**self).get_active_slot(slot).await
    }

    async fn request_state(&self, request: RequestId) -> Result<RequestState> {
        (**self).request_state(request).await
    }

    async fn slot_state(&self, slot: SlotId) -> Result<SlotState> {
        (**self).slot_state(slot).await
    }

    async fn request_end(&self, request: RequestId) -> Result<u64> {
        (**self).request_end(request).await
    }

    async fn request_expiry(&self, request: RequestId) -> Result<u64> {
        (**self).request_expiry(request).await
    }

    async fn get_host(&self, slot: SlotId) -> Result<Option<Address>> {
        (**self).get_host(slot).await
    }

    async fn current_collateral(&self, slot: SlotId) -> Result<U256> {
        (**self).current_collateral(slot).await
    }

    async fn missing_proofs(&self, slot: SlotId) -> Result<u64> {
        (**self).missing_proofs(slot).await
    }

    async fn my_slots(&self) -> Result<Vec<SlotId>> {
        (**self).my_slots().await
    }

    async fn my_requests(&self) -> Result<Vec<RequestId>> {
        (**self).my_requests().await
    }

    async fn pointer(&self, slot: SlotId) -> Result<u8> {
        (**self).pointer(slot).await
    }

    async fn next_block_challenge(&self, slot: SlotId) -> Result<[u8; 32]> {
        (**self).next_block_challenge(slot).await
    }

    async fn is_proof_required(&self, slot: SlotId) -> Result<bool> {
        (**self).is_proof_required(slot).await
    }

    async fn will_proof_be_required(&self, slot: SlotId) -> Result<bool> {
        (**self).will_proof_be_required(slot).await
    }

    async fn block_number(&self) -> Result<u64> {
        (**self).block_number().await
    }

    async fn timestamp(&self) -> Result<u64> {
        (**self).timestamp().await
    }

    async fn next_block(&self) -> Result<(u64, u64)> {
        (**self).next_block().await
    }

    async fn current_period(&self) -> Result<u64> {
        (**self).current_period().await
    }

    async fn next_period(&self) -> Result<u64> {
        (**self).next_period().await
    }

    async fn events(&self, from: u64, to: u64) -> Result<Vec<LoggedEvent>> {
        (**self).events(from, to).await
    }

    async fn events_since(&self, from: u64) -> Result<(Vec<LoggedEvent>, u64)> {
        (**self).events_since(from).await
    }

    async fn block_hash(&self, number: u64) -> Result<Option<alloy::primitives::B256>> {
        (**self).block_hash(number).await
    }
}
