//! Sales (the host side, reference §8.1): availabilities, the slot queue, and per slot a
//! sale that reserves it, downloads its blocks from the network (or, when no peer serves
//! them, rebuilds them from the other slots by erasure decoding: lazy repair), checks the
//! slot root against the verifiable manifest, proves the on-chain challenge with halo2,
//! fills the slot, and then proves each period the proof clock asks for, until the
//! request ends and the payout is collected.
//!
//! Slots enter the queue from `StorageRequested` and `SlotFreed` events and leave it in
//! Codex's order (unseen first, then profitability, lower collateral, later expiry);
//! a few workers take them one at a time, and a slot whose attempt failed for a reason
//! that may pass (a peer away, a challenge that moved) is queued again with a back-off.
//! Availabilities and which availability each slot was taken from are kept in the data
//! directory; after a restart each sale resumes from the chain's state of its slot.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codex_core::{BlockStore, Cid, Manifest};
use codex_market::alloy::primitives::{Address, U256, keccak256};
use codex_market::{MarketEvent, MarketplaceError, RequestId, SlotId, SlotState, StorageRequest};
use codex_net::{Download, FetchOptions, Network};
use codex_proofs::{ProofInput, SlotGeometry, SlotTree, entropy_from_challenge};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::node::market::Market;

/// Slot attempts run at once (Codex's 3 workers).
const WORKERS: usize = 3;
/// Slots the queue holds at most (Codex's 128); the least attractive leave first.
const QUEUE_MAX: usize = 128;
/// Attempts at one slot before it is given up.
const MAX_ATTEMPTS: u32 = 6;

/// An offer of storage (Codex's `Availability`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Availability {
    /// Id (hex).
    pub id: String,
    /// Bytes offered.
    pub total_size: u64,
    /// Bytes not yet taken by slots.
    pub free_size: u64,
    /// Longest request accepted, in seconds.
    pub duration: u64,
    /// Lowest price accepted.
    pub min_price_per_byte_per_second: U256,
    /// Collateral the host is willing to post in total.
    pub total_collateral: U256,
    /// Collateral not yet posted.
    pub total_remaining_collateral: U256,
    /// Whether new slots may be taken.
    pub enabled: bool,
}

fn number(body: &Value, key: &str) -> Result<Option<U256>> {
    let v = match body.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(U256::from),
        Some(Value::String(s)) => s.trim().parse::<U256>().ok(),
        _ => None,
    };
    v.map(Some)
        .ok_or_else(|| Error::InvalidRequest(format!("{key}: not a non-negative integer")))
}

fn positive(body: &Value, key: &str) -> Result<Option<U256>> {
    match number(body, key)? {
        Some(v) if v.is_zero() => Err(Error::InvalidRequest(format!(
            "{key} must be greater than zero"
        ))),
        v => Ok(v),
    }
}

fn small(key: &str, v: U256) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::InvalidRequest(format!("{key}: too large")))
}

impl Availability {
    /// Reads `POST /sales/availability`'s body: `totalSize, duration,
    /// minPricePerBytePerSecond, totalCollateral` (numbers or strings), `enabled?`.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a missing, malformed or zero field.
    pub fn from_json(id: String, body: &Value) -> Result<Self> {
        let need = |key: &str| -> Result<U256> {
            positive(body, key)?.ok_or_else(|| Error::InvalidRequest(format!("{key}: missing")))
        };
        let total_size = small("totalSize", need("totalSize")?)?;
        let total_collateral = need("totalCollateral")?;
        Ok(Availability {
            id,
            total_size,
            free_size: total_size,
            duration: small("duration", need("duration")?)?,
            min_price_per_byte_per_second: need("minPricePerBytePerSecond")?,
            total_collateral,
            total_remaining_collateral: total_collateral,
            enabled: body.get("enabled").and_then(Value::as_bool).unwrap_or(true),
        })
    }

    /// Applies `PATCH /sales/availability/{id}`: any of the fields of
    /// [`Availability::from_json`]. Growing or shrinking `totalSize` or
    /// `totalCollateral` moves the free amounts by as much; neither may drop below what
    /// slots already hold.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a malformed or zero field, or a total below what is
    /// in use.
    pub fn patch(&mut self, body: &Value) -> Result<()> {
        if !body.is_object() {
            return Err(Error::InvalidRequest(
                "the body must be a JSON object".into(),
            ));
        }
        let mut next = self.clone();
        if let Some(size) = positive(body, "totalSize")? {
            let size = small("totalSize", size)?;
            let used = self.total_size - self.free_size;
            if size < used {
                return Err(Error::InvalidRequest(format!(
                    "totalSize ({size}) is below the {used} bytes slots already hold"
                )));
            }
            next.total_size = size;
            next.free_size = size - used;
        }
        if let Some(c) = positive(body, "totalCollateral")? {
            let used = self.total_collateral - self.total_remaining_collateral;
            if c < used {
                return Err(Error::InvalidRequest(format!(
                    "totalCollateral ({c}) is below the {used} slots already hold"
                )));
            }
            next.total_collateral = c;
            next.total_remaining_collateral = c - used;
        }
        if let Some(d) = positive(body, "duration")? {
            next.duration = small("duration", d)?;
        }
        if let Some(p) = positive(body, "minPricePerBytePerSecond")? {
            next.min_price_per_byte_per_second = p;
        }
        match body.get("enabled") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => next.enabled = *b,
            Some(_) => return Err(Error::InvalidRequest("enabled: not a boolean".into())),
        }
        *self = next;
        Ok(())
    }

    /// Codex's JSON of an availability.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "totalSize": self.total_size.to_string(),
            "freeSize": self.free_size.to_string(),
            "duration": self.duration.to_string(),
            "minPricePerBytePerSecond": self.min_price_per_byte_per_second.to_string(),
            "totalCollateral": self.total_collateral.to_string(),
            "totalRemainingCollateral": self.total_remaining_collateral.to_string(),
            "enabled": self.enabled,
        })
    }

    /// Reads back what [`Availability::to_json`] wrote (the saved state).
    fn from_saved(v: &Value) -> Option<Self> {
        let n = |k: &str| number(v, k).ok().flatten();
        Some(Availability {
            id: v.get("id")?.as_str()?.to_string(),
            total_size: u64::try_from(n("totalSize")?).ok()?,
            free_size: u64::try_from(n("freeSize")?).ok()?,
            duration: u64::try_from(n("duration")?).ok()?,
            min_price_per_byte_per_second: n("minPricePerBytePerSecond")?,
            total_collateral: n("totalCollateral")?,
            total_remaining_collateral: n("totalRemainingCollateral")?,
            enabled: v.get("enabled")?.as_bool()?,
        })
    }

    fn matches(&self, request: &StorageRequest) -> bool {
        let ask = &request.ask;
        self.enabled
            && self.free_size >= ask.slot_size
            && self.duration >= ask.duration
            && ask.price_per_byte_per_second >= self.min_price_per_byte_per_second
            && self.total_remaining_collateral >= ask.collateral_per_slot()
    }
}

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
            SaleState::Reserving => "SaleSlotReserving",
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
}

/// One sale: a slot this host reserved.
#[derive(Clone, Debug)]
pub struct Sale {
    /// The slot.
    pub slot: SlotId,
    /// Its request.
    pub request: RequestId,
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
    fn new(slot: SlotId, request: RequestId, slot_index: u64, availability: String) -> Self {
        Sale {
            slot,
            request,
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

    /// The JSON `GET /sales/slots` shows.
    pub fn to_json(&self) -> Value {
        let timings = super::purchasing::timings_json(&self.timings);
        json!({
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
        })
    }
}

/// A slot waiting in the queue.
#[derive(Clone, Debug)]
struct QueueItem {
    request: Arc<StorageRequest>,
    index: u64,
    /// Tried before (Codex's `seen`): such items come after the unseen ones.
    seen: bool,
    attempts: u32,
    not_before: Instant,
    /// Orders slots that are otherwise equal differently on each host (Codex shuffles
    /// a request's slots), so that hosts spread over them instead of racing for one.
    shuffle: u64,
}

impl QueueItem {
    fn new(request: Arc<StorageRequest>, index: u64, host: Address) -> Self {
        let h = keccak256([host.as_slice(), request.slot_id(index).0.as_slice()].concat());
        let mut head = [0u8; 8];
        head.copy_from_slice(&h[..8]);
        QueueItem {
            request,
            index,
            seen: false,
            attempts: 0,
            not_before: Instant::now(),
            shuffle: u64::from_le_bytes(head),
        }
    }

    /// Codex's order: unseen first, then higher `duration * price * slotSize`, then
    /// lower collateral, then later expiry.
    fn key(&self) -> (bool, U256, std::cmp::Reverse<U256>, u64, u64) {
        let ask = &self.request.ask;
        let profit = U256::from(ask.duration)
            .saturating_mul(ask.price_per_byte_per_second)
            .saturating_mul(U256::from(ask.slot_size));
        (
            !self.seen,
            profit,
            std::cmp::Reverse(ask.collateral_per_slot()),
            self.request.expiry,
            self.shuffle,
        )
    }
}

/// The host's availabilities, sales and slot queue.
#[derive(Debug, Default)]
pub struct Sales {
    availabilities: Mutex<BTreeMap<String, Availability>>,
    sales: Mutex<BTreeMap<SlotId, Sale>>,
    slot_data: Mutex<BTreeMap<SlotId, Arc<SlotData>>>,
    queue: Mutex<Vec<QueueItem>>,
    /// Slots held when the node started, with the availability each was taken from.
    taken_on_restart: Mutex<BTreeMap<SlotId, String>>,
    /// Datasets fetched by sales when the node started (see [`Sale::owns_data`]).
    owned_on_restart: Mutex<BTreeMap<SlotId, Cid>>,
    /// How long the last proof took, in ms (0: none yet).
    last_prove_ms: std::sync::atomic::AtomicU64,
    /// Why this host refuses to sell (its verifying key does not match the
    /// marketplace's, or its prover cannot be set up); `None` while it sells.
    refusal: Mutex<Option<String>>,
    /// Where availabilities and the slots taken from them are saved (`None`: memory only).
    path: Option<PathBuf>,
    /// Saves made, and the last one on disk (see [`Sales::save`]).
    saves: std::sync::atomic::AtomicU64,
    written: Arc<Mutex<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sales {
    /// Why this host refuses to sell, when it does: its verifying key differs from the
    /// marketplace's `zkeyHash` (the message names both digests), or its prover could
    /// not be set up. Such a host reserves and fills nothing.
    pub fn refusal(&self) -> Option<String> {
        lock(&self.refusal).clone()
    }

    /// Sales whose availabilities are saved in the file at `path` (read back when it
    /// exists; a file that cannot be read is reported and set aside, not trusted).
    pub fn open(path: PathBuf) -> Self {
        let sales = Sales {
            path: Some(path.clone()),
            ..Sales::default()
        };
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => {
                    let mut all = lock(&sales.availabilities);
                    for a in v["availabilities"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Availability::from_saved)
                    {
                        all.insert(a.id.clone(), a);
                    }
                    drop(all);
                    if let Some(taken) = v["slots"].as_object() {
                        let mut s = lock(&sales.taken_on_restart);
                        for (slot, a) in taken {
                            if let (Ok(id), Some(a)) = (slot.parse(), a.as_str()) {
                                s.insert(SlotId(id), a.to_string());
                            }
                        }
                    }
                    if let Some(owned) = v["ownedData"].as_object() {
                        let mut s = lock(&sales.owned_on_restart);
                        for (slot, cid) in owned {
                            if let (Ok(id), Some(Ok(cid))) =
                                (slot.parse(), cid.as_str().map(Cid::from_str))
                            {
                                s.insert(SlotId(id), cid);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable sales state set aside");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the sales state")
            }
        }
        sales
    }

    /// Adds an availability; returns once it is saved.
    pub async fn add_availability(&self, a: Availability) {
        lock(&self.availabilities).insert(a.id.clone(), a);
        self.save_now().await;
    }

    /// Changes an availability; see [`Availability::patch`]. `Ok(None)` when there is
    /// no availability `id`. Returns once the change is saved.
    ///
    /// # Errors
    /// As [`Availability::patch`].
    pub async fn patch_availability(&self, id: &str, body: &Value) -> Result<Option<Availability>> {
        let out = {
            let mut all = lock(&self.availabilities);
            let Some(a) = all.get_mut(id) else {
                return Ok(None);
            };
            a.patch(body)?;
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
        let mut q = lock(&self.queue).clone();
        q.sort_by_key(|i| std::cmp::Reverse(i.key()));
        q.iter()
            .map(|i| (i.request.id(), i.index, i.attempts))
            .collect()
    }

    fn update(&self, slot: SlotId, f: impl FnOnce(&mut Sale)) {
        if let Some(s) = lock(&self.sales).get_mut(&slot) {
            f(s);
        }
    }

    /// Takes a slot's size and collateral from a matching availability.
    fn take(&self, request: &StorageRequest) -> Option<String> {
        let mut all = lock(&self.availabilities);
        let a = all.values_mut().find(|a| a.matches(request))?;
        a.free_size -= request.ask.slot_size;
        a.total_remaining_collateral -= request.ask.collateral_per_slot();
        let id = a.id.clone();
        drop(all);
        self.save();
        Some(id)
    }

    /// Gives a slot's size (and, unless it was lost, its collateral) back.
    fn give_back(&self, id: &str, request: &StorageRequest, collateral: bool) {
        if let Some(a) = lock(&self.availabilities).get_mut(id) {
            a.free_size = (a.free_size + request.ask.slot_size).min(a.total_size);
            if collateral {
                a.total_remaining_collateral = (a.total_remaining_collateral
                    + request.ask.collateral_per_slot())
                .min(a.total_collateral);
            }
        }
        self.save();
    }

    fn holds_slot_of(&self, request: RequestId) -> bool {
        lock(&self.sales)
            .values()
            .any(|s| s.request == request && s.holds_space())
    }

    fn push(&self, item: QueueItem) {
        let mut q = lock(&self.queue);
        let id = item.request.id();
        if q.iter()
            .any(|i| i.index == item.index && i.request.id() == id)
        {
            return;
        }
        q.push(item);
        if q.len() > QUEUE_MAX {
            q.sort_by_key(|i| std::cmp::Reverse(i.key()));
            q.truncate(QUEUE_MAX);
        }
    }

    /// The best item that may be tried now, skipping (and dropping) slots of requests
    /// this host already holds a slot of, and leaving those of `busy` requests queued.
    fn pop(&self, busy: &HashSet<RequestId>) -> Option<QueueItem> {
        let mut q = lock(&self.queue);
        // A request whose slot this host filled needs nothing more from it; one with an
        // attempt under way keeps its other slots queued in case the attempt fails.
        q.retain(|i| !self.filled_slot_of(i.request.id()));
        let now = Instant::now();
        let best = q
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                i.not_before <= now
                    && !busy.contains(&i.request.id())
                    && !self.holds_slot_of(i.request.id())
            })
            .max_by_key(|(_, i)| i.key())
            .map(|(n, _)| n)?;
        Some(q.swap_remove(best))
    }

    fn filled_slot_of(&self, request: RequestId) -> bool {
        lock(&self.sales).values().any(|s| {
            s.request == request && matches!(s.state, SaleState::Proving | SaleState::Payout)
        })
    }

    /// Saves availabilities and which availability each held slot came from. Within a
    /// runtime the file is written on the blocking pool (await the handle to know it is
    /// on disk); saves land in the order they were made, a later one never overwritten
    /// by an earlier one. Without a runtime it is written before this returns.
    fn save(&self) -> Option<tokio::task::JoinHandle<()>> {
        let path = self.path.clone()?;
        let availabilities: Vec<Value> = lock(&self.availabilities)
            .values()
            .map(Availability::to_json)
            .collect();
        let mut slots = serde_json::Map::new();
        for s in lock(&self.sales).values().filter(|s| s.holds_space()) {
            slots.insert(s.slot.to_string(), json!(s.availability));
        }
        for (slot, a) in lock(&self.taken_on_restart).iter() {
            slots
                .entry(slot.to_string())
                .or_insert_with(|| json!(a.clone()));
        }
        let mut owned = serde_json::Map::new();
        for s in lock(&self.sales).values().filter(|s| s.owns_data) {
            if let Some(cid) = s.dataset {
                owned.insert(s.slot.to_string(), json!(cid.to_string()));
            }
        }
        for (slot, cid) in lock(&self.owned_on_restart).iter() {
            owned
                .entry(slot.to_string())
                .or_insert_with(|| json!(cid.to_string()));
        }
        let state = json!({ "availabilities": availabilities, "slots": slots, "ownedData": owned });
        let seq = self.saves.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let written = Arc::clone(&self.written);
        let write = move || {
            let mut last = lock(&written);
            if *last >= seq {
                return; // a later state is already on disk
            }
            let result = (|| -> std::io::Result<()> {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, serde_json::to_vec_pretty(&state)?)?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &path)
            })();
            match result {
                Ok(()) => *last = seq,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot save the sales state");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => Some(rt.spawn_blocking(write)),
            Err(_) => {
                write();
                None
            }
        }
    }

    /// Saves and waits until the state is on disk.
    async fn save_now(&self) {
        if let Some(h) = self.save() {
            let _ = h.await;
        }
    }
}

impl Sale {
    /// Whether the sale holds space of its availability (it is not over).
    fn holds_space(&self) -> bool {
        !matches!(
            self.state,
            SaleState::Ignored
                | SaleState::Errored
                | SaleState::Finished
                | SaleState::Cancelled
                | SaleState::Failed
        )
    }
}

/// What the sales loop needs of the node.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub(crate) store: Arc<dyn BlockStore>,
    pub(crate) network: Network,
    pub(crate) market: Arc<Market>,
}

/// How an attempt at a slot ended.
enum Attempt {
    /// Filled: prove from now on (from availability `.0`).
    Filled(String),
    /// Failed for a reason that may pass: queue the slot again.
    Retry,
    /// Over: the slot is taken, gone, or nothing here can hold it.
    Done,
}

/// Resumes the sales of slots this host holds on chain, then watches the marketplace
/// for new requests and freed slots, and sells slots that match an availability, one
/// slot per request. Runs until the task is aborted, which stops every sale with it.
pub(crate) async fn run(ctx: Ctx) {
    let client = &ctx.market.client;
    let sales = &ctx.market.sales;
    let mut provers: JoinSet<()> = JoinSet::new();
    let mut workers: JoinSet<(QueueItem, Attempt)> = JoinSet::new();
    let mut busy: HashSet<RequestId> = HashSet::new();
    let from = loop {
        match client.block_number().await {
            Ok(b) => break b,
            Err(e) => {
                tracing::warn!(error = %e, "sales: cannot read the chain");
                tokio::time::sleep(ctx.market.config.poll_interval).await;
            }
        }
    };
    // Proofs made with keys other than the verifier's are rejected on chain, after
    // collateral and gas are spent: check before anything is reserved.
    if let Err(e) = ctx.market.check_verifying_key().await {
        tracing::error!(error = %e, "sales: refusing to sell");
        *lock(&sales.refusal) = Some(e.to_string());
        return;
    }
    resume(&ctx, &mut provers).await;
    let mut poller = client.subscribe(from);
    loop {
        while let Some(done) = workers.try_join_next() {
            let Ok((mut item, outcome)) = done else {
                continue;
            };
            busy.remove(&item.request.id());
            match outcome {
                Attempt::Filled(availability) => {
                    let (ctx, request) = (ctx.clone(), Arc::clone(&item.request));
                    provers.spawn(async move {
                        prove_until_the_end(&ctx, &request, item.index, &availability).await;
                    });
                }
                Attempt::Retry if item.attempts < MAX_ATTEMPTS => {
                    item.seen = true;
                    item.not_before =
                        Instant::now() + Duration::from_secs(2u64 << item.attempts.min(4));
                    sales.push(item);
                }
                Attempt::Retry | Attempt::Done => {}
            }
        }
        while provers.try_join_next().is_some() {}
        match poller.poll().await {
            Ok(events) => {
                for e in events {
                    let (request, indices) = match e.event {
                        MarketEvent::StorageRequested { request, .. } => (request, None),
                        MarketEvent::SlotFreed {
                            request,
                            slot_index,
                        } => (request, Some(slot_index)),
                        _ => continue,
                    };
                    match client.get_request(request).await {
                        Ok(r) => {
                            let r = Arc::new(r);
                            let indices = indices.map_or(0..r.ask.slots, |i| i..i + 1);
                            for index in indices {
                                sales.push(QueueItem::new(Arc::clone(&r), index, client.account()));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(request = %request, error = %e, "sales: cannot read the request");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "sales: cannot poll events"),
        }
        while workers.len() < WORKERS {
            let Some(mut item) = sales.pop(&busy) else {
                break;
            };
            item.attempts += 1;
            busy.insert(item.request.id());
            let ctx = ctx.clone();
            workers.spawn(async move {
                let outcome = attempt(&ctx, &item).await;
                (item, outcome)
            });
        }
        tokio::time::sleep(ctx.market.config.poll_interval).await;
    }
}

/// One attempt at a slot: checks it is free (or in repair) and reservable, takes the
/// space from an availability, and fills it.
async fn attempt(ctx: &Ctx, item: &QueueItem) -> Attempt {
    let client = &ctx.market.client;
    let sales = &ctx.market.sales;
    let (request, index) = (&*item.request, item.index);
    let (request_id, slot) = (request.id(), request.slot_id(index));
    let repair = match client.slot_state(slot).await {
        Ok(SlotState::Free) => false,
        Ok(SlotState::Repair) => true,
        Ok(_) => return Attempt::Done,
        Err(e) => {
            tracing::warn!(%slot, error = %e, "sales: cannot read the slot");
            return Attempt::Retry;
        }
    };
    // A reservation of an earlier attempt stands unless the slot was filled and freed
    // since (the contract then forgets reservations): reserve again when allowed.
    let can_reserve = client
        .can_reserve_slot(request_id, index)
        .await
        .unwrap_or(false);
    let reserved = !can_reserve && sales.sale(slot).is_some_and(|s| s.reserved);
    if !can_reserve && !reserved {
        return Attempt::Retry;
    }
    let Some(availability) = sales.take(request) else {
        tracing::debug!(request = %request_id, "sales: no availability matches");
        return Attempt::Retry;
    };
    {
        let mut all = lock(&sales.sales);
        let sale = all
            .entry(slot)
            .or_insert_with(|| Sale::new(slot, request_id, index, availability.clone()));
        sale.availability = availability.clone();
        sale.state = SaleState::Reserving;
        sale.repair = repair;
        sale.attempts = item.attempts;
        sale.error = None;
        sale.timings.clear();
    }
    match fill(ctx, request, index, repair, reserved).await {
        Ok(()) => {
            sales.save_now().await;
            Attempt::Filled(availability)
        }
        Err(e) => {
            let lost = matches!(
                &e,
                Error::Market(m) if matches!(
                    m.marketplace_error(),
                    Some(MarketplaceError::SlotNotFree | MarketplaceError::InvalidSlot
                        | MarketplaceError::UnknownRequest | MarketplaceError::StartNotBeforeExpiry)
                )
            );
            tracing::info!(request = %request_id, index, attempt = item.attempts, error = %e, "sales: slot not taken");
            let unreserved = matches!(
                &e,
                Error::Market(m) if m.marketplace_error() == Some(MarketplaceError::ReservationRequired)
            );
            sales.update(slot, |s| {
                s.reserved &= !unreserved;
                s.state = if lost {
                    SaleState::Ignored
                } else {
                    SaleState::Errored
                };
                s.error = Some(e.to_string());
            });
            sales.give_back(&availability, request, true);
            if lost || item.attempts >= MAX_ATTEMPTS {
                discard(ctx, slot).await;
            }
            if lost { Attempt::Done } else { Attempt::Retry }
        }
    }
}

/// The slot's data, checked: the verifiable manifest, its geometry and the slot tree.
#[derive(Debug)]
pub(crate) struct SlotData {
    cid: Cid,
    manifest: Manifest,
    geometry: SlotGeometry,
    tree: Arc<SlotTree>,
    roots: Arc<Vec<codex_proofs::Fe>>,
}

/// Builds slot `index`'s tree from the stored blocks and checks its root against the
/// verifiable manifest.
async fn check_slot(
    store: &Arc<dyn BlockStore>,
    cid: Cid,
    manifest: Manifest,
    index: u64,
) -> Result<SlotData> {
    let geometry = SlotGeometry::new(&manifest)?;
    let verification = manifest
        .protection
        .as_ref()
        .and_then(|p| p.verification.clone())
        .ok_or(Error::NotAManifest(cid))?;
    let tree = codex_proofs::build_slot_tree(&**store, &manifest, index, 16).await?;
    let expected = verification
        .slot_roots
        .get(index as usize)
        .copied()
        .ok_or(Error::Proofs(codex_proofs::Error::SlotIndex {
            index,
            slots: verification.slot_roots.len() as u64,
        }))?;
    if tree.root_cid() != expected {
        return Err(Error::InvalidRequest(format!(
            "slot {index} of {cid}: the stored blocks give slot root {}, the manifest says {expected}",
            tree.root_cid()
        )));
    }
    let roots = verification
        .slot_roots
        .iter()
        .map(codex_proofs::slot::cid_element)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(SlotData {
        cid,
        manifest,
        geometry,
        tree: Arc::new(tree),
        roots: Arc::new(roots),
    })
}

/// Fetches slot `index`'s blocks from whichever peers serve them. A slot in `Repair`
/// (its host was slashed out), or one whose blocks some are served by no peer, is
/// rebuilt instead, as Codex does: the blocks of the other slots are fetched from their
/// hosts and the slot is rebuilt by erasure decoding, each rebuilt block checked
/// against the dataset's tree (lazy repair). Returns whether it rebuilt.
async fn fetch_slot(
    ctx: &Ctx,
    cid: Cid,
    manifest: &Manifest,
    geometry: &SlotGeometry,
    index: u64,
    repair: bool,
) -> Result<bool> {
    let range = geometry.block_index(index, 0)..geometry.block_index(index, geometry.slot_blocks);
    let options = FetchOptions {
        stall_timeout: Duration::from_secs(20),
        ..FetchOptions::default()
    };
    let fetch = |r: std::ops::Range<u64>| {
        Download::new(&ctx.network, Arc::clone(&ctx.store), manifest)
            .cid(cid)
            .range(r)
            .options(options.clone())
            .run()
    };
    if !repair {
        let report = fetch(range.clone()).await?;
        if report.missing.is_empty() {
            return Ok(false);
        }
        tracing::info!(%cid, index, missing = report.missing.len(), "no peer serves the whole slot: rebuilding it from the others");
    }
    // Any K of each column's K + M blocks rebuild it: fetch what the other slots'
    // hosts serve.
    fetch(0..range.start).await?;
    fetch(range.end..manifest.blocks_count()).await?;
    let rebuilt = codex_erasure::repair(&*ctx.store, manifest, &[index as usize]).await?;
    tracing::info!(%cid, index, rebuilt, "slot rebuilt from the other slots");
    Ok(true)
}

async fn fill(
    ctx: &Ctx,
    request: &StorageRequest,
    index: u64,
    repair: bool,
    reserved: bool,
) -> Result<()> {
    let client = &ctx.market.client;
    let (request_id, slot) = (request.id(), request.slot_id(index));
    let sales = &ctx.market.sales;
    if !reserved {
        client.reserve_slot(request_id, index).await?;
    }
    sales.update(slot, |s| {
        s.reserved = true;
        s.state = SaleState::Downloading;
    });

    let t = Instant::now();
    let cid = Cid::from_bytes(&request.content.cid)?;
    let had = ctx.store.has_block(&cid).await?;
    {
        // An earlier attempt (at another slot of the request, say) may have fetched
        // the dataset: a sale that is not running passes its ownership on.
        let mut all = lock(&sales.sales);
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
    let block = codex_net::fetch_manifest_block(&ctx.network, &ctx.store, cid).await?;
    let manifest = Manifest::decode(block.data())?;
    // The manifest first: what is fetched is then a dataset of the store, listed, and
    // deleted with it if the sale fails.
    ctx.store.put_block(block).await?;
    let geometry = SlotGeometry::new(&manifest)?;
    let rebuilt = fetch_slot(ctx, cid, &manifest, &geometry, index, repair).await?;
    let download = t.elapsed();

    let t = Instant::now();
    let data = check_slot(&ctx.store, cid, manifest, index).await?;
    let slot_root = t.elapsed();
    tracing::info!(%cid, index, repair, rebuilt, ?download, ?slot_root, "slot downloaded and checked");
    sales.update(slot, |s| {
        s.timings
            .push((if rebuilt { "repair" } else { "download" }, download));
        s.timings.push(("slotRoot", slot_root));
        s.state = SaleState::InitialProving;
    });
    let prover = ctx.market.prover().await?;
    wait_for_stable_challenge(ctx, slot).await;
    let prove_time = Arc::new(Mutex::new(Duration::ZERO));
    let t = Instant::now();
    let pt = Arc::clone(&prove_time);
    let receipt = client
        .fill_slot_with(request_id, index, |challenge| {
            let job = prove_job(ctx, &data, prover, index, challenge);
            async move {
                let started = Instant::now();
                let proof = job.await;
                *lock(&pt) = started.elapsed();
                proof
            }
        })
        .await?;
    let prove = *lock(&prove_time);
    let fill = t.elapsed().saturating_sub(prove);
    tracing::info!(cid = %data.cid, index, ?prove, ?fill, gas = receipt.gas_used, "slot filled");
    sales.update(slot, |s| {
        s.timings.push(("prove", prove));
        s.timings.push(("fill", fill));
        s.state = SaleState::Proving;
        s.proofs = 1;
    });
    crate::node::network::announce(&ctx.network, cid, &data.manifest).await;
    lock(&ctx.market.sales.slot_data).insert(slot, Arc::new(data));
    Ok(())
}

/// Deletes the dataset sale `slot` fetched, now that the sale is over, unless another
/// sale of this host uses it (which then owns it). Nothing when the dataset was in the
/// store before the sale.
async fn discard(ctx: &Ctx, slot: SlotId) {
    let cid = lock(&ctx.market.sales.sales).get_mut(&slot).and_then(|s| {
        std::mem::take(&mut s.owns_data)
            .then_some(s.dataset)
            .flatten()
    });
    if let Some(cid) = cid {
        discard_dataset(ctx, slot, cid).await;
    }
}

/// Deletes dataset `cid`, fetched by sale `slot`, unless another sale of this host
/// uses it (which then owns it).
async fn discard_dataset(ctx: &Ctx, slot: SlotId, cid: Cid) {
    let sales = &ctx.market.sales;
    {
        let mut all = lock(&sales.sales);
        let heir = all
            .values_mut()
            .find(|s| s.slot != slot && s.dataset == Some(cid) && s.holds_space());
        if let Some(heir) = heir {
            heir.owns_data = true;
            return;
        }
    }
    lock(&sales.slot_data).remove(&slot);
    lock(&sales.owned_on_restart).remove(&slot);
    match ctx.store.delete_dataset(&cid).await {
        Ok(()) => tracing::info!(%slot, %cid, "sales: the sale is over, its data deleted"),
        Err(e) => tracing::warn!(%slot, %cid, error = %e, "sales: cannot delete a sale's data"),
    }
    sales.save();
}

/// After a restart: every slot the chain says this host holds resumes where the chain
/// is (Codex's `SaleUnknown`): a filled slot is checked against the stored blocks and
/// proved again, a finished or cancelled one is paid out.
async fn resume(ctx: &Ctx, provers: &mut JoinSet<()>) {
    let client = &ctx.market.client;
    let sales = &ctx.market.sales;
    let slots = match client.my_slots().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "sales: cannot list this host's slots");
            return;
        }
    };
    for slot in slots {
        let Ok((request, index)) = client.get_active_slot(slot).await else {
            continue;
        };
        let state = client.slot_state(slot).await;
        let availability = lock(&sales.taken_on_restart)
            .get(&slot)
            .cloned()
            .unwrap_or_default();
        let mut sale = Sale::new(slot, request.id(), index, availability.clone());
        sale.reserved = true;
        sale.state = SaleState::Proving;
        sale.dataset = Cid::from_bytes(&request.content.cid).ok();
        sale.owns_data = lock(&sales.owned_on_restart).remove(&slot).is_some();
        if matches!(state, Ok(SlotState::Filled)) {
            let loaded = async {
                let cid = Cid::from_bytes(&request.content.cid)?;
                let manifest = Manifest::decode(ctx.store.get_block(&cid).await?.data())?;
                check_slot(&ctx.store, cid, manifest, index).await
            }
            .await;
            match loaded {
                Ok(data) => {
                    lock(&sales.slot_data).insert(slot, Arc::new(data));
                }
                Err(e) => {
                    tracing::warn!(%slot, error = %e, "sales: a held slot's data is not usable");
                    sale.state = SaleState::Errored;
                    sale.error = Some(format!("after a restart: {e}"));
                    lock(&sales.sales).insert(slot, sale);
                    continue;
                }
            }
        }
        tracing::info!(%slot, index, state = ?state, "sales: resuming a held slot");
        lock(&sales.sales).insert(slot, sale);
        let ctx = ctx.clone();
        provers.spawn(async move {
            prove_until_the_end(&ctx, &request, index, &availability).await;
        });
    }
    // Data fetched by sales that are no longer held (a failed attempt, a sale that
    // ended while the node was down): deleted unless a held slot uses it.
    let orphans = std::mem::take(&mut *lock(&sales.owned_on_restart));
    for (slot, cid) in orphans {
        discard_dataset(ctx, slot, cid).await;
    }
}

/// Waits until a proof started now will land under the challenge it is made for
/// (Codex's "stable challenge"): the challenge changes when the period changes and
/// when the slot's pointer wraps past 255, so neither may come within the time a
/// proof takes (the last one's, with a margin; 10 s before the first). Time is the
/// next block's ([`codex_market::MarketplaceClient::next_block`]), which follows the
/// clock also on a chain that mines on demand. Gives up after three periods (a
/// prover slower than a period), leaving it to the contract.
async fn wait_for_stable_challenge(ctx: &Ctx, slot: SlotId) {
    let client = &ctx.market.client;
    let period = client.config().proofs.period.max(1);
    let last = ctx
        .market
        .sales
        .last_prove_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    // A proof slower than two thirds of a period is started at the period's start.
    let need = if last == 0 {
        10
    } else {
        last.div_ceil(1000) * 6 / 5 + 1
    }
    .min(period * 2 / 3);
    for _ in 0..period * 3 {
        let (Ok((_, now)), Ok(pointer)) = (client.next_block().await, client.pointer(slot).await)
        else {
            return;
        };
        let left = period - now % period;
        if left > need && u64::from(pointer) + need < 256 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A proof of slot `index` for `challenge`, made on a blocking thread that reads the
/// sampled blocks from the store.
fn prove_job(
    ctx: &Ctx,
    data: &SlotData,
    prover: Arc<codex_proofs::Prover>,
    index: u64,
    challenge: [u8; 32],
) -> impl std::future::Future<Output = std::result::Result<Vec<u8>, codex_market::error::BoxError>>
+ Send
+ 'static {
    let store = Arc::clone(&ctx.store);
    let (tree, roots) = (Arc::clone(&data.tree), Arc::clone(&data.roots));
    let (tree_cid, geometry) = (data.manifest.tree_cid, data.geometry);
    let handle = tokio::runtime::Handle::current();
    let market = Arc::clone(&ctx.market);
    async move {
        let started = Instant::now();
        let proof = tokio::task::spawn_blocking(move || {
            let input = ProofInput::new(
                entropy_from_challenge(&challenge),
                &roots,
                index,
                &tree,
                prover.samples(),
                |b| {
                    if b >= geometry.slot_blocks {
                        return Ok(None);
                    }
                    let (block, _) = handle
                        .block_on(store.get_leaf(&tree_cid, geometry.block_index(index, b)))
                        .map_err(codex_proofs::Error::Store)?;
                    Ok((!block.is_empty()).then(|| Bytes::clone(block.data())))
                },
            )?;
            Ok::<_, codex_proofs::Error>(prover.prove(&input)?.bytes)
        })
        .await
        .map_err(|e| Box::new(e) as codex_market::error::BoxError)??;
        market.sales.last_prove_ms.store(
            started.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(proof)
    }
}

/// Each period: while the slot is filled, prove when a proof is or will be required;
/// when the request has finished (or was cancelled), collect the payout.
async fn prove_until_the_end(ctx: &Ctx, request: &StorageRequest, index: u64, availability: &str) {
    let client = &ctx.market.client;
    let slot = request.slot_id(index);
    let sales = &ctx.market.sales;
    let mut proved_in = client.next_period().await.ok();
    if sales.sale(slot).is_some_and(|s| s.proofs == 0) {
        // Resumed after a restart: prove this period if it asks.
        proved_in = None;
    }
    let end = |state: SaleState, error: Option<String>, collateral: bool| {
        sales.update(slot, |s| {
            s.state = state;
            s.error = error;
        });
        sales.give_back(availability, request, collateral);
    };
    loop {
        let state = match client.slot_state(slot).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%slot, error = %e, "sales: cannot read the slot");
                tokio::time::sleep(ctx.market.config.poll_interval).await;
                continue;
            }
        };
        match state {
            SlotState::Filled => {}
            SlotState::Finished | SlotState::Cancelled => {
                sales.update(slot, |s| s.state = SaleState::Payout);
                match client.free_slot(slot).await {
                    Ok(_) => {
                        tracing::info!(%slot, ?state, "sales: paid");
                        let done = if state == SlotState::Finished {
                            SaleState::Finished
                        } else {
                            SaleState::Cancelled
                        };
                        end(done, None, true);
                    }
                    Err(e) => end(SaleState::Errored, Some(e.to_string()), true),
                }
                break;
            }
            SlotState::Paid => {
                end(SaleState::Finished, None, true);
                break;
            }
            SlotState::Failed => {
                end(SaleState::Failed, Some("the request failed".into()), false);
                break;
            }
            SlotState::Repair | SlotState::Free => {
                tracing::warn!(%slot, "sales: the slot was taken from this host");
                end(
                    SaleState::Errored,
                    Some("the slot was freed: proofs were missed".into()),
                    false,
                );
                break;
            }
        }
        if let Ok(period) = client.next_period().await
            && proved_in != Some(period)
        {
            let required = client.is_proof_required(slot).await.unwrap_or(false)
                || client.will_proof_be_required(slot).await.unwrap_or(false);
            if required && let Some(p) = prove_once(ctx, slot, index).await {
                proved_in = Some(p.max(period));
            }
        }
        tokio::time::sleep(ctx.market.config.poll_interval).await;
    }
    discard(ctx, slot).await;
}

/// Proves slot `slot` now; the period the proof counts for, unless it was refused.
async fn prove_once(ctx: &Ctx, slot: SlotId, index: u64) -> Option<u64> {
    let client = &ctx.market.client;
    let data = lock(&ctx.market.sales.slot_data).get(&slot).cloned()?;
    let prover = match ctx.market.prover().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "sales: no prover");
            return None;
        }
    };
    wait_for_stable_challenge(ctx, slot).await;
    // The period the challenge is read in: a proof that lands in another period fails
    // (the challenge moves with the period), so an accepted one counts for this one.
    let period = client.next_period().await.ok()?;
    let submitted = client
        .submit_proof_with(slot, |challenge| {
            prove_job(ctx, &data, prover, index, challenge)
        })
        .await;
    match submitted {
        Ok(_) => {
            tracing::info!(%slot, period, "proof submitted");
            ctx.market.sales.update(slot, |s| {
                s.proofs += 1;
                s.proof_periods.push(period);
            });
            Some(period)
        }
        Err(e) if e.marketplace_error() == Some(MarketplaceError::ProofAlreadySubmitted) => {
            Some(period)
        }
        Err(e) => {
            tracing::warn!(%slot, period, error = %e, "sales: proof not accepted");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn availability() -> Result<Availability> {
        Availability::from_json(
            "a1".into(),
            &json!({"totalSize": 1000, "duration": "3600",
                    "minPricePerBytePerSecond": 1, "totalCollateral": "500"}),
        )
    }

    #[test]
    fn availabilities_are_patched_within_what_slots_hold() -> Result<()> {
        let mut a = availability()?;
        a.free_size = 600; // 400 bytes held by slots
        a.total_remaining_collateral = U256::from(300u64);
        a.patch(&json!({"totalSize": "2000", "enabled": false}))?;
        assert_eq!((a.total_size, a.free_size, a.enabled), (2000, 1600, false));
        assert!(matches!(
            a.patch(&json!({"totalSize": 399})),
            Err(Error::InvalidRequest(m)) if m.contains("400")
        ));
        assert!(a.patch(&json!({"duration": 0})).is_err());
        assert!(a.patch(&json!({"enabled": "yes"})).is_err());
        a.patch(&json!({"totalCollateral": 250}))?;
        assert_eq!(a.total_remaining_collateral, U256::from(50u64));
        assert_eq!(a.total_size, 2000, "a refused patch changes nothing");
        Ok(())
    }

    #[tokio::test]
    async fn availabilities_survive_a_restart_and_a_corrupt_file_is_set_aside() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sales").join("state.json");
        let sales = Sales::open(path.clone());
        let a = availability()?;
        sales.add_availability(a.clone()).await;
        assert_eq!(Sales::open(path.clone()).availabilities(), vec![a]);
        std::fs::write(&path, b"{ not json")?;
        assert!(Sales::open(path.clone()).availabilities().is_empty());
        assert!(path.with_extension("corrupt").exists());
        Ok(())
    }
}
