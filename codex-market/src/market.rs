//! The `Marketplace` trait: what a node needs of the marketplace, implemented on
//! chain by [`MarketplaceClient`].

use std::future::Future;

use alloy::primitives::Address;

use crate::client::{LoggedEvent, MarketplaceClient};
use crate::error::Result;
use crate::types::{MarketplaceConfig, RequestId, RequestState, SlotId, SlotState, StorageRequest};

/// The marketplace as a node uses it: as a client (request, withdraw), a host
/// (reserve, fill, prove, free) and a validator (mark missing proofs), with the
/// states, the proof clock and the events (by polling).
///
/// Each call acts as one account. Calls that pull tokens approve them first.
pub trait Marketplace: Send + Sync {
    /// The account calls are made from.
    fn account(&self) -> Address;

    /// The marketplace's configuration.
    fn config(&self) -> &MarketplaceConfig;

    /// Creates a request and pays its full price.
    fn request_storage(
        &self,
        request: &StorageRequest,
    ) -> impl Future<Output = Result<RequestId>> + Send;

    /// Reserves slot `index` of `request`.
    fn reserve_slot(
        &self,
        request: RequestId,
        index: u64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Fills a reserved slot with a proof of [`Marketplace::challenge`] and posts collateral.
    fn fill_slot(
        &self,
        request: RequestId,
        index: u64,
        proof: &[u8],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Submits the proof of the current period.
    fn submit_proof(&self, slot: SlotId, proof: &[u8]) -> impl Future<Output = Result<()>> + Send;

    /// Marks the proof of `period` missing (validator).
    fn mark_proof_as_missing(
        &self,
        slot: SlotId,
        period: u64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Frees a slot: collects a payout, or gives up a running slot.
    fn free_slot(&self, slot: SlotId) -> impl Future<Output = Result<()>> + Send;

    /// Withdraws the client's funds of an ended request.
    fn withdraw_funds(&self, request: RequestId) -> impl Future<Output = Result<()>> + Send;

    /// A request by id.
    fn get_request(
        &self,
        request: RequestId,
    ) -> impl Future<Output = Result<StorageRequest>> + Send;

    /// The state of a request.
    fn request_state(
        &self,
        request: RequestId,
    ) -> impl Future<Output = Result<RequestState>> + Send;

    /// The state of a slot.
    fn slot_state(&self, slot: SlotId) -> impl Future<Output = Result<SlotState>> + Send;

    /// The host of a slot, if any.
    fn slot_host(&self, slot: SlotId) -> impl Future<Output = Result<Option<Address>>> + Send;

    /// The challenge a proof sent now must answer (32 bytes; the entropy is
    /// [`crate::challenge_to_field`] of it).
    fn challenge(&self, slot: SlotId) -> impl Future<Output = Result<[u8; 32]>> + Send;

    /// Whether a proof is due in the current period.
    fn is_proof_required(&self, slot: SlotId) -> impl Future<Output = Result<bool>> + Send;

    /// Whether a proof will be due once the pointer leaves the downtime.
    fn will_proof_be_required(&self, slot: SlotId) -> impl Future<Output = Result<bool>> + Send;

    /// The current period.
    fn current_period(&self) -> impl Future<Output = Result<u64>> + Send;

    /// The slots this account holds.
    fn my_slots(&self) -> impl Future<Output = Result<Vec<SlotId>>> + Send;

    /// This account's requests that have not been withdrawn.
    fn my_requests(&self) -> impl Future<Output = Result<Vec<RequestId>>> + Send;

    /// The events from block `from` on, and the block to poll from next time.
    fn events_since(
        &self,
        from: u64,
    ) -> impl Future<Output = Result<(Vec<LoggedEvent>, u64)>> + Send;
}

impl Marketplace for MarketplaceClient {
    fn account(&self) -> Address {
        MarketplaceClient::account(self)
    }

    fn config(&self) -> &MarketplaceConfig {
        MarketplaceClient::config(self)
    }

    async fn request_storage(&self, request: &StorageRequest) -> Result<RequestId> {
        Ok(MarketplaceClient::request_storage(self, request).await?.0)
    }

    async fn reserve_slot(&self, request: RequestId, index: u64) -> Result<()> {
        MarketplaceClient::reserve_slot(self, request, index)
            .await
            .map(drop)
    }

    async fn fill_slot(&self, request: RequestId, index: u64, proof: &[u8]) -> Result<()> {
        MarketplaceClient::fill_slot(self, request, index, proof)
            .await
            .map(drop)
    }

    async fn submit_proof(&self, slot: SlotId, proof: &[u8]) -> Result<()> {
        MarketplaceClient::submit_proof(self, slot, proof)
            .await
            .map(drop)
    }

    async fn mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<()> {
        MarketplaceClient::mark_proof_as_missing(self, slot, period)
            .await
            .map(drop)
    }

    async fn free_slot(&self, slot: SlotId) -> Result<()> {
        MarketplaceClient::free_slot(self, slot).await.map(drop)
    }

    async fn withdraw_funds(&self, request: RequestId) -> Result<()> {
        MarketplaceClient::withdraw_funds(self, request)
            .await
            .map(drop)
    }

    async fn get_request(&self, request: RequestId) -> Result<StorageRequest> {
        MarketplaceClient::get_request(self, request).await
    }

    async fn request_state(&self, request: RequestId) -> Result<RequestState> {
        MarketplaceClient::request_state(self, request).await
    }

    async fn slot_state(&self, slot: SlotId) -> Result<SlotState> {
        MarketplaceClient::slot_state(self, slot).await
    }

    async fn slot_host(&self, slot: SlotId) -> Result<Option<Address>> {
        MarketplaceClient::get_host(self, slot).await
    }

    async fn challenge(&self, slot: SlotId) -> Result<[u8; 32]> {
        MarketplaceClient::next_block_challenge(self, slot).await
    }

    async fn is_proof_required(&self, slot: SlotId) -> Result<bool> {
        MarketplaceClient::is_proof_required(self, slot).await
    }

    async fn will_proof_be_required(&self, slot: SlotId) -> Result<bool> {
        MarketplaceClient::will_proof_be_required(self, slot).await
    }

    async fn current_period(&self) -> Result<u64> {
        MarketplaceClient::current_period(self).await
    }

    async fn my_slots(&self) -> Result<Vec<SlotId>> {
        MarketplaceClient::my_slots(self).await
    }

    async fn my_requests(&self) -> Result<Vec<RequestId>> {
        MarketplaceClient::my_requests(self).await
    }

    async fn events_since(&self, from: u64) -> Result<(Vec<LoggedEvent>, u64)> {
        let latest = self.block_number().await?;
        if latest < from {
            return Ok((Vec::new(), from));
        }
        Ok((self.events(from, latest).await?, latest + 1))
    }
}
