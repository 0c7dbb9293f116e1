//! The driver: [`Seller`] polls the marketplace for new requests and freed slots,
//! feeds the queue, and runs each sale's [`SaleMachine`], performing its actions on the
//! marketplace and on a [`SlotHost`] (the slot's data: fetch, check, prove).
//!
//! Every sale is a task of the seller's `JoinSet`; at most `workers` of them are
//! attempting a slot (before the fill) at once. [`Seller::run`] returns when its
//! cancellation token is cancelled, after stopping every sale.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codex_core::Cid;
use codex_market::{
    BlockTimer, Events, MarketEvent, Marketplace, MarketplaceConfig, RequestId, SlotId, SlotState,
    StorageRequest,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::machine::{Action, End, Event, FailureKind, SaleMachine};
use super::proof_watch::ProofWatch;
use super::queue::QueueItem;
use super::{Sale, SaleState, Sales};
use crate::error::Result;

/// What a host does with a slot's data: everything of selling that is not the
/// marketplace. [`super::NodeHost`] is the node's (store, network, prover); tests use
/// stand-ins.
#[async_trait::async_trait]
pub trait SlotHost: Send + Sync + 'static {
    /// Checks that this host can make proofs the marketplace accepts (its verifying
    /// key); the error is why it refuses to sell.
    async fn check(&self, config: &MarketplaceConfig) -> Result<()>;

    /// Whether the store holds dataset `cid` (then a sale does not own it).
    async fn has_dataset(&self, cid: &Cid) -> bool;

    /// Checks that `request` asks for what its dataset is (for a node: the manifest's
    /// slot count, slot size and verify root), before the slot is reserved.
    /// [`crate::Error::RequestMismatch`] says the request is never worth filling.
    async fn vet(&self, request: &StorageRequest) -> Result<()>;

    /// Fetches slot `index` of `request` (rebuilding it from the other slots when
    /// `repair`, or when no peer serves it), checks it, and keeps it ready to prove.
    async fn fetch(&self, request: &StorageRequest, index: u64, repair: bool) -> Result<Fetched>;

    /// Makes a slot held before a restart ready to prove from the stored blocks.
    async fn load(&self, request: &StorageRequest, index: u64) -> Result<()>;

    /// A proof of slot `index` of `request` for `challenge`.
    async fn prove(
        &self,
        request: &StorageRequest,
        index: u64,
        challenge: [u8; 32],
    ) -> Result<Vec<u8>>;

    /// How long the last proof took, in ms (`None` before the first).
    fn last_prove_ms(&self) -> Option<u64>;

    /// The slot was filled: e.g. announce its data.
    async fn filled(&self, request: &StorageRequest, index: u64);

    /// The sale of `slot` is over: forget what was kept to prove it.
    async fn forget(&self, slot: SlotId);

    /// Deletes dataset `cid`, fetched by a sale that is over.
    async fn delete_dataset(&self, cid: &Cid) -> Result<()>;
}

/// What fetching a slot did.
#[derive(Clone, Debug, Default)]
pub struct Fetched {
    /// It was rebuilt from the other slots.
    pub rebuilt: bool,
    /// Wall time of its steps (`download` or `repair`, `slotRoot`).
    pub timings: Vec<(&'static str, Duration)>,
}

/// How a [`Seller`] runs.
#[derive(Clone, Debug)]
pub struct SellerConfig {
    /// How often the chain is polled for events and each sale for its slot.
    pub poll_interval: Duration,
    /// Attempts at once (Codex's 3 workers).
    pub workers: usize,
    /// Attempts at one slot before it is given up.
    pub max_attempts: u32,
    /// Blocks on top of a block before its events are read (reorganisations of that
    /// depth are then never seen); 0 reads up to the latest, and events of blocks that
    /// a reorganisation removed are read again from the fork.
    pub confirmations: u64,
}

impl Default for SellerConfig {
    /// Polls every second, 3 workers, 6 attempts.
    fn default() -> Self {
        SellerConfig {
            poll_interval: Duration::from_secs(1),
            workers: 3,
            max_attempts: 6,
            confirmations: 0,
        }
    }
}

/// Sells storage: the host's role over a [`Marketplace`] and a [`SlotHost`], writing
/// its [`Sales`] book.
#[derive(Debug)]
pub struct Seller<M, H>(Shared<M, H>);

/// What every sale task shares.
#[derive(Debug)]
struct Shared<M, H> {
    market: M,
    host: Arc<H>,
    sales: Arc<Sales>,
    config: SellerConfig,
    from_block: Option<u64>,
    /// The next block as the seller's one clock poll last read it: every sale waits
    /// on it rather than polling the chain itself.
    clock: watch::Sender<Option<Tick>>,
    /// One proof at a time: a proof uses every core, so proofs made together only all
    /// take longer, miss the periods they were timed for, and make the measured proof
    /// time (what the next proof's start is timed by) wrong. Taken before the wait
    /// for a stable challenge, so that the wait starts when the proof can.
    proving: tokio::sync::Semaphore,
}

/// What the clock poll read: the block a transaction sent now lands in, and the
/// chain's measured block time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tick {
    number: u64,
    time: u64,
    block_secs: u64,
}

/// A held slot's state is read again after this many poll intervals and
/// [`STATE_EVERY_BLOCKS`] blocks even within a period (a request that fails or is
/// cancelled); otherwise once a period, and when the pointer wraps.
const STATE_EVERY_POLLS: u32 = 10;
/// See [`STATE_EVERY_POLLS`].
const STATE_EVERY_BLOCKS: u64 = 4;

/// The seller's position in the events is saved when events came, or after this many
/// blocks without: a restarted node reads at most that many blocks again.
const SAVE_EVERY_BLOCKS: u64 = 100;

/// An attempt at a queued slot is over: the slot was filled, or it may be queued again.
#[derive(Debug)]
struct Attempted {
    item: QueueItem,
    retry: bool,
}

impl<M, H> Seller<M, H>
where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    /// A seller acting on `market` with `host`, writing `sales`.
    pub fn new(market: M, host: Arc<H>, sales: Arc<Sales>) -> Self {
        Seller(Shared {
            market,
            host,
            sales,
            config: SellerConfig::default(),
            from_block: None,
            clock: watch::Sender::new(None),
            proving: tokio::sync::Semaphore::new(1),
        })
    }

    /// Reads the marketplace's events from block `number` on (default: from where the
    /// [`Sales`] book's saved position says this host stopped, or from the latest block
    /// on a first start).
    pub fn from_block(mut self, number: u64) -> Self {
        self.0.from_block = Some(number);
        self
    }

    /// With `config`.
    pub fn config(mut self, config: SellerConfig) -> Self {
        self.0.config = config;
        self
    }

    /// Checks that the host can prove for this marketplace, resumes the sales of slots
    /// it holds on chain, then watches the marketplace for new requests and freed slots
    /// and sells slots that match an availability, one slot per request. Returns when
    /// `cancel` is cancelled, after every sale has stopped.
    ///
    /// # Cancel safety
    /// Dropping the future aborts every sale task too (they live in its `JoinSet`).
    pub async fn run(self, cancel: CancellationToken) {
        let shared = Arc::new(self.0);
        let mut tasks = JoinSet::new();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {}
            _ = sell(&shared, &mut tasks) => {}
            _ = tick(&shared) => {}
        }
        tasks.shutdown().await;
    }
}

/// The clock poll: reads the next block once a poll interval, measures the block
/// time, and tells the sales waiting on [`Shared::clock`] when it moved.
async fn tick<M, H>(shared: &Shared<M, H>)
where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    let mut timer = BlockTimer::default();
    loop {
        match shared.market.next_block().await {
            Ok((number, time)) => {
                timer.observe(number, time);
                let tick = Tick {
                    number,
                    time,
                    block_secs: timer.block_secs(),
                };
                shared.clock.send_if_modified(|c| {
                    let moved = *c != Some(tick);
                    *c = Some(tick);
                    moved
                });
            }
            Err(e) => tracing::debug!(error = %e, "sales: cannot read the chain's clock"),
        }
        tokio::time::sleep(shared.config.poll_interval).await;
    }
}

/// The seller's loop.
async fn sell<M, H>(shared: &Arc<Shared<M, H>>, tasks: &mut JoinSet<()>)
where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    let (market, sales, poll) = (&shared.market, &shared.sales, shared.config.poll_interval);
    let mut events = match (shared.from_block, sales.events_position()) {
        (Some(from), _) => Events::from_block(from),
        (None, Some(saved)) => {
            tracing::info!(
                from = saved.next_block(),
                "sales: reading the marketplace's events from where this node stopped"
            );
            saved
        }
        (None, None) => loop {
            match market.block_number().await {
                Ok(b) => break Events::from_block(b),
                Err(e) => {
                    tracing::warn!(error = %e, "sales: cannot read the chain");
                    tokio::time::sleep(poll).await;
                }
            }
        },
    }
    .with_confirmations(shared.config.confirmations);
    // Proofs made with keys other than the verifier's are rejected on chain, after
    // collateral and gas are spent: check before anything is reserved.
    if let Err(e) = shared.host.check(market.config()).await {
        tracing::error!(error = %e, "sales: refusing to sell");
        sales.refuse(e.to_string());
        return;
    }
    resume(shared, tasks).await;
    let (report, mut reports) = mpsc::unbounded_channel::<Attempted>();
    let workers = Arc::new(Semaphore::new(shared.config.workers.max(1)));
    let mut busy = HashSet::new();
    // Requests queued or being attempted, by the block they were seen in: the position
    // saved stays before the oldest, so a node stopped before it tried them sees them
    // again.
    let mut unhandled = BTreeMap::<RequestId, u64>::new();
    let mut saved_at = None;
    loop {
        while let Ok(done) = reports.try_recv() {
            busy.remove(&done.item.request.id());
            if done.retry && done.item.attempts < shared.config.max_attempts {
                sales.push(done.item.retried(Instant::now()));
            }
        }
        while tasks.try_join_next().is_some() {}
        match events.poll(market).await {
            Ok(polled) => {
                let any = !polled.is_empty();
                for e in polled {
                    let (request, index) = match e.event {
                        MarketEvent::StorageRequested { request, .. } => (request, None),
                        MarketEvent::SlotFreed {
                            request,
                            slot_index,
                        } => (request, Some(slot_index)),
                        _ => continue,
                    };
                    match market.get_request(request).await {
                        Ok(r) => {
                            let r = Arc::new(r);
                            let indices = index.map_or(0..r.ask.slots, |i| i..i + 1);
                            for i in indices {
                                let item = QueueItem::new(
                                    Arc::clone(&r),
                                    i,
                                    market.account(),
                                    Instant::now(),
                                );
                                sales.push(item);
                            }
                            unhandled.entry(request).or_insert(e.block_number);
                        }
                        Err(e) => {
                            tracing::warn!(%request, error = %e, "sales: cannot read the request");
                        }
                    }
                }
                let queued: HashSet<RequestId> = sales.queued().into_iter().map(|q| q.0).collect();
                unhandled.retain(|r, _| queued.contains(r) || busy.contains(r));
                let position = match unhandled.values().min() {
                    Some(&oldest) => {
                        Events::from_block(oldest).with_confirmations(events.confirmations())
                    }
                    None => events.clone(),
                };
                let at = position.next_block();
                let save =
                    any || saved_at.is_none_or(|s: u64| at < s || at >= s + SAVE_EVERY_BLOCKS);
                if save {
                    saved_at = Some(at);
                }
                sales.set_events_position(position, save);
            }
            Err(e) => tracing::warn!(error = %e, "sales: cannot poll events"),
        }
        while let Ok(permit) = Arc::clone(&workers).try_acquire_owned() {
            let Some(mut item) = sales.pop(Instant::now(), &busy) else {
                break;
            };
            item.attempts += 1;
            busy.insert(item.request.id());
            tasks.spawn(attempt(Arc::clone(shared), item, permit, report.clone()));
        }
        tokio::time::sleep(poll).await;
    }
}

/// After a restart: every slot the chain says this host holds resumes where the chain
/// is (Codex's `SaleUnknown`): a filled slot is checked against the stored blocks and
/// proved again, a finished or cancelled one is paid out.
async fn resume<M, H>(shared: &Arc<Shared<M, H>>, tasks: &mut JoinSet<()>)
where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    let (market, sales, host) = (&shared.market, &shared.sales, &shared.host);
    let slots = match market.my_slots().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "sales: cannot list this host's slots");
            return;
        }
    };
    for slot in slots {
        let Ok((request, index)) = market.get_active_slot(slot).await else {
            continue;
        };
        let state = market.slot_state(slot).await;
        let availability = sales.taken_on_restart(slot).unwrap_or_default();
        let now = unix_now();
        let mut sale = Sale::new(&request, index, availability, now);
        sale.reserved = true;
        sale.state = SaleState::Proving;
        sale.dataset = Cid::from_bytes(&request.content.cid).ok();
        sale.owns_data = sales.take_owned_on_restart(slot).is_some();
        if matches!(state, Ok(SlotState::Filled))
            && let Err(e) = host.load(&request, index).await
        {
            tracing::warn!(%slot, error = %e, "sales: a held slot's data is not usable");
            sale.state = SaleState::Errored;
            sale.error = Some(format!("after a restart: {e}"));
            sales.insert(sale);
            continue;
        }
        tracing::info!(%slot, index, state = ?state, "sales: resuming a held slot");
        sales.insert(sale);
        let shared = Arc::clone(shared);
        tasks.spawn(async move {
            let request = Arc::new(request);
            run_sale(&shared, &request, index, SaleMachine::resume(), None).await;
        });
    }
    // Data fetched by sales that are no longer held (a failed attempt, a sale that
    // ended while the node was down): deleted unless a held slot uses it.
    for (slot, cid) in sales.take_all_owned_on_restart() {
        discard_dataset(shared, slot, cid).await;
    }
}

/// An attempt at a queued slot; the sale goes on from there if it is filled. The
/// worker's permit is held until the attempt is over.
async fn attempt<M, H>(
    shared: Arc<Shared<M, H>>,
    item: QueueItem,
    permit: OwnedSemaphorePermit,
    report: mpsc::UnboundedSender<Attempted>,
) where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    let request = Arc::clone(&item.request);
    let slot = request.slot_id(item.index);
    let reserved = shared.sales.sale(slot).is_some_and(|s| s.reserved);
    let attempted = Attempt {
        item: item.clone(),
        permit,
        report,
    };
    run_sale(
        &shared,
        &request,
        item.index,
        SaleMachine::new(reserved),
        Some(attempted),
    )
    .await;
}

/// The worker's turn at a slot: reported once, when the attempt is over.
struct Attempt {
    item: QueueItem,
    permit: OwnedSemaphorePermit,
    report: mpsc::UnboundedSender<Attempted>,
}

impl Attempt {
    fn over(self, retry: bool) {
        let _ = self.report.send(Attempted {
            item: self.item,
            retry,
        });
        drop(self.permit);
    }
}

/// Runs a sale's machine to its end, performing its actions.
async fn run_sale<M, H>(
    shared: &Shared<M, H>,
    request: &Arc<StorageRequest>,
    index: u64,
    mut machine: SaleMachine,
    mut attempt: Option<Attempt>,
) where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    let slot = request.slot_id(index);
    let attempts = attempt.as_ref().map_or(0, |a| a.item.attempts);
    // The sale's record is this sale's once it took space (a resumed sale has); before
    // that it may be an earlier attempt's, which stays as it ended.
    let mut recorded = attempt.is_none();
    let mut watching = Watching::new(shared.config.confirmations);
    loop {
        let action = machine.action().clone();
        let event = perform(shared, &action, request, index, attempts, &mut watching).await;
        if let Event::Failed { message, .. } = &event
            && !matches!(action, Action::Watch | Action::CheckProofDue { .. })
        {
            tracing::info!(%slot, index, ?action, error = %message, "sales: step failed");
        }
        recorded |= matches!(event, Event::SpaceTaken(Some(_)));
        let next = machine.on(event);
        if recorded {
            shared.sales.update(slot, |s| {
                s.state = machine.state();
                s.reserved = machine.reserved();
                s.repair = machine.repair();
            });
        }
        if !machine.attempting()
            && let Some(a) = attempt.take()
        {
            let retry = matches!(
                next,
                Action::End(End::Skipped { retry: true } | End::Over { retry: true, .. })
            );
            a.over(retry);
        }
        if let Action::End(end) = next {
            finish(shared, request, slot, end, attempts).await;
            return;
        }
    }
}

/// Performs `action`; what happened.
async fn perform<M, H>(
    shared: &Shared<M, H>,
    action: &Action,
    request: &StorageRequest,
    index: u64,
    attempts: u32,
    watching: &mut Watching,
) -> Event
where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    let (market, sales) = (&shared.market, &shared.sales);
    let (request_id, slot) = (request.id(), request.slot_id(index));
    let market_error = |e: codex_market::Error| Event::market_error(&e);
    match action {
        Action::Inspect => {
            let state = match market.slot_state(slot).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%slot, error = %e, "sales: cannot read the slot");
                    return market_error(e);
                }
            };
            let can_reserve = market
                .can_reserve_slot(request_id, index)
                .await
                .unwrap_or(false);
            Event::Inspected { state, can_reserve }
        }
        Action::TakeSpace => {
            // The chain's clock as last polled (the wall clock before the first poll).
            let now = shared.clock.borrow().map_or_else(unix_now, |t| t.time);
            let Some(availability) = sales.take(request, now) else {
                tracing::debug!(request = %request_id, "sales: no availability matches");
                return Event::SpaceTaken(None);
            };
            sales.begin_attempt(request, index, (&availability, now), attempts);
            Event::SpaceTaken(Some(availability))
        }
        Action::Reserve => {
            // What the request asks hosts to store is checked before anything is
            // reserved: a request that disagrees with its dataset is never filled.
            if let Err(e) = shared.host.vet(request).await {
                return host_error(e, request_id, index);
            }
            match market.reserve_slot(request_id, index).await {
                Ok(_) => Event::Reserved,
                Err(e) => market_error(e),
            }
        }
        Action::Download { repair } => match download(shared, request, index, *repair).await {
            Ok(()) => Event::Downloaded,
            Err(e) => host_error(e, request_id, index),
        },
        Action::Fill => fill(shared, request, index).await,
        Action::Watch => {
            let period = watching.wait(shared, slot).await;
            if let Some(dropped) = proof_dropped(shared, slot, period, watching).await {
                return Event::ProofDropped { period: dropped };
            }
            match market.slot_state(slot).await {
                Ok(state) => Event::Watched { state, period },
                Err(e) => {
                    tracing::warn!(%slot, error = %e, "sales: cannot read the slot");
                    market_error(e)
                }
            }
        }
        Action::CheckProofDue { .. } => {
            let required = market.is_proof_required(slot).await.unwrap_or(false)
                || market.will_proof_be_required(slot).await.unwrap_or(false);
            Event::ProofDue(required)
        }
        Action::Prove { .. } => prove(shared, request, index, watching).await,
        Action::Payout => {
            sales.update(slot, |s| s.state = SaleState::Payout);
            match market.free_slot(slot).await {
                Ok(_) => {
                    tracing::info!(%slot, "sales: paid");
                    Event::PaidOut
                }
                Err(e) => market_error(e),
            }
        }
        Action::End(_) => Event::failed("over", FailureKind::Other),
    }
}

/// Fetches and checks the slot's data, recording which dataset the sale owns.
async fn download<M, H>(
    shared: &Shared<M, H>,
    request: &StorageRequest,
    index: u64,
    repair: bool,
) -> Result<()>
where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    let slot = request.slot_id(index);
    let cid = Cid::from_bytes(&request.content.cid)?;
    // An earlier attempt (at another slot of the request, say) may have fetched the
    // dataset: a sale that is not running passes its ownership on.
    let had = shared.host.has_dataset(&cid).await;
    shared.sales.claim_data(slot, cid, had);
    let fetched = shared.host.fetch(request, index, repair).await?;
    tracing::info!(%cid, index, repair, rebuilt = fetched.rebuilt, timings = ?fetched.timings, "slot downloaded and checked");
    shared
        .sales
        .update(slot, |s| s.timings.extend(fetched.timings.iter().copied()));
    Ok(())
}

/// Where a held slot's watch stands: when its state was last read, and what the
/// clock showed then.
#[derive(Debug)]
struct Watching {
    /// The period and the block the challenge refers to at the last read: while both
    /// stay, neither a proof nor the slot's state is due.
    key: Option<(u64, u64)>,
    read_at: Option<(Instant, u64)>,
    /// The accepted proofs a reorganisation may still take away, looked for at each
    /// read.
    proofs: ProofWatch,
}

impl Watching {
    fn new(confirmations: u64) -> Self {
        Watching {
            key: None,
            read_at: None,
            proofs: ProofWatch::new(confirmations),
        }
    }

    /// Waits on the seller's clock until the slot's state is worth reading: a new
    /// period, the pointer wrapped (a new challenge), or [`STATE_EVERY_POLLS`] and
    /// [`STATE_EVERY_BLOCKS`] since the last read. Makes no call: one clock poll
    /// serves every held slot. Returns the period of the next block.
    async fn wait<M, H>(&mut self, shared: &Shared<M, H>, slot: SlotId) -> u64
    where
        M: Marketplace + Clone + 'static,
        H: SlotHost,
    {
        let config = shared.market.config();
        let poll = shared.config.poll_interval;
        let mut clock = shared.clock.subscribe();
        loop {
            let tick = *clock.borrow_and_update();
            if let Some(t) = tick {
                let period = config.period_of(t.time);
                let pointer =
                    codex_market::pointer(t.number, period, config.proofs.downtime_product, slot);
                let key = (period, t.number.saturating_sub(1 + u64::from(pointer)));
                let stale = self.read_at.is_none_or(|(at, number)| {
                    at.elapsed() >= poll * STATE_EVERY_POLLS
                        && t.number >= number + STATE_EVERY_BLOCKS
                });
                if self.key != Some(key) || stale {
                    self.key = Some(key);
                    self.read_at = Some((Instant::now(), t.number));
                    return period;
                }
            }
            if let Ok(Err(_)) =
                tokio::time::timeout(poll * STATE_EVERY_POLLS, clock.changed()).await
            {
                // The clock is gone (the seller is stopping).
                tokio::time::sleep(poll).await;
            }
        }
    }
}

/// Waits until a proof started now will land under the challenge it is made for
/// (see [`super::machine::challenge_is_stable`]), on the seller's clock; time is the
/// next block's. Gives up when the clock stands still for three poll intervals (an
/// in-memory chain between a test's steps) or after three periods' worth of clock
/// moves (a prover slower than a period), leaving it to the contract.
async fn wait_for_stable_challenge<M, H>(shared: &Shared<M, H>, slot: SlotId)
where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    let config = shared.market.config();
    let period = config.proofs.period.max(1);
    let mut clock = shared.clock.subscribe();
    for _ in 0..period * 3 {
        if let Some(t) = *clock.borrow_and_update() {
            let need =
                super::machine::proof_margin(shared.host.last_prove_ms(), period, t.block_secs);
            let pointer = codex_market::pointer(
                t.number,
                config.period_of(t.time),
                config.proofs.downtime_product,
                slot,
            );
            if super::machine::challenge_is_stable(t.time, period, pointer, need, t.block_secs) {
                return;
            }
        }
        match tokio::time::timeout(shared.config.poll_interval * 3, clock.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// The event of a host step that failed: a request that does not match its dataset is
/// skipped for good, a marketplace error is classified, anything else may be retried.
fn host_error(e: crate::Error, request: RequestId, index: u64) -> Event {
    match e {
        crate::Error::Market(m) => Event::market_error(&m),
        unfit @ crate::Error::RequestMismatch { .. } => {
            tracing::warn!(%request, index, error = %unfit, "sales: skipping a request that does not match its dataset");
            Event::failed(unfit.to_string(), FailureKind::Unfit)
        }
        other => Event::failed(other.to_string(), FailureKind::Other),
    }
}

/// Approves the collateral, proves the challenge of the block the fill lands in, fills.
async fn fill<M, H>(shared: &Shared<M, H>, request: &StorageRequest, index: u64) -> Event
where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    let (market, host) = (&shared.market, &shared.host);
    let (request_id, slot) = (request.id(), request.slot_id(index));
    // The approval first: the fill is then one transaction, and lands in the block
    // whose challenge is read.
    if let Err(e) = market.approve_collateral(request_id, index).await {
        return Event::market_error(&e);
    }
    let proving = shared.proving.acquire().await;
    wait_for_stable_challenge(shared, slot).await;
    let (period, challenge) = match (
        market.next_period().await,
        market.next_block_challenge(slot).await,
    ) {
        (Ok(p), Ok(c)) => (p, c),
        (Err(e), _) | (_, Err(e)) => return Event::market_error(&e),
    };
    let t = Instant::now();
    let proof = match host.prove(request, index, challenge).await {
        Ok(p) => p,
        Err(e) => return Event::failed(e.to_string(), FailureKind::Other),
    };
    let prove = t.elapsed();
    drop(proving);
    // Another host may have filled the slot while this one waited for the prover and
    // proved: a fill sent now would only revert and cost gas.
    if let Ok(state) = market.slot_state(slot).await
        && !matches!(state, SlotState::Free | SlotState::Repair)
    {
        tracing::info!(%slot, index, ?state, "sales: the slot was taken while proving");
        return Event::failed(
            format!("slot {index} is {state:?}, no longer free"),
            FailureKind::SlotLost,
        );
    }
    let t = Instant::now();
    if let Err(e) = market.fill_slot(request_id, index, &proof).await {
        return Event::market_error(&e);
    }
    let fill = t.elapsed();
    tracing::info!(%slot, index, ?prove, ?fill, "slot filled");
    shared.sales.update(slot, |s| {
        s.timings.push(("prove", prove));
        s.timings.push(("fill", fill));
        s.proofs = 1;
    });
    shared.sales.count_proof();
    shared.sales.save_now().await;
    host.filled(request, index).await;
    Event::Filled { period }
}

/// Whether a watched proof's block is gone from the chain (see [`ProofWatch`]), in
/// `period` (the period of the next block). Every proof gone leaves the sale's book;
/// returned is the period of one that counted for `period` (the sale proves again).
/// A proof of an earlier period that is gone is a missed one, and the watch goes on.
async fn proof_dropped<M, H>(
    shared: &Shared<M, H>,
    slot: SlotId,
    period: u64,
    watching: &mut Watching,
) -> Option<u64>
where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    let head = watching.read_at.map(|(_, number)| number)?;
    let market = &shared.market;
    let gone = watching
        .proofs
        .look(
            head,
            |block| async move { market.block_hash(block).await.ok() },
        )
        .await;
    let mut again = None;
    for gone in gone {
        shared.sales.update(slot, |s| {
            if let Some(at) = s.proof_periods.iter().rposition(|p| *p == gone.period) {
                s.proof_periods.remove(at);
                s.proofs = s.proofs.saturating_sub(1);
            }
        });
        if gone.period < period {
            tracing::warn!(%slot, period = gone.period, block = gone.block, "sales: a reorganisation dropped the proof of an ended period: it is missed");
        } else {
            tracing::warn!(%slot, period = gone.period, block = gone.block, "sales: a reorganisation dropped the proof: proving again");
            again = Some(gone.period);
        }
    }
    again
}

/// Proves the slot now and submits the proof; an accepted one is kept in `watching`.
async fn prove<M, H>(
    shared: &Shared<M, H>,
    request: &StorageRequest,
    index: u64,
    watching: &mut Watching,
) -> Event
where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    let (market, host) = (&shared.market, &shared.host);
    let slot = request.slot_id(index);
    let proving = shared.proving.acquire().await;
    wait_for_stable_challenge(shared, slot).await;
    // The period the challenge is read in: a proof that lands in another period fails
    // (the challenge moves with the period), so an accepted one counts for this one.
    let (period, challenge) = match (
        market.next_period().await,
        market.next_block_challenge(slot).await,
    ) {
        (Ok(p), Ok(c)) => (p, c),
        (Err(e), _) | (_, Err(e)) => return Event::market_error(&e),
    };
    let proof = match host.prove(request, index, challenge).await {
        Ok(p) => p,
        Err(e) => return Event::failed(e.to_string(), FailureKind::Other),
    };
    drop(proving);
    match market.submit_proof(slot, &proof).await {
        Ok(receipt) => {
            tracing::info!(%slot, period, "proof submitted");
            watching
                .proofs
                .accepted(period, receipt.block_number, receipt.block_hash);
            shared.sales.update(slot, |s| {
                s.proofs += 1;
                s.proof_periods.push(period);
            });
            shared.sales.count_proof();
            Event::Proved { period }
        }
        Err(e) => {
            tracing::warn!(%slot, period, error = %e, "sales: proof not accepted");
            Event::market_error(&e)
        }
    }
}

/// The sale is over: its record, its availability's space, its data.
async fn finish<M, H>(
    shared: &Shared<M, H>,
    request: &StorageRequest,
    slot: SlotId,
    end: End,
    attempts: u32,
) where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    let End::Over {
        state,
        error,
        collateral_back,
        retry,
    } = end
    else {
        return;
    };
    let sales = &shared.sales;
    let availability = sales.sale(slot).map(|s| s.availability).unwrap_or_default();
    sales.update(slot, |s| {
        s.state = state;
        s.error = error.clone();
    });
    if let Some(e) = &error {
        tracing::info!(%slot, ?state, error = %e, "sales: sale over");
    } else {
        tracing::info!(%slot, ?state, "sales: sale over");
    }
    sales.give_back(&availability, request, collateral_back);
    // A failed attempt keeps its data for the next one, unless it was the last.
    if !retry || attempts >= shared.config.max_attempts {
        shared.host.forget(slot).await;
        discard(shared, slot).await;
    }
    sales.save_now().await;
}

/// Deletes the dataset sale `slot` fetched, now that the sale is over, unless another
/// sale of this host uses it (which then owns it). Nothing when the dataset was in the
/// store before the sale.
async fn discard<M, H>(shared: &Shared<M, H>, slot: SlotId)
where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    if let Some(cid) = shared.sales.disown_data(slot) {
        discard_dataset(shared, slot, cid).await;
    }
}

/// Deletes dataset `cid`, fetched by sale `slot`, unless another sale of this host
/// uses it (which then owns it).
async fn discard_dataset<M, H>(shared: &Shared<M, H>, slot: SlotId, cid: Cid)
where
    M: Marketplace + Clone + 'static,
    H: SlotHost,
{
    let sales = &shared.sales;
    if sales.pass_on_data(slot, cid) {
        return;
    }
    sales.forget_owned_on_restart(slot);
    match shared.host.delete_dataset(&cid).await {
        Ok(()) => tracing::info!(%slot, %cid, "sales: the sale is over, its data deleted"),
        Err(e) => tracing::warn!(%slot, %cid, error = %e, "sales: cannot delete a sale's data"),
    }
    sales.save();
}

/// The wall clock in seconds since the Unix epoch (0 on a clock set before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
