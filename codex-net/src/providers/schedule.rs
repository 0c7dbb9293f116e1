//! When each of our keys is announced: a state machine without I/O, time passed in.
//!
//! Keys wait in three queues, each in the order it is due: new keys (due at once),
//! keys announced before (due a reprovide interval after their last announcement)
//! and keys whose announcement failed (due a retry delay after it). The rate limit
//! and the cap on announcements under way decide when the next one starts.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::config::ProviderConfig;

/// A rate limit as a generic cell rate algorithm: on average one event a `period`,
/// up to `burst` at once after a quiet time.
#[derive(Clone, Debug)]
pub(crate) struct RateLimit {
    period: Duration,
    /// How far ahead of the average the limit lets events run: `(burst - 1) * period`.
    tolerance: Duration,
    /// When the next event would be due at the average rate.
    tat: Option<Instant>,
}

impl RateLimit {
    /// `per_second` events a second (at least 1), up to `burst` (at least 1) at once.
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        let period = Duration::from_secs(1) / per_second.max(1);
        RateLimit {
            period,
            tolerance: period * burst.max(1).saturating_sub(1),
            tat: None,
        }
    }

    /// The earliest time an event is allowed (`now` or before: allowed now).
    pub(crate) fn allowed_at(&self, now: Instant) -> Instant {
        match self.tat {
            Some(tat) => tat.checked_sub(self.tolerance).unwrap_or(now),
            None => now,
        }
    }

    /// Takes an event at `now` if the limit allows it.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let tat = self.tat.map_or(now, |t| t.max(now));
        if tat > now + self.tolerance {
            return false;
        }
        self.tat = Some(tat + self.period);
        true
    }
}

/// A key's state: its generation (a key removed and added again is a new one, and the
/// queue entries of the old are skipped) and where it is.
#[derive(Clone, Copy, Debug)]
struct Slot {
    generation: u64,
    announcing: bool,
    announced: bool,
}

/// What the schedule has done and holds (see [`crate::ProviderStats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub keys: usize,
    pub never_announced: usize,
    pub announcing: usize,
    pub announcements: u64,
    pub failures: u64,
}

/// The schedule of our keys' announcements.
#[derive(Debug)]
pub(crate) struct Schedule<K> {
    interval: Duration,
    retry_after: Duration,
    max_announcing: usize,
    limit: RateLimit,
    keys: HashMap<K, Slot>,
    next_generation: u64,
    fresh: VecDeque<(K, u64)>,
    due: VecDeque<(Instant, K, u64)>,
    retry: VecDeque<(Instant, K, u64)>,
    /// Queue entries of removed keys not yet skipped.
    stale: usize,
    counts: Counts,
}

/// Which queue the next key comes from.
#[derive(Clone, Copy)]
enum Queue {
    Fresh,
    Due,
    Retry,
}

impl<K: Clone + Eq + Hash> Schedule<K> {
    pub(crate) fn new(config: &ProviderConfig) -> Self {
        Schedule {
            interval: config.reprovide_interval,
            retry_after: config.retry_after,
            max_announcing: config.max_announcing,
            limit: RateLimit::new(config.announce_rate, config.announce_burst),
            keys: HashMap::new(),
            next_generation: 0,
            fresh: VecDeque::new(),
            due: VecDeque::new(),
            retry: VecDeque::new(),
            stale: 0,
            counts: Counts::default(),
        }
    }

    /// Adds `key`, to be announced before the keys due again. False when it was there.
    pub(crate) fn insert(&mut self, key: K) -> bool {
        if self.keys.contains_key(&key) {
            return false;
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        self.keys.insert(
            key.clone(),
            Slot {
                generation,
                announcing: false,
                announced: false,
            },
        );
        self.fresh.push_back((key, generation));
        self.counts.never_announced += 1;
        true
    }

    /// Removes `key`: it is not announced again. False when it was not there.
    pub(crate) fn remove(&mut self, key: &K) -> bool {
        let Some(slot) = self.keys.remove(key) else {
            return false;
        };
        if !slot.announced {
            self.counts.never_announced -= 1;
        }
        if !slot.announcing {
            self.stale += 1;
            self.compact();
        }
        true
    }

    /// The keys.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.keys.keys()
    }

    pub(crate) fn counts(&self) -> Counts {
        Counts {
            keys: self.keys.len(),
            ..self.counts
        }
    }

    fn live(&self, key: &K, generation: u64) -> bool {
        self.keys
            .get(key)
            .is_some_and(|s| s.generation == generation && !s.announcing)
    }

    /// Drops the entries of removed keys from the queues' heads.
    fn skip_stale(&mut self) {
        while let Some((k, g)) = self.fresh.front() {
            if self.live(k, *g) {
                break;
            }
            self.fresh.pop_front();
            self.stale = self.stale.saturating_sub(1);
        }
        for queue in [&mut self.due, &mut self.retry] {
            while let Some((_, k, g)) = queue.front() {
                if self
                    .keys
                    .get(k)
                    .is_some_and(|s| s.generation == *g && !s.announcing)
                {
                    break;
                }
                queue.pop_front();
                self.stale = self.stale.saturating_sub(1);
            }
        }
    }

    /// Drops every entry of a removed key once they are many.
    fn compact(&mut self) {
        let queued = self.fresh.len() + self.due.len() + self.retry.len();
        if self.stale < 1024 || self.stale * 2 < queued {
            return;
        }
        let keys = &self.keys;
        let live = |k: &K, g: u64| keys.get(k).is_some_and(|s| s.generation == g);
        self.fresh.retain(|(k, g)| live(k, *g));
        self.due.retain(|(_, k, g)| live(k, *g));
        self.retry.retain(|(_, k, g)| live(k, *g));
        self.stale = 0;
    }

    /// The queue the next key comes from and when it is due.
    fn head(&mut self, now: Instant) -> Option<(Queue, Instant)> {
        self.skip_stale();
        if !self.fresh.is_empty() {
            return Some((Queue::Fresh, now));
        }
        match (self.due.front(), self.retry.front()) {
            (Some((d, ..)), Some((r, ..))) if r < d => Some((Queue::Retry, *r)),
            (Some((d, ..)), _) => Some((Queue::Due, *d)),
            (None, Some((r, ..))) => Some((Queue::Retry, *r)),
            (None, None) => None,
        }
    }

    /// The next key to announce at `now`, with its generation (to hand back to
    /// [`finished`](Self::finished)): none when no key is due, the rate limit says
    /// wait, or enough announcements are under way.
    pub(crate) fn next(&mut self, now: Instant) -> Option<(K, u64)> {
        if self.counts.announcing >= self.max_announcing {
            return None;
        }
        let (queue, at) = self.head(now)?;
        if at > now || !self.limit.try_take(now) {
            return None;
        }
        let (key, generation) = match queue {
            Queue::Fresh => self.fresh.pop_front()?,
            Queue::Due => self.due.pop_front().map(|(_, k, g)| (k, g))?,
            Queue::Retry => self.retry.pop_front().map(|(_, k, g)| (k, g))?,
        };
        // A queue drained after many keys came at once gives its room back (the keys
        // now wait in `due`).
        if self.fresh.is_empty() && self.fresh.capacity() > 1024 {
            self.fresh.shrink_to_fit();
        }
        if self.retry.is_empty() && self.retry.capacity() > 1024 {
            self.retry.shrink_to_fit();
        }
        if let Some(slot) = self.keys.get_mut(&key) {
            slot.announcing = true;
        }
        self.counts.announcing += 1;
        Some((key, generation))
    }

    /// The announcement of `key` (of `generation`) ended at `now`: it reached a peer
    /// (`ok`), so it is due again a reprovide interval later, or it did not, so it is
    /// tried again after the retry delay. A key removed meanwhile is forgotten.
    pub(crate) fn finished(&mut self, key: K, generation: u64, ok: bool, now: Instant) {
        self.counts.announcing = self.counts.announcing.saturating_sub(1);
        if ok {
            self.counts.announcements += 1;
        } else {
            self.counts.failures += 1;
        }
        let Some(slot) = self.keys.get_mut(&key) else {
            return;
        };
        if slot.generation != generation {
            return;
        }
        slot.announcing = false;
        if ok {
            if !slot.announced {
                slot.announced = true;
                self.counts.never_announced -= 1;
            }
            self.due.push_back((now + self.interval, key, generation));
        } else {
            self.retry
                .push_back((now + self.retry_after, key, generation));
        }
    }

    /// When [`next`](Self::next) may next give a key: none while nothing is queued or
    /// enough announcements are under way (an insert or a finished announcement
    /// changes that).
    pub(crate) fn wake_at(&mut self, now: Instant) -> Option<Instant> {
        if self.counts.announcing >= self.max_announcing {
            return None;
        }
        let (_, at) = self.head(now)?;
        Some(at.max(self.limit.allowed_at(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: u32, burst: u32, max_announcing: usize) -> ProviderConfig {
        ProviderConfig {
            reprovide_interval: Duration::from_secs(3600),
            retry_after: Duration::from_secs(60),
            announce_rate: rate,
            announce_burst: burst,
            max_announcing,
            ..ProviderConfig::default()
        }
    }

    /// Runs the schedule from `t0` for `span`, each announcement taking `takes` and
    /// succeeding; returns when each key started.
    fn run(
        s: &mut Schedule<u32>,
        t0: Instant,
        span: Duration,
        takes: Duration,
    ) -> Vec<(Duration, u32)> {
        let mut started = Vec::new();
        let mut under_way: VecDeque<(Instant, u32, u64)> = VecDeque::new();
        let mut now = t0;
        while now < t0 + span {
            while under_way.front().is_some_and(|(end, ..)| *end <= now) {
                let (end, k, g) = under_way.pop_front().expect("a front");
                s.finished(k, g, true, end);
            }
            while let Some((k, g)) = s.next(now) {
                started.push((now - t0, k));
                under_way.push_back((now + takes, k, g));
            }
            // Jump to the next thing that happens.
            let wake = s.wake_at(now);
            let end = under_way.front().map(|(e, ..)| *e);
            let next = match (wake, end) {
                (Some(w), Some(e)) => w.min(e),
                (Some(w), None) => w,
                (None, Some(e)) => e,
                (None, None) => break,
            };
            assert!(next >= now, "time runs forward");
            now = next.max(now + Duration::from_micros(1));
        }
        started
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(10, 3);
        for _ in 0..3 {
            assert!(l.try_take(t0));
        }
        assert!(!l.try_take(t0));
        assert_eq!(l.allowed_at(t0), t0 + Duration::from_millis(100));
        assert!(!l.try_take(t0 + Duration::from_millis(99)));
        assert!(l.try_take(t0 + Duration::from_millis(100)));
        assert!(!l.try_take(t0 + Duration::from_millis(150)));
        // After a quiet second the whole burst is back, and no more.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(
            l.allowed_at(t1),
            l.allowed_at(t0 + Duration::from_millis(200))
        );
        for _ in 0..3 {
            assert!(l.try_take(t1));
        }
        assert!(!l.try_take(t1));
    }

    #[test]
    fn many_keys_are_announced_at_the_rate_in_order() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&config(100, 10, 1000));
        for k in 0..1000 {
            assert!(s.insert(k));
        }
        assert!(!s.insert(5), "already there");
        let started = run(
            &mut s,
            t0,
            Duration::from_secs(60),
            Duration::from_millis(50),
        );
        assert_eq!(started.len(), 1000, "every key once in a minute");
        let keys: Vec<u32> = started.iter().map(|(_, k)| *k).collect();
        assert_eq!(keys, (0..1000).collect::<Vec<_>>(), "in the order added");
        // 10 at once, then 100 a second: key i starts at (i - 9) / 100 s.
        for (at, k) in &started {
            let expected = Duration::from_millis(10 * u64::from(k.saturating_sub(9)));
            assert_eq!(*at, expected, "key {k}");
        }
        // In any second, at most rate + burst start.
        for w in 0..10 {
            let lo = Duration::from_secs(w);
            let n = started
                .iter()
                .filter(|(at, _)| *at >= lo && *at < lo + Duration::from_secs(1))
                .count();
            assert!(n <= 110, "{n} in second {w}");
        }
        let c = s.counts();
        assert_eq!((c.keys, c.never_announced, c.announcing), (1000, 0, 0));
        assert_eq!(c.announcements, 1000);
    }

    #[test]
    fn announcements_under_way_are_capped() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&config(1_000_000, 1_000_000, 8));
        for k in 0..100 {
            s.insert(k);
        }
        let mut first = Vec::new();
        while let Some(x) = s.next(t0) {
            first.push(x);
        }
        assert_eq!(first.len(), 8);
        assert_eq!(s.wake_at(t0), None, "nothing until one ends");
        let (k, g) = first[0];
        s.finished(k, g, true, t0 + Duration::from_secs(1));
        assert_eq!(
            s.wake_at(t0 + Duration::from_secs(1)),
            Some(t0 + Duration::from_secs(1))
        );
        assert_eq!(s.next(t0 + Duration::from_secs(1)), Some((8, 9)));
        assert_eq!(s.next(t0 + Duration::from_secs(1)), None);
        let t2 = t0 + Duration::from_secs(2);
        for (k, g) in first.into_iter().skip(1).chain([(8, 9)]) {
            s.finished(k, g, true, t2);
        }
        // Slow answers slow the rate: the 91 other keys, 8 at a time, 1 s each, start
        // in 12 rounds a second apart.
        let started = run(&mut s, t2, Duration::from_secs(60), Duration::from_secs(1));
        assert_eq!(started.len(), 91);
        assert_eq!(
            started.last().map(|(at, _)| *at),
            Some(Duration::from_secs(11))
        );
        assert_eq!(s.counts().announcements, 100);
    }

    #[test]
    fn keys_come_again_after_the_interval_and_failures_after_the_retry_delay() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&config(1000, 1000, 100));
        for k in 0..3 {
            s.insert(k);
        }
        let a: Vec<_> = std::iter::from_fn(|| s.next(t0)).collect();
        assert_eq!(a.len(), 3);
        let t1 = t0 + Duration::from_secs(1);
        s.finished(a[0].0, a[0].1, true, t1);
        s.finished(a[1].0, a[1].1, false, t1);
        s.finished(a[2].0, a[2].1, true, t1);
        let c = s.counts();
        assert_eq!((c.announcements, c.failures, c.never_announced), (2, 1, 1));
        // The failed one first, a retry delay later.
        assert_eq!(s.wake_at(t1), Some(t1 + Duration::from_secs(60)));
        assert_eq!(s.next(t1 + Duration::from_secs(59)), None);
        let retried = s.next(t1 + Duration::from_secs(60));
        assert_eq!(retried.map(|(k, _)| k), Some(1));
        let (k, g) = retried.expect("retried");
        s.finished(k, g, true, t1 + Duration::from_secs(61));
        assert_eq!(s.counts().never_announced, 0);
        // The others an interval after their announcement.
        assert_eq!(
            s.wake_at(t1 + Duration::from_secs(61)),
            Some(t1 + Duration::from_secs(3600))
        );
        assert_eq!(s.next(t1 + Duration::from_secs(3599)), None);
        let again: Vec<u32> = std::iter::from_fn(|| s.next(t1 + Duration::from_secs(3600)))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(again, vec![0, 2]);
    }

    #[test]
    fn new_keys_go_before_keys_due_again() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&config(1, 1, 100));
        s.insert(1);
        let (k, g) = s.next(t0).expect("key 1");
        s.finished(k, g, true, t0);
        s.insert(2);
        // Key 1 is due at 3600 s, key 2 at once; the rate limit lets one a second.
        let at = t0 + Duration::from_secs(3600);
        s.insert(3);
        assert_eq!(s.next(at).map(|(k, _)| k), Some(2));
        assert_eq!(s.next(at), None, "rate limited");
        assert_eq!(s.wake_at(at), Some(at + Duration::from_secs(1)));
        assert_eq!(s.next(at + Duration::from_secs(1)).map(|(k, _)| k), Some(3));
        assert_eq!(s.next(at + Duration::from_secs(2)).map(|(k, _)| k), Some(1));
    }

    #[test]
    fn removed_keys_are_not_announced_and_their_entries_go() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&config(1000, 1000, 10));
        for k in 0..5000 {
            s.insert(k);
        }
        for k in 0..5000 {
            if k % 2 == 0 {
                assert!(s.remove(&k));
            }
        }
        assert!(!s.remove(&0));
        assert!(s.fresh.len() <= 5000 && s.stale <= 2500);
        // Removed while under way: its end is forgotten; added again: a new key.
        let (k, g) = s.next(t0).expect("a key");
        assert_eq!(k, 1);
        s.remove(&1);
        s.insert(1);
        s.finished(k, g, true, t0);
        let c = s.counts();
        assert_eq!((c.keys, c.announcing, c.never_announced), (2500, 0, 2500));
        let started = run(
            &mut s,
            t0,
            Duration::from_secs(30),
            Duration::from_millis(1),
        );
        let mut keys: Vec<u32> = started.iter().map(|(_, k)| *k).collect();
        assert_eq!(keys.len(), 2500, "each odd key once");
        keys.sort_unstable();
        assert_eq!(keys, (0..5000).filter(|k| k % 2 == 1).collect::<Vec<_>>());
        // Many removals of keys waiting their turn leave no entries behind.
        for k in (1..5000).step_by(2) {
            s.remove(&k);
        }
        assert!(s.due.len() < 1300, "compacted: {}", s.due.len());
        assert_eq!(s.wake_at(t0 + Duration::from_secs(30)), None);
        assert!(s.due.is_empty());
    }
}
