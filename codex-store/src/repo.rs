//! The repository store: the logic of [`codex_core::BlockStore`] over any [`Kv`] backend.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use codex_core::{
    Block, BlockRead, BlockWrite, Cid, CodexProof, Error as CoreError, LeafMeta, Manifest,
    Manifests, Quota, SessionId, Sessions, Space, codec,
};

use crate::error::Error;
use crate::keys;
use crate::kv::{Body, Kv, MemKv, SledKv, Write};

type CoreResult<T> = codex_core::Result<T>;

/// How many records one batch of a long operation (leaves, commit, abort, delete) touches.
///
/// sled keeps every node version a batch replaces until the batch ends (one epoch guard
/// for the whole batch, and the log pinned), so a batch's memory grows with its size:
/// batches of 4096 leaves took ~100 MiB each, and glibc kept the pages. Small batches
/// bound it; each one is still atomic and self-consistent (counters, references and
/// records together), and a crash between two is undone or finished by `recover`.
const CHUNK: usize = 256;

/// Settings of a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The quota: at most this many bytes of blocks (default 20 GiB, as Codex).
    pub quota_max_bytes: u64,
    /// How long a block lives unless a dataset refers to it (default 30 days, as Codex).
    pub block_ttl: Duration,
    /// sled's page cache (default 32 MiB); unused by the memory store. sled counts its
    /// pages by their size on disk and holds about 3 to 4 times as much in memory, so
    /// this, not the dataset size, bounds the store's memory: with 64 MiB an 8 GiB
    /// upload peaked at 199 MiB in `examples/upload_rss.rs`, with 32 MiB at 158 MiB.
    pub cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            quota_max_bytes: 20 << 30,
            block_ttl: Duration::from_secs(30 * 24 * 3600),
            cache_bytes: 32 << 20,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    used: u64,
    reserved: u64,
    blocks: u64,
    next_session: u64,
}

impl Counters {
    fn encode(&self) -> Bytes {
        let mut v = Vec::with_capacity(32);
        for n in [self.used, self.reserved, self.blocks, self.next_session] {
            v.extend_from_slice(&n.to_le_bytes());
        }
        v.into()
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let n = |i: usize| {
            Some(u64::from_le_bytes(
                b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(Counters {
            used: n(0)?,
            reserved: n(1)?,
            blocks: n(2)?,
            next_session: n(3)?,
        })
    }
}

/// Per-block record: references, expiry (unix seconds), size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    refs: u32,
    expiry: u64,
    size: u64,
}

impl Meta {
    fn encode(&self) -> Bytes {
        let mut v = Vec::with_capacity(20);
        v.extend_from_slice(&self.refs.to_le_bytes());
        v.extend_from_slice(&self.expiry.to_le_bytes());
        v.extend_from_slice(&self.size.to_le_bytes());
        v.into()
    }

    fn decode(key: &[u8], b: &[u8]) -> Result<Self, Error> {
        let bad = || Error::CorruptMetadata {
            key: hex(key),
            reason: format!("block record of {} bytes, expected 20", b.len()),
        };
        if b.len() != 20 {
            return Err(bad());
        }
        let u64_at = |i: usize| {
            b[i..i + 8]
                .try_into()
                .map(u64::from_le_bytes)
                .map_err(|_| bad())
        };
        Ok(Meta {
            refs: b[..4]
                .try_into()
                .map(u32::from_le_bytes)
                .map_err(|_| bad())?,
            expiry: u64_at(4)?,
            size: u64_at(12)?,
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Set in a leaf record's first byte when the leaf's CID is not a stored block.
const LEAF_REF: u8 = 0x80;

fn encode_leaf(cid: &Cid, proof: &CodexProof) -> Bytes {
    encode_leaf_with(cid, proof, 0)
}

fn encode_leaf_with(cid: &Cid, proof: &CodexProof, flags: u8) -> Bytes {
    let c = cid.to_bytes();
    let mut v = Vec::with_capacity(1 + c.len() + 16 + proof.path.len() * 34);
    v.push(c.len() as u8 | flags);
    v.extend_from_slice(&c);
    v.extend_from_slice(&proof.encode());
    v.into()
}

fn decode_leaf(key: &[u8], v: &[u8]) -> Result<(Cid, Bytes), Error> {
    let bad = |reason: String| Error::CorruptMetadata {
        key: hex(key),
        reason,
    };
    let (len, rest) = v
        .split_first()
        .ok_or_else(|| bad("empty leaf record".into()))?;
    let len = usize::from(*len & !LEAF_REF);
    if rest.len() < len {
        return Err(bad("truncated leaf record".into()));
    }
    let cid = Cid::from_bytes(&rest[..len]).map_err(|e| bad(e.to_string()))?;
    Ok((cid, Bytes::copy_from_slice(&rest[len..])))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A block store over a [`Kv`] backend. Cheap to clone: clones share one store.
///
/// Use [`SledStore`] for a node and [`MemoryStore`] for tests and caches; both behave
/// the same.
#[derive(Debug)]
pub struct Repo<K: Kv> {
    inner: Arc<Inner<K>>,
}

impl<K: Kv> Clone for Repo<K> {
    fn clone(&self) -> Self {
        Repo {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// The store on sled, on disk.
pub type SledStore = Repo<SledKv>;
/// The store in memory.
pub type MemoryStore = Repo<MemKv>;

#[derive(Debug)]
struct Inner<K> {
    kv: K,
    config: StoreConfig,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    counters: Counters,
    open_sessions: HashMap<u64, Pins>,
}

/// What an open write session pinned. Its pins are also on record (`PIN_GROUP` and
/// `PIN_MOVED` records), for `recover` after a crash; this is the session's own view,
/// so that a block it holds is not looked up again.
#[derive(Debug, Default)]
struct Pins {
    blocks: PinMap,
    /// The sequence number of the session's next pin record.
    next: u64,
}

impl Pins {
    /// Puts the session's next pin record of `kind` (none for no entries) in `t`.
    fn put_record<K: Kv>(
        &self,
        t: &mut Txn<'_, K>,
        kind: u8,
        s: SessionId,
        entries: &[(Cid, bool)],
    ) {
        if !entries.is_empty() {
            t.put(
                keys::session_record(kind, s.0, self.next),
                encode_pins(entries),
            );
        }
    }

    /// Takes the next record's number once the record of `entries` is written.
    fn advance(&mut self, entries: &[(Cid, bool)]) {
        if !entries.is_empty() {
            self.next += 1;
        }
    }
}

/// Pins by block. Data blocks (codec `BLOCK`, SHA-256: nearly every pin) are kept by
/// their digest alone, 35 bytes an entry instead of a CID's 97: a 10 GiB upload pins
/// 163 840 blocks, about 9 MiB this way.
#[derive(Debug, Default)]
struct PinMap {
    data: HashMap<[u8; 32], Pin>,
    other: HashMap<Cid, Pin>,
}

impl PinMap {
    fn data_key(cid: &Cid) -> Option<[u8; 32]> {
        if cid.codec() == codec::BLOCK && cid.hash_code() == codec::SHA2_256 {
            cid.digest32()
        } else {
            None
        }
    }

    fn get(&self, cid: &Cid) -> Option<&Pin> {
        match Self::data_key(cid) {
            Some(k) => self.data.get(&k),
            None => self.other.get(cid),
        }
    }

    fn get_mut(&mut self, cid: &Cid) -> Option<&mut Pin> {
        match Self::data_key(cid) {
            Some(k) => self.data.get_mut(&k),
            None => self.other.get_mut(cid),
        }
    }

    fn contains(&self, cid: &Cid) -> bool {
        self.get(cid).is_some()
    }

    fn insert(&mut self, cid: Cid, pin: Pin) {
        match Self::data_key(&cid) {
            Some(k) => self.data.insert(k, pin),
            None => self.other.insert(cid, pin),
        };
    }
}

/// A block a session pinned: the pin holds one reference to it.
#[derive(Clone, Copy, Debug)]
struct Pin {
    /// The session stored the block (undoing the session removes it).
    created: bool,
    /// The pin's reference passed to a leaf of the session: the leaf holds it now, and
    /// finishing the session leaves the block's references as they are.
    moved: bool,
}

/// What [`Txn::set_leaf_value`] did with references.
struct LeafSet {
    /// The leaf took a reference to its block (it is new, or pointed at another block).
    took: bool,
    /// The block of the overwritten leaf, whose reference went back to the caller.
    returned: Option<Cid>,
}

/// A pin record's value: `[created][CID length][CID]` for each block.
fn encode_pins(pins: &[(Cid, bool)]) -> Bytes {
    let mut v = Vec::with_capacity(pins.len() * 40);
    for (cid, created) in pins {
        let bytes = cid.to_bytes();
        v.push(u8::from(*created));
        v.push(bytes.len() as u8);
        v.extend_from_slice(&bytes);
    }
    v.into()
}

fn decode_pins(key: &[u8], mut v: &[u8]) -> Result<Vec<(Cid, bool)>, Error> {
    let bad = |reason: String| Error::CorruptMetadata {
        key: hex(key),
        reason,
    };
    let mut out = Vec::new();
    while let [created, len, rest @ ..] = v {
        let len = usize::from(*len);
        let cid = rest
            .get(..len)
            .ok_or_else(|| bad("pin record ends inside a CID".into()))?;
        out.push((
            Cid::from_bytes(cid).map_err(|e| bad(e.to_string()))?,
            *created == 1,
        ));
        v = &rest[len..];
    }
    if !v.is_empty() {
        return Err(bad("pin record ends inside an entry".into()));
    }
    Ok(out)
}

impl Repo<SledKv> {
    /// Opens (or creates) a store in `dir`. Write sessions that a crash interrupted are
    /// finished (if they had committed) or rolled back before this returns.
    ///
    /// # Errors
    /// When the database cannot be opened or its records are damaged.
    pub fn open(dir: impl AsRef<Path>, config: StoreConfig) -> Result<Self, Error> {
        let kv = SledKv::open(dir.as_ref(), config.cache_bytes)?;
        Self::with_kv(kv, config)
    }
}

impl Repo<MemKv> {
    /// An empty store in memory.
    pub fn new(config: StoreConfig) -> Self {
        match Self::with_kv(MemKv::default(), config) {
            Ok(store) => store,
            Err(e) => unreachable!("an empty memory store cannot fail to open: {e}"),
        }
    }
}

/// A batch under construction: reads of records see its own pending writes.
struct Txn<'a, K> {
    kv: &'a K,
    writes: HashMap<Vec<u8>, Option<Bytes>>,
    /// Pending body writes by body id: `Some` puts, `None` removes; a put marked `true`
    /// is of a body known not to be stored (`Write::PutNewBody`).
    bodies: HashMap<Vec<u8>, Option<(Bytes, bool)>>,
    counters: Counters,
}

impl<'a, K: Kv> Txn<'a, K> {
    fn new(kv: &'a K, counters: Counters) -> Self {
        Txn {
            kv,
            writes: HashMap::new(),
            bodies: HashMap::new(),
            counters,
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.kv.get(key),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Bytes) {
        self.writes.insert(key, Some(value));
    }

    fn del(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    fn meta(&self, cid: &Cid) -> Result<Option<Meta>, Error> {
        let key = keys::meta(cid);
        self.get(&key)?.map(|b| Meta::decode(&key, &b)).transpose()
    }

    /// Adds a block (or refreshes and references an existing one). Returns whether it was new.
    fn add_block(&mut self, block: &Block, expiry: u64, refs: u32, quota: u64) -> CoreResult<bool> {
        let cid = *block.cid();
        if let Some(mut m) = self.meta(&cid)? {
            m.refs += refs;
            if expiry > m.expiry {
                m.expiry = expiry;
                self.put(keys::expiry(expiry, &cid), Bytes::new());
            }
            self.put(keys::meta(&cid), m.encode());
            return Ok(false);
        }
        let size = block.len() as u64;
        let c = &mut self.counters;
        let available = quota.saturating_sub(c.used).saturating_sub(c.reserved);
        if size > available {
            return Err(CoreError::QuotaExceeded {
                needed: size,
                available,
            });
        }
        c.used += size;
        c.blocks += 1;
        // No record, so no body: unless this batch removed one, whose space the backend
        // must return.
        let id = keys::body(&cid);
        let new = !self.bodies.contains_key(&id);
        self.bodies.insert(id, Some((block.data().clone(), new)));
        self.put(keys::meta(&cid), Meta { refs, expiry, size }.encode());
        self.put(keys::expiry(expiry, &cid), Bytes::new());
        if cid.codec() == codec::MANIFEST {
            self.put(keys::manifest(&cid), Bytes::new());
        }
        Ok(true)
    }

    fn remove_block(&mut self, cid: &Cid, m: Meta) {
        self.bodies.insert(keys::body(cid), None);
        self.del(keys::meta(cid));
        self.del(keys::expiry(m.expiry, cid));
        self.del(keys::manifest(cid));
        self.counters.used = self.counters.used.saturating_sub(m.size);
        self.counters.blocks = self.counters.blocks.saturating_sub(1);
    }

    /// Drops one reference; removes the block at zero references when `delete_at_zero`.
    fn unref(&mut self, cid: &Cid, delete_at_zero: bool) -> Result<(), Error> {
        if let Some(mut m) = self.meta(cid)? {
            m.refs = m.refs.saturating_sub(1);
            if m.refs == 0 && delete_at_zero {
                self.remove_block(cid, m);
            } else {
                self.put(keys::meta(cid), m.encode());
            }
        }
        Ok(())
    }

    /// Points leaf `index` of `tree` at `cid` (which must be stored). Returns whether the
    /// leaf is new.
    fn set_leaf(
        &mut self,
        tree: &Cid,
        index: u64,
        cid: &Cid,
        proof: &CodexProof,
    ) -> CoreResult<bool> {
        self.set_leaf_value(tree, index, cid, encode_leaf(cid, proof), false, &|_| false)
            .map(|set| set.took)
    }

    /// [`Txn::set_leaf`] with the record encoded already (`encode_leaf`). With
    /// `pinned`, the caller holds a reference to `cid` that a new leaf takes over:
    /// the block's record is left as it is. A leaf overwritten whose block `returns`
    /// names gives its reference back to the caller (a session's pin) instead of
    /// dropping it.
    fn set_leaf_value(
        &mut self,
        tree: &Cid,
        index: u64,
        cid: &Cid,
        value: Bytes,
        pinned: bool,
        returns: &dyn Fn(&Cid) -> bool,
    ) -> CoreResult<LeafSet> {
        let key = keys::leaf(tree, index);
        let mut returned = None;
        if let Some(old) = self.get(&key)? {
            let (old_cid, _) = decode_leaf(&key, &old)?;
            if old_cid == *cid {
                self.put(key, value);
                return Ok(LeafSet {
                    took: false,
                    returned,
                });
            }
            if returns(&old_cid) {
                returned = Some(old_cid);
            } else {
                self.unref(&old_cid, true)?;
            }
        }
        if !pinned {
            let mut m = self.meta(cid)?.ok_or(CoreError::not_found(*cid))?;
            m.refs += 1;
            self.put(keys::meta(cid), m.encode());
        }
        self.put(key, value);
        Ok(LeafSet {
            took: true,
            returned,
        })
    }

    fn into_writes(mut self) -> (Vec<Write>, Counters) {
        self.writes
            .insert(keys::COUNTERS.to_vec(), Some(self.counters.encode()));
        let bodies = self.bodies.into_iter().map(|(id, data)| match data {
            Some((data, false)) => Write::PutBody { id, data },
            Some((data, true)) => Write::PutNewBody { id, data },
            None => Write::DeleteBody { id },
        });
        let records = self.writes.into_iter().map(|(key, value)| match value {
            Some(value) => Write::Put { key, value },
            None => Write::Delete { key },
        });
        (bodies.chain(records).collect(), self.counters)
    }
}

impl<K: Kv> Repo<K> {
    /// A store over `kv`, recovering from an interrupted run.
    pub fn with_kv(kv: K, config: StoreConfig) -> Result<Self, Error> {
        let counters = match kv.get(keys::COUNTERS)? {
            Some(b) => Counters::decode(&b).ok_or_else(|| Error::CorruptMetadata {
                key: "C".into(),
                reason: "counters record has the wrong size".into(),
            })?,
            None => Counters::default(),
        };
        let repo = Repo {
            inner: Arc::new(Inner {
                kv,
                config,
                state: Mutex::new(State {
                    counters,
                    open_sessions: HashMap::new(),
                }),
            }),
        };
        repo.inner.recover().map_err(|e| match e {
            CoreError::Backend(b) => match b.downcast::<Error>() {
                Ok(e) => *e,
                Err(b) => Error::Database(b),
            },
            other => Error::Database(Box::new(other)),
        })?;
        Ok(repo)
    }

    /// The settings.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Deletes what expired at or before `now` (unix seconds): manifests with their
    /// datasets, and blocks no dataset refers to. Touches at most `limit` expiry records;
    /// returns how many blocks and datasets it deleted.
    pub fn sweep_expired(&self, now: u64, limit: usize) -> CoreResult<usize> {
        self.inner.sweep_expired(now, limit)
    }

    /// Runs [`Repo::sweep_expired`] every `interval` on a blocking thread, `batch` records
    /// at a time (Codex: every 10 minutes, 1000 blocks). Stops when the handle is aborted.
    pub fn start_maintenance(
        &self,
        interval: Duration,
        batch: usize,
    ) -> tokio::task::JoinHandle<()> {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let inner = Arc::clone(&inner);
                let swept =
                    tokio::task::spawn_blocking(move || inner.sweep_expired(unix_now(), batch))
                        .await;
                match swept {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(deleted = n, "maintenance: deleted expired blocks"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "maintenance sweep failed"),
                    Err(e) => tracing::warn!(error = %e, "maintenance task failed"),
                }
            }
        })
    }

    /// Checks the store against its own invariants: the counters equal what is stored,
    /// every leaf points at a stored block, every manifest's tree is complete. Returns a
    /// list of problems (empty when consistent). Reads everything: for tests and `fsck`.
    pub fn check(&self) -> CoreResult<Vec<String>> {
        self.inner.check()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner<K>) -> CoreResult<T> + Send + 'static,
    ) -> CoreResult<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }
}

impl<K: Kv> Inner<K> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expiry_from_now(&self) -> u64 {
        unix_now().saturating_add(self.config.block_ttl.as_secs())
    }

    /// Runs `f` on a batch and applies it atomically, then adopts its counters.
    fn write<T>(
        &self,
        state: &mut State,
        f: impl FnOnce(&mut Txn<'_, K>) -> CoreResult<T>,
    ) -> CoreResult<T> {
        let mut txn = Txn::new(&self.kv, state.counters);
        let out = f(&mut txn)?;
        let (writes, counters) = txn.into_writes();
        self.kv.apply(writes)?;
        state.counters = counters;
        Ok(out)
    }

    fn get_block(&self, cid: &Cid) -> CoreResult<Block> {
        checked_block(*cid, self.body(cid)?)
    }

    fn body(&self, cid: &Cid) -> CoreResult<Body> {
        self.kv
            .get_body(&keys::body(cid))?
            .ok_or(CoreError::not_found(*cid))
    }

    fn leaf(&self, tree: &Cid, index: u64) -> CoreResult<LeafMeta> {
        let key = keys::leaf(tree, index);
        let v = self
            .kv
            .get(&key)?
            .ok_or(CoreError::not_found((*tree, index)))?;
        let (block_cid, proof) = decode_leaf(&key, &v)?;
        Ok(LeafMeta {
            index,
            block_cid,
            proof: CodexProof::decode(&proof)?,
        })
    }

    fn put_block(&self, block: &Block) -> CoreResult<()> {
        let mut st = self.lock();
        let (expiry, quota) = (self.expiry_from_now(), self.config.quota_max_bytes);
        self.write(&mut st, |t| {
            t.add_block(block, expiry, 0, quota).map(|_| ())
        })
    }

    fn put_leaf(
        &self,
        tree: &Cid,
        index: u64,
        block: &Block,
        proof: &CodexProof,
    ) -> CoreResult<()> {
        let mut st = self.lock();
        let (expiry, quota) = (self.expiry_from_now(), self.config.quota_max_bytes);
        self.write(&mut st, |t| {
            t.add_block(block, expiry, 0, quota)?;
            t.set_leaf(tree, index, block.cid(), proof).map(|_| ())
        })
    }

    fn begin(&self) -> CoreResult<SessionId> {
        let mut st = self.lock();
        let id = st.counters.next_session;
        self.write(&mut st, |t| {
            t.counters.next_session += 1;
            Ok(())
        })?;
        st.open_sessions.insert(id, Pins::default());
        Ok(SessionId(id))
    }

    fn check_session(st: &State, s: SessionId) -> CoreResult<()> {
        if st.open_sessions.contains_key(&s.0) {
            Ok(())
        } else {
            Err(CoreError::UnknownSession(s.0))
        }
    }

    /// Runs `f` with the pins of the open session `s`.
    fn with_pins<T>(
        &self,
        st: &mut State,
        s: SessionId,
        f: impl FnOnce(&mut State, &mut Pins) -> CoreResult<T>,
    ) -> CoreResult<T> {
        let mut pins = st
            .open_sessions
            .remove(&s.0)
            .ok_or(CoreError::UnknownSession(s.0))?;
        let out = f(st, &mut pins);
        st.open_sessions.insert(s.0, pins);
        out
    }

    /// Stores the blocks (each pinned once by the session: one reference, and one
    /// record for the whole call).
    fn session_put_blocks(&self, s: SessionId, blocks: &[Block]) -> CoreResult<()> {
        let mut st = self.lock();
        let (expiry, quota) = (self.expiry_from_now(), self.config.quota_max_bytes);
        self.with_pins(&mut st, s, |st, pins| {
            let mut group: Vec<(Cid, bool)> = Vec::new();
            let mut seen = HashSet::new();
            self.write(st, |t| {
                for block in blocks {
                    let cid = *block.cid();
                    if pins.blocks.contains(&cid) || !seen.insert(cid) {
                        continue;
                    }
                    let created = t.add_block(block, expiry, 1, quota)?;
                    group.push((cid, created));
                }
                pins.put_record(t, keys::PIN_GROUP, s, &group);
                Ok(())
            })?;
            pins.advance(&group);
            for (cid, created) in group {
                pins.blocks.insert(
                    cid,
                    Pin {
                        created,
                        moved: false,
                    },
                );
            }
            Ok(())
        })
    }

    fn session_put_leaves(
        &self,
        s: SessionId,
        tree: &Cid,
        leaves: &[LeafMeta],
        refs: bool,
    ) -> CoreResult<()> {
        // The records (mostly proofs) are encoded on all cores before the lock is taken.
        let flags = if refs { LEAF_REF } else { 0 };
        let values: Vec<Bytes> = {
            use rayon::prelude::*;
            leaves
                .par_iter()
                .with_min_len(64)
                .map(|l| encode_leaf_with(&l.block_cid, &l.proof, flags))
                .collect()
        };
        let mut st = self.lock();
        // A leaf that is the first to refer to a block the session created takes over
        // the pin's reference (no change to the block's record).
        self.with_pins(&mut st, s, |st, pins| {
            // The session remembers each tree it writes to, and whether the tree is new:
            // undoing the session deletes a new tree whole.
            let marker = keys::new_tree(s.0, tree);
            let record = if self.kv.contains(&marker)? {
                None
            } else {
                let prefix = keys::leaf_prefix(tree);
                let exists = !self
                    .kv
                    .range(&prefix, &keys::prefix_end(&prefix), 1)?
                    .is_empty();
                Some(Bytes::copy_from_slice(&[u8::from(!exists)]))
            };
            // The marker goes with the first batch of leaves, before any leaf of the tree.
            let mut record = record.map(|r| (marker, r));
            for (chunk, values) in leaves.chunks(CHUNK).zip(values.chunks(CHUNK)) {
                // The pins whose reference moved to a leaf (`true`) or came back from an
                // overwritten one (`false`) in this chunk, in order.
                let mut moved: Vec<(Cid, bool)> = Vec::new();
                let mut changed: HashMap<Cid, bool> = HashMap::new();
                self.write(st, |t| {
                    if let Some((marker, r)) = record.take() {
                        t.put(marker, r);
                    }
                    for (leaf, value) in chunk.iter().zip(values) {
                        if refs {
                            // A leaf without a stored block behind it.
                            t.put(keys::leaf(tree, leaf.index), value.clone());
                            continue;
                        }
                        let cid = &leaf.block_cid;
                        let is_moved = |c: &Cid| {
                            changed
                                .get(c)
                                .copied()
                                .or_else(|| pins.blocks.get(c).map(|p| p.moved))
                        };
                        let pinned = pins.blocks.get(cid).is_some_and(|p| p.created)
                            && is_moved(cid) == Some(false);
                        // An overwritten leaf that held a pin's reference gives it back,
                        // so the pin keeps the block as before the leaf took it.
                        let returns = |c: &Cid| is_moved(c) == Some(true);
                        let set = t.set_leaf_value(
                            tree,
                            leaf.index,
                            cid,
                            value.clone(),
                            pinned,
                            &returns,
                        )?;
                        if let Some(old) = set.returned {
                            changed.insert(old, false);
                            moved.push((old, false));
                        }
                        if set.took && pinned {
                            changed.insert(*cid, true);
                            moved.push((*cid, true));
                        }
                    }
                    pins.put_record(t, keys::PIN_MOVED, s, &moved);
                    Ok(())
                })?;
                pins.advance(&moved);
                for (cid, now_moved) in changed {
                    if let Some(p) = pins.blocks.get_mut(&cid) {
                        p.moved = now_moved;
                    }
                }
            }
            if let Some((marker, r)) = record {
                // No leaves: the tree is still recorded, as before.
                self.write(st, |t| {
                    t.put(marker, r);
                    Ok(())
                })?;
            }
            Ok(())
        })
    }

    fn commit(&self, s: SessionId, manifest: Option<&Block>) -> CoreResult<()> {
        let mut st = self.lock();
        Self::check_session(&st, s)?;
        let (expiry, quota) = (self.expiry_from_now(), self.config.quota_max_bytes);
        // One small atomic step makes the session permanent; the clean-up after it is
        // resumed by `recover` if a crash interrupts it.
        self.write(&mut st, |t| {
            if let Some(m) = manifest {
                t.add_block(m, expiry, 0, quota)?;
            }
            t.put(keys::committed(s.0), Bytes::new());
            Ok(())
        })?;
        self.close_session(&mut st, s, true)?;
        self.kv.flush()?;
        Ok(())
    }

    /// Finishes the open session `s` with its pins in memory; on failure it stays open.
    fn close_session(&self, st: &mut State, s: SessionId, committed: bool) -> CoreResult<()> {
        let pins = st.open_sessions.remove(&s.0).unwrap_or_default();
        let done = self.finish_session(st, s.0, committed, Some(&pins.blocks));
        if done.is_err() {
            st.open_sessions.insert(s.0, pins);
        }
        done
    }

    fn abort(&self, s: SessionId) -> CoreResult<()> {
        let mut st = self.lock();
        Self::check_session(&st, s)?;
        self.close_session(&mut st, s, false)?;
        Ok(())
    }

    /// Removes a session's bookkeeping, keeping its writes (`committed`) or undoing them.
    /// `pins`: the open session's own (which of its pins moved to leaves); `None` after
    /// a crash, when the session's `PIN_MOVED` records tell.
    fn finish_session(
        &self,
        st: &mut State,
        s: u64,
        committed: bool,
        pins: Option<&PinMap>,
    ) -> CoreResult<()> {
        // Trees first: undoing their leaves drops references that pins still hold.
        let prefix = keys::session_prefix(keys::NEW_TREE, s);
        for (key, created) in self
            .kv
            .range(&prefix, &keys::prefix_end(&prefix), usize::MAX)?
        {
            if !committed && created.first() == Some(&1) {
                let tree =
                    Cid::from_bytes(&key[prefix.len()..]).map_err(|e| Error::CorruptMetadata {
                        key: hex(&key),
                        reason: e.to_string(),
                    })?;
                self.delete_tree(st, &tree)?;
            }
            self.write(st, |t| {
                t.del(key);
                Ok(())
            })?;
        }
        // Pins whose reference passed to a leaf: the leaf keeps it (or gave it up when
        // its new tree was deleted above).
        let moved_prefix = keys::session_prefix(keys::PIN_MOVED, s);
        let moved_end = keys::prefix_end(&moved_prefix);
        let recorded;
        let moved = match pins {
            Some(pins) => pins,
            None => {
                recorded = self.moved_pins(&moved_prefix, &moved_end)?;
                &recorded
            }
        };
        let moved = |cid: &Cid| moved.get(cid).is_some_and(|p| p.moved);
        let prefix = keys::session_prefix(keys::PIN_GROUP, s);
        loop {
            // About CHUNK blocks a batch.
            let batch = self.kv.range(&prefix, &keys::prefix_end(&prefix), 8)?;
            if batch.is_empty() {
                break;
            }
            self.write(st, |t| {
                for (key, v) in &batch {
                    t.del(key.clone());
                    for (cid, created) in decode_pins(key, v)? {
                        if !moved(&cid) {
                            // Undoing removes what the session created and nothing else
                            // refers to.
                            t.unref(&cid, !committed && created)?;
                        }
                    }
                }
                Ok(())
            })?;
        }
        loop {
            let batch = self.kv.range(&moved_prefix, &moved_end, CHUNK)?;
            if batch.is_empty() {
                break;
            }
            self.write(st, |t| {
                for (key, _) in batch {
                    t.del(key);
                }
                Ok(())
            })?;
        }
        // Pins of one record a block, as stores wrote them before pin groups.
        let prefix = keys::session_prefix(keys::PIN, s);
        loop {
            let batch = self.kv.range(&prefix, &keys::prefix_end(&prefix), CHUNK)?;
            if batch.is_empty() {
                break;
            }
            self.write(st, |t| {
                for (key, created) in &batch {
                    t.del(key.clone());
                    let cid = Cid::from_bytes(&key[prefix.len()..]).map_err(|e| {
                        Error::CorruptMetadata {
                            key: hex(key),
                            reason: e.to_string(),
                        }
                    })?;
                    // Undoing removes what the session created and nothing else refers to.
                    let created = created.first() == Some(&1);
                    t.unref(&cid, !committed && created)?;
                }
                Ok(())
            })?;
        }
        self.write(st, |t| {
            t.del(keys::committed(s));
            Ok(())
        })
    }

    /// The blocks a session's `PIN_MOVED` records name, read a batch at a time.
    fn moved_pins(&self, prefix: &[u8], end: &[u8]) -> CoreResult<PinMap> {
        let mut moved = PinMap::default();
        let mut from = prefix.to_vec();
        loop {
            let batch = self.kv.range(&from, end, CHUNK)?;
            let Some((last, _)) = batch.last() else {
                return Ok(moved);
            };
            from = last.clone();
            from.push(0);
            for (key, v) in &batch {
                // In order: a reference that moved to a leaf (`true`), or came back from
                // an overwritten one (`false`).
                for (cid, now_moved) in decode_pins(key, v)? {
                    let pin = Pin {
                        created: true,
                        moved: now_moved,
                    };
                    moved.insert(cid, pin);
                }
            }
        }
    }

    fn delete_dataset(&self, st: &mut State, manifest_cid: &Cid) -> CoreResult<()> {
        let manifest = Manifest::decode(self.get_block(manifest_cid)?.data())?;
        let tree = manifest.tree_cid;
        let shared = self
            .manifest_cids()?
            .into_iter()
            .filter(|c| c != manifest_cid)
            .any(|c| matches!(self.get_block(&c).and_then(|b| Manifest::decode(b.data())), Ok(m) if m.tree_cid == tree));
        // The slot trees of a verifiable manifest go with it.
        let slot_trees: Vec<Cid> = manifest
            .protection
            .as_ref()
            .and_then(|p| p.verification.as_ref())
            .map(|v| v.slot_roots.clone())
            .unwrap_or_default();
        self.write(st, |t| {
            if let Some(m) = t.meta(manifest_cid)? {
                t.remove_block(manifest_cid, m);
            }
            if !shared {
                t.put(keys::deleting_tree(&tree), Bytes::new());
            }
            for slot in &slot_trees {
                t.put(keys::deleting_tree(slot), Bytes::new());
            }
            Ok(())
        })?;
        if !shared {
            self.delete_tree(st, &tree)?;
        }
        for slot in &slot_trees {
            self.delete_tree(st, slot)?;
        }
        Ok(())
    }

    /// Removes every leaf of `tree` and the blocks only it referred to, in batches; the
    /// marker written before makes `recover` finish the job after a crash.
    fn delete_tree(&self, st: &mut State, tree: &Cid) -> CoreResult<()> {
        self.delete_leaves(st, tree, 0..u64::MAX)?;
        self.write(st, |t| {
            t.del(keys::deleting_tree(tree));
            Ok(())
        })
    }

    /// Removes the stored leaves `range` of `tree` (to the last one when the range ends
    /// at `u64::MAX`) and the blocks only they referred to, in batches (a crash between two leaves none of the others: what is left is
    /// still a consistent, smaller set).
    fn delete_leaves(
        &self,
        st: &mut State,
        tree: &Cid,
        range: std::ops::Range<u64>,
    ) -> CoreResult<u64> {
        if range.is_empty() {
            return Ok(0);
        }
        let from = keys::leaf(tree, range.start);
        // A range to `u64::MAX` runs to the tree's last leaf, whatever its index.
        let to = if range.end == u64::MAX {
            keys::prefix_end(&keys::leaf_prefix(tree))
        } else {
            keys::leaf(tree, range.end)
        };
        let mut deleted = 0;
        loop {
            let batch = self.kv.range(&from, &to, CHUNK)?;
            if batch.is_empty() {
                return Ok(deleted);
            }
            self.write(st, |t| {
                for (key, v) in &batch {
                    let (cid, _) = decode_leaf(key, v)?;
                    t.del(key.clone());
                    t.unref(&cid, true)?;
                }
                Ok(())
            })?;
            deleted += batch.len() as u64;
        }
    }

    fn manifest_cids(&self) -> CoreResult<Vec<Cid>> {
        let prefix = [keys::MANIFEST];
        self.kv
            .range(&prefix, &keys::prefix_end(&prefix), usize::MAX)?
            .into_iter()
            .map(|(k, _)| Cid::from_bytes(&k[1..]))
            .collect()
    }

    fn delete_block(&self, cid: &Cid) -> CoreResult<()> {
        let mut st = self.lock();
        self.write(&mut st, |t| {
            if let Some(m) = t.meta(cid)?
                && m.refs == 0
            {
                t.remove_block(cid, m);
            }
            Ok(())
        })
    }

    fn sweep_expired(&self, now: u64, limit: usize) -> CoreResult<usize> {
        let mut st = self.lock();
        let start = [keys::EXPIRY];
        let mut end = vec![keys::EXPIRY];
        end.extend_from_slice(&now.saturating_add(1).to_be_bytes());
        let entries = self.kv.range(&start, &end, limit)?;
        let mut deleted = 0;
        for (key, _) in entries {
            let (at, cid) = keys::split_u64(&key[1..])
                .and_then(|(at, rest)| Some((at, Cid::from_bytes(rest).ok()?)))
                .ok_or_else(|| Error::CorruptMetadata {
                    key: hex(&key),
                    reason: "bad expiry record".into(),
                })?;
            let meta = self
                .kv
                .get(&keys::meta(&cid))?
                .map(|b| Meta::decode(&key, &b))
                .transpose()?;
            match meta {
                Some(m) if m.expiry == at && cid.codec() == codec::MANIFEST => {
                    self.delete_dataset(&mut st, &cid)?;
                    deleted += 1;
                }
                Some(m) if m.expiry == at && m.refs == 0 => {
                    self.write(&mut st, |t| {
                        t.remove_block(&cid, m);
                        Ok(())
                    })?;
                    deleted += 1;
                }
                // A stale record (the expiry moved on), or a block a dataset holds: the
                // dataset's manifest decides when it goes.
                _ => self.write(&mut st, |t| {
                    t.del(key.clone());
                    Ok(())
                })?,
            }
        }
        Ok(deleted)
    }

    /// Finishes or undoes sessions and tree deletions that a crash interrupted.
    fn recover(&self) -> CoreResult<()> {
        let mut st = self.lock();
        let mut max_session = None;
        for kind in [
            keys::NEW_TREE,
            keys::PIN,
            keys::PIN_GROUP,
            keys::PIN_MOVED,
            keys::COMMITTED,
        ] {
            loop {
                let found = self.kv.range(&[kind], &[kind + 1], 1)?;
                let Some((key, _)) = found.first() else { break };
                let (s, _) = keys::split_u64(&key[1..]).ok_or_else(|| Error::CorruptMetadata {
                    key: hex(key),
                    reason: "bad session record".into(),
                })?;
                let committed = self.kv.contains(&keys::committed(s))?;
                tracing::info!(
                    session = s,
                    committed,
                    "recovering an interrupted write session"
                );
                self.finish_session(&mut st, s, committed, None)?;
                max_session = max_session.max(Some(s));
            }
        }
        loop {
            let found = self
                .kv
                .range(&[keys::DELETING_TREE], &[keys::DELETING_TREE + 1], 1)?;
            let Some((key, _)) = found.first() else { break };
            let tree = Cid::from_bytes(&key[1..])?;
            tracing::info!(%tree, "finishing an interrupted dataset deletion");
            self.delete_tree(&mut st, &tree)?;
        }
        if let Some(s) = max_session
            && st.counters.next_session <= s
        {
            self.write(&mut st, |t| {
                t.counters.next_session = s + 1;
                Ok(())
            })?;
        }
        Ok(())
    }

    fn check(&self) -> CoreResult<Vec<String>> {
        let _st = self.lock();
        let mut problems = Vec::new();
        let all = |p: u8| self.kv.range(&[p], &[p + 1], usize::MAX);
        let (mut used, mut blocks) = (0u64, 0u64);
        let metas = all(keys::META)?;
        for (key, v) in &metas {
            let m = Meta::decode(key, v)?;
            let cid = Cid::from_bytes(&key[1..])?;
            match self.kv.get_body(&keys::body(&cid))? {
                Some(body) if body.data.len() as u64 == m.size => {}
                Some(_) => problems.push(format!("block {cid}: size differs from its record")),
                None => problems.push(format!("block {cid}: record without data")),
            }
            used += m.size;
            blocks += 1;
        }
        let data_count = self.kv.body_ids(&[], usize::MAX)?.len() as u64;
        if data_count != blocks {
            problems.push(format!(
                "{data_count} blocks stored, {blocks} block records"
            ));
        }
        let c = self.lock_free_counters()?;
        if c.used != used || c.blocks != blocks {
            problems.push(format!(
                "counters say {} bytes in {} blocks, the store holds {used} bytes in {blocks} blocks",
                c.used, c.blocks
            ));
        }
        for (key, v) in all(keys::LEAF)? {
            let (cid, _) = decode_leaf(&key, &v)?;
            let is_ref = v.first().is_some_and(|b| b & LEAF_REF != 0);
            if !is_ref && !self.kv.contains_body(&keys::body(&cid))? {
                problems.push(format!("leaf {} points at missing block {cid}", hex(&key)));
            }
        }
        for cid in self.manifest_cids()? {
            let manifest = match self
                .get_block(&cid)
                .and_then(|b| Manifest::decode(b.data()))
            {
                Ok(m) => m,
                Err(e) => {
                    problems.push(format!("manifest {cid}: {e}"));
                    continue;
                }
            };
            for i in 0..manifest.blocks_count() {
                if !self.has_leaf(&manifest.tree_cid, i)? {
                    problems.push(format!("manifest {cid}: leaf {i} of its tree is missing"));
                    break;
                }
            }
        }
        for kind in [
            keys::PIN,
            keys::PIN_GROUP,
            keys::PIN_MOVED,
            keys::NEW_TREE,
            keys::COMMITTED,
            keys::DELETING_TREE,
        ] {
            if !self.kv.range(&[kind], &[kind + 1], 1)?.is_empty() {
                problems.push(format!(
                    "unfinished session or deletion records ({})",
                    kind as char
                ));
            }
        }
        Ok(problems)
    }

    fn lock_free_counters(&self) -> CoreResult<Counters> {
        Ok(self
            .kv
            .get(keys::COUNTERS)?
            .and_then(|b| Counters::decode(&b))
            .unwrap_or_default())
    }

    fn has_leaf(&self, tree: &Cid, index: u64) -> CoreResult<bool> {
        let key = keys::leaf(tree, index);
        match self.kv.get(&key)? {
            Some(v) => Ok(self
                .kv
                .contains_body(&keys::body(&decode_leaf(&key, &v)?.0))?),
            None => Ok(false),
        }
    }

    fn space(&self) -> Space {
        let c = self.lock().counters;
        Space {
            total_blocks: c.blocks,
            quota_max_bytes: self.config.quota_max_bytes,
            quota_used_bytes: c.used,
            quota_reserved_bytes: c.reserved,
        }
    }

    fn reserve(&self, bytes: u64, release: bool) -> CoreResult<()> {
        let mut st = self.lock();
        let quota = self.config.quota_max_bytes;
        self.write(&mut st, |t| {
            let c = &mut t.counters;
            if release {
                c.reserved = c.reserved.saturating_sub(bytes);
                return Ok(());
            }
            let available = quota.saturating_sub(c.used).saturating_sub(c.reserved);
            if bytes > available {
                return Err(CoreError::QuotaExceeded {
                    needed: bytes,
                    available,
                });
            }
            c.reserved += bytes;
            Ok(())
        })
    }
}

/// The block `cid` from its body: taken as it is when the backend vouches for the bytes,
/// hashed against the CID otherwise.
fn checked_block(cid: Cid, body: Body) -> CoreResult<Block> {
    if body.intact {
        Ok(Block::new_unchecked(cid, body.data))
    } else {
        Block::verified(cid, body.data)
    }
}

#[async_trait]
impl<K: Kv> BlockRead for Repo<K> {
    async fn get_block(&self, cid: &Cid) -> CoreResult<Block> {
        let cid = *cid;
        self.blocking(move |s| s.get_block(&cid)).await
    }

    async fn get_leaf(&self, tree: &Cid, index: u64) -> CoreResult<(Block, CodexProof)> {
        let tree = *tree;
        self.blocking(move |s| {
            let leaf = s.leaf(&tree, index)?;
            Ok((s.get_block(&leaf.block_cid)?, leaf.proof))
        })
        .await
    }

    async fn get_leaf_blocks(
        &self,
        tree: &Cid,
        indices: Vec<u64>,
    ) -> CoreResult<Vec<CoreResult<Block>>> {
        let tree = *tree;
        self.blocking(move |s| {
            use rayon::prelude::*;
            // Look-ups in order, hashing (of bodies without a good checksum) in parallel.
            let raw: Vec<CoreResult<(Cid, Body)>> = indices
                .iter()
                .map(|&i| {
                    let key = keys::leaf(&tree, i);
                    let v = s.kv.get(&key)?.ok_or(CoreError::not_found((tree, i)))?;
                    let (cid, _) = decode_leaf(&key, &v)?;
                    Ok((cid, s.body(&cid)?))
                })
                .collect();
            let check =
                |r: CoreResult<(Cid, Body)>| r.and_then(|(cid, body)| checked_block(cid, body));
            // Bodies with a good checksum need no hashing: no work for other threads.
            if raw.iter().all(|r| matches!(r, Ok((_, b)) if b.intact)) {
                Ok(raw.into_iter().map(check).collect())
            } else {
                Ok(raw.into_par_iter().map(check).collect())
            }
        })
        .await
    }

    async fn get_leaf_meta(&self, tree: &Cid, index: u64) -> CoreResult<LeafMeta> {
        self.inner.leaf(tree, index)
    }

    async fn has_block(&self, cid: &Cid) -> CoreResult<bool> {
        Ok(self.inner.kv.contains_body(&keys::body(cid))?)
    }

    async fn has_leaf(&self, tree: &Cid, index: u64) -> CoreResult<bool> {
        self.inner.has_leaf(tree, index)
    }
}

#[async_trait]
impl<K: Kv> BlockWrite for Repo<K> {
    async fn put_block(&self, block: Block) -> CoreResult<()> {
        self.blocking(move |s| s.put_block(&block)).await
    }

    async fn put_leaf(
        &self,
        tree: &Cid,
        index: u64,
        block: Block,
        proof: CodexProof,
    ) -> CoreResult<()> {
        let tree = *tree;
        self.blocking(move |s| s.put_leaf(&tree, index, &block, &proof))
            .await
    }

    async fn delete_block(&self, cid: &Cid) -> CoreResult<()> {
        let cid = *cid;
        self.blocking(move |s| s.delete_block(&cid)).await
    }

    async fn delete_dataset(&self, manifest: &Cid) -> CoreResult<()> {
        let cid = *manifest;
        self.blocking(move |s| {
            let mut st = s.lock();
            s.delete_dataset(&mut st, &cid)
        })
        .await
    }

    async fn delete_leaves(&self, tree: &Cid, range: std::ops::Range<u64>) -> CoreResult<u64> {
        let tree = *tree;
        self.blocking(move |s| {
            let mut st = s.lock();
            s.delete_leaves(&mut st, &tree, range)
        })
        .await
    }
}

#[async_trait]
impl<K: Kv> Sessions for Repo<K> {
    async fn begin(&self) -> CoreResult<SessionId> {
        self.blocking(|s| s.begin()).await
    }

    async fn session_put_blocks(&self, session: SessionId, blocks: Vec<Block>) -> CoreResult<()> {
        self.blocking(move |s| s.session_put_blocks(session, &blocks))
            .await
    }

    async fn session_put_leaves(
        &self,
        session: SessionId,
        tree: &Cid,
        leaves: Vec<LeafMeta>,
    ) -> CoreResult<()> {
        let tree = *tree;
        self.blocking(move |s| s.session_put_leaves(session, &tree, &leaves, false))
            .await
    }

    async fn session_put_leaf_refs(
        &self,
        session: SessionId,
        tree: &Cid,
        leaves: Vec<LeafMeta>,
    ) -> CoreResult<()> {
        let tree = *tree;
        self.blocking(move |s| s.session_put_leaves(session, &tree, &leaves, true))
            .await
    }

    async fn commit(&self, session: SessionId, manifest: Option<Block>) -> CoreResult<()> {
        self.blocking(move |s| s.commit(session, manifest.as_ref()))
            .await
    }

    async fn abort(&self, session: SessionId) -> CoreResult<()> {
        self.blocking(move |s| s.abort(session)).await
    }

    fn abandon(&self, session: SessionId) {
        let inner = Arc::clone(&self.inner);
        let abort = move || {
            if let Err(e) = inner.abort(session) {
                tracing::warn!(%session, error = %e, "cannot undo an abandoned write session");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(abort)),
            Err(_) => abort(),
        }
    }
}

#[async_trait]
impl<K: Kv> Quota for Repo<K> {
    async fn space(&self) -> CoreResult<Space> {
        Ok(self.inner.space())
    }

    async fn reserve(&self, bytes: u64) -> CoreResult<()> {
        self.blocking(move |s| s.reserve(bytes, false)).await
    }

    async fn release(&self, bytes: u64) -> CoreResult<()> {
        self.blocking(move |s| s.reserve(bytes, true)).await
    }
}

#[async_trait]
impl<K: Kv> Manifests for Repo<K> {
    async fn manifests(&self) -> CoreResult<Vec<(Cid, Manifest)>> {
        self.blocking(|s| {
            let mut out = Vec::new();
            for cid in s.manifest_cids()? {
                match s.get_block(&cid).and_then(|b| Manifest::decode(b.data())) {
                    Ok(m) => out.push((cid, m)),
                    Err(e) => tracing::warn!(%cid, error = %e, "skipping unreadable manifest"),
                }
            }
            Ok(out)
        })
        .await
    }
}
