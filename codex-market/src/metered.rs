//! [`Metered`]: any [`Marketplace`] with its calls counted, by method and in all, and
//! its errors: what a node reports as chain calls, and what a test counts to check
//! that a role stays within its RPC budget.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alloy::primitives::{Address, B256, U256};

use crate::client::{LoggedEvent, TxReceipt};
use crate::error::Result;
use crate::market::Marketplace;
use crate::types::{MarketplaceConfig, RequestId, RequestState, SlotId, SlotState, StorageRequest};

/// Counts of the calls made through a [`Metered`] marketplace.
#[derive(Debug, Default)]
pub struct CallCounts {
    calls: AtomicU64,
    errors: AtomicU64,
    by_method: Mutex<BTreeMap<&'static str, u64>>,
    errors_by_method: Mutex<BTreeMap<&'static str, u64>>,
}

impl CallCounts {
    /// Calls made, in all.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Calls that returned an error.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Calls by method name (`"slot_state"`, `"submit_proof"`, ...).
    pub fn by_method(&self) -> BTreeMap<&'static str, u64> {
        self.by_method
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Calls that returned an error, by method name.
    pub fn errors_by_method(&self) -> BTreeMap<&'static str, u64> {
        self.errors_by_method
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, method: &'static str, ok: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
            *self
                .errors_by_method
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(method)
                .or_default() += 1;
        }
        *self
            .by_method
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(method)
            .or_default() += 1;
    }
}

/// `M` with every call counted in a [`CallCounts`] that its clones share. A call of
/// the trait is one count, whatever it costs on the wire (a view is one `eth_call`;
/// a transaction is an estimate, a send and receipt polls).
#[derive(Clone, Debug)]
pub struct Metered<M> {
    inner: M,
    counts: Arc<CallCounts>,
}

impl<M: Marketplace> Metered<M> {
    /// Counts the calls made to `inner` through the value returned.
    pub fn new(inner: M) -> Self {
        Metered {
            inner,
            counts: Arc::default(),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> &Arc<CallCounts> {
        &self.counts
    }

    /// The marketplace counted.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    async fn count<T>(
        &self,
        method: &'static str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let out = call.await;
        self.counts.record(method, out.is_ok());
        out
    }
}

#[async_trait::async_trait]
impl<M: Marketplace> Marketplace for Metered<M> {
    fn account(&self) -> Address {
        self.inner.account()
    }

    fn config(&self) -> &MarketplaceConfig {
        self.inner.config()
    }

    fn transaction_stats(&self) -> Option<crate::TxStats> {
        self.inner.transaction_stats()
    }

    async fn balance_of(&self, holder: Address) -> Result<U256> {
        self.count("balance_of", self.inner.balance_of(holder))
            .await
    }

    async fn approve(&self, amount: U256) -> Result<TxReceipt> {
        self.count("approve", self.inner.approve(amount)).await
    }

    async fn approve_collateral(
        &self,
        request: RequestId,
        index: u64,
    ) -> Result<Option<TxReceipt>> {
        self.count(
            "approve_collateral",
            self.inner.approve_collateral(request, index),
        )
        .await
    }

    async fn request_storage(&self, request: &StorageRequest) -> Result<(RequestId, TxReceipt)> {
        self.count("request_storage", self.inner.request_storage(request))
            .await
    }

    async fn withdraw_funds(&self, request: RequestId) -> Result<TxReceipt> {
        self.count("withdraw_funds", self.inner.withdraw_funds(request))
            .await
    }

    async fn withdraw_funds_to(&self, request: RequestId, recipient: Address) -> Result<TxReceipt> {
        self.count(
            "withdraw_funds_to",
            self.inner.withdraw_funds_to(request, recipient),
        )
        .await
    }

    async fn can_reserve_slot(&self, request: RequestId, index: u64) -> Result<bool> {
        self.count(
            "can_reserve_slot",
            self.inner.can_reserve_slot(request, index),
        )
        .await
    }

    async fn reserve_slot(&self, request: RequestId, index: u64) -> Result<TxReceipt> {
        self.count("reserve_slot", self.inner.reserve_slot(request, index))
            .await
    }

    async fn collateral_to_fill(&self, request: RequestId, index: u64) -> Result<U256> {
        self.count(
            "collateral_to_fill",
            self.inner.collateral_to_fill(request, index),
        )
        .await
    }

    async fn fill_slot(&self, request: RequestId, index: u64, proof: &[u8]) -> Result<TxReceipt> {
        self.count("fill_slot", self.inner.fill_slot(request, index, proof))
            .await
    }

    async fn submit_proof(&self, slot: SlotId, proof: &[u8]) -> Result<TxReceipt> {
        self.count("submit_proof", self.inner.submit_proof(slot, proof))
            .await
    }

    async fn free_slot(&self, slot: SlotId) -> Result<TxReceipt> {
        self.count("free_slot", self.inner.free_slot(slot)).await
    }

    async fn can_mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<()> {
        self.count(
            "can_mark_proof_as_missing",
            self.inner.can_mark_proof_as_missing(slot, period),
        )
        .await
    }

    async fn mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<TxReceipt> {
        self.count(
            "mark_proof_as_missing",
            self.inner.mark_proof_as_missing(slot, period),
        )
        .await
    }

    async fn get_request(&self, request: RequestId) -> Result<StorageRequest> {
        self.count("get_request", self.inner.get_request(request))
            .await
    }

    async fn get_active_slot(&self, slot: SlotId) -> Result<(StorageRequest, u64)> {
        self.count("get_active_slot", self.inner.get_active_slot(slot))
            .await
    }

    async fn request_state(&self, request: RequestId) -> Result<RequestState> {
        self.count("request_state", self.inner.request_state(request))
            .await
    }

    async fn slot_state(&self, slot: SlotId) -> Result<SlotState> {
        self.count("slot_state", self.inner.slot_state(slot)).await
    }

    async fn request_end(&self, request: RequestId) -> Result<u64> {
        self.count("request_end", self.inner.request_end(request))
            .await
    }

    async fn request_expiry(&self, request: RequestId) -> Result<u64> {
        self.count("request_expiry", self.inner.request_expiry(request))
            .await
    }

    async fn get_host(&self, slot: SlotId) -> Result<Option<Address>> {
        self.count("get_host", self.inner.get_host(slot)).await
    }

    async fn current_collateral(&self, slot: SlotId) -> Result<U256> {
        self.count("current_collateral", self.inner.current_collateral(slot))
            .await
    }

    async fn missing_proofs(&self, slot: SlotId) -> Result<u64> {
        self.count("missing_proofs", self.inner.missing_proofs(slot))
            .await
    }

    async fn my_slots(&self) -> Result<Vec<SlotId>> {
        self.count("my_slots", self.inner.my_slots()).await
    }

    async fn my_requests(&self) -> Result<Vec<RequestId>> {
        self.count("my_requests", self.inner.my_requests()).await
    }

    async fn pointer(&self, slot: SlotId) -> Result<u8> {
        self.count("pointer", self.inner.pointer(slot)).await
    }

    async fn next_block_challenge(&self, slot: SlotId) -> Result<[u8; 32]> {
        self.count(
            "next_block_challenge",
            self.inner.next_block_challenge(slot),
        )
        .await
    }

    async fn is_proof_required(&self, slot: SlotId) -> Result<bool> {
        self.count("is_proof_required", self.inner.is_proof_required(slot))
            .await
    }

    async fn will_proof_be_required(&self, slot: SlotId) -> Result<bool> {
        self.count(
            "will_proof_be_required",
            self.inner.will_proof_be_required(slot),
        )
        .await
    }

    async fn block_number(&self) -> Result<u64> {
        self.count("block_number", self.inner.block_number()).await
    }

    async fn timestamp(&self) -> Result<u64> {
        self.count("timestamp", self.inner.timestamp()).await
    }

    async fn next_block(&self) -> Result<(u64, u64)> {
        self.count("next_block", self.inner.next_block()).await
    }

    async fn current_period(&self) -> Result<u64> {
        self.count("current_period", self.inner.current_period())
            .await
    }

    async fn next_period(&self) -> Result<u64> {
        self.count("next_period", self.inner.next_period()).await
    }

    async fn events(&self, from: u64, to: u64) -> Result<Vec<LoggedEvent>> {
        self.count("events", self.inner.events(from, to)).await
    }

    async fn events_since(&self, from: u64) -> Result<(Vec<LoggedEvent>, u64)> {
        self.count("events_since", self.inner.events_since(from))
            .await
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>> {
        self.count("block_hash", self.inner.block_hash(number))
            .await
    }
}
