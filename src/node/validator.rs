//! The validator (reference §8.3, Codex's `validation.nim`): follows `SlotFilled` slots
//! (from the chain's history at start, then as they come), optionally only a shard of
//! them, and after each period marks the proofs that were required and not received as
//! missing, which slashes the host and pays the validator a share. After
//! `maxNumberOfSlashes` marks the contract frees the slot into `Repair`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codex_market::{
    Events, MarketEvent, Marketplace, MarketplaceError, RequestId, SlotId, SlotState,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::node::market::Market;

/// Which slots a validator watches (`--validator-groups`, `--validator-group-index`,
/// `--validator-max-slots`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatorConfig {
    /// Split the slots into this many groups by slot id and watch one (`None`: all).
    pub groups: Option<u64>,
    /// The group watched, below `groups`.
    pub group_index: u64,
    /// Slots watched at most (Codex's default 1000).
    pub max_slots: usize,
    /// The first block whose `SlotFilled` events the validator reads; `None`: recent
    /// ones, the last [`RECENT_BLOCKS`] blocks before it starts. Never genesis by
    /// default: on a long chain that is millions of blocks of logs.
    pub from_block: Option<u64>,
}

/// Blocks before its start that a validator without [`ValidatorConfig::from_block`]
/// reads for filled slots (about 33 hours of 12-second blocks).
pub const RECENT_BLOCKS: u64 = 10_000;

impl Default for ValidatorConfig {
    fn default() -> Self {
        ValidatorConfig {
            groups: None,
            group_index: 0,
            max_slots: 1000,
            from_block: None,
        }
    }
}

impl ValidatorConfig {
    /// Whether `slot` is in the watched group: Codex's
    /// `uint64(first 8 bytes of slotId, big-endian) mod groups == index`.
    pub fn watches(&self, slot: SlotId) -> bool {
        let Some(groups) = self.groups.filter(|g| *g > 0) else {
            return true;
        };
        let mut head = [0u8; 8];
        head.copy_from_slice(&slot.0[..8]);
        u64::from_be_bytes(head) % groups == self.group_index
    }
}

/// A proof the validator marked missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkedProof {
    /// The slot.
    pub slot: SlotId,
    /// The period of the missing proof.
    pub period: u64,
}

/// What the validator watches and has done.
#[derive(Debug, Default)]
pub struct Validation {
    slots: Mutex<BTreeMap<SlotId, RequestId>>,
    /// The latest [`MARKED_KEPT`] proofs marked missing.
    marked: Mutex<std::collections::VecDeque<MarkedProof>>,
    marked_total: std::sync::atomic::AtomicU64,
}

/// How many of the proofs it marked missing a [`Validation`] lists.
pub const MARKED_KEPT: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Validation {
    /// The slots watched.
    pub fn slots(&self) -> Vec<SlotId> {
        lock(&self.slots).keys().copied().collect()
    }

    /// The latest proofs marked missing (at most [`MARKED_KEPT`]), oldest first.
    pub fn marked(&self) -> Vec<MarkedProof> {
        lock(&self.marked).iter().cloned().collect()
    }

    /// How many proofs this validator marked missing since it started.
    pub fn marked_total(&self) -> u64 {
        self.marked_total.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn record_marked(&self, proof: MarkedProof) {
        let mut marked = lock(&self.marked);
        if marked.len() == MARKED_KEPT {
            marked.pop_front();
        }
        marked.push_back(proof);
        self.marked_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The JSON `GET /validation` shows.
    pub fn to_json(&self) -> Value {
        json!({
            "slots": self.slots().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "markedMissing": self.marked().iter()
                .map(|m| json!({"slotId": m.slot.to_string(), "period": m.period}))
                .collect::<Vec<_>>(),
        })
    }
}

/// The validator's role over a [`Marketplace`], recording in a [`Validation`].
#[derive(Debug)]
pub struct Validator<M> {
    market: M,
    state: Arc<Validation>,
    config: ValidatorConfig,
    poll_interval: Duration,
    confirmations: u64,
}

impl<M: Marketplace> Validator<M> {
    /// A validator acting on `market` (whose account gets the rewards), watching the
    /// slots `config` selects, polling every second.
    pub fn new(market: M, config: ValidatorConfig) -> Self {
        Validator {
            market,
            state: Arc::default(),
            config,
            poll_interval: Duration::from_secs(1),
            confirmations: 0,
        }
    }

    /// Reads events only of blocks with `n` blocks on top (default 0: up to the
    /// latest, reorganisations followed by block hash).
    #[must_use]
    pub fn confirmations(mut self, n: u64) -> Self {
        self.confirmations = n;
        self
    }

    /// Records in `state` (e.g. the one the API shows).
    pub fn state(mut self, state: Arc<Validation>) -> Self {
        self.state = state;
        self
    }

    /// Polls the chain every `interval`.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// What it watches and did.
    pub fn validation(&self) -> &Arc<Validation> {
        &self.state
    }

    /// Watches and validates until `cancel` is cancelled.
    ///
    /// # Cancel safety
    /// Dropping the future stops it; nothing is left half done but a transaction that
    /// may or may not land.
    pub async fn run(self, cancel: CancellationToken) {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {}
            _ = self.validate() => {}
        }
    }

    async fn validate(&self) {
        let (market, state, config) = (&self.market, &*self.state, &self.config);
        let timeout = market.config().proofs.timeout;
        // Codex restores from past `SlotFilled` events: from the configured block, or
        // the recent ones.
        let from = match config.from_block {
            Some(b) => b,
            None => loop {
                match market.block_number().await {
                    Ok(latest) => break latest.saturating_sub(RECENT_BLOCKS),
                    Err(e) => {
                        tracing::warn!(error = %e, "validator: cannot read the chain");
                        tokio::time::sleep(self.poll_interval).await;
                    }
                }
            },
        };
        tracing::info!(from_block = from, "validator: following filled slots");
        let mut events = Events::from_block(from).with_confirmations(self.confirmations);
        // (slot, period) pairs settled: marked, proved, or past the marking window.
        let mut settled: BTreeSet<(SlotId, u64)> = BTreeSet::new();
        let mut last_period = None;
        loop {
            match events.poll(market).await {
                Ok(events) => {
                    let mut slots = lock(&state.slots);
                    for e in events {
                        match e.event {
                            MarketEvent::SlotFilled {
                                request,
                                slot_index,
                            } => {
                                let slot = SlotId::new(request, slot_index);
                                if config.watches(slot) && slots.len() < config.max_slots {
                                    slots.insert(slot, request);
                                }
                            }
                            MarketEvent::SlotFreed {
                                request,
                                slot_index,
                            } => {
                                slots.remove(&SlotId::new(request, slot_index));
                            }
                            MarketEvent::RequestCancelled { request }
                            | MarketEvent::RequestFailed { request } => {
                                slots.retain(|_, r| *r != request);
                            }
                            _ => {}
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "validator: cannot poll events"),
            }
            let (Ok(period), Ok(now)) = (market.current_period().await, market.timestamp().await)
            else {
                tokio::time::sleep(self.poll_interval).await;
                continue;
            };
            if last_period != Some(period) {
                // A new period: drop the slots that are no longer filled.
                last_period = Some(period);
                for slot in state.slots() {
                    if let Ok(s) = market.slot_state(slot).await
                        && s != SlotState::Filled
                    {
                        lock(&state.slots).remove(&slot);
                    }
                }
                settled.retain(|(_, p)| *p + 2 >= period);
            }
            // The previous period may be marked until `timeout` seconds after its end.
            let Some(previous) = period.checked_sub(1) else {
                tokio::time::sleep(self.poll_interval).await;
                continue;
            };
            let period_len = market.config().proofs.period;
            let window_open = now < period * period_len + timeout;
            for slot in state.slots() {
                if !window_open || settled.contains(&(slot, previous)) {
                    continue;
                }
                match market.can_mark_proof_as_missing(slot, previous).await {
                    Ok(()) => match market.mark_proof_as_missing(slot, previous).await {
                        Ok(_) => {
                            tracing::info!(%slot, period = previous, "validator: proof marked missing");
                            state.record_marked(MarkedProof {
                                slot,
                                period: previous,
                            });
                            settled.insert((slot, previous));
                        }
                        Err(e) => {
                            tracing::info!(%slot, period = previous, error = %e, "validator: cannot mark");
                        }
                    },
                    Err(e) => match e.marketplace_error() {
                        // Whether a proof was required depends on the block the question
                        // is asked in (the pointer moves): ask again until the window
                        // closes.
                        Some(
                            MarketplaceError::ProofNotRequired | MarketplaceError::PeriodNotEnded,
                        )
                        | None => {}
                        Some(_) => {
                            settled.insert((slot, previous));
                        }
                    },
                }
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }
}

/// Watches and validates with the node's marketplace until the task is aborted (the
/// node's wiring).
pub(crate) async fn run(market: Arc<Market>, config: ValidatorConfig, cancel: CancellationToken) {
    let validator = Validator::new(market.client.clone(), config)
        .state(Arc::clone(&market.validation))
        .poll_interval(market.poll_interval)
        .confirmations(market.confirmations);
    drop(market);
    validator.run(cancel).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_shard_slots_by_the_first_eight_bytes() {
        let mut id = [0u8; 32];
        id[7] = 7; // big-endian head = 7
        let slot = SlotId(id.into());
        let all = ValidatorConfig::default();
        assert!(all.watches(slot));
        let shard = |i| ValidatorConfig {
            groups: Some(3),
            group_index: i,
            ..ValidatorConfig::default()
        };
        assert!(shard(1).watches(slot), "7 mod 3 = 1");
        assert!(!shard(0).watches(slot));
        assert!(!shard(2).watches(slot));
    }

    /// The validator follows filled slots and marks a missed proof once its period
    /// ended (and gets the reward); a validator of another group leaves the slot alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missed_proofs_of_watched_slots_are_marked() -> anyhow::Result<()> {
        use codex_market::alloy::primitives::{Address, U256};
        use codex_market::memory::{MemoryMarketplace, TestVerifier};
        use codex_market::{Ask, Content, StorageRequest};

        let config = codex_market::MarketplaceConfig::default();
        let chain = MemoryMarketplace::deploy(config.clone(), TestVerifier)?;
        let (client, host) = (
            chain.connect(Address::repeat_byte(1)),
            chain.connect(Address::repeat_byte(2)),
        );
        for m in [&client, &host] {
            chain.mint(m.account(), U256::from(10u64.pow(9)));
        }
        let request = StorageRequest {
            client: client.account(),
            ask: Ask {
                proof_probability: U256::from(1),
                price_per_byte_per_second: U256::from(1),
                collateral_per_byte: U256::from(1),
                slots: 1,
                slot_size: 1024,
                duration: 3600,
                max_slot_loss: 0,
            },
            content: Content {
                cid: b"cid".to_vec(),
                merkle_root: [0; 32],
            },
            expiry: 300,
            nonce: [4; 32],
        };
        let (id, _) = client.request_storage(&request).await?;
        host.reserve_slot(id, 0).await?;
        host.fill_slot(id, 0, &[1]).await?;
        let slot = request.slot_id(0);
        let poll = Duration::from_millis(2);
        let start = |account: u8, config: ValidatorConfig| {
            let v = Validator::new(chain.connect(Address::with_last_byte(account)), config)
                .poll_interval(poll);
            let state = Arc::clone(v.validation());
            let stop = CancellationToken::new();
            (state, stop.clone(), tokio::spawn(v.run(stop)))
        };
        let mut head = [0u8; 8];
        head.copy_from_slice(&slot.0[..8]);
        let other_group = ValidatorConfig {
            groups: Some(2),
            group_index: (u64::from_be_bytes(head) + 1) % 2,
            ..ValidatorConfig::default()
        };
        let (mine, stop, task) = start(7, ValidatorConfig::default());
        let (theirs, stop_theirs, task_theirs) = start(8, other_group);
        // One that starts reading after the fill does not know the slot.
        let later = ValidatorConfig {
            from_block: Some(chain.block_number().await? + 1),
            ..ValidatorConfig::default()
        };
        let (late, stop_late, task_late) = start(9, later);

        // the host proves nothing in the next period; once it ended, it is marked
        let p = config.period_of(chain.now()) + 1;
        chain.set_time(config.period_end(p) + 1)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while mine.marked().is_empty() {
            assert!(std::time::Instant::now() < deadline, "not marked");
            chain.mine(1); // the pointer moves out of the downtime
            tokio::time::sleep(poll).await;
        }
        assert_eq!(mine.marked(), vec![MarkedProof { slot, period: p }]);
        assert_eq!(mine.marked_total(), 1);
        assert_eq!(mine.slots(), vec![slot]);
        assert!(theirs.slots().is_empty() && theirs.marked().is_empty());
        assert!(late.slots().is_empty() && late.marked().is_empty());
        assert_eq!(chain.missing_proofs(slot).await?, 1);
        assert_eq!(
            chain.balance_of(Address::with_last_byte(7)).await?,
            config.validator_reward(&request.ask)
        );
        for (stop, task) in [
            (stop, task),
            (stop_theirs, task_theirs),
            (stop_late, task_late),
        ] {
            stop.cancel();
            task.await?;
        }
        Ok(())
    }
}
