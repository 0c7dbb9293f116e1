//! The peers the block exchange dropped for misbehaving: a bounded list whose bans
//! expire. Pure logic, with the time passed in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Banned peers, each for `duration` from its ban, at most `max` of them: banning one
/// more evicts the oldest ban. Bans are kept in the order they were made, which with a
/// clock that does not go back is also the order they expire in.
#[derive(Debug)]
pub(crate) struct BanList {
    duration: Duration,
    max: usize,
    since: HashMap<PeerId, Instant>,
    order: VecDeque<(PeerId, Instant)>,
}

impl BanList {
    /// An empty list whose bans last `duration`, holding at most `max` (at least 1).
    pub(crate) fn new(duration: Duration, max: usize) -> Self {
        BanList {
            duration,
            max: max.max(1),
            since: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Bans `peer` from `now`. False when it is banned already (the ban is not
    /// extended). Expired bans are forgotten first; at the limit the oldest ban goes.
    pub(crate) fn ban(&mut self, peer: PeerId, now: Instant) -> bool {
        self.expire(now);
        if self.is_banned(&peer, now) {
            return false;
        }
        // An expired ban still held (only when the clock went back): replaced.
        if self.since.remove(&peer).is_some() {
            self.order.retain(|(p, _)| *p != peer);
        }
        while self.since.len() >= self.max {
            match self.order.pop_front() {
                Some((oldest, _)) => {
                    self.since.remove(&oldest);
                }
                None => break,
            }
        }
        self.since.insert(peer, now);
        self.order.push_back((peer, now));
        true
    }

    /// Whether `peer` was banned less than the ban's duration before `now`.
    pub(crate) fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.since
            .get(peer)
            .is_some_and(|&at| now.saturating_duration_since(at) < self.duration)
    }

    /// How many bans are held (expired ones are dropped at the next ban).
    pub(crate) fn len(&self) -> usize {
        self.since.len()
    }

    /// Forgets the bans that expired by `now`, oldest first.
    fn expire(&mut self, now: Instant) {
        while let Some(&(peer, at)) = self.order.front() {
            if now.saturating_duration_since(at) < self.duration {
                break;
            }
            self.order.pop_front();
            // Each ban has one entry in each: a peer is banned again only once its
            // ban is gone from both.
            self.since.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_ban_lasts_its_duration_and_is_not_extended() {
        let t0 = Instant::now();
        let mut bans = BanList::new(10 * MIN, 8);
        let p = PeerId::random();
        assert!(!bans.is_banned(&p, t0));
        assert!(bans.ban(p, t0));
        assert!(bans.is_banned(&p, t0));
        assert!(bans.is_banned(&p, t0 + 10 * MIN - Duration::from_millis(1)));
        // Banned again while banned: the first ban stands, and ends when it does.
        assert!(!bans.ban(p, t0 + 5 * MIN));
        assert!(!bans.is_banned(&p, t0 + 10 * MIN));
        assert_eq!(bans.len(), 1);
        // Once expired it can be banned anew, for a full duration.
        assert!(bans.ban(p, t0 + 11 * MIN));
        assert!(bans.is_banned(&p, t0 + 20 * MIN));
        assert!(!bans.is_banned(&p, t0 + 21 * MIN));
        assert_eq!(bans.len(), 1);
    }

    #[test]
    fn the_list_is_bounded_and_evicts_the_oldest() {
        let t0 = Instant::now();
        let mut bans = BanList::new(10 * MIN, 3);
        let peers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            assert!(bans.ban(*p, t0 + Duration::from_secs(i as u64)));
            assert!(bans.len() <= 3);
        }
        let now = t0 + Duration::from_secs(5);
        let banned: Vec<bool> = peers.iter().map(|p| bans.is_banned(p, now)).collect();
        assert_eq!(banned, [false, false, true, true, true]);
        // An evicted peer may be banned again; it evicts the oldest left (peers[2]).
        assert!(bans.ban(peers[0], now));
        assert!(!bans.is_banned(&peers[2], now));
        assert!(bans.is_banned(&peers[0], now));
        assert_eq!(bans.len(), 3);
    }

    #[test]
    fn expired_bans_are_forgotten_before_any_is_evicted() {
        let t0 = Instant::now();
        let mut bans = BanList::new(MIN, 2);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        assert!(bans.ban(a, t0));
        assert!(bans.ban(b, t0 + 30 * Duration::from_secs(1)));
        // At t0 + 61 s, a's ban is over: banning c drops a and keeps b.
        let now = t0 + Duration::from_secs(61);
        assert!(bans.ban(c, now));
        assert_eq!(bans.len(), 2);
        assert!(bans.is_banned(&b, now));
        assert!(bans.is_banned(&c, now));
        // Much later, all are over and one ban clears the rest.
        let later = now + 10 * MIN;
        assert!(bans.ban(a, later));
        assert_eq!(bans.len(), 1);
        assert!(!bans.is_banned(&b, later) && !bans.is_banned(&c, later));
    }

    #[test]
    fn a_list_of_many_bans_stays_at_its_limit() {
        let t0 = Instant::now();
        let mut bans = BanList::new(10 * MIN, 100);
        for i in 0..10_000u64 {
            bans.ban(PeerId::random(), t0 + Duration::from_millis(i));
        }
        assert_eq!(bans.len(), 100);
        assert_eq!(bans.order.len(), 100);
    }
}
