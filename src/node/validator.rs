//! The validator (reference §8.3, Codex's `validation.nim`): follows `SlotFilled` slots
//! (from the chain's history at start, then as they come), optionally only a shard of
//! them, and after each period marks the proofs that were required and not received as
//! missing, which slashes the host and pays the validator a share. After
//! `maxNumberOfSlashes` marks the contract frees the slot into `Repair`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use codex_market::{MarketEvent, MarketplaceError, RequestId, SlotId, SlotState};
use serde_json::{Value, json};

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
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        ValidatorConfig {
            groups: None,
            group_index: 0,
            max_slots: 1000,
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
    marked: Mutex<Vec<MarkedProof>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Validation {
    /// The slots watched.
    pub fn slots(&self) -> Vec<SlotId> {
        lock(&self.slots).keys().copied().collect()
    }

    /// Every proof marked missing, oldest first.
    pub fn marked(&self) -> Vec<MarkedProof> {
        lock(&self.marked).clone()
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

/// Watches and validates until the task is aborted.
pub(crate) async fn run(market: Arc<Market>, config: ValidatorConfig) {
    let client = &market.client;
    let state = &market.validation;
    let timeout = client.config().proofs.timeout;
    // Codex restores from past `SlotFilled` events; a local chain is short, so read it
    // all.
    let mut poller = client.subscribe(0);
    // (slot, period) pairs settled: marked, proved, or past the marking window.
    let mut settled: BTreeSet<(SlotId, u64)> = BTreeSet::new();
    let mut last_period = None;
    loop {
        match poller.poll().await {
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
        let (Ok(period), Ok(now)) = (client.current_period().await, client.timestamp().await)
        else {
            tokio::time::sleep(market.config.poll_interval).await;
            continue;
        };
        if last_period != Some(period) {
            // A new period: drop the slots that are no longer filled.
            last_period = Some(period);
            let watched: Vec<SlotId> = state.slots();
            for slot in watched {
                if let Ok(s) = client.slot_state(slot).await
                    && s != SlotState::Filled
                {
                    lock(&state.slots).remove(&slot);
                }
            }
            settled.retain(|(_, p)| *p + 2 >= period);
        }
        // The previous period may be marked until `timeout` seconds after its end.
        let Some(previous) = period.checked_sub(1) else {
            tokio::time::sleep(market.config.poll_interval).await;
            continue;
        };
        let period_len = client.config().proofs.period;
        let window_open = now < period * period_len + timeout;
        for slot in state.slots() {
            if !window_open || settled.contains(&(slot, previous)) {
                continue;
            }
            match client.can_mark_proof_as_missing(slot, previous).await {
                Ok(()) => match client.mark_proof_as_missing(slot, previous).await {
                    Ok(_) => {
                        tracing::info!(%slot, period = previous, "validator: proof marked missing");
                        lock(&state.marked).push(MarkedProof {
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
                    // Whether a proof was required depends on the block the question is
                    // asked in (the pointer moves): ask again until the window closes.
                    Some(MarketplaceError::ProofNotRequired | MarketplaceError::PeriodNotEnded)
                    | None => {}
                    Some(_) => {
                        settled.insert((slot, previous));
                    }
                },
            }
        }
        tokio::time::sleep(market.config.poll_interval).await;
    }
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
}
