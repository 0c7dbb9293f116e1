//! Purchasing (the client side, reference §8.2): a storage request for a stored dataset
//! is checked, then in the background the dataset is erasure-coded (K = nodes -
//! tolerance, M = tolerance), its slots built, the verifiable manifest stored and
//! announced, and `requestStorage` sent; a watcher follows the request on chain until it
//! ends and withdraws what the client is owed.
//!
//! The marketplace part ([`submit`], [`watch`], [`restore`]) works over any
//! [`Marketplace`]; the node's part (erasure coding, slots) runs as a task of the
//! market's task set.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codex_core::prelude::*;
use codex_core::{Cid, codec};
use codex_market::alloy::primitives::{Address, U256, keccak256};
use codex_market::{
    Ask, Content, Marketplace, MarketplaceConfig, RequestId, RequestState, StorageRequest,
};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::node::market::Market;

/// The body of `POST /storage/request/{cid}` (Codex's names; numbers may be strings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestParams {
    /// Seconds of storage.
    pub duration: u64,
    /// A proof about once every this many periods.
    pub proof_probability: U256,
    /// Payment per byte per second.
    pub price_per_byte_per_second: U256,
    /// Collateral per byte.
    pub collateral_per_byte: U256,
    /// Seconds until the request is cancelled unless every slot is filled.
    pub expiry: u64,
    /// Slots (hosts): K + M. Default 3.
    pub nodes: u64,
    /// Slots that may be lost: M. Default 1.
    pub tolerance: u64,
}

fn field(body: &Value, key: &str, default: Option<u64>) -> Result<U256> {
    let bad = |why: &str| Error::InvalidRequest(format!("{key}: {why}"));
    match body.get(key) {
        None | Some(Value::Null) => default.map(U256::from).ok_or_else(|| bad("missing")),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(U256::from)
            .ok_or_else(|| bad("not a non-negative integer")),
        Some(Value::String(s)) => s
            .trim()
            .parse::<U256>()
            .map_err(|_| bad("not a non-negative integer")),
        Some(_) => Err(bad("not a number")),
    }
}

fn small(key: &str, v: U256) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::InvalidRequest(format!("{key}: too large")))
}

impl RequestParams {
    /// The parameters `request` was made with.
    pub fn of(request: &StorageRequest) -> Self {
        RequestParams {
            duration: request.ask.duration,
            proof_probability: request.ask.proof_probability,
            price_per_byte_per_second: request.ask.price_per_byte_per_second,
            collateral_per_byte: request.ask.collateral_per_byte,
            expiry: request.expiry,
            nodes: request.ask.slots,
            tolerance: request.ask.max_slot_loss,
        }
    }

    /// Reads Codex's JSON body.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a missing or malformed field.
    pub fn from_json(body: &Value) -> Result<Self> {
        if !body.is_object() {
            return Err(Error::InvalidRequest(
                "the body must be a JSON object".into(),
            ));
        }
        Ok(RequestParams {
            duration: small("duration", field(body, "duration", None)?)?,
            proof_probability: field(body, "proofProbability", None)?,
            price_per_byte_per_second: field(body, "pricePerBytePerSecond", None)?,
            collateral_per_byte: field(body, "collateralPerByte", None)?,
            expiry: small("expiry", field(body, "expiry", None)?)?,
            nodes: small("nodes", field(body, "nodes", Some(3))?)?,
            tolerance: small("tolerance", field(body, "tolerance", Some(1))?)?,
        })
    }

    /// Codex's rules: every value above zero, `expiry < duration`, `duration` within
    /// the marketplace's limit, `tolerance < nodes` (K = nodes - tolerance >= 1), at
    /// most 256 slots (the circuit's bound).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the rule broken.
    pub fn validate(&self, config: &MarketplaceConfig) -> Result<()> {
        let fail = |m: String| Err(Error::InvalidRequest(m));
        for (name, zero) in [
            ("duration", self.duration == 0),
            ("proofProbability", self.proof_probability.is_zero()),
            (
                "pricePerBytePerSecond",
                self.price_per_byte_per_second.is_zero(),
            ),
            ("collateralPerByte", self.collateral_per_byte.is_zero()),
            ("expiry", self.expiry == 0),
            ("nodes", self.nodes == 0),
            ("tolerance", self.tolerance == 0),
        ] {
            if zero {
                return fail(format!("{name} must be greater than zero"));
            }
        }
        if self.expiry >= self.duration {
            return fail(format!(
                "expiry ({}) must be less than duration ({})",
                self.expiry, self.duration
            ));
        }
        if self.duration > config.request_duration_limit {
            return fail(format!(
                "duration ({}) exceeds the marketplace's limit ({})",
                self.duration, config.request_duration_limit
            ));
        }
        if self.tolerance >= self.nodes {
            return fail(format!(
                "tolerance ({}) must be less than nodes ({}): K = nodes - tolerance must be at least 1",
                self.tolerance, self.nodes
            ));
        }
        if self.nodes > 256 {
            return fail(format!("nodes ({}) must be at most 256", self.nodes));
        }
        Ok(())
    }
}

/// Where a purchase is (Codex's purchase states, plus what `pending` is doing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurchaseState {
    /// Erasure coding, building slots, or sending `requestStorage`.
    Pending,
    /// On chain, waiting for hosts to fill every slot.
    Submitted,
    /// Every slot filled: storage runs until the request ends.
    Started,
    /// Ended; the client's funds were withdrawn.
    Finished,
    /// Not filled before expiry; the client's funds were withdrawn.
    Cancelled,
    /// Lost more than `tolerance` slots; becomes `Errored` once the funds left are
    /// withdrawn, as in Codex.
    Failed,
    /// Something went wrong (see the error), or the request failed.
    Errored,
}

impl PurchaseState {
    /// Codex's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            PurchaseState::Pending => "pending",
            PurchaseState::Submitted => "submitted",
            PurchaseState::Started => "started",
            PurchaseState::Finished => "finished",
            PurchaseState::Cancelled => "cancelled",
            PurchaseState::Failed => "failed",
            PurchaseState::Errored => "errored",
        }
    }

    fn is_final(self) -> bool {
        matches!(
            self,
            PurchaseState::Finished
                | PurchaseState::Cancelled
                | PurchaseState::Failed
                | PurchaseState::Errored
        )
    }
}

/// One purchase as the API shows it.
#[derive(Clone, Debug)]
pub struct Purchase {
    /// The purchase id (hex of the request's nonce; known before the request is).
    pub id: String,
    /// The dataset the purchase is for.
    pub cid: Cid,
    /// What was asked.
    pub params: RequestParams,
    /// Where it is.
    pub state: PurchaseState,
    /// What `pending` is doing now.
    pub step: &'static str,
    /// The request, once built.
    pub request: Option<StorageRequest>,
    /// The verifiable manifest's CID, once built.
    pub verifiable: Option<Cid>,
    /// Why it errored.
    pub error: Option<String>,
    /// Wall time of each step done so far (`erasure`, `slots`, `request`).
    pub timings: Vec<(&'static str, Duration)>,
}

impl Purchase {
    /// Codex's `Purchase` (`requestId` and `request` once the request is built, `state`,
    /// `error`), plus our `id`, `step`, `cid`, `verifiableCid` and `timingsMs`.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "id": self.id,
            "state": self.state.as_str(),
            "step": self.step,
            "error": self.error,
            "cid": self.cid.to_string(),
            "verifiableCid": self.verifiable.map(|c| c.to_string()),
            "timingsMs": timings_json(&self.timings),
        });
        if let Some(r) = &self.request {
            out["requestId"] = json!(r.id().to_string());
            out["request"] = request_json(r);
        }
        out
    }
}

/// Codex's JSON of a storage request (its OpenAPI `StorageRequest`): counts, sizes and
/// times as integers, amounts of tokens as decimal strings, the dataset's CID as text;
/// plus `content.merkleRoot`.
pub fn request_json(r: &StorageRequest) -> Value {
    use codex_market::alloy::primitives::hex::encode_prefixed as hex;
    json!({
        "id": r.id().to_string(),
        "client": r.client.to_string(),
        "ask": {
            "slots": r.ask.slots,
            "slotSize": r.ask.slot_size,
            "duration": r.ask.duration,
            "proofProbability": r.ask.proof_probability.to_string(),
            "pricePerBytePerSecond": r.ask.price_per_byte_per_second.to_string(),
            "collateralPerByte": r.ask.collateral_per_byte.to_string(),
            "maxSlotLoss": r.ask.max_slot_loss,
        },
        "content": {
            "cid": Cid::from_bytes(&r.content.cid)
                .map_or_else(|_| hex(&r.content.cid), |c| c.to_string()),
            "merkleRoot": hex(r.content.merkle_root),
        },
        "expiry": r.expiry,
        "nonce": hex(r.nonce),
    })
}

/// The node's purchases, by id.
#[derive(Debug)]
pub struct Purchases {
    all: Mutex<BTreeMap<String, Purchase>>,
    /// Moves on at every change of a purchase, for [`Purchases::built`] to wait on.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Purchases {
    fn default() -> Self {
        Purchases {
            all: Mutex::default(),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Purchases {
    /// Every purchase id.
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// One purchase.
    pub fn get(&self, id: &str) -> Option<Purchase> {
        let id = id.strip_prefix("0x").unwrap_or(id).to_ascii_lowercase();
        self.lock().get(&id).cloned()
    }

    /// Waits until purchase `id` has its request built, or has failed, and gives it;
    /// `None` for an id this node does not know.
    pub async fn built(&self, id: &str) -> Option<Purchase> {
        let mut changed = self.changed.subscribe();
        loop {
            let p = self.get(id)?;
            if p.request.is_some() || p.state == PurchaseState::Errored {
                return Some(p);
            }
            // The sender lives as long as `self`: this only waits.
            if changed.changed().await.is_err() {
                return Some(p);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Purchase>> {
        self.all
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Purchase)) {
        if let Some(p) = self.lock().get_mut(id) {
            f(p);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Purchases {
    /// Records a new pending purchase of dataset `cid` by `account`; its nonce and id
    /// (the nonce in hex: known before the request is).
    pub(crate) fn begin(
        &self,
        cid: Cid,
        params: &RequestParams,
        account: Address,
    ) -> ([u8; 32], String) {
        let nonce = {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let mut seed = cid.to_bytes();
            seed.extend_from_slice(&now.to_le_bytes());
            seed.extend_from_slice(account.as_slice());
            keccak256(seed).0
        };
        let id = codex_market::alloy::primitives::hex::encode(nonce);
        self.lock().insert(
            id.clone(),
            Purchase {
                id: id.clone(),
                cid,
                params: params.clone(),
                state: PurchaseState::Pending,
                step: "erasure coding",
                request: None,
                verifiable: None,
                error: None,
                timings: Vec::new(),
            },
        );
        (nonce, id)
    }

    /// Purchase `id` ended with `error`.
    fn errored(&self, id: &str, error: &Error) {
        tracing::warn!(purchase = %id, %error, "purchase failed");
        self.update(id, |p| {
            p.state = PurchaseState::Errored;
            p.error = Some(error.to_string());
        });
    }
}

/// Sends `request` for purchase `id` (which pays its full price) and follows it on
/// chain until it ends, withdrawing what the client is owed then.
///
/// # Errors
/// When `requestStorage` fails, or the request cannot be read back 30 times in a row
/// (an unreachable chain is waited for).
pub async fn submit<M: Marketplace + ?Sized>(
    market: &M,
    purchases: &Purchases,
    id: &str,
    request: StorageRequest,
    poll_interval: Duration,
) -> Result<()> {
    purchases.update(id, |p| {
        p.step = "requesting storage";
        p.request = Some(request.clone());
    });
    let t = Instant::now();
    let (request_id, _) = market.request_storage(&request).await?;
    let request_time = t.elapsed();
    tracing::info!(purchase = %id, request = %request_id, ?request_time, "storage requested");
    purchases.update(id, |p| {
        p.timings.push(("request", request_time));
        p.state = PurchaseState::Submitted;
        p.step = "";
    });
    watch(market, purchases, id, request_id, poll_interval).await
}

/// The purchases of this account's requests that were not withdrawn yet (`myRequests`),
/// restored from the chain (Codex's `unknown` state) unless known already; their ids
/// and requests, to [`watch`] again.
pub async fn restore<M: Marketplace + ?Sized>(
    market: &M,
    purchases: &Purchases,
) -> Vec<(String, RequestId)> {
    let ids = match market.my_requests().await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "purchasing: cannot list this account's requests");
            return Vec::new();
        }
    };
    let mut restored = Vec::new();
    for request_id in ids {
        let Ok(request) = market.get_request(request_id).await else {
            continue;
        };
        let Ok(cid) = Cid::from_bytes(&request.content.cid) else {
            continue;
        };
        let id = codex_market::alloy::primitives::hex::encode(request.nonce);
        let params = RequestParams::of(&request);
        let mut all = purchases.lock();
        if all.contains_key(&id) {
            continue;
        }
        all.insert(
            id.clone(),
            Purchase {
                id: id.clone(),
                cid,
                params,
                state: PurchaseState::Submitted,
                step: "",
                request: Some(request),
                verifiable: Some(cid),
                error: None,
                timings: Vec::new(),
            },
        );
        tracing::info!(purchase = %id, request = %request_id, "purchasing: resuming a purchase");
        restored.push((id, request_id));
    }
    restored
}

/// Follows the request on chain until it ends; withdraws when it is over.
///
/// # Errors
/// When the request cannot be read 30 times in a row for another reason than an
/// unreachable chain.
pub async fn watch<M: Marketplace + ?Sized>(
    market: &M,
    purchases: &Purchases,
    id: &str,
    request: RequestId,
    poll_interval: Duration,
) -> Result<()> {
    let mut errors = 0u32;
    loop {
        tokio::time::sleep(poll_interval).await;
        let state = match market.request_state(request).await {
            Ok(s) => s,
            // An unreachable chain passes: the purchase is followed until it answers
            // again (the request lives on chain meanwhile). 30 other errors in a row
            // (a revert, a value we do not know) end it.
            Err(codex_market::Error::Rpc { .. }) => continue,
            Err(e) => {
                errors += 1;
                if errors > 30 {
                    return Err(e.into());
                }
                continue;
            }
        };
        errors = 0;
        let next = match state {
            RequestState::New => PurchaseState::Submitted,
            RequestState::Started => PurchaseState::Started,
            RequestState::Finished => PurchaseState::Finished,
            RequestState::Cancelled => PurchaseState::Cancelled,
            RequestState::Failed => PurchaseState::Failed,
        };
        purchases.update(id, |p| p.state = next);
        if next.is_final() {
            if let Err(e) = market.withdraw_funds(request).await {
                tracing::info!(purchase = %id, error = %e, "nothing to withdraw");
            }
            tracing::info!(purchase = %id, state = next.as_str(), "purchase ended");
            if next == PurchaseState::Failed {
                // As Codex: a failed purchase, once its funds are withdrawn, is an error.
                purchases.update(id, |p| {
                    p.state = PurchaseState::Errored;
                    p.error = Some("Purchase failed: the request lost too many slots".into());
                });
            }
            return Ok(());
        }
    }
}

/// What the node's purchases need of it (the node's wiring).
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub(crate) store: Arc<dyn BlockStore>,
    pub(crate) network: Option<codex_net::Network>,
    pub(crate) market: Arc<Market>,
}

/// Checks a storage request for the stored dataset `cid` and starts it in the
/// background (a task of the market's [`crate::node::market::TaskSet`]); returns the
/// purchase id at once. Nothing is spent before the checks pass.
///
/// # Errors
/// [`Error::InvalidRequest`] for parameters Codex refuses, [`Error::NotAManifest`],
/// [`codex_core::Error::NotFound`] for a dataset the node does not hold.
pub(crate) async fn request_storage(ctx: Ctx, cid: Cid, params: RequestParams) -> Result<String> {
    let market = &ctx.market;
    params.validate(market.client.config())?;
    if cid.codec() != codec::MANIFEST {
        return Err(Error::NotAManifest(cid));
    }
    // 404 when the dataset is not stored here; 422 when the block is no manifest.
    codex_core::Manifest::decode(ctx.store.get_block(&cid).await?.data())?;
    let (nonce, id) = market
        .purchases
        .begin(cid, &params, market.client.account());
    let buyer = Buyer {
        store: Arc::clone(&ctx.store),
        network: ctx.network.clone(),
        market: market.client.clone(),
        purchases: Arc::clone(&market.purchases),
        poll_interval: market.poll_interval,
    };
    let pid = id.clone();
    market.tasks.spawn(async move {
        if let Err(e) = buyer.buy(&pid, cid, &params, nonce).await {
            buyer.purchases.errored(&pid, &e);
        }
    });
    Ok(id)
}

/// After a restart: every request of this account that was not withdrawn yet gets its
/// purchase back, in the state the chain says, and is followed to its end and
/// withdrawn as before (tasks of the market's `TaskSet`).
pub(crate) async fn resume(ctx: Ctx) {
    let market = &ctx.market;
    for (id, request) in restore(&market.client, &market.purchases).await {
        let (client, purchases, poll) = (
            market.client.clone(),
            Arc::clone(&market.purchases),
            market.poll_interval,
        );
        market.tasks.spawn(async move {
            if let Err(e) = watch(&client, &purchases, &id, request, poll).await {
                purchases.errored(&id, &e);
            }
        });
    }
}

/// What a purchase's background work holds (not the `Market`, whose task set owns it).
struct Buyer<M> {
    store: Arc<dyn BlockStore>,
    network: Option<codex_net::Network>,
    market: M,
    purchases: Arc<Purchases>,
    poll_interval: Duration,
}

impl<M: Marketplace> Buyer<M> {
    /// Erasure-codes the dataset, builds its slots, requests storage and follows it.
    async fn buy(&self, id: &str, cid: Cid, params: &RequestParams, nonce: [u8; 32]) -> Result<()> {
        let purchases = &self.purchases;
        let (k, m) = (
            (params.nodes - params.tolerance) as usize,
            params.tolerance as usize,
        );

        let t = Instant::now();
        let (protected_cid, protected) =
            crate::node::data::erasure_encode(&*self.store, cid, k, m).await?;
        let erasure = t.elapsed();
        tracing::info!(purchase = %id, %protected_cid, k, m, ?erasure, "erasure-coded");
        purchases.update(id, |p| {
            p.timings.push(("erasure", erasure));
            p.step = "building slots";
        });

        let t = Instant::now();
        let (verifiable_cid, verifiable, slots) =
            codex_proofs::slot::build_verifiable(&*self.store, &protected).await?;
        let slots_time = t.elapsed();
        tracing::info!(purchase = %id, %verifiable_cid, ?slots_time, "slots built");
        if let Some(net) = &self.network {
            crate::node::network::announce(net, verifiable_cid, &verifiable).await;
        }
        let request = StorageRequest {
            client: self.market.account(),
            ask: Ask {
                proof_probability: params.proof_probability,
                price_per_byte_per_second: params.price_per_byte_per_second,
                collateral_per_byte: params.collateral_per_byte,
                slots: params.nodes,
                slot_size: slots.geometry().slot_bytes(),
                duration: params.duration,
                max_slot_loss: params.tolerance,
            },
            content: Content {
                cid: verifiable_cid.to_bytes(),
                merkle_root: slots.verify_root().to_le_bytes(),
            },
            expiry: params.expiry,
            nonce,
        };
        purchases.update(id, |p| {
            p.timings.push(("slots", slots_time));
            p.verifiable = Some(verifiable_cid);
        });
        submit(&self.market, purchases, id, request, self.poll_interval).await
    }
}

/// Named durations as a JSON object of milliseconds (purchases and sales show their steps).
pub(crate) fn timings_json(timings: &[(&'static str, Duration)]) -> Value {
    Value::Object(
        timings
            .iter()
            .map(|(k, d)| ((*k).to_string(), json!(d.as_millis() as u64)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
        json!({
            "duration": "3600", "proofProbability": 2, "pricePerBytePerSecond": "1",
            "collateralPerByte": 1, "expiry": 300, "nodes": 3, "tolerance": 1,
        })
    }

    #[test]
    fn request_bodies_are_read_and_checked_like_codex() -> Result<()> {
        let config = MarketplaceConfig::default();
        let p = RequestParams::from_json(&body())?;
        assert_eq!(
            (p.duration, p.expiry, p.nodes, p.tolerance),
            (3600, 300, 3, 1)
        );
        p.validate(&config)?;

        let refused = |patch: Value| {
            let mut b = body();
            for (k, v) in patch.as_object().into_iter().flatten() {
                b[k] = v.clone();
            }
            match RequestParams::from_json(&b).and_then(|p| p.validate(&config)) {
                Err(Error::InvalidRequest(m)) => m,
                other => panic!("{patch} accepted: {other:?}"),
            }
        };
        assert!(refused(json!({"duration": 0})).contains("duration"));
        assert!(refused(json!({"tolerance": 4})).contains("tolerance"));
        assert!(refused(json!({"tolerance": 3})).contains("tolerance"));
        assert!(refused(json!({"expiry": 3600})).contains("expiry"));
        assert!(refused(json!({"expiry": "x"})).contains("expiry"));
        assert!(refused(json!({"duration": 100_000_000})).contains("limit"));
        Ok(())
    }

    fn ask_request(client: Address) -> StorageRequest {
        StorageRequest {
            client,
            ask: Ask {
                proof_probability: U256::from(1),
                price_per_byte_per_second: U256::from(1),
                collateral_per_byte: U256::from(1),
                slots: 2,
                slot_size: 1024,
                duration: 3600,
                max_slot_loss: 1,
            },
            content: Content {
                cid: Cid::for_manifest(b"manifest").to_bytes(),
                merkle_root: [0; 32],
            },
            expiry: 300,
            nonce: [3; 32],
        }
    }

    /// A purchase is restored from the chain after a restart and followed to its end:
    /// not filled before expiry, it is cancelled and the client's money withdrawn.
    #[tokio::test]
    async fn purchases_are_restored_and_withdrawn_when_cancelled() -> anyhow::Result<()> {
        use codex_market::memory::{MemoryMarketplace, TestVerifier};
        let chain = MemoryMarketplace::deploy(MarketplaceConfig::default(), TestVerifier)?;
        let client = chain.connect(Address::repeat_byte(1));
        let tokens = U256::from(10u64.pow(9));
        chain.mint(client.account(), tokens);
        let request = ask_request(client.account());
        let (id, _) = client.request_storage(&request).await?;

        // the node restarts: its purchases come back from `myRequests`
        let purchases = Purchases::default();
        let restored = restore(&client, &purchases).await;
        let pid = codex_market::alloy::primitives::hex::encode(request.nonce);
        assert_eq!(restored, vec![(pid.clone(), id)]);
        let p = purchases
            .get(&pid)
            .ok_or(Error::InvalidRequest("no purchase".into()))?;
        assert_eq!(
            (p.state, p.request),
            (PurchaseState::Submitted, Some(request))
        );
        assert!(restore(&client, &purchases).await.is_empty(), "once");

        chain.advance(301);
        let poll = Duration::from_millis(1);
        tokio::time::timeout(
            Duration::from_secs(5),
            watch(&client, &purchases, &pid, id, poll),
        )
        .await??;
        assert_eq!(
            purchases.get(&pid).map(|p| p.state),
            Some(PurchaseState::Cancelled)
        );
        assert_eq!(client.balance_of(client.account()).await?, tokens);
        assert!(client.my_requests().await?.is_empty());
        Ok(())
    }
}
