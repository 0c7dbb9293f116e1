//! Sales (the host side, reference §8.1): availabilities, the slot queue, and per slot a
//! sale that reserves it, downloads its blocks from the network (or, when no peer serves
//! them, rebuilds them from the other slots by erasure decoding: lazy repair), checks the
//! slot root against the verifiable manifest, proves the on-chain challenge with halo2,
//! fills the slot, and then proves each period the proof clock asks for, until the
//! request ends and the payout is collected.
//!
//! The parts:
//! - [`availability`]: the offers ([`Availability`]) and their typed update;
//! - [`queue`]: the slot queue in Codex's order, bounded, with back-off;
//! - [`machine`]: one sale's life as a pure state machine (events in, actions out);
//! - `state_file`: availabilities and held slots saved in the data directory;
//! - [`driver`]: [`Seller`], which polls the marketplace (any
//!   [`codex_market::Marketplace`]), feeds the queue, runs a few attempts at once
//!   (Codex's 3 workers) and performs each sale's actions, with the slot's data behind
//!   a [`SlotHost`]; [`NodeHost`] is the node's (store, network, prover).
//!
//! [`Sales`] is the shared book the driver writes and the API reads. After a restart
//! each held slot resumes from the chain's state of it.

pub mod availability;
pub mod driver;
pub mod machine;
mod node_host;
mod proof_watch;
pub mod queue;
mod state_file;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codex_core::Cid;
use codex_core::prelude::*;
use codex_market::{RequestId, SlotId, StorageRequest};
use serde_json::{Value, json};

pub use availability::{Availability, AvailabilityUpdate};
pub use driver::{Fetched, Seller, SellerConfig, SlotHost};
pub use node_host::NodeHost;

use crate::error::Result;
use crate::node::market::Market;
use queue::{QueueItem, SlotQueue};
use state_file::{SavedState, StateFile};

/// Where a sale is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaleState {
    /// Reserving the slot on chain.
    Reserving,
    /// Fetching the slot's blocks from the network (rebuilding them by erasure decoding
    /// when no peer has them) and checking the slot root.
    Downloading,
    /// Proving the fill's challenge.
    InitialProving,
    /// Sending `fillSlot`.
    Filling,
    /// Filled: proving when the proof clock asks.
    Proving,
    /// Collecting the payout.
    Payout,
    /// Paid.
    Finished,
    /// The request was cancelled.
    Cancelled,
    /// The request failed: the collateral is lost.
    Failed,
    /// Another host was faster, or the slot is no longer free.
    Ignored,
    /// Something went wrong (see the error), e.g. the slot was taken from this host
    /// after missed proofs.
    Errored,
}

impl SaleState {
    /// The name the API shows (Codex's state names).
    pub fn as_str(self) -> &'static str {
        match self {
            // Codex's OpenAPI file has no `SaleSlotReserving`: preparing covers it.
            SaleState::Reserving => "SalePreparing",
            SaleState::Downloading => "SaleDownloading",
            SaleState::InitialProving => "SaleInitialProving",
            SaleState::Filling => "SaleFilling",
            SaleState::Proving => "SaleProving",
            SaleState::Payout => "SalePayout",
            SaleState::Finished => "SaleFinished",
            SaleState::Cancelled => "SaleCancelled",
            SaleState::Failed => "SaleFailed",
            SaleState::Ignored => "SaleIgnored",
            SaleState::Errored => "SaleErrored",
        }
    }

    /// Whether the sale is over (it holds no space any more).
    pub fn is_over(self) -> bool {
        matches!(
            self,
            SaleState::Ignored
                | SaleState::Errored
                | SaleState::Finished
                | SaleState::Cancelled
                | SaleState::Failed
        )
    }
}

/// One sale: a slot this host reserved.
#[derive(Clone, Debug)]
pub struct Sale {
    /// The slot.
    pub slot: SlotId,
    /// Its request.
    pub request: RequestId,
    /// The request's terms and content.
    pub storage_request: StorageRequest,
    /// When the space held stops being valid (seconds since the Unix epoch): the time
    /// the slot was taken plus the request's duration, after which the request is over.
    pub valid_until: u64,
    /// Its index.
    pub slot_index: u64,
    /// The availability it was taken from.
    pub availability: String,
    /// Where it is.
    pub state: SaleState,
    /// Whether the slot was in `Repair` (its blocks rebuilt from the other slots).
    pub repair: bool,
    /// Whether this host holds a reservation of the slot.
    pub reserved: bool,
    /// Attempts made at the slot.
    pub attempts: u32,
    /// Proofs accepted (the fill's included).
    pub proofs: u64,
    /// The periods proofs were submitted in after the fill.
    pub proof_periods: Vec<u64>,
    /// Why it errored or was ignored.
    pub error: Option<String>,
    /// Wall time of each step (`download`, `repair`, `slotRoot`, `prove`, `fill`).
    pub timings: Vec<(&'static str, Duration)>,
    /// The dataset the slot belongs to.
    pub dataset: Option<Cid>,
    /// Whether this sale fetched the dataset (it was not in the store before), so that
    /// it is deleted when the sale is over.
    pub owns_data: bool,
}

impl Sale {
    fn new(request: &StorageRequest, slot_index: u64, availability: String, now: u64) -> Self {
        Sale {
            slot: request.slot_id(slot_index),
            request: request.id(),
            storage_request: request.clone(),
            valid_until: now.saturating_add(request.ask.duration),
            slot_index,
            availability,
            state: SaleState::Reserving,
            repair: false,
            reserved: false,
            attempts: 0,
            proofs: 0,
            proof_periods: Vec::new(),
            error: None,
            timings: Vec::new(),
            dataset: None,
            owns_data: false,
        }
    }

    /// Whether the sale holds space of its availability (it is not over).
    fn holds_space(&self) -> bool {
        !self.state.is_over()
    }

    /// The JSON of `GET /sales/slots` and `GET /sales/slots/{slotId}`: Codex's `Slot`
    /// (`id`, `request`, `slotIndex`) and `SlotAgent` (`state`, `requestId`,
    /// `reservation` while the sale holds space) in one, plus ours.
    pub fn to_json(&self) -> Value {
        let timings = super::purchasing::timings_json(&self.timings);
        let mut out = json!({
            "id": self.slot.to_string(),
            "request": super::purchasing::request_json(&self.storage_request),
            "slotId": self.slot.to_string(),
            "requestId": self.request.to_string(),
            "slotIndex": self.slot_index,
            "availabilityId": self.availability,
            "state": self.state.as_str(),
            "repair": self.repair,
            "attempts": self.attempts,
            "proofs": self.proofs,
            "proofPeriods": self.proof_periods,
            "error": self.error,
            "timingsMs": timings,
        });
        if self.holds_space() {
            out["reservation"] = self.reservation_json();
        }
        out
    }

    /// Codex's `Reservation` of the space this sale holds (its id is the slot's), plus
    /// the sale's `state`.
    pub fn reservation_json(&self) -> Value {
        json!({
            "id": self.slot.to_string(),
            "availabilityId": self.availability,
            "size": self.storage_request.ask.slot_size,
            "requestId": self.request.to_string(),
            "slotIndex": self.slot_index,
            "validUntil": self.valid_until,
            "state": self.state.as_str(),
        })
    }
}

/// The host's book: availabilities, sales and the slot queue, saved in the data
/// directory. Shared by the [`Seller`] that writes it and the API that reads it.
#[derive(Debug, Default)]
pub struct Sales {
    availabilities: Mutex<BTreeMap<String, Availability>>,
    sales: Mutex<BTreeMap<SlotId, Sale>>,
    queue: Mutex<SlotQueue>,
    /// Slots held when the node started, with the availability each was taken from.
    taken_on_restart: Mutex<BTreeMap<SlotId, String>>,
    /// Datasets fetched by sales when the node started (see [`Sale::owns_data`]).
    owned_on_restart: Mutex<BTreeMap<SlotId, Cid>>,
    /// Why this host refuses to sell (its verifying key does not match the
    /// marketplace's, or its prover cannot be set up); `None` while it sells.
    refusal: Mutex<Option<String>>,
    /// Where the seller is in the marketplace's events (saved with the book).
    events: Mutex<Option<codex_market::Events>>,
    /// Where the book is saved (`None`: memory only).
    file: Option<StateFile>,
    /// Proofs accepted since the node started, fills included.
    proofs_submitted: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sales {
    /// A book kept in memory only.
    pub fn in_memory() -> Self {
        Sales::default()
    }

    /// A book saved in the file at `path` (read back when it exists; a file that cannot
    /// be read is reported and set aside, not trusted).
    pub fn open(path: PathBuf) -> Self {
        let saved = state_file::load(&path);
        Sales {
            availabilities: Mutex::new(
                saved
                    .availabilities
                    .into_iter()
                    .map(|a| (a.id.clone(), a))
                    .collect(),
            ),
            taken_on_restart: Mutex::new(saved.slots),
            owned_on_restart: Mutex::new(saved.owned_data),
            events: Mutex::new(saved.events),
            file: Some(StateFile::new(path)),
            ..Sales::default()
        }
    }

    /// Why this host refuses to sell, when it does: its verifying key differs from the
    /// marketplace's `zkeyHash` (the message names both digests), or its prover could
    /// not be set up. Such a host reserves and fills nothing.
    pub fn refusal(&self) -> Option<String> {
        lock(&self.refusal).clone()
    }

    pub(crate) fn refuse(&self, why: String) {
        *lock(&self.refusal) = Some(why);
    }

    /// Adds an availability; returns once it is saved.
    pub async fn add_availability(&self, a: Availability) {
        lock(&self.availabilities).insert(a.id.clone(), a);
        self.save_now().await;
    }

    /// Changes availability `id` (see [`Availability::apply`]); `Ok(None)` when there is
    /// none. Returns once the change is saved.
    ///
    /// # Errors
    /// As [`Availability::apply`]; a refused update changes nothing.
    pub async fn update_availability(
        &self,
        id: &str,
        update: &AvailabilityUpdate,
    ) -> Result<Option<Availability>> {
        let out = {
            let mut all = lock(&self.availabilities);
            let Some(a) = all.get_mut(id) else {
                return Ok(None);
            };
            a.apply(update)?;
            a.clone()
        };
        self.save_now().await;
        Ok(Some(out))
    }

    /// Every availability.
    pub fn availabilities(&self) -> Vec<Availability> {
        lock(&self.availabilities).values().cloned().collect()
    }

    /// The sales holding space of availability `id` (Codex's reservations).
    pub fn reservations(&self, id: &str) -> Vec<Sale> {
        lock(&self.sales)
            .values()
            .filter(|s| s.availability == id && s.holds_space())
            .cloned()
            .collect()
    }

    /// Proofs accepted since the node started, fills included (a counter: it never
    /// decreases, whatever happens to the sales).
    pub fn proofs_submitted(&self) -> u64 {
        self.proofs_submitted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn count_proof(&self) {
        self.proofs_submitted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every sale.
    pub fn sales(&self) -> Vec<Sale> {
        lock(&self.sales).values().cloned().collect()
    }

    /// One sale.
    pub fn sale(&self, slot: SlotId) -> Option<Sale> {
        lock(&self.sales).get(&slot).cloned()
    }

    /// Slots waiting in the queue, best first: `(request, slot index, attempts)`.
    pub fn queued(&self) -> Vec<(RequestId, u64, u32)> {
        lock(&self.queue).list()
    }

    // ------------------------------------------------------------ for the driver

    fn update(&self, slot: SlotId, f: impl FnOnce(&mut Sale)) {
        if let Some(s) = lock(&self.sales).get_mut(&slot) {
            f(s);
        }
    }

    /// The sale of `slot` (a new one when there is none) for an attempt from
    /// availability `availability`.
    fn begin_attempt(
        &self,
        request: &StorageRequest,
        index: u64,
        (availability, now): (&str, u64),
        attempts: u32,
    ) {
        let mut all = lock(&self.sales);
        let sale = all
            .entry(request.slot_id(index))
            .or_insert_with(|| Sale::new(request, index, availability.to_string(), now));
        sale.valid_until = now.saturating_add(request.ask.duration);
        sale.availability = availability.to_string();
        sale.state = SaleState::Reserving;
        sale.attempts = attempts;
        sale.error = None;
        sale.timings.clear();
    }

    fn insert(&self, sale: Sale) {
        lock(&self.sales).insert(sale.slot, sale);
    }

    /// Takes a slot's size and collateral from an availability that matches at `now`
    /// ([`Availability::matches`]); its id.
    fn take(&self, request: &StorageRequest, now: u64) -> Option<String> {
        let id = {
            let mut all = lock(&self.availabilities);
            let a = all.values_mut().find(|a| a.matches(request, now))?;
            a.take(request);
            a.id.clone()
        };
        self.save();
        Some(id)
    }

    /// Gives a slot's size (and, unless it was lost, its collateral) back.
    fn give_back(&self, id: &str, request: &StorageRequest, collateral: bool) {
        if let Some(a) = lock(&self.availabilities).get_mut(id) {
            a.give_back(request, collateral);
        }
        self.save();
    }

    fn holds_slot_of(&self, request: RequestId) -> bool {
        lock(&self.sales)
            .values()
            .any(|s| s.request == request && s.holds_space())
    }

    fn filled_slot_of(&self, request: RequestId) -> bool {
        lock(&self.sales).values().any(|s| {
            s.request == request && matches!(s.state, SaleState::Proving | SaleState::Payout)
        })
    }

    fn push(&self, item: QueueItem) {
        lock(&self.queue).push(item);
    }

    /// The best item that may be tried now, skipping (and dropping) slots of requests
    /// this host filled a slot of, and leaving queued those of `busy` requests and of
    /// requests this host holds a slot of.
    fn pop(&self, now: Instant, busy: &HashSet<RequestId>) -> Option<QueueItem> {
        let mut q = lock(&self.queue);
        // A request whose slot this host filled needs nothing more from it; one with an
        // attempt under way keeps its other slots queued in case the attempt fails.
        q.retain_requests(|r| !self.filled_slot_of(r));
        q.pop(now, |r| !busy.contains(&r) && !self.holds_slot_of(r))
    }

    fn taken_on_restart(&self, slot: SlotId) -> Option<String> {
        lock(&self.taken_on_restart).get(&slot).cloned()
    }

    fn take_owned_on_restart(&self, slot: SlotId) -> Option<Cid> {
        lock(&self.owned_on_restart).remove(&slot)
    }

    fn take_all_owned_on_restart(&self) -> BTreeMap<SlotId, Cid> {
        std::mem::take(&mut *lock(&self.owned_on_restart))
    }

    /// The ownership of dataset `cid`, fetched by sale `slot`, passes to another sale
    /// of this host that uses it; `false` when none does (then it may be deleted).
    fn pass_on_data(&self, slot: SlotId, cid: Cid) -> bool {
        let mut all = lock(&self.sales);
        let heir = all
            .values_mut()
            .find(|s| s.slot != slot && s.dataset == Some(cid) && s.holds_space());
        match heir {
            Some(heir) => {
                heir.owns_data = true;
                true
            }
            None => false,
        }
    }

    /// Sale `slot` is for dataset `cid`; it owns it when the store did not have it
    /// (`had`), or when a sale that is over passes its ownership on.
    fn claim_data(&self, slot: SlotId, cid: Cid, had: bool) {
        let mut all = lock(&self.sales);
        let mut inherited = false;
        for s in all
            .values_mut()
            .filter(|s| s.slot != slot && s.dataset == Some(cid) && !s.holds_space())
        {
            inherited |= std::mem::take(&mut s.owns_data);
        }
        if let Some(s) = all.get_mut(&slot) {
            s.dataset = Some(cid);
            s.owns_data |= !had || inherited;
        }
    }

    /// The dataset sale `slot` owns, taken from it.
    fn disown_data(&self, slot: SlotId) -> Option<Cid> {
        lock(&self.sales).get_mut(&slot).and_then(|s| {
            std::mem::take(&mut s.owns_data)
                .then_some(s.dataset)
                .flatten()
        })
    }

    fn forget_owned_on_restart(&self, slot: SlotId) {
        lock(&self.owned_on_restart).remove(&slot);
    }

    fn snapshot(&self) -> SavedState {
        let mut slots = BTreeMap::new();
        let mut owned_data = BTreeMap::new();
        for s in lock(&self.sales).values() {
            if s.holds_space() {
                slots.insert(s.slot, s.availability.clone());
            }
            if s.owns_data
                && let Some(cid) = s.dataset
            {
                owned_data.insert(s.slot, cid);
            }
        }
        for (slot, a) in lock(&self.taken_on_restart).iter() {
            slots.entry(*slot).or_insert_with(|| a.clone());
        }
        for (slot, cid) in lock(&self.owned_on_restart).iter() {
            owned_data.entry(*slot).or_insert(*cid);
        }
        SavedState {
            availabilities: self.availabilities(),
            slots,
            owned_data,
            events: lock(&self.events).clone(),
        }
    }

    /// Where the seller is in the marketplace's events, as last saved (`None` before
    /// the first poll).
    pub fn events_position(&self) -> Option<codex_market::Events> {
        lock(&self.events).clone()
    }

    /// Records the seller's position in the events; saves the book when `save`.
    pub(crate) fn set_events_position(&self, position: codex_market::Events, save: bool) {
        *lock(&self.events) = Some(position);
        if save {
            self.save();
        }
    }

    /// Saves the book (see `StateFile::save`).
    fn save(&self) -> Option<tokio::task::JoinHandle<()>> {
        let file = self.file.as_ref()?;
        file.save(&self.snapshot())
    }

    /// Saves and waits until the book is on disk.
    async fn save_now(&self) {
        if let Some(h) = self.save() {
            let _ = h.await;
        }
    }
}

/// What the sales loop needs of the node (the node's wiring; see [`Seller`] for the
/// parts).
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub(crate) store: Arc<dyn BlockStore>,
    pub(crate) network: codex_net::Network,
    pub(crate) market: Arc<Market>,
}

/// Resumes the sales of slots this host holds on chain, then watches the marketplace
/// for new requests and freed slots, and sells slots that match an availability, one
/// slot per request. Runs until the task is aborted, which stops every sale with it.
pub(crate) async fn run(ctx: Ctx, cancel: tokio_util::sync::CancellationToken) {
    let Ctx {
        store,
        network,
        market,
    } = ctx;
    let host = Arc::new(NodeHost::new(store, network, Arc::clone(&market.prover)));
    let seller = Seller::<Arc<dyn codex_market::Marketplace>, NodeHost>::new(
        market.client.clone(),
        host,
        Arc::clone(&market.sales),
    )
    .config(SellerConfig {
        poll_interval: market.poll_interval,
        confirmations: market.confirmations,
        ..SellerConfig::default()
    });
    drop(market);
    seller.run(cancel).await;
}
