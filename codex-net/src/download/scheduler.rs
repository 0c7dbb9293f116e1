//! The download scheduler: which block to ask next, and of which peer. A pure state
//! machine in the manner of rust-libp2p's Kademlia query iterators: the driver tells it
//! what happened (`on_delivered`, `on_failed`, `on_stored`, peers added and removed, the
//! reader's position) with the time passed in, and asks it what to do next
//! ([`Scheduler::next_request`], [`Scheduler::stalled`]). No I/O, no clock, no async:
//! everything here is tested with made-up times.
//!
//! Peers are scored by how fast they deliver. Each delivery gives a sample of the
//! peer's *service time*, the time between the delivery and the later of the request
//! and the peer's previous delivery (for a peer that serves requests one after another,
//! the inverse of its throughput), averaged over recent samples. A request goes to the
//! peer whose expected time to deliver it, `service × (in flight + 1)`, is least, raised
//! by the peer's recent failures. Requests so spread in proportion to bandwidth: a peer
//! four times faster ends up with about four times the requests.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::download::FetchOptions;

/// Failed requests for one block to one peer before that peer is not asked for it again.
/// A block becomes missing when every known peer failed it this often.
pub const MAX_TRIES: u32 = 3;

/// Weight of the newest sample in a peer's average service time.
const EWMA_WEIGHT: f64 = 0.2;

/// Service time assumed for peers before any has delivered.
const DEFAULT_SERVICE: Duration = Duration::from_millis(1);

/// What the scheduler knows of one peer.
#[derive(Clone, Debug, Default)]
pub struct PeerStats {
    /// Requests outstanding.
    pub inflight: usize,
    /// Requests sent, in all.
    pub requested: u64,
    /// Blocks delivered.
    pub delivered: u64,
    /// Requests that failed (since the last [`Scheduler::forgive`]).
    pub failed: u64,
    /// Average service time (the inverse of throughput), once the peer delivered.
    pub service: Option<Duration>,
    last_delivery: Option<Instant>,
}

impl PeerStats {
    /// Failures not made up for by deliveries.
    fn penalty(&self) -> u64 {
        self.failed.saturating_sub(self.delivered / 4)
    }

    /// The expected time for this peer to deliver one more request (lower is better).
    fn cost(&self, default_service: f64) -> f64 {
        let service = self.service.map_or(default_service, |s| s.as_secs_f64());
        service.max(1e-9) * (self.inflight as f64 + 1.0) * (1.0 + self.penalty() as f64)
    }

    fn sample(&mut self, service: Duration) {
        let s = service.as_secs_f64();
        let avg = match self.service {
            None => s,
            Some(old) => (1.0 - EWMA_WEIGHT) * old.as_secs_f64() + EWMA_WEIGHT * s,
        };
        self.service = Some(Duration::from_secs_f64(avg));
    }
}

#[derive(Clone, Copy, Debug)]
struct Request {
    peer: PeerId,
    sent: Instant,
}

/// The state of one download: blocks queued, in flight, being stored, done or missing,
/// and the peers that are asked.
#[derive(Debug)]
pub struct Scheduler {
    window: usize,
    per_peer: usize,
    max_ahead: u64,
    stall_timeout: Duration,
    max_tries: u32,
    /// Wanted and not in flight, asked in index order.
    queue: BTreeSet<u64>,
    inflight: HashMap<u64, Request>,
    /// Delivered and verified, not yet stored.
    storing: BTreeSet<u64>,
    missing: BTreeSet<u64>,
    stored: u64,
    /// Failed attempts per block and peer.
    tried: HashMap<u64, HashMap<PeerId, u32>>,
    peers: HashMap<PeerId, PeerStats>,
    /// The next block the reader takes, when a reader follows the download.
    reader: Option<u64>,
    last_progress: Instant,
    /// When the oldest request of the current run of outstanding requests was sent.
    asking_since: Instant,
}

impl Scheduler {
    /// A download of the blocks `wanted` (those not stored already) with the window, limits
    /// and stall timeout of `options`, started at `now`.
    pub fn new(
        wanted: impl IntoIterator<Item = u64>,
        options: &FetchOptions,
        now: Instant,
    ) -> Self {
        Scheduler {
            window: options.window.max(1),
            per_peer: options.per_peer.max(1),
            max_ahead: options.max_ahead.max(1),
            stall_timeout: options.stall_timeout,
            max_tries: MAX_TRIES,
            queue: wanted.into_iter().collect(),
            inflight: HashMap::new(),
            storing: BTreeSet::new(),
            missing: BTreeSet::new(),
            stored: 0,
            tried: HashMap::new(),
            peers: HashMap::new(),
            reader: None,
            last_progress: now,
            asking_since: now,
        }
    }

    /// Has a reader follow the download from block `position`: blocks are then asked at
    /// most `max_ahead` past the reader's position (see [`Scheduler::on_read`]).
    pub fn follow_reader(&mut self, position: u64) {
        self.reader = Some(position);
    }

    /// The reader moved on to block `position`. Reading counts as progress.
    pub fn on_read(&mut self, position: u64, now: Instant) {
        if let Some(r) = &mut self.reader
            && position > *r
        {
            *r = position;
            self.last_progress = self.last_progress.max(now);
        }
    }

    /// A peer that may have the blocks. Adding a known peer changes nothing.
    pub fn on_peer_added(&mut self, peer: PeerId) {
        self.peers.entry(peer).or_default();
    }

    /// A peer that is gone or misbehaved: it is not asked again, and the blocks asked of
    /// it are queued again. Returns those blocks (the driver may withdraw the requests).
    pub fn on_peer_removed(&mut self, peer: &PeerId) -> Vec<u64> {
        self.peers.remove(peer);
        let lost: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, r)| r.peer == *peer)
            .map(|(i, _)| *i)
            .collect();
        for i in &lost {
            self.inflight.remove(i);
            self.queue.insert(*i);
        }
        lost
    }

    /// The next request to send, if the window, the per-peer limit and the reader allow
    /// one and a peer can be asked. Call it until it returns `None`. A block that every
    /// known peer failed [`MAX_TRIES`] times is given up as missing on the way.
    pub fn next_request(&mut self, now: Instant) -> Option<(PeerId, u64)> {
        loop {
            if self.inflight.len() + self.storing.len() >= self.window {
                return None;
            }
            let &index = self.queue.first()?;
            if let Some(r) = self.reader
                && index >= r.saturating_add(self.max_ahead)
            {
                return None;
            }
            let Some(peer) = self.best_peer(index) else {
                if !self.peers.is_empty() && self.peers.keys().all(|p| self.exhausted(index, p)) {
                    self.queue.remove(&index);
                    self.missing.insert(index);
                    continue;
                }
                return None;
            };
            self.queue.remove(&index);
            if self.inflight.is_empty() {
                self.asking_since = now;
            }
            self.inflight.insert(index, Request { peer, sent: now });
            if let Some(p) = self.peers.get_mut(&peer) {
                p.inflight += 1;
                p.requested += 1;
            }
            return Some((peer, index));
        }
    }

    fn exhausted(&self, index: u64, peer: &PeerId) -> bool {
        self.tried
            .get(&index)
            .and_then(|t| t.get(peer))
            .is_some_and(|n| *n >= self.max_tries)
    }

    fn best_peer(&self, index: u64) -> Option<PeerId> {
        // Peers not measured yet are assumed as fast as the average of the others.
        let (sum, n) = self
            .peers
            .values()
            .filter_map(|p| p.service)
            .fold((0.0, 0u32), |(sum, n), s| (sum + s.as_secs_f64(), n + 1));
        let default_service = if n == 0 {
            DEFAULT_SERVICE.as_secs_f64()
        } else {
            sum / f64::from(n)
        };
        self.peers
            .iter()
            .filter(|(id, p)| p.inflight < self.per_peer && !self.exhausted(index, id))
            .map(|(id, p)| (p.cost(default_service), id))
            .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)))
            .map(|(_, id)| *id)
    }

    /// `peer` delivered block `index` (verified). The block is then being stored, which
    /// still takes a place in the window until [`Scheduler::on_stored`]. Returns false
    /// for a delivery that is not expected (the block was asked of someone else since,
    /// or given up), which the driver then drops.
    pub fn on_delivered(&mut self, peer: &PeerId, index: u64, now: Instant) -> bool {
        let sent = self.sent_of(index, now);
        if !self.take_request(peer, index) {
            return false;
        }
        if let Some(p) = self.peers.get_mut(peer) {
            p.inflight = p.inflight.saturating_sub(1);
            p.delivered += 1;
            let from = p.last_delivery.map_or(sent, |d| d.max(sent));
            p.sample(now.saturating_duration_since(from));
            p.last_delivery = Some(now);
        }
        self.storing.insert(index);
        true
    }

    /// Block `index` is stored: done.
    pub fn on_stored(&mut self, index: u64, now: Instant) {
        if self.storing.remove(&index) {
            self.stored += 1;
            self.last_progress = self.last_progress.max(now);
        }
    }

    /// The request for block `index` to `peer` failed (the peer lacks the block, left,
    /// or did not answer in time): the block is queued again, and after [`MAX_TRIES`]
    /// failures that peer is not asked for it again. A failure that took longer than
    /// the peer's average service time counts as a slow sample too. Returns false for a
    /// request that is not outstanding.
    pub fn on_failed(&mut self, peer: &PeerId, index: u64, now: Instant) -> bool {
        let sent = self.sent_of(index, now);
        if !self.take_request(peer, index) {
            return false;
        }
        if let Some(p) = self.peers.get_mut(peer) {
            p.inflight = p.inflight.saturating_sub(1);
            p.failed += 1;
            let waited = now.saturating_duration_since(sent);
            if p.service.is_some_and(|s| waited > s) {
                p.sample(waited);
            }
        }
        *self
            .tried
            .entry(index)
            .or_default()
            .entry(*peer)
            .or_default() += 1;
        self.queue.insert(index);
        true
    }

    fn sent_of(&self, index: u64, now: Instant) -> Instant {
        self.inflight.get(&index).map_or(now, |r| r.sent)
    }

    fn take_request(&mut self, peer: &PeerId, index: u64) -> bool {
        match self.inflight.get(&index) {
            Some(r) if r.peer == *peer => {
                self.inflight.remove(&index);
                true
            }
            _ => false,
        }
    }

    /// Gives every peer a new chance: failure counts and the tries per block are
    /// forgotten (when nobody could be asked for a while).
    pub fn forgive(&mut self) {
        self.tried.clear();
        for p in self.peers.values_mut() {
            p.failed = 0;
        }
    }

    /// When the download counts as stalled if nothing happens before: the stall timeout
    /// after the last progress (a block stored, the reader moving on) or after the
    /// oldest outstanding request was sent, whichever is later. `None` while blocks are
    /// being stored or nothing is left to do.
    pub fn stall_deadline(&self) -> Option<Instant> {
        if self.is_finished() || !self.storing.is_empty() {
            return None;
        }
        let since = if self.inflight.is_empty() {
            self.last_progress
        } else {
            self.last_progress.max(self.asking_since)
        };
        Some(since + self.stall_timeout)
    }

    /// Whether no progress was made for the stall timeout (see
    /// [`Scheduler::stall_deadline`]), also while requests are outstanding (a peer that
    /// takes requests and never answers).
    pub fn stalled(&self, now: Instant) -> bool {
        self.stall_deadline().is_some_and(|d| now >= d)
    }

    /// Gives up every block queued or in flight: they become missing. Returns the
    /// requests abandoned, which the driver withdraws.
    pub fn give_up(&mut self) -> Vec<(PeerId, u64)> {
        let abandoned: Vec<(PeerId, u64)> =
            self.inflight.drain().map(|(i, r)| (r.peer, i)).collect();
        for (peer, i) in &abandoned {
            if let Some(p) = self.peers.get_mut(peer) {
                p.inflight = p.inflight.saturating_sub(1);
            }
            self.missing.insert(*i);
        }
        self.missing.append(&mut self.queue);
        abandoned
    }

    /// Whether nothing is left to ask, wait for or store.
    pub fn is_finished(&self) -> bool {
        self.queue.is_empty() && self.inflight.is_empty() && self.storing.is_empty()
    }

    /// The blocks given up, in index order.
    pub fn missing(&self) -> impl Iterator<Item = u64> + '_ {
        self.missing.iter().copied()
    }

    /// Whether block `index` was given up.
    pub fn is_missing(&self, index: u64) -> bool {
        self.missing.contains(&index)
    }

    /// Blocks delivered and stored.
    pub fn stored(&self) -> u64 {
        self.stored
    }

    /// Requests outstanding.
    pub fn outstanding(&self) -> usize {
        self.inflight.len()
    }

    /// Blocks delivered and waiting to be stored.
    pub fn storing(&self) -> usize {
        self.storing.len()
    }

    /// Peers that may be asked.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// What is known of `peer`.
    pub fn peer(&self, peer: &PeerId) -> Option<&PeerStats> {
        self.peers.get(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(window: usize, per_peer: usize) -> FetchOptions {
        FetchOptions {
            window,
            per_peer,
            max_ahead: 1 << 20,
            stall_timeout: Duration::from_secs(10),
            ..FetchOptions::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Every request that can be sent now.
    fn drain(s: &mut Scheduler, now: Instant) -> Vec<(PeerId, u64)> {
        std::iter::from_fn(|| s.next_request(now)).collect()
    }

    fn deliver(s: &mut Scheduler, peer: &PeerId, i: u64, now: Instant) {
        assert!(s.on_delivered(peer, i, now));
        s.on_stored(i, now);
    }

    #[test]
    fn the_window_and_the_per_peer_limit_hold() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(0..100, &options(10, 4), t0);
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(s.next_request(t0), None, "nobody to ask yet");
        s.on_peer_added(a);
        s.on_peer_added(b);
        let sent = drain(&mut s, t0);
        assert_eq!(sent.len(), 8, "two peers, four each");
        assert_eq!(s.peer(&a).map(|p| p.inflight), Some(4));
        assert_eq!(s.peer(&b).map(|p| p.inflight), Some(4));
        // Blocks go out in order.
        let mut idx: Vec<u64> = sent.iter().map(|r| r.1).collect();
        idx.sort_unstable();
        assert_eq!(idx, (0..8).collect::<Vec<_>>());

        let c = PeerId::random();
        s.on_peer_added(c);
        assert_eq!(drain(&mut s, t0).len(), 2, "the window of 10 is full");
        // A delivered block still holds its place until it is stored.
        let (p, i) = sent[0];
        assert!(s.on_delivered(&p, i, t0 + ms(1)));
        assert_eq!(drain(&mut s, t0 + ms(1)), vec![]);
        s.on_stored(i, t0 + ms(2));
        assert_eq!(drain(&mut s, t0 + ms(2)).len(), 1);
        assert_eq!(s.outstanding(), 10);
    }

    #[test]
    fn a_failed_block_is_asked_of_another_peer() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(0..1, &options(10, 4), t0);
        let (a, b) = (PeerId::random(), PeerId::random());
        s.on_peer_added(a);
        s.on_peer_added(b);
        let (first, i) = s.next_request(t0).expect("a request");
        assert_eq!(i, 0);
        assert!(s.on_failed(&first, 0, t0 + ms(5)));
        let (second, i) = s.next_request(t0 + ms(5)).expect("asked again");
        assert_eq!(i, 0);
        assert_ne!(second, first, "retried elsewhere");
        deliver(&mut s, &second, 0, t0 + ms(6));
        assert!(s.is_finished());
        assert_eq!(s.missing().count(), 0);
        assert_eq!(s.stored(), 1);
    }

    #[test]
    fn a_peer_is_given_up_after_max_tries() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(0..2, &options(10, 4), t0);
        let a = PeerId::random();
        s.on_peer_added(a);
        let mut now = t0;
        for attempt in 0..MAX_TRIES {
            now += ms(1);
            let sent = drain(&mut s, now);
            assert!(sent.contains(&(a, 0)), "attempt {attempt}: {sent:?}");
            assert!(s.on_failed(&a, 0, now));
            if attempt == 0 {
                deliver(&mut s, &a, 1, now);
            }
        }
        // Every peer failed block 0 MAX_TRIES times: it is missing, and the download over.
        assert_eq!(drain(&mut s, now), vec![]);
        assert!(s.is_finished());
        assert_eq!(s.missing().collect::<Vec<_>>(), vec![0]);
        assert!(s.is_missing(0) && !s.is_missing(1));

        // A peer that failed a block MAX_TRIES times is not asked for it again, however
        // much better it scores.
        let mut s = Scheduler::new(0..1, &options(10, 4), t0);
        let b = PeerId::random();
        s.on_peer_added(a);
        for _ in 0..MAX_TRIES {
            assert_eq!(s.next_request(t0), Some((a, 0)));
            s.on_failed(&a, 0, t0);
        }
        s.on_peer_added(b);
        for _ in 0..MAX_TRIES - 1 {
            assert_eq!(s.next_request(t0), Some((b, 0)));
            s.on_failed(&b, 0, t0);
        }
        assert_eq!(s.next_request(t0), Some((b, 0)), "only b is left to ask");
        s.on_failed(&b, 0, t0);
        // `forgive` gives both their chances back; without it the block is missing.
        s.forgive();
        assert!(s.next_request(t0).is_some());
        s.give_up();
        assert_eq!(s.missing().collect::<Vec<_>>(), vec![0]);
    }

    /// Two peers serving requests one after another, one five times faster: the fast
    /// one gets most of the requests.
    #[test]
    fn a_slow_peer_gets_fewer_requests_than_a_fast_one() {
        let t0 = Instant::now();
        let blocks = 2000;
        let mut s = Scheduler::new(0..blocks, &options(64, 64), t0);
        let (fast, slow) = (PeerId::random(), PeerId::random());
        let service = |p: &PeerId| if *p == fast { ms(1) } else { ms(5) };
        s.on_peer_added(fast);
        s.on_peer_added(slow);
        // Each peer's queue: when its last request completes.
        let mut busy_until: HashMap<PeerId, Instant> = HashMap::new();
        let mut completions: BTreeSet<(Instant, u64, PeerId)> = BTreeSet::new();
        let mut now = t0;
        while !s.is_finished() {
            while let Some((p, i)) = s.next_request(now) {
                let start = busy_until.get(&p).copied().unwrap_or(now).max(now);
                let done = start + service(&p);
                busy_until.insert(p, done);
                completions.insert((done, i, p));
            }
            let (t, i, p) = completions.pop_first().expect("requests outstanding");
            now = t;
            deliver(&mut s, &p, i, now);
        }
        let (f, sl) = (
            s.peer(&fast).map_or(0, |p| p.requested),
            s.peer(&slow).map_or(0, |p| p.requested),
        );
        assert_eq!(f + sl, blocks);
        assert!(f > 3 * sl, "fast peer {f} requests, slow one {sl}");
        let fs = s.peer(&fast).and_then(|p| p.service).expect("measured");
        let ss = s.peer(&slow).and_then(|p| p.service).expect("measured");
        assert!(ss > 3 * fs, "service times {fs:?} and {ss:?}");
        // Both sources together beat the fast one alone (1 ms a block).
        let elapsed = now - t0;
        assert!(elapsed < ms(blocks), "took {elapsed:?}");
    }

    #[test]
    fn a_download_stalls_after_the_timeout_with_requests_outstanding() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut s = Scheduler::new(0..4, &options(10, 10), t0);
        let a = PeerId::random();
        s.on_peer_added(a);
        assert_eq!(drain(&mut s, t0 + ms(100)).len(), 4);
        assert_eq!(s.stall_deadline(), Some(t0 + ms(100) + timeout));
        deliver(&mut s, &a, 0, t0 + Duration::from_secs(3));
        assert!(!s.stalled(t0 + Duration::from_secs(12)), "progress at 3 s");
        assert_eq!(
            s.stall_deadline(),
            Some(t0 + Duration::from_secs(3) + timeout)
        );
        assert!(s.stalled(t0 + Duration::from_secs(13)));
        let mut abandoned = s.give_up();
        abandoned.sort_unstable();
        assert_eq!(abandoned, vec![(a, 1), (a, 2), (a, 3)]);
        assert!(s.is_finished());
        assert_eq!(s.missing().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(s.peer(&a).map(|p| p.inflight), Some(0));
        // A late delivery of an abandoned block is refused.
        assert!(!s.on_delivered(&a, 1, t0 + Duration::from_secs(14)));

        // Nobody to ask at all: stalled after the timeout too.
        let s = Scheduler::new(0..4, &options(10, 10), t0);
        assert!(!s.stalled(t0 + ms(9999)));
        assert!(s.stalled(t0 + timeout));
        // Blocks being stored hold the clock.
        let mut s = Scheduler::new(0..1, &options(10, 10), t0);
        s.on_peer_added(a);
        s.next_request(t0);
        s.on_delivered(&a, 0, t0);
        assert_eq!(s.stall_deadline(), None);
    }

    #[test]
    fn the_reader_holds_the_download_back() {
        let t0 = Instant::now();
        let opts = FetchOptions {
            max_ahead: 4,
            ..options(100, 100)
        };
        let mut s = Scheduler::new(10..30, &opts, t0);
        s.follow_reader(10);
        let a = PeerId::random();
        s.on_peer_added(a);
        let sent: Vec<u64> = drain(&mut s, t0).into_iter().map(|r| r.1).collect();
        assert_eq!(
            sent,
            vec![10, 11, 12, 13],
            "at most max_ahead past the reader"
        );
        for i in sent {
            deliver(&mut s, &a, i, t0 + ms(1));
        }
        assert_eq!(
            drain(&mut s, t0 + ms(1)),
            vec![],
            "the reader has not moved"
        );
        s.on_read(12, t0 + ms(2));
        let sent: Vec<u64> = drain(&mut s, t0 + ms(2)).into_iter().map(|r| r.1).collect();
        assert_eq!(sent, vec![14, 15]);
        // Without a reader the window alone limits.
        let mut s = Scheduler::new(10..30, &opts, t0);
        s.on_peer_added(a);
        assert_eq!(drain(&mut s, t0).len(), 20);
    }

    #[test]
    fn finished_and_missing_are_reported() {
        let t0 = Instant::now();
        let mut s = Scheduler::new([1, 3, 5], &options(10, 10), t0);
        assert!(!s.is_finished());
        let a = PeerId::random();
        let b = PeerId::random();
        s.on_peer_added(a);
        s.on_peer_added(b);
        let sent = drain(&mut s, t0);
        assert_eq!(sent.len(), 3);
        // b is removed (misbehaved): what it was asked for is queued again, for a.
        let of_b: Vec<u64> = sent.iter().filter(|r| r.0 == b).map(|r| r.1).collect();
        let mut lost = s.on_peer_removed(&b);
        lost.sort_unstable();
        assert_eq!(lost, of_b);
        for i in &of_b {
            assert!(
                !s.on_delivered(&b, *i, t0),
                "a removed peer's delivery is refused"
            );
        }
        let again = drain(&mut s, t0);
        assert!(again.iter().all(|r| r.0 == a));
        for (_, i) in sent.iter().filter(|r| r.0 == a).chain(&again) {
            if *i == 5 {
                for _ in 0..MAX_TRIES {
                    s.on_failed(&a, 5, t0);
                    let _ = drain(&mut s, t0);
                }
            } else {
                deliver(&mut s, &a, *i, t0);
            }
        }
        assert!(s.is_finished());
        assert_eq!(s.stored(), 2);
        assert_eq!(s.missing().collect::<Vec<_>>(), vec![5]);
        assert_eq!(s.peer_count(), 1);
    }
}
