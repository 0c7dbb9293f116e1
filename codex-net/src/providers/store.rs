//! The Kademlia record store: our own provider records apart and unbounded (the node
//! owns that set and announces it on its own schedule), other peers' bounded and
//! expiring. Value records (which Codex does not use) go to libp2p's `MemoryStore`
//! with its default limits.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, hash_map, hash_set};
use std::time::Instant;

use libp2p::PeerId;
use libp2p::kad::store::{self, MemoryStore, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};

/// Addresses kept per record of another peer, at most.
const MAX_ADDRESSES: usize = 8;
/// The longest address kept in a record of another peer, in bytes.
const MAX_ADDRESS_BYTES: usize = 256;

/// A record of another peer and its place in the expiry index.
#[derive(Debug)]
struct Held {
    record: ProviderRecord,
    seq: u64,
}

/// The node's Kademlia store (see the module's documentation).
pub(crate) struct ProviderStore {
    local: PeerId,
    values: MemoryStore,
    /// Our keys: our records have no addresses (Kademlia adds ours when it answers)
    /// and do not expire, so the key is all there is to keep.
    own: HashSet<RecordKey>,
    others: HashMap<RecordKey, Vec<Held>>,
    /// Other peers' records by expiry; `seq` makes entries unique.
    expiry: BTreeMap<(Instant, u64), RecordKey>,
    count: usize,
    seq: u64,
    max_records: usize,
    max_providers_per_key: usize,
}

impl std::fmt::Debug for ProviderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderStore")
            .field("own", &self.own.len())
            .field("others", &self.count)
            .finish_non_exhaustive()
    }
}

impl ProviderStore {
    pub(crate) fn new(local: PeerId, max_records: usize, max_providers_per_key: usize) -> Self {
        ProviderStore {
            local,
            values: MemoryStore::new(local),
            own: HashSet::new(),
            others: HashMap::new(),
            expiry: BTreeMap::new(),
            count: 0,
            seq: 0,
            max_records,
            max_providers_per_key,
        }
    }

    /// Other peers' provider records held (expired ones not yet swept included).
    pub(crate) fn others_len(&self) -> usize {
        self.count
    }

    /// Drops other peers' records that expired at `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, seq), key) = entry.remove_entry();
            if let hash_map::Entry::Occupied(mut held) = self.others.entry(key) {
                let before = held.get().len();
                held.get_mut().retain(|h| h.seq != seq);
                self.count -= before - held.get().len();
                if held.get().is_empty() {
                    held.remove();
                }
            }
        }
    }

    /// [`RecordStore::add_provider`] at `now`.
    pub(crate) fn add_provider_at(
        &mut self,
        mut record: ProviderRecord,
        now: Instant,
    ) -> store::Result<()> {
        if record.provider == self.local {
            self.own.insert(record.key);
            return Ok(());
        }
        self.expire(now);
        if record.is_expired(now) {
            return Ok(());
        }
        record
            .addresses
            .retain(|a| a.as_ref().len() <= MAX_ADDRESS_BYTES);
        record.addresses.truncate(MAX_ADDRESSES);
        self.seq += 1;
        let seq = self.seq;
        let full = self.count >= self.max_records;
        let held = match self.others.entry(record.key.clone()) {
            hash_map::Entry::Occupied(e) => e.into_mut(),
            hash_map::Entry::Vacant(e) => {
                if full {
                    return Err(store::Error::MaxProvidedKeys);
                }
                // Most keys have one provider: no room for more until one comes.
                e.insert(Vec::with_capacity(1))
            }
        };
        if let Some(h) = held
            .iter_mut()
            .find(|h| h.record.provider == record.provider)
        {
            // Announced again: the record is renewed in place.
            if let Some(at) = h.record.expires {
                self.expiry.remove(&(at, h.seq));
            }
            if let Some(at) = record.expires {
                self.expiry.insert((at, seq), record.key.clone());
            }
            *h = Held { record, seq };
            return Ok(());
        }
        if held.len() >= self.max_providers_per_key {
            return Ok(());
        }
        if full {
            return Err(store::Error::MaxProvidedKeys);
        }
        if let Some(at) = record.expires {
            self.expiry.insert((at, seq), record.key.clone());
        }
        held.push(Held { record, seq });
        self.count += 1;
        Ok(())
    }

    /// [`RecordStore::providers`] at `now`: ours first, then others' that have not
    /// expired.
    pub(crate) fn providers_at(&self, key: &RecordKey, now: Instant) -> Vec<ProviderRecord> {
        let own = self
            .own
            .contains(key)
            .then(|| ProviderRecord::new(key.clone(), self.local, Vec::new()));
        let others = self
            .others
            .get(key)
            .into_iter()
            .flatten()
            .filter(|h| !h.record.is_expired(now))
            .map(|h| h.record.clone());
        own.into_iter().chain(others).collect()
    }
}

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = Provided<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.values.get(k)
    }

    fn put(&mut self, r: Record) -> store::Result<()> {
        self.values.put(r)
    }

    fn remove(&mut self, k: &RecordKey) {
        self.values.remove(k)
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.values.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> store::Result<()> {
        self.add_provider_at(record, Instant::now())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.providers_at(key, Instant::now())
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        Provided {
            keys: self.own.iter(),
            local: self.local,
        }
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if *provider == self.local {
            self.own.remove(key);
            return;
        }
        if let hash_map::Entry::Occupied(mut held) = self.others.entry(key.clone()) {
            if let Some(i) = held
                .get()
                .iter()
                .position(|h| h.record.provider == *provider)
            {
                let h = held.get_mut().swap_remove(i);
                if let Some(at) = h.record.expires {
                    self.expiry.remove(&(at, h.seq));
                }
                self.count -= 1;
            }
            if held.get().is_empty() {
                held.remove();
            }
        }
    }
}

/// Our provider records, made from our keys.
pub(crate) struct Provided<'a> {
    keys: hash_set::Iter<'a, RecordKey>,
    local: PeerId,
}

impl<'a> Iterator for Provided<'a> {
    type Item = Cow<'a, ProviderRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        let key = self.keys.next()?;
        Some(Cow::Owned(ProviderRecord::new(
            key.clone(),
            self.local,
            Vec::new(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p::Multiaddr;

    use super::*;

    fn key(i: u32) -> RecordKey {
        RecordKey::new(&i.to_be_bytes())
    }

    fn record(k: u32, provider: PeerId, expires: Option<Instant>) -> ProviderRecord {
        ProviderRecord {
            key: key(k),
            provider,
            expires,
            addresses: Vec::new(),
        }
    }

    #[test]
    fn own_records_are_apart_and_unbounded() {
        let local = PeerId::random();
        let mut s = ProviderStore::new(local, 10, 2);
        let now = Instant::now();
        for k in 0..1000 {
            s.add_provider_at(record(k, local, None), now)
                .expect("own records are never refused");
        }
        assert_eq!(s.provided().count(), 1000);
        assert_eq!(s.others_len(), 0);
        // Others' records still have their full room.
        let ttl = Some(now + Duration::from_secs(60));
        for k in 0..10 {
            s.add_provider_at(record(k, PeerId::random(), ttl), now)
                .expect("room");
        }
        assert_eq!(s.others_len(), 10);
        assert_eq!(s.providers_at(&key(3), now).len(), 2, "ours and one other");
        assert_eq!(
            s.providers_at(&key(3), now)[0].provider,
            local,
            "ours first"
        );
        s.remove_provider(&key(3), &local);
        assert_eq!(s.provided().count(), 999);
        assert_eq!(s.providers_at(&key(3), now).len(), 1);
    }

    #[test]
    fn others_are_bounded_in_all_and_per_key() {
        let local = PeerId::random();
        let mut s = ProviderStore::new(local, 5, 2);
        let now = Instant::now();
        let ttl = Some(now + Duration::from_secs(60));
        let (p, q, r) = (PeerId::random(), PeerId::random(), PeerId::random());
        s.add_provider_at(record(1, p, ttl), now).expect("room");
        s.add_provider_at(record(1, q, ttl), now).expect("room");
        // A third provider of a key is ignored, the first two stay.
        s.add_provider_at(record(1, r, ttl), now).expect("ignored");
        let found: Vec<_> = s
            .providers_at(&key(1), now)
            .iter()
            .map(|r| r.provider)
            .collect();
        assert_eq!(found, vec![p, q]);
        for k in 2..5 {
            s.add_provider_at(record(k, p, ttl), now).expect("room");
        }
        assert_eq!(s.others_len(), 5);
        assert!(matches!(
            s.add_provider_at(record(9, p, ttl), now),
            Err(store::Error::MaxProvidedKeys)
        ));
        assert!(matches!(
            s.add_provider_at(record(2, q, ttl), now),
            Err(store::Error::MaxProvidedKeys)
        ));
        // A record held is renewed even when the store is full.
        let later = Some(now + Duration::from_secs(600));
        s.add_provider_at(record(2, p, later), now)
            .expect("renewed");
        assert_eq!(s.providers_at(&key(2), now)[0].expires, later);
        assert_eq!(s.others_len(), 5);
        assert_eq!(s.expiry.len(), 5, "the old expiry is replaced");
        // Removing one makes room.
        s.remove_provider(&key(3), &p);
        assert_eq!(s.others_len(), 4);
        s.add_provider_at(record(9, p, ttl), now)
            .expect("room again");
    }

    #[test]
    fn expired_records_are_hidden_then_swept_making_room() {
        let local = PeerId::random();
        let mut s = ProviderStore::new(local, 3, 20);
        let t0 = Instant::now();
        let p = PeerId::random();
        for k in 0..3 {
            let at = t0 + Duration::from_secs(10 * (u64::from(k) + 1));
            s.add_provider_at(record(k, p, Some(at)), t0).expect("room");
        }
        // 10 s and 20 s records are gone at 25 s, the 30 s one stays.
        let t = t0 + Duration::from_secs(25);
        assert!(s.providers_at(&key(0), t).is_empty());
        assert_eq!(s.providers_at(&key(2), t).len(), 1);
        assert_eq!(s.others_len(), 3, "not swept yet");
        let fresh = Some(t + Duration::from_secs(100));
        s.add_provider_at(record(7, p, fresh), t)
            .expect("swept, so room");
        s.add_provider_at(record(8, p, fresh), t).expect("room");
        assert_eq!(s.others_len(), 3);
        assert!(!s.others.contains_key(&key(0)) && !s.others.contains_key(&key(1)));
        // A renewed record lives on past its first expiry.
        s.add_provider_at(record(2, p, fresh), t).expect("renewed");
        s.expire(t0 + Duration::from_secs(31));
        assert_eq!(
            s.providers_at(&key(2), t0 + Duration::from_secs(31)).len(),
            1
        );
        s.expire(t + Duration::from_secs(100));
        assert_eq!(s.others_len(), 0);
        assert!(s.expiry.is_empty() && s.others.is_empty());
        // A record that arrives expired is not kept.
        s.add_provider_at(record(5, p, Some(t)), t + Duration::from_secs(1))
            .expect("dropped");
        assert_eq!(s.others_len(), 0);
    }

    #[test]
    fn addresses_of_others_are_bounded() {
        let mut s = ProviderStore::new(PeerId::random(), 10, 20);
        let now = Instant::now();
        let mut r = record(1, PeerId::random(), Some(now + Duration::from_secs(60)));
        let long: Multiaddr = format!("/dns4/{}/tcp/1", "a".repeat(300))
            .parse()
            .expect("addr");
        r.addresses = std::iter::once(long)
            .chain((0..20).map(|i| format!("/ip4/10.0.0.{i}/tcp/1").parse().expect("addr")))
            .collect();
        s.add_provider_at(r, now).expect("room");
        let kept = &s.providers_at(&key(1), now)[0].addresses;
        assert_eq!(kept.len(), MAX_ADDRESSES);
        assert!(kept.iter().all(|a| a.as_ref().len() <= MAX_ADDRESS_BYTES));
    }
}
