//! The two key-value backends under the repository store: sled on disk, a B-tree in memory.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::path::Path;
use std::sync::RwLock;

use bytes::Bytes;

use crate::error::Error;

/// One write of a batch: `Some(value)` puts, `None` removes.
pub type Write = (Vec<u8>, Option<Bytes>);

/// An ordered key-value map with atomic batches: what [`crate::Repo`] needs from its
/// backend. Implemented by [`SledKv`] and [`MemKv`].
pub trait Kv: Send + Sync + fmt::Debug + 'static {
    /// Reads one key.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error>;
    /// Whether a key exists.
    fn contains(&self, key: &[u8]) -> Result<bool, Error>;
    /// Up to `limit` entries with keys in `[start, end)`, in key order.
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Bytes)>, Error>;
    /// Applies all writes atomically: after a crash either all of them are visible or none.
    fn apply(&self, writes: Vec<Write>) -> Result<(), Error>;
    /// Makes every applied batch durable.
    fn flush(&self) -> Result<(), Error>;
}

/// sled on disk.
#[derive(Debug)]
pub struct SledKv {
    db: sled::Db,
}

impl SledKv {
    /// Opens (or creates) the database in `dir` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, Error> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(200))
            .open()
            .map_err(Error::database)?;
        Ok(SledKv { db })
    }
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        Ok(self.db.get(key).map_err(Error::database)?.map(|v| Bytes::copy_from_slice(&v)))
    }

    fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        self.db.contains_key(key).map_err(Error::database)
    }

    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Bytes)>, Error> {
        self.db
            .range(start..end)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv.map_err(Error::database)?;
                Ok((k.to_vec(), Bytes::copy_from_slice(&v)))
            })
            .collect()
    }

    fn apply(&self, writes: Vec<Write>) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k, v.as_ref()),
                None => batch.remove(k),
            }
        }
        self.db.apply_batch(batch).map_err(Error::database)
    }

    fn flush(&self) -> Result<(), Error> {
        self.db.flush().map(|_| ()).map_err(Error::database)
    }
}

/// An in-memory map; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemKv {
    map: RwLock<BTreeMap<Vec<u8>, Bytes>>,
}

impl MemKv {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Bytes>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        Ok(self.read().get(key).cloned())
    }

    fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        Ok(self.read().contains_key(key))
    }

    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Bytes)>, Error> {
        Ok(self
            .read()
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, writes: Vec<Write>) -> Result<(), Error> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        for (k, v) in writes {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
}
