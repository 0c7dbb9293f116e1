//! The download scheduler: which block to ask next, and of which peer. A pure state
//! machine in the manner of rust-libp2p's Kademlia query iterators: the driver tells it
//! what happened (`on_delivered`, `on_failed`, `on_stored`, peers added and removed, the
//! reader's position) with the time passed in, and asks it what to do next
//! ([`Scheduler::next_request`], [`Scheduler::stalled`]). No I/O, no clock, no async:
//! everything here is tested with made-up times.
//!
//! **Scores.** Each delivery gives a sample of the peer's *service time*, the time
//! between the delivery and the later of the request and the peer's previous delivery
//! (for a peer that serves requests one after another, the inverse of its throughput),
//! averaged over recent samples. A request goes to the peer whose expected time to
//! deliver it, `service × (in flight + 1)`, is least, raised by the peer's recent
//! failures. Requests so spread in proportion to bandwidth: a peer four times faster
//! ends up with about four times the requests.
//!
//! **Windows.** Each peer has a window of requests in flight sized by what it measured:
//! as many as it delivers in its latency (that of a request sent when nothing else was
//! outstanding at the peer) plus [`FetchOptions::peer_queue`]. The window grows as a
//! peer delivers faster and shrinks when it slows down, between [`MIN_WINDOW`] and
//! [`FetchOptions::per_peer`]; before its first delivery a peer has
//! [`INITIAL_WINDOW`]. So a peer that slows down holds little work.
//!
//! **Hedging.** When a peer has room in its window and no block is left to ask (the
//! tail of a download, or a reader holding the download back), a request outstanding at
//! a slower peer is sent to it as well, when it is expected to deliver it at least
//! [`HEDGE_GAIN`] times sooner: the request expected to end last (without a reader) or
//! the lowest block (with one). The first delivery wins; the other request stays
//! counted in its peer's window until it ends (its late delivery is a duplicate). A
//! block is asked of at most two peers at once, and hedges count in the window: a slow
//! source never holds the tail.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::download::FetchOptions;

/// Failed requests for one block to one peer before that peer is not asked for it again.
/// A block becomes missing when every known peer failed it this often.
pub const MAX_TRIES: u32 = 3;

/// A peer's window before it delivered anything (at most [`FetchOptions::per_peer`]).
pub const INITIAL_WINDOW: usize = 32;

/// The smallest window of a peer, however slow (at most [`FetchOptions::per_peer`]).
pub const MIN_WINDOW: usize = 2;

/// A request is sent to a second peer only when that peer is expected to deliver it at
/// least this many times sooner than the peer that has it.
pub const HEDGE_GAIN: f64 = 2.0;

/// Weight of the newest sample in a peer's average service time.
const EWMA_WEIGHT: f64 = 0.2;

/// Service time assumed for peers before any has delivered.
const DEFAULT_SERVICE: Duration = Duration::from_millis(1);

/// What the scheduler knows of one peer.
#[derive(Clone, Debug)]
pub struct PeerStats {
    /// Requests outstanding (hedges and requests whose block another peer delivered
    /// first included).
    pub inflight: usize,
    /// Requests it may have outstanding now (see the module's docs).
    pub window: usize,
    /// Requests sent, in all (hedges included).
    pub requested: u64,
    /// Requests sent as a hedge: a second request for a block outstanding at a slower peer.
    pub hedged: u64,
    /// Blocks delivered first, which the download kept.
    pub delivered: u64,
    /// Blocks delivered after another peer had delivered them (answers to hedged requests).
    pub duplicates: u64,
    /// Requests that failed since the last [`Scheduler::forgive`] (they lower its score).
    pub failed: u64,
    /// Requests that failed, in all.
    pub failures: u64,
    /// Average service time (the inverse of throughput), once the peer delivered.
    pub service: Option<Duration>,
    /// Its latency: the shortest time to deliver a request sent while nothing else was
    /// outstanding at it.
    pub latency: Option<Duration>,
    last_delivery: Option<Instant>,
}

impl PeerStats {
    fn new(window: usize) -> Self {
        PeerStats {
            inflight: 0,
            window,
            requested: 0,
            hedged: 0,
            delivered: 0,
            duplicates: 0,
            failed: 0,
            failures: 0,
            service: None,
            latency: None,
            last_delivery: None,
        }
    }

    /// Failures not made up for by deliveries.
    fn penalty(&self) -> u64 {
        self.failed.saturating_sub(self.delivered / 4)
    }

    /// The expected time for this peer to deliver one more request (lower is better).
    fn cost(&self, default_service: f64) -> f64 {
        let service = self.service.map_or(default_service, |s| s.as_secs_f64());
        service.max(1e-9) * (self.inflight as f64 + 1.0) * (1.0 + self.penalty() as f64)
    }

    fn has_room(&self) -> bool {
        self.inflight < self.window
    }

    fn sample(&mut self, service: Duration) {
        let s = service.as_secs_f64();
        let avg = match self.service {
            None => s,
            Some(old) => (1.0 - EWMA_WEIGHT) * old.as_secs_f64() + EWMA_WEIGHT * s,
        };
        self.service = Some(Duration::from_secs_f64(avg));
    }

    /// Sizes the window from what was measured: what the peer delivers in its latency
    /// plus `queue`, between [`MIN_WINDOW`] and `per_peer`.
    fn resize(&mut self, per_peer: usize, queue: Duration) {
        let Some(service) = self.service else { return };
        let ahead = self.latency.unwrap_or(Duration::ZERO) + queue;
        let blocks = (ahead.as_secs_f64() / service.as_secs_f64().max(1e-9)).ceil();
        // A float cast to an integer saturates: an absurd ratio ends at `per_peer`.
        self.window = (blocks as usize).clamp(MIN_WINDOW.min(per_peer), per_peer);
    }
}

#[derive(Clone, Copy, Debug)]
struct Request {
    peer: PeerId,
    sent: Instant,
    /// Order of sending, over all peers (a peer answers in about this order).
    seq: u64,
    /// The peer's requests outstanding when this one was sent.
    ahead: usize,
}

/// The requests outstanding for one block: the first, and at most one hedge.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    first: Request,
    hedge: Option<Request>,
}

impl InFlight {
    fn of(&self, peer: &PeerId) -> bool {
        self.first.peer == *peer || self.hedge.is_some_and(|h| h.peer == *peer)
    }

    /// The request of `peer` (one of the two), and the other one.
    fn split(self, peer: &PeerId) -> (Request, Option<Request>) {
        match self.hedge {
            Some(h) if h.peer == *peer => (h, Some(self.first)),
            hedge => (self.first, hedge),
        }
    }
}

/// The state of one download: blocks queued, in flight, being stored, done or missing,
/// and the peers that are asked.
///
/// Memory is bounded by the blocks of the download and the peers: at most `window`
/// blocks in flight or being stored (hedges counted), and at most `per_peer` requests
/// outstanding at each peer.
#[derive(Debug)]
pub struct Scheduler {
    window: usize,
    per_peer: usize,
    peer_queue: Duration,
    hedging: bool,
    max_ahead: u64,
    stall_timeout: Duration,
    max_tries: u32,
    /// Wanted and not in flight, asked in index order.
    queue: BTreeSet<u64>,
    inflight: HashMap<u64, InFlight>,
    /// Blocks in `inflight` with a hedge.
    hedges: usize,
    /// Requests still outstanding for blocks another peer delivered first: each holds a
    /// place in its peer's window until it ends.
    orphans: HashMap<(PeerId, u64), Request>,
    seq: u64,
    /// Delivered and verified, not yet stored.
    storing: BTreeSet<u64>,
    missing: BTreeSet<u64>,
    stored: u64,
    /// Failed attempts per block and peer.
    tried: HashMap<u64, HashMap<PeerId, u32>>,
    peers: HashMap<PeerId, PeerStats>,
    /// What was known of peers removed since (for the report).
    removed: HashMap<PeerId, PeerStats>,
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
            peer_queue: options.peer_queue,
            hedging: options.hedge,
            max_ahead: options.max_ahead.max(1),
            stall_timeout: options.stall_timeout,
            max_tries: MAX_TRIES,
            queue: wanted.into_iter().collect(),
            inflight: HashMap::new(),
            hedges: 0,
            orphans: HashMap::new(),
            seq: 0,
            storing: BTreeSet::new(),
            missing: BTreeSet::new(),
            stored: 0,
            tried: HashMap::new(),
            peers: HashMap::new(),
            removed: HashMap::new(),
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
        if self.peers.contains_key(&peer) {
            return;
        }
        let stats = self
            .removed
            .remove(&peer)
            .unwrap_or_else(|| PeerStats::new(INITIAL_WINDOW.min(self.per_peer)));
        self.peers.insert(peer, stats);
    }

    /// A peer that is gone or misbehaved: it is not asked again, and the blocks asked of
    /// it (and of no other peer) are queued again. Returns those blocks (the driver may
    /// withdraw the requests).
    pub fn on_peer_removed(&mut self, peer: &PeerId) -> Vec<u64> {
        if let Some(mut stats) = self.peers.remove(peer) {
            stats.inflight = 0;
            self.removed.insert(*peer, stats);
        }
        self.orphans.retain(|(p, _), _| p != peer);
        let of_peer: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.of(peer))
            .map(|(i, _)| *i)
            .collect();
        let mut lost = Vec::new();
        for i in of_peer {
            let Some(f) = self.inflight.remove(&i) else {
                continue;
            };
            match f.split(peer) {
                (_, Some(other)) => {
                    self.hedges -= 1;
                    self.inflight.insert(
                        i,
                        InFlight {
                            first: other,
                            hedge: None,
                        },
                    );
                }
                (_, None) => {
                    self.queue.insert(i);
                    lost.push(i);
                }
            }
        }
        lost
    }

    /// Blocks in flight (each counted once, hedged or not) and being stored: what the
    /// window holds.
    fn in_window(&self) -> usize {
        self.inflight.len() + self.hedges + self.storing.len()
    }

    /// The next request to send, if the window, the per-peer windows and the reader
    /// allow one and a peer can be asked: a queued block, or a hedge (see the module's
    /// docs). Call it until it returns `None`. A block that every known peer failed
    /// [`MAX_TRIES`] times is given up as missing on the way.
    pub fn next_request(&mut self, now: Instant) -> Option<(PeerId, u64)> {
        loop {
            if self.in_window() >= self.window {
                return None;
            }
            let Some(&index) = self.queue.first() else {
                return self.hedge(now);
            };
            if self.reader_bound(index) {
                return self.hedge(now);
            }
            let Some(peer) = self.best_peer(|id| !self.exhausted(index, id)) else {
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
            let first = self.new_request(peer, now);
            self.inflight.insert(index, InFlight { first, hedge: None });
            return Some((peer, index));
        }
    }

    fn reader_bound(&self, index: u64) -> bool {
        self.reader
            .is_some_and(|r| index >= r.saturating_add(self.max_ahead))
    }

    /// A request to `peer` (known), counted.
    fn new_request(&mut self, peer: PeerId, now: Instant) -> Request {
        let seq = self.seq;
        self.seq += 1;
        let p = self
            .peers
            .entry(peer)
            .or_insert_with(|| PeerStats::new(MIN_WINDOW));
        let ahead = p.inflight;
        p.inflight += 1;
        p.requested += 1;
        Request {
            peer,
            sent: now,
            seq,
            ahead,
        }
    }

    fn exhausted(&self, index: u64, peer: &PeerId) -> bool {
        self.tried
            .get(&index)
            .and_then(|t| t.get(peer))
            .is_some_and(|n| *n >= self.max_tries)
    }

    /// The service time assumed for a peer not measured yet: the average of the others'.
    fn default_service(&self) -> f64 {
        let (sum, n) = self
            .peers
            .values()
            .filter_map(|p| p.service)
            .fold((0.0, 0u32), |(sum, n), s| (sum + s.as_secs_f64(), n + 1));
        if n == 0 {
            DEFAULT_SERVICE.as_secs_f64()
        } else {
            sum / f64::from(n)
        }
    }

    /// The peer with room in its window that is expected to deliver soonest, among
    /// those `eligible`.
    fn best_peer(&self, eligible: impl Fn(&PeerId) -> bool) -> Option<PeerId> {
        let default_service = self.default_service();
        self.peers
            .iter()
            .filter(|(id, p)| p.has_room() && eligible(id))
            .map(|(id, p)| (p.cost(default_service), id))
            .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)))
            .map(|(_, id)| *id)
    }

    /// Whether a hedge may be sent now if one pays off: hedging is on, a block is in
    /// flight without one, no queued block can be asked, and a peer has room. The
    /// driver then calls [`Scheduler::next_request`] again after a while, as the
    /// expectations change with time.
    pub fn may_hedge(&self) -> bool {
        self.hedging
            && self.inflight.len() > self.hedges
            && self.in_window() < self.window
            && self.queue.first().is_none_or(|i| self.reader_bound(*i))
            && self.peers.values().any(PeerStats::has_room)
    }

    /// A hedge: the best peer with room takes a block outstanding at a slower peer (see
    /// the module's docs), when it pays off.
    fn hedge(&mut self, now: Instant) -> Option<(PeerId, u64)> {
        if !self.hedging || self.inflight.len() <= self.hedges {
            return None;
        }
        let default_service = self.default_service();
        let taker = self.best_peer(|_| true)?;
        let taker_time = self.peers.get(&taker)?.cost(default_service);

        // Every outstanding request, by peer in the order sent: its rank in its peer's
        // queue. The candidates are the unhedged blocks whose request is at another peer.
        let mut outstanding: Vec<(PeerId, u64, Instant, Option<u64>)> = Vec::new();
        for (i, f) in &self.inflight {
            let candidate =
                (f.hedge.is_none() && f.first.peer != taker && !self.exhausted(*i, &taker))
                    .then_some(*i);
            outstanding.push((f.first.peer, f.first.seq, f.first.sent, candidate));
            if let Some(h) = f.hedge {
                outstanding.push((h.peer, h.seq, h.sent, None));
            }
        }
        for r in self.orphans.values() {
            outstanding.push((r.peer, r.seq, r.sent, None));
        }
        outstanding.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));

        let mut best: Option<(u64, f64)> = None;
        let mut rank = 0usize;
        let mut start = now;
        for (n, &(peer, _, sent, candidate)) in outstanding.iter().enumerate() {
            let Some(stats) = self.peers.get(&peer) else {
                continue;
            };
            if n == 0 || outstanding[n - 1].0 != peer {
                // The peer's oldest request: its queue runs from then, or from its
                // last delivery if later.
                rank = 0;
                start = stats.last_delivery.map_or(sent, |d| d.max(sent));
            } else {
                rank += 1;
            }
            let Some(index) = candidate else { continue };
            // A peer that has not delivered for longer than its service time is at
            // least that slow now.
            let gap = now.saturating_duration_since(start).as_secs_f64();
            let service = stats
                .service
                .map_or(default_service, |s| s.as_secs_f64())
                .max(gap);
            let remaining = ((rank as f64 + 1.0) * service - gap).max(service);
            if remaining < HEDGE_GAIN * taker_time {
                continue;
            }
            let better = match best {
                None => true,
                // With a reader, the lowest block holds it back; without one, the
                // request expected to end last holds the tail.
                Some((b, _)) if self.reader.is_some() => index < b,
                Some((b, r)) => remaining > r || (remaining == r && index < b),
            };
            if better {
                best = Some((index, remaining));
            }
        }
        let (index, _) = best?;
        let hedge = self.new_request(taker, now);
        if let Some(p) = self.peers.get_mut(&taker) {
            p.hedged += 1;
        }
        if let Some(f) = self.inflight.get_mut(&index) {
            f.hedge = Some(hedge);
            self.hedges += 1;
        }
        Some((taker, index))
    }

    /// `peer` delivered block `index` (verified). The block is then being stored, which
    /// still takes a place in the window until [`Scheduler::on_stored`]. Returns false
    /// for a delivery that is not expected (the block was delivered by another peer
    /// first, asked of someone else since, or given up), which the driver then drops; a
    /// late answer to a hedged request still counts for its peer's speed.
    pub fn on_delivered(&mut self, peer: &PeerId, index: u64, now: Instant) -> bool {
        let (request, kept) = if self.inflight.get(&index).is_some_and(|f| f.of(peer)) {
            let Some(f) = self.inflight.remove(&index) else {
                return false;
            };
            let (mine, other) = f.split(peer);
            if let Some(other) = other {
                self.hedges -= 1;
                self.orphans.insert((other.peer, index), other);
            }
            (mine, true)
        } else if let Some(orphan) = self.orphans.remove(&(*peer, index)) {
            (orphan, false)
        } else {
            return false;
        };
        if let Some(p) = self.peers.get_mut(peer) {
            p.inflight = p.inflight.saturating_sub(1);
            if kept {
                p.delivered += 1;
            } else {
                p.duplicates += 1;
            }
            let from = p
                .last_delivery
                .map_or(request.sent, |d| d.max(request.sent));
            p.sample(now.saturating_duration_since(from));
            if request.ahead == 0 {
                let latency = now.saturating_duration_since(request.sent);
                p.latency = Some(p.latency.map_or(latency, |l| l.min(latency)));
            }
            p.last_delivery = Some(now);
            p.resize(self.per_peer, self.peer_queue);
        }
        if kept {
            self.storing.insert(index);
        }
        kept
    }

    /// Block `index` is stored: done.
    pub fn on_stored(&mut self, index: u64, now: Instant) {
        if self.storing.remove(&index) {
            self.stored += 1;
            self.last_progress = self.last_progress.max(now);
        }
    }

    /// The request for block `index` to `peer` failed (the peer lacks the block, left,
    /// or did not answer in time): the block is queued again (unless another peer has
    /// it in flight), and after [`MAX_TRIES`] failures that peer is not asked for it
    /// again. A failure that took longer than the peer's average service time counts
    /// as a slow sample too. Returns false for a request that is not outstanding.
    pub fn on_failed(&mut self, peer: &PeerId, index: u64, now: Instant) -> bool {
        let request = if self.inflight.get(&index).is_some_and(|f| f.of(peer)) {
            let Some(f) = self.inflight.remove(&index) else {
                return false;
            };
            match f.split(peer) {
                (mine, Some(other)) => {
                    self.hedges -= 1;
                    self.inflight.insert(
                        index,
                        InFlight {
                            first: other,
                            hedge: None,
                        },
                    );
                    mine
                }
                (mine, None) => {
                    self.queue.insert(index);
                    mine
                }
            }
        } else if let Some(orphan) = self.orphans.remove(&(*peer, index)) {
            orphan
        } else {
            return false;
        };
        if let Some(p) = self.peers.get_mut(peer) {
            p.inflight = p.inflight.saturating_sub(1);
            p.failed += 1;
            p.failures += 1;
            let waited = now.saturating_duration_since(request.sent);
            if p.service.is_some_and(|s| waited > s) {
                p.sample(waited);
                p.resize(self.per_peer, self.peer_queue);
            }
        }
        *self
            .tried
            .entry(index)
            .or_default()
            .entry(*peer)
            .or_default() += 1;
        true
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
    /// requests abandoned (hedges and late ones included), which the driver withdraws.
    pub fn give_up(&mut self) -> Vec<(PeerId, u64)> {
        let mut abandoned: Vec<(PeerId, u64)> = Vec::new();
        for (i, f) in self.inflight.drain() {
            abandoned.push((f.first.peer, i));
            abandoned.extend(f.hedge.map(|h| (h.peer, i)));
            self.missing.insert(i);
        }
        abandoned.extend(self.orphans.drain().map(|(k, _)| k));
        self.hedges = 0;
        for (peer, _) in &abandoned {
            if let Some(p) = self.peers.get_mut(peer) {
                p.inflight = p.inflight.saturating_sub(1);
            }
        }
        self.missing.append(&mut self.queue);
        abandoned
    }

    /// Whether nothing is left to ask, wait for or store (late answers to hedged
    /// requests are not waited for).
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

    /// Blocks in flight (a hedged block counts once).
    pub fn outstanding(&self) -> usize {
        self.inflight.len()
    }

    /// Blocks in flight at two peers.
    pub fn hedged(&self) -> usize {
        self.hedges
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

    /// What is known of every peer asked in this download, removed ones included.
    pub fn all_peers(&self) -> impl Iterator<Item = (&PeerId, &PeerStats)> + '_ {
        self.peers.iter().chain(self.removed.iter())
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

    /// Peers that serve their requests one after another, each at a service time that
    /// may change with time (`service(peer, time since t0)`), and a driver that asks
    /// again on every delivery and every 10 ms while a hedge may be sent. Every answer
    /// is delivered, also those to requests whose block another peer delivered first.
    /// Checks the bounds on the way; returns when the download finished.
    fn simulate(
        s: &mut Scheduler,
        t0: Instant,
        service: impl Fn(&PeerId, Duration) -> Duration,
    ) -> Instant {
        let mut busy_until: HashMap<PeerId, Instant> = HashMap::new();
        let mut completions: BTreeSet<(Instant, u64, PeerId)> = BTreeSet::new();
        let mut now = t0;
        while !s.is_finished() {
            while let Some((p, i)) = s.next_request(now) {
                let start = busy_until.get(&p).copied().unwrap_or(now).max(now);
                let done = start + service(&p, start - t0);
                busy_until.insert(p, done);
                completions.insert((done, i, p));
            }
            assert!(s.in_window() <= s.window, "the window holds");
            for (id, p) in &s.peers {
                assert!(p.inflight <= s.per_peer, "{id}: {} in flight", p.inflight);
            }
            let tick = s.may_hedge().then(|| now + ms(10));
            match completions.first().copied() {
                Some((t, i, p)) if tick.is_none_or(|tick| t <= tick) => {
                    completions.pop_first();
                    now = t;
                    if s.on_delivered(&p, i, now) {
                        s.on_stored(i, now);
                    }
                }
                _ => now = tick.expect("requests outstanding, or a hedge to wait for"),
            }
        }
        now
    }

    fn delivered(s: &Scheduler, p: &PeerId) -> u64 {
        s.peer(p).map_or(0, |p| p.delivered)
    }

    /// Two peers serving requests one after another, one five times faster: the fast
    /// one gets most of the requests.
    #[test]
    fn a_slow_peer_gets_fewer_requests_than_a_fast_one() {
        let t0 = Instant::now();
        let blocks = 2000;
        let mut s = Scheduler::new(0..blocks, &options(64, 64), t0);
        let (fast, slow) = (PeerId::random(), PeerId::random());
        s.on_peer_added(fast);
        s.on_peer_added(slow);
        let end = simulate(&mut s, t0, |p, _| if *p == fast { ms(1) } else { ms(5) });
        let (f, sl) = (delivered(&s, &fast), delivered(&s, &slow));
        assert_eq!(f + sl, blocks);
        assert!(f > 3 * sl, "fast peer {f} blocks, slow one {sl}");
        let fs = s.peer(&fast).and_then(|p| p.service).expect("measured");
        let ss = s.peer(&slow).and_then(|p| p.service).expect("measured");
        assert!(ss > 3 * fs, "service times {fs:?} and {ss:?}");
        // Both sources together beat the fast one alone (1 ms a block).
        let elapsed = end - t0;
        assert!(elapsed < ms(blocks), "took {elapsed:?}");
    }

    /// Each peer's window follows what it delivers in its latency plus the queue time
    /// (100 ms by default): wide for a fast peer, narrow for a slow one, and narrowed
    /// when a peer slows down.
    #[test]
    fn windows_grow_with_speed_and_shrink_when_a_peer_slows_down() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(0..3000, &options(256, 128), t0);
        let (fast, slow, slowed) = (PeerId::random(), PeerId::random(), PeerId::random());
        for p in [fast, slow, slowed] {
            s.on_peer_added(p);
        }
        let window = |s: &Scheduler, p: &PeerId| s.peer(p).map_or(0, |p| p.window);
        assert_eq!(window(&s, &fast), INITIAL_WINDOW);
        let slows_at = ms(400);
        let service = |p: &PeerId, at: Duration| {
            if *p == fast || (*p == slowed && at < slows_at) {
                ms(1)
            } else {
                ms(20)
            }
        };
        // Run to just before the slowdown, then to the end.
        let mut busy_until: HashMap<PeerId, Instant> = HashMap::new();
        let mut completions: BTreeSet<(Instant, u64, PeerId)> = BTreeSet::new();
        let mut now = t0;
        let mut before = None;
        while !s.is_finished() {
            while let Some((p, i)) = s.next_request(now) {
                let start = busy_until.get(&p).copied().unwrap_or(now).max(now);
                let done = start + service(&p, start - t0);
                busy_until.insert(p, done);
                completions.insert((done, i, p));
            }
            let Some((t, i, p)) = completions.pop_first() else {
                break;
            };
            now = t;
            if before.is_none() && now - t0 >= slows_at - ms(10) {
                before = Some((window(&s, &fast), window(&s, &slow), window(&s, &slowed)));
            }
            if s.on_delivered(&p, i, now) {
                s.on_stored(i, now);
            }
        }
        let (fast_w, slow_w, slowed_w) = before.expect("the download ran past the slowdown");
        // 1 ms a block: (latency + 100 ms) / 1 ms, more than 100 blocks.
        assert!(fast_w > 100, "fast peer's window {fast_w}");
        // 20 ms a block: (latency + 100 ms) / 20 ms, a handful of blocks.
        assert!((5..=12).contains(&slow_w), "slow peer's window {slow_w}");
        assert!(
            slowed_w > 100,
            "the slowed peer's window before: {slowed_w}"
        );
        let after = window(&s, &slowed);
        assert!(
            after <= 12,
            "the slowed peer's window after: {after} (before: {slowed_w})"
        );
    }

    /// Three peers at 1 ms a block; one slows down to 10 ms a block after 200 ms. The
    /// download takes less than 1.3 times what the two others alone would (1000 ms),
    /// the slowed peer delivers fewer blocks than each other, and hedging the tail
    /// makes it shorter than without.
    #[test]
    fn a_source_slowed_down_mid_download_does_not_hold_the_tail() {
        let t0 = Instant::now();
        let blocks = 2000u64;
        let run = |hedge: bool| {
            let opts = FetchOptions {
                hedge,
                ..options(256, 128)
            };
            let mut s = Scheduler::new(0..blocks, &opts, t0);
            let peers = [PeerId::random(), PeerId::random(), PeerId::random()];
            for p in peers {
                s.on_peer_added(p);
            }
            let slowed = peers[2];
            let end = simulate(&mut s, t0, |p, at| {
                if *p == slowed && at >= ms(200) {
                    ms(10)
                } else {
                    ms(1)
                }
            });
            (s, peers, end - t0)
        };
        let (s, [a, b, c], took) = run(true);
        let alone = ms(blocks / 2);
        assert!(
            took.as_secs_f64() <= 1.3 * alone.as_secs_f64(),
            "took {took:?}; the two others alone {alone:?}"
        );
        let (da, db, dc) = (delivered(&s, &a), delivered(&s, &b), delivered(&s, &c));
        assert_eq!(da + db + dc, blocks);
        assert!(dc < da && dc < db, "blocks {da} {db} {dc}");
        let requested = |p: &PeerId| s.peer(p).map_or(0, |p| p.requested);
        assert!(requested(&c) < requested(&a) && requested(&c) < requested(&b));
        let hedged: u64 = [a, b, c]
            .iter()
            .map(|p| s.peer(p).map_or(0, |p| p.hedged))
            .sum();
        let duplicates: u64 = [a, b, c]
            .iter()
            .map(|p| s.peer(p).map_or(0, |p| p.duplicates))
            .sum();
        assert!(hedged > 0, "the tail was hedged");
        assert!(
            duplicates <= hedged && hedged < blocks / 20,
            "{hedged} hedges, {duplicates} duplicates"
        );

        let (_, _, unhedged) = run(false);
        println!(
            "took {took:?} (without hedging {unhedged:?}); blocks {da} {db} {dc}; \
             {hedged} hedges, {duplicates} duplicates"
        );
        assert!(
            took + ms(20) < unhedged,
            "hedging shortens the tail: {took:?} against {unhedged:?}"
        );
    }

    /// A hedged block: the first delivery wins, the other request's late answer is a
    /// duplicate that frees its place; a failed hedge leaves the first request.
    #[test]
    fn a_hedged_block_is_taken_once() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(0..1, &options(10, 10), t0);
        let (a, b) = (PeerId::random(), PeerId::random());
        s.on_peer_added(a);
        s.on_peer_added(b);
        let (first, i) = s.next_request(t0).expect("a request");
        let other = if first == a { b } else { a };
        // Nothing is hedged while the first peer is not late.
        assert_eq!(s.next_request(t0 + ms(1)), None);
        assert!(s.may_hedge());
        // 50 ms without an answer from a peer expected to take 1 ms: the other asks too.
        assert_eq!(s.next_request(t0 + ms(50)), Some((other, i)));
        assert_eq!((s.outstanding(), s.hedged()), (1, 1));
        assert!(!s.may_hedge(), "a block is asked of two peers at most");
        assert_eq!(s.next_request(t0 + ms(100)), None);
        assert!(s.on_delivered(&other, i, t0 + ms(52)));
        s.on_stored(i, t0 + ms(52));
        assert!(s.is_finished(), "the late request is not waited for");
        assert_eq!(s.peer(&first).map(|p| p.inflight), Some(1));
        assert!(!s.on_delivered(&first, i, t0 + ms(60)), "a duplicate");
        let f = s.peer(&first).expect("known");
        assert_eq!((f.inflight, f.delivered, f.duplicates), (0, 0, 1));
        let o = s.peer(&other).expect("known");
        assert_eq!((o.requested, o.hedged, o.delivered), (1, 1, 1));

        // A hedge that fails leaves the first request; the block is not queued again.
        let mut s = Scheduler::new(0..1, &options(10, 10), t0);
        s.on_peer_added(a);
        s.on_peer_added(b);
        let (first, i) = s.next_request(t0).expect("a request");
        let (other, _) = s.next_request(t0 + ms(50)).expect("a hedge");
        assert!(s.on_failed(&other, i, t0 + ms(51)));
        assert_eq!((s.outstanding(), s.hedged()), (1, 0));
        assert_eq!(s.next_request(t0 + ms(52)), None, "b failed it, a is asked");
        assert!(s.on_delivered(&first, i, t0 + ms(53)));
        // A late request that fails is not queued again either.
        let mut s = Scheduler::new(0..1, &options(10, 10), t0);
        s.on_peer_added(a);
        s.on_peer_added(b);
        let (first, i) = s.next_request(t0).expect("a request");
        let (other, _) = s.next_request(t0 + ms(50)).expect("a hedge");
        assert!(s.on_delivered(&other, i, t0 + ms(51)));
        s.on_stored(i, t0 + ms(51));
        assert!(s.on_failed(&first, i, t0 + ms(60)));
        assert!(s.is_finished());
        assert_eq!(s.peer(&first).map(|p| p.inflight), Some(0));
        // Giving up withdraws hedges and late requests too.
        let mut s = Scheduler::new(0..2, &options(10, 10), t0);
        s.on_peer_added(a);
        s.on_peer_added(b);
        let _ = drain(&mut s, t0);
        let hedges = drain(&mut s, t0 + ms(50));
        assert_eq!(hedges.len(), 2, "{hedges:?}");
        assert_eq!(s.give_up().len(), 4);
        assert_eq!(s.peer(&a).map(|p| p.inflight), Some(0));
        assert_eq!(s.peer(&b).map(|p| p.inflight), Some(0));
        // A removed peer's hedged blocks stay with the other peer.
        let mut s = Scheduler::new(0..1, &options(10, 10), t0);
        s.on_peer_added(a);
        s.on_peer_added(b);
        let (first, i) = s.next_request(t0).expect("a request");
        let (other, _) = s.next_request(t0 + ms(50)).expect("a hedge");
        assert_eq!(s.on_peer_removed(&first), Vec::<u64>::new());
        assert_eq!((s.outstanding(), s.hedged()), (1, 0));
        assert!(s.on_delivered(&other, i, t0 + ms(51)));
    }

    /// With a reader held back at the lowest block outstanding at a slow peer, the
    /// fast peer asks for that block too.
    #[test]
    fn a_reader_waiting_for_a_slow_peer_gets_the_block_hedged() {
        let t0 = Instant::now();
        let opts = FetchOptions {
            max_ahead: 8,
            ..options(100, 100)
        };
        let mut s = Scheduler::new(0..100, &opts, t0);
        s.follow_reader(0);
        let (fast, slow) = (PeerId::random(), PeerId::random());
        s.on_peer_added(fast);
        s.on_peer_added(slow);
        // Measured: the fast peer delivers a block a millisecond, the slow one every 40.
        let sent = drain(&mut s, t0);
        assert_eq!(sent.len(), 8);
        let mut now = t0;
        for (p, i) in &sent {
            if *p == fast {
                now += ms(1);
                assert!(s.on_delivered(p, *i, now));
                s.on_stored(*i, now);
            }
        }
        let at_slow: Vec<u64> = sent.iter().filter(|r| r.0 == slow).map(|r| r.1).collect();
        let lowest = *at_slow.iter().min().expect("the slow peer has some");
        // The reader waits for `lowest`: the fast peer is asked for it first.
        now = t0 + ms(40);
        let hedges = drain(&mut s, now);
        assert_eq!(hedges.first(), Some(&(fast, lowest)), "{hedges:?}");
        assert!(
            hedges
                .iter()
                .all(|(p, i)| *p == fast && at_slow.contains(i))
        );
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
