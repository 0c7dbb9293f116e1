//! Sales (the host side, reference §8.1), minimal but real: availabilities, a loop that
//! watches `StorageRequested` events, and per slot a sale that reserves it, downloads
//! its blocks from the network, checks the slot root against the verifiable manifest,
//! proves the on-chain challenge with halo2, fills the slot, and then proves each period
//! the proof clock asks for, until the request ends and the payout is collected.
//!
//! Not yet: the slot queue's priorities, `PATCH` of availabilities and reservations,
//! resuming sales after a restart, repair of slots in `Repair`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codex_core::{BlockStore, Cid, Manifest};
use codex_market::alloy::primitives::U256;
use codex_market::{MarketEvent, MarketplaceError, RequestId, SlotId, SlotState, StorageRequest};
use codex_net::{FetchOptions, Network};
use codex_proofs::{ProofInput, SlotGeometry, SlotTree, entropy_from_challenge};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::node::market::Market;

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

impl Availability {
    /// Reads `POST /sales/availability`'s body: `totalSize, duration,
    /// minPricePerBytePerSecond, totalCollateral` (numbers or strings), `enabled?`.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a missing, malformed or zero field.
    pub fn from_json(id: String, body: &Value) -> Result<Self> {
        let num = |key: &str| -> Result<U256> {
            let v = match body.get(key) {
                Some(Value::Number(n)) => n.as_u64().map(U256::from),
                Some(Value::String(s)) => s.trim().parse::<U256>().ok(),
                _ => None,
            }
            .ok_or_else(|| Error::InvalidRequest(format!("{key}: missing or not a number")))?;
            if v.is_zero() {
                return Err(Error::InvalidRequest(format!(
                    "{key} must be greater than zero"
                )));
            }
            Ok(v)
        };
        let small = |key: &str| -> Result<u64> {
            u64::try_from(num(key)?).map_err(|_| Error::InvalidRequest(format!("{key}: too large")))
        };
        let total_size = small("totalSize")?;
        let total_collateral = num("totalCollateral")?;
        Ok(Availability {
            id,
            total_size,
            free_size: total_size,
            duration: small("duration")?,
            min_price_per_byte_per_second: num("minPricePerBytePerSecond")?,
            total_collateral,
            total_remaining_collateral: total_collateral,
            enabled: body.get("enabled").and_then(Value::as_bool).unwrap_or(true),
        })
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
    /// Fetching the slot's blocks from the network and checking the slot root.
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
    /// The request was cancelled or failed, or the slot freed.
    Ended,
    /// Another host was faster, or the slot is no longer free.
    Ignored,
    /// Something went wrong (see the error).
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
            SaleState::Ended => "SaleCancelled",
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
    /// Proofs accepted (the fill's included).
    pub proofs: u64,
    /// The periods proofs were submitted in after the fill.
    pub proof_periods: Vec<u64>,
    /// Why it errored or was ignored.
    pub error: Option<String>,
    /// Wall time of each step (`download`, `slotRoot`, `prove`, `fill`).
    pub timings: Vec<(&'static str, Duration)>,
}

impl Sale {
    /// The JSON `GET /sales/slots` shows.
    pub fn to_json(&self) -> Value {
        let timings = super::purchasing::timings_json(&self.timings);
        json!({
            "slotId": self.slot.to_string(),
            "requestId": self.request.to_string(),
            "slotIndex": self.slot_index,
            "availabilityId": self.availability,
            "state": self.state.as_str(),
            "proofs": self.proofs,
            "proofPeriods": self.proof_periods,
            "error": self.error,
            "timingsMs": timings,
        })
    }
}

/// The host's availabilities and sales.
#[derive(Debug, Default)]
pub struct Sales {
    availabilities: Mutex<BTreeMap<String, Availability>>,
    sales: Mutex<BTreeMap<SlotId, Sale>>,
    slot_data: Mutex<BTreeMap<SlotId, Arc<SlotData>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sales {
    /// Adds an availability.
    pub fn add_availability(&self, a: Availability) {
        lock(&self.availabilities).insert(a.id.clone(), a);
    }

    /// Every availability.
    pub fn availabilities(&self) -> Vec<Availability> {
        lock(&self.availabilities).values().cloned().collect()
    }

    /// Every sale.
    pub fn sales(&self) -> Vec<Sale> {
        lock(&self.sales).values().cloned().collect()
    }

    /// One sale.
    pub fn sale(&self, slot: SlotId) -> Option<Sale> {
        lock(&self.sales).get(&slot).cloned()
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
        Some(a.id.clone())
    }

    /// Gives a slot's size (and, unless it was lost, its collateral) back.
    fn give_back(&self, id: &str, request: &StorageRequest, collateral: bool) {
        if let Some(a) = lock(&self.availabilities).get_mut(id) {
            a.free_size = (a.free_size + request.ask.slot_size).min(a.total_size);
            if collateral {
                a.total_remaining_collateral += request.ask.collateral_per_slot();
            }
        }
    }

    fn holds_slot_of(&self, request: RequestId) -> bool {
        lock(&self.sales).values().any(|s| {
            s.request == request && !matches!(s.state, SaleState::Ignored | SaleState::Errored)
        })
    }
}

/// What the sales loop needs of the node.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub(crate) store: Arc<dyn BlockStore>,
    pub(crate) network: Network,
    pub(crate) market: Arc<Market>,
}

/// Watches the marketplace for new requests and sells slots of those that match an
/// availability, one slot per request. Runs until the task is aborted.
pub(crate) async fn run(ctx: Ctx) {
    let client = &ctx.market.client;
    let from = loop {
        match client.block_number().await {
            Ok(b) => break b,
            Err(e) => {
                tracing::warn!(error = %e, "sales: cannot read the chain");
                tokio::time::sleep(ctx.market.config.poll_interval).await;
            }
        }
    };
    let mut poller = client.subscribe(from);
    loop {
        match poller.poll().await {
            Ok(events) => {
                for e in events {
                    if let MarketEvent::StorageRequested { request, .. } = e.event {
                        let ctx = ctx.clone();
                        tokio::spawn(async move { sell(&ctx, request).await });
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "sales: cannot poll events"),
        }
        tokio::time::sleep(ctx.market.config.poll_interval).await;
    }
}

/// Tries the slots of `request` in an order that starts at a place of this host's own
/// (so that hosts spread over the slots), until one is filled.
async fn sell(ctx: &Ctx, request_id: RequestId) {
    let client = &ctx.market.client;
    let request = match client.get_request(request_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(request = %request_id, error = %e, "sales: cannot read the request");
            return;
        }
    };
    let n = request.ask.slots.max(1);
    let account = client.account();
    let start = (u64::from(account.0[19]) + u64::from(request_id.0[0])) % n;
    for i in 0..n {
        let index = (start + i) % n;
        if ctx.market.sales.holds_slot_of(request_id) {
            return;
        }
        match client.slot_state(request.slot_id(index)).await {
            Ok(SlotState::Free) => {}
            _ => continue,
        }
        if !client
            .can_reserve_slot(request_id, index)
            .await
            .unwrap_or(false)
        {
            continue;
        }
        let Some(availability) = ctx.market.sales.take(&request) else {
            tracing::info!(request = %request_id, "sales: no availability matches");
            return;
        };
        let slot = request.slot_id(index);
        lock(&ctx.market.sales.sales).insert(
            slot,
            Sale {
                slot,
                request: request_id,
                slot_index: index,
                availability: availability.clone(),
                state: SaleState::Reserving,
                proofs: 0,
                proof_periods: Vec::new(),
                error: None,
                timings: Vec::new(),
            },
        );
        match fill(ctx, &request, index).await {
            Ok(()) => {
                prove_until_the_end(ctx, &request, index, &availability).await;
                return;
            }
            Err(e) => {
                let lost = matches!(
                    &e,
                    Error::Market(m) if matches!(
                        m.marketplace_error(),
                        Some(MarketplaceError::SlotNotFree | MarketplaceError::ReservationRequired)
                    )
                );
                tracing::info!(request = %request_id, index, error = %e, "sales: slot not taken");
                ctx.market.sales.update(slot, |s| {
                    s.state = if lost {
                        SaleState::Ignored
                    } else {
                        SaleState::Errored
                    };
                    s.error = Some(e.to_string());
                });
                ctx.market.sales.give_back(&availability, &request, true);
            }
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

async fn fill(ctx: &Ctx, request: &StorageRequest, index: u64) -> Result<()> {
    let client = &ctx.market.client;
    let (request_id, slot) = (request.id(), request.slot_id(index));
    let sales = &ctx.market.sales;
    client.reserve_slot(request_id, index).await?;
    sales.update(slot, |s| s.state = SaleState::Downloading);

    let t = Instant::now();
    let cid = Cid::from_bytes(&request.content.cid)?;
    let block = codex_net::fetch_manifest_block(&ctx.network, &ctx.store, cid).await?;
    let manifest = Manifest::decode(block.data())?;
    let geometry = SlotGeometry::new(&manifest)?;
    let range = geometry.block_index(index, 0)..geometry.block_index(index, geometry.slot_blocks);
    let report = codex_net::fetch(
        &ctx.network,
        &ctx.store,
        &manifest,
        Some(cid),
        range,
        None,
        &FetchOptions::default(),
    )
    .await?;
    if let Some(first) = report.missing.first() {
        return Err(Error::Net(codex_net::Error::Unavailable(format!(
            "{} blocks of slot {index} of {cid}, the first {first}",
            report.missing.len()
        ))));
    }
    let download = t.elapsed();

    let t = Instant::now();
    let verification = manifest
        .protection
        .as_ref()
        .and_then(|p| p.verification.clone())
        .ok_or(Error::NotAManifest(cid))?;
    let tree = codex_proofs::build_slot_tree(&*ctx.store, &manifest, index, 16).await?;
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
            "slot {index} of {cid}: the downloaded blocks give slot root {}, the manifest says {expected}",
            tree.root_cid()
        )));
    }
    let roots = verification
        .slot_roots
        .iter()
        .map(codex_proofs::slot::cid_element)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let slot_root = t.elapsed();
    tracing::info!(%cid, index, ?download, ?slot_root, "slot downloaded and checked");
    sales.update(slot, |s| {
        s.timings.push(("download", download));
        s.timings.push(("slotRoot", slot_root));
        s.state = SaleState::InitialProving;
    });
    // Keep the manifest, so that the dataset's blocks are listed and served.
    ctx.store.put_block(block).await?;
    let data = SlotData {
        cid,
        manifest,
        geometry,
        tree: Arc::new(tree),
        roots: Arc::new(roots),
    };

    let prover = ctx.market.prover().await?;
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
    lock(&ctx.market.sales.slot_data).insert(slot, Arc::new(data));
    Ok(())
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
    async move {
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
        Ok(proof)
    }
}

/// Each period: while the slot is filled, prove when a proof is or will be required;
/// when the request has finished, collect the payout.
async fn prove_until_the_end(ctx: &Ctx, request: &StorageRequest, index: u64, availability: &str) {
    let client = &ctx.market.client;
    let slot = request.slot_id(index);
    let sales = &ctx.market.sales;
    let mut proved_in = client.current_period().await.ok();
    loop {
        tokio::time::sleep(ctx.market.config.poll_interval).await;
        let state = match client.slot_state(slot).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%slot, error = %e, "sales: cannot read the slot");
                continue;
            }
        };
        match state {
            SlotState::Filled => {}
            SlotState::Finished => {
                sales.update(slot, |s| s.state = SaleState::Payout);
                match client.free_slot(slot).await {
                    Ok(_) => {
                        sales.update(slot, |s| s.state = SaleState::Finished);
                        sales.give_back(availability, request, true);
                    }
                    Err(e) => sales.update(slot, |s| {
                        s.state = SaleState::Errored;
                        s.error = Some(e.to_string());
                    }),
                }
                break;
            }
            other => {
                tracing::info!(%slot, ?other, "sales: the slot ended");
                sales.update(slot, |s| {
                    s.state = SaleState::Ended;
                    s.error = Some(format!("slot is {other:?}"));
                });
                sales.give_back(availability, request, other == SlotState::Cancelled);
                break;
            }
        }
        let Ok(period) = client.current_period().await else {
            continue;
        };
        if proved_in == Some(period) {
            continue;
        }
        let required = client.is_proof_required(slot).await.unwrap_or(false)
            || client.will_proof_be_required(slot).await.unwrap_or(false);
        if !required {
            continue;
        }
        let Some(data) = lock(&ctx.market.sales.slot_data).get(&slot).cloned() else {
            break;
        };
        let prover = match ctx.market.prover().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "sales: no prover");
                continue;
            }
        };
        let submitted = client
            .submit_proof_with(slot, |challenge| {
                prove_job(ctx, &data, prover, index, challenge)
            })
            .await;
        match submitted {
            Ok(_) => {
                proved_in = Some(period);
                tracing::info!(%slot, period, "proof submitted");
                sales.update(slot, |s| {
                    s.proofs += 1;
                    s.proof_periods.push(period);
                });
            }
            Err(e) if e.marketplace_error() == Some(MarketplaceError::ProofAlreadySubmitted) => {
                proved_in = Some(period);
            }
            Err(e) => tracing::warn!(%slot, period, error = %e, "sales: proof not accepted"),
        }
    }
}
