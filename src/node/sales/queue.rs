//! The slot queue: slots from `StorageRequested` and `SlotFreed` events, tried in
//! Codex's order (unseen first, then profitability, lower collateral, later expiry),
//! bounded, with a back-off for slots tried before. No I/O: time is passed in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use codex_market::alloy::primitives::{Address, U256, keccak256};
use codex_market::{RequestId, StorageRequest};

/// Slots the queue holds at most (Codex's 128); the least attractive leave first.
pub const QUEUE_MAX: usize = 128;

/// A slot waiting in the queue.
#[derive(Clone, Debug)]
pub struct QueueItem {
    /// The request.
    pub request: Arc<StorageRequest>,
    /// The slot index.
    pub index: u64,
    /// Tried before (Codex's `seen`): such items come after the unseen ones.
    pub seen: bool,
    /// Attempts made.
    pub attempts: u32,
    /// Not tried before this instant.
    pub not_before: Instant,
    /// Orders slots that are otherwise equal differently on each host (Codex shuffles
    /// a request's slots), so that hosts spread over them instead of racing for one.
    shuffle: u64,
}

impl QueueItem {
    /// Slot `index` of `request`, as host `host` orders it, to be tried from `now`.
    pub fn new(request: Arc<StorageRequest>, index: u64, host: Address, now: Instant) -> Self {
        let h = keccak256([host.as_slice(), request.slot_id(index).0.as_slice()].concat());
        let mut head = [0u8; 8];
        head.copy_from_slice(&h[..8]);
        QueueItem {
            request,
            index,
            seen: false,
            attempts: 0,
            not_before: now,
            shuffle: u64::from_le_bytes(head),
        }
    }

    /// Codex's order, greatest first: unseen first, then higher `duration * price *
    /// slotSize`, then lower collateral, then later expiry.
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

    /// The item again after a failed attempt: seen, and not before a back-off of
    /// 2, 4, 8, 16, then 32 s.
    pub fn retried(mut self, now: Instant) -> Self {
        self.seen = true;
        self.not_before = now + Duration::from_secs(2u64 << self.attempts.min(4));
        self
    }
}

/// The queue of slots to try.
#[derive(Debug, Default)]
pub struct SlotQueue {
    items: Vec<QueueItem>,
}

impl SlotQueue {
    /// Adds an item unless the slot is queued already; past [`QUEUE_MAX`] the least
    /// attractive item leaves.
    pub fn push(&mut self, item: QueueItem) {
        let id = item.request.id();
        if self
            .items
            .iter()
            .any(|i| i.index == item.index && i.request.id() == id)
        {
            return;
        }
        self.items.push(item);
        if self.items.len() > QUEUE_MAX {
            self.items.sort_by_key(|i| std::cmp::Reverse(i.key()));
            self.items.truncate(QUEUE_MAX);
        }
    }

    /// Drops every slot of requests for which `drop` says so.
    pub fn retain_requests(&mut self, mut keep: impl FnMut(RequestId) -> bool) {
        self.items.retain(|i| keep(i.request.id()));
    }

    /// Takes the best item that may be tried at `now` and whose request `allowed`
    /// accepts; the others stay.
    pub fn pop(
        &mut self,
        now: Instant,
        mut allowed: impl FnMut(RequestId) -> bool,
    ) -> Option<QueueItem> {
        let best = self
            .items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.not_before <= now && allowed(i.request.id()))
            .max_by_key(|(_, i)| i.key())
            .map(|(n, _)| n)?;
        Some(self.items.swap_remove(best))
    }

    /// The items, best first: `(request, slot index, attempts)`.
    pub fn list(&self) -> Vec<(RequestId, u64, u32)> {
        let mut q: Vec<&QueueItem> = self.items.iter().collect();
        q.sort_by_key(|i| std::cmp::Reverse(i.key()));
        q.iter()
            .map(|i| (i.request.id(), i.index, i.attempts))
            .collect()
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codex_market::{Ask, Content};

    fn request(price: u64, collateral: u64, expiry: u64, nonce: u8) -> Arc<StorageRequest> {
        Arc::new(StorageRequest {
            client: Address::repeat_byte(1),
            ask: Ask {
                proof_probability: U256::from(1),
                price_per_byte_per_second: U256::from(price),
                collateral_per_byte: U256::from(collateral),
                slots: 2,
                slot_size: 1024,
                duration: 3600,
                max_slot_loss: 1,
            },
            content: Content {
                cid: vec![1],
                merkle_root: [0; 32],
            },
            expiry,
            nonce: [nonce; 32],
        })
    }

    #[test]
    fn codex_order_unseen_then_profit_then_collateral_then_expiry() {
        let now = Instant::now();
        let host = Address::repeat_byte(9);
        let mut q = SlotQueue::default();
        let cheap = request(1, 1, 600, 1);
        let rich = request(5, 1, 600, 2);
        let heavy = request(5, 9, 600, 3);
        let late = request(5, 1, 900, 4);
        for r in [&cheap, &rich, &heavy, &late] {
            q.push(QueueItem::new(Arc::clone(r), 0, host, now));
        }
        q.push(QueueItem::new(Arc::clone(&cheap), 0, host, now)); // already queued
        assert_eq!(q.len(), 4);
        let order: Vec<RequestId> = std::iter::from_fn(|| q.pop(now, |_| true))
            .map(|i| i.request.id())
            .collect();
        assert_eq!(order, [late.id(), rich.id(), heavy.id(), cheap.id()]);

        // a slot tried before comes after the unseen ones, and only after its back-off
        let tried = QueueItem::new(Arc::clone(&late), 1, host, now).retried(now);
        q.push(tried);
        q.push(QueueItem::new(Arc::clone(&cheap), 1, host, now));
        assert!(q.pop(now, |r| r != cheap.id()).is_none(), "backing off");
        assert_eq!(
            q.pop(now, |_| true).map(|i| i.request.id()),
            Some(cheap.id())
        );
        let later = now + Duration::from_secs(3);
        assert_eq!(q.pop(later, |_| true).map(|i| i.index), Some(1));
        assert!(q.is_empty());
    }

    #[test]
    fn bounded_the_least_attractive_leave() {
        let now = Instant::now();
        let host = Address::repeat_byte(9);
        let mut q = SlotQueue::default();
        for n in 0..=QUEUE_MAX as u64 {
            let r = request(1 + n, 1, 600, (n % 250) as u8);
            q.push(QueueItem::new(r, n, host, now));
        }
        assert_eq!(q.len(), QUEUE_MAX);
        assert!(
            q.list().iter().all(|(_, index, _)| *index != 0),
            "the cheapest left"
        );
    }
}
