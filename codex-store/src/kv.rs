//! The two key-value backends under the repository store: sled on disk, a B-tree in memory.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::Error;

/// One write of a batch given to [`Kv::apply`].
///
/// Metadata records (small, ordered, listed with [`Kv::range`]) and block bodies (large,
/// looked up by id only) are separate namespaces: the same bytes may name a record and
/// a body. A backend keeps bodies wherever suits them (sled keeps them in pack files) and
/// learns which writes are bodies from the variant, never from the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Sets the metadata record `key` to `value`.
    Put {
        /// The record's key.
        key: Vec<u8>,
        /// Its new value.
        value: Bytes,
    },
    /// Removes the metadata record `key` (nothing happens if there is none).
    Delete {
        /// The record's key.
        key: Vec<u8>,
    },
    /// Stores `data` as the body `id`, replacing any body of that id.
    PutBody {
        /// The body's id (the store uses the block's CID bytes).
        id: Vec<u8>,
        /// The body's bytes.
        data: Bytes,
    },
    /// [`Write::PutBody`] of a body the writer knows is not stored (its records say
    /// so): a backend need not look for one to replace.
    PutNewBody {
        /// The body's id.
        id: Vec<u8>,
        /// The body's bytes.
        data: Bytes,
    },
    /// Removes the body `id` and returns its space (nothing happens if there is none).
    DeleteBody {
        /// The body's id.
        id: Vec<u8>,
    },
}

/// A block body as read, and whether the backend vouches that its bytes are the ones
/// written: a checksum stored with them matched, or nothing can change them. The store
/// hashes a body that is not `intact` against its CID before it returns it.
#[derive(Debug)]
pub struct Body {
    /// The body's bytes.
    pub data: Bytes,
    /// The bytes are the ones written.
    pub intact: bool,
}

/// An ordered key-value map of metadata records plus a map of block bodies, written
/// together in atomic batches: what [`crate::Repo`] needs from its backend. Implemented
/// by [`SledKv`] and [`MemKv`].
///
/// Records and bodies are separate namespaces ([`Write`]); a batch may mix them, and a
/// body and the records that refer to it become visible (and durable) together.
pub trait Kv: Send + Sync + fmt::Debug + 'static {
    /// Reads the metadata record `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error>;
    /// Whether the metadata record `key` exists.
    fn contains(&self, key: &[u8]) -> Result<bool, Error>;
    /// Up to `limit` metadata records with keys in `[start, end)`, in key order. Bodies
    /// are never listed here.
    fn range(&self, start: &[u8], end: &[u8], limit: usize)
    -> Result<Vec<(Vec<u8>, Bytes)>, Error>;
    /// Reads the body `id`.
    fn get_body(&self, id: &[u8]) -> Result<Option<Body>, Error>;
    /// Whether the body `id` exists, without reading it.
    fn contains_body(&self, id: &[u8]) -> Result<bool, Error>;
    /// Up to `limit` body ids from `start` on (inclusive), in order; for consistency
    /// checks, which walk every body.
    fn body_ids(&self, start: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, Error>;
    /// Applies all writes atomically, in order (a later write of the same key or body
    /// wins): after a crash, and to concurrent readers, either all of them are visible or
    /// none. A batch that fails changes nothing.
    fn apply(&self, writes: Vec<Write>) -> Result<(), Error>;
    /// Makes every applied batch durable.
    fn flush(&self) -> Result<(), Error>;
}

/// sled on disk, with block bodies in append-only pack files beside it.
///
/// sled tops out near 300 MB/s for 64 KiB values on this machine class, so bodies of
/// more than [`INLINE_MAX`] bytes are appended to pack files (4 KiB aligned) and sled
/// keeps only their location; deleting a body punches a hole in its pack file, which
/// returns the space to the file system. A body is written before the sled batch that
/// refers to it, so a crash can leak at most the bodies of one batch, never lose one
/// that metadata points at.
///
/// Each pack body's record carries the CRC-32 of its bytes: a read checks it (some twenty
/// times cheaper than the SHA-256 of the block's CID, with the CPU's carry-less
/// multiply), and only a body whose checksum fails is hashed again, which tells bit rot
/// (reported as a corrupt block) from a damaged checksum (the block is fine).
///
/// Bodies' records share sled's keyspace with the metadata: body `id` is the sled key
/// `b'B'` followed by `id`, as stores have always been laid out. Metadata keys that
/// start with `b'B'` are therefore reserved: [`Kv::apply`] refuses them
/// ([`Error::ReservedKey`]), and reads and [`Kv::range`] never see bodies' records.
#[derive(Debug)]
pub struct SledKv {
    db: sled::Db,
    packs: Packs,
}

/// Bodies up to this size stay inline in sled.
pub const INLINE_MAX: usize = 4096;
/// The first byte of the sled keys of bodies' records.
const BODY_PREFIX: u8 = b'B';
const PACK_ALIGN: u64 = 4096;
const SEGMENT_BYTES: u64 = 1 << 30;
/// Written bytes after which writeback to disk is started (without waiting for it), so
/// that a later flush finds little left to write.
const WRITEBACK_BYTES: u64 = 32 << 20;
const TAG_INLINE: u8 = 0;
/// A pack location without a checksum (stores written before checksums).
const TAG_PACK: u8 = 1;
/// A pack location and the CRC-32 of the body.
const TAG_PACK_CRC: u8 = 2;

impl SledKv {
    /// How long [`SledKv::open`] waits for the database's lock before it reports
    /// [`Error::InUse`]: a database closed in this process is unlocked only when sled's
    /// background threads have let go of it, a moment after the last handle dropped.
    pub const LOCK_WAIT: Duration = Duration::from_secs(3);

    /// Opens (or creates) the database in `dir` with a page cache of `cache_bytes`.
    ///
    /// A database held by another process (or another open instance) is waited for
    /// up to [`SledKv::LOCK_WAIT`], then refused with [`Error::InUse`].
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, Error> {
        let path = dir.join("meta");
        let config = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(200));
        let deadline = Instant::now() + Self::LOCK_WAIT;
        let db = loop {
            match config.open() {
                // sled reports a held lock as an I/O error of kind `Other`; its text
                // is the only mark.
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if Instant::now() >= deadline {
                        return Err(Error::InUse { path });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                opened => break opened.map_err(Error::database)?,
            }
        };
        let packs = Packs::open(dir.join("packs"))?;
        Ok(SledKv { db, packs })
    }

    fn read_body(&self, record: &[u8]) -> Result<Body, Error> {
        let unchecked = |data| Body {
            data,
            intact: false,
        };
        match record.split_first() {
            Some((&TAG_INLINE, data)) => Ok(unchecked(Bytes::copy_from_slice(data))),
            Some((&TAG_PACK, loc)) => Ok(unchecked(self.packs.read(PackLocation::decode(loc)?)?)),
            Some((&TAG_PACK_CRC, rest)) if rest.len() == 20 => {
                let (loc, crc) = rest.split_at(16);
                let data = self.packs.read(PackLocation::decode(loc)?)?;
                let intact = crc32fast::hash(&data).to_le_bytes() == crc;
                Ok(Body { data, intact })
            }
            _ => Err(Error::CorruptMetadata {
                key: "body".into(),
                reason: "unknown body record".into(),
            }),
        }
    }
}

/// The sled key of body `id`'s record.
fn body_key(id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(BODY_PREFIX);
    key.extend_from_slice(id);
    key
}

/// Whether a metadata key falls among bodies' records (see [`SledKv`]).
fn reserved(key: &[u8]) -> bool {
    key.first() == Some(&BODY_PREFIX)
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        if reserved(key) {
            return Ok(None);
        }
        let v = self.db.get(key).map_err(Error::database)?;
        Ok(v.map(|v| Bytes::copy_from_slice(&v)))
    }

    fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        if reserved(key) {
            return Ok(false);
        }
        self.db.contains_key(key).map_err(Error::database)
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes)>, Error> {
        // The keys below bodies' records, then those above them.
        let bodies = [BODY_PREFIX];
        let above = [BODY_PREFIX + 1];
        let below = (start, end.min(&bodies[..]));
        let upper = (start.max(&above[..]), end);
        let mut out = Vec::new();
        for (from, to) in [below, upper] {
            if from >= to {
                continue;
            }
            for kv in self.db.range(from..to).take(limit - out.len()) {
                let (k, v) = kv.map_err(Error::database)?;
                out.push((k.to_vec(), Bytes::copy_from_slice(&v)));
            }
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    fn get_body(&self, id: &[u8]) -> Result<Option<Body>, Error> {
        match self.db.get(body_key(id)).map_err(Error::database)? {
            Some(v) => self.read_body(&v).map(Some),
            None => Ok(None),
        }
    }

    fn contains_body(&self, id: &[u8]) -> Result<bool, Error> {
        self.db.contains_key(body_key(id)).map_err(Error::database)
    }

    fn body_ids(&self, start: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, Error> {
        self.db
            .range(body_key(start)..vec![BODY_PREFIX + 1])
            .take(limit)
            .map(|kv| Ok(kv.map_err(Error::database)?.0[1..].to_vec()))
            .collect()
    }

    fn apply(&self, writes: Vec<Write>) -> Result<(), Error> {
        // Checked before anything is written, so that a refused batch changes nothing.
        if let Some(key) = writes.iter().find_map(|w| match w {
            Write::Put { key, .. } | Write::Delete { key } if reserved(key) => Some(key),
            _ => None,
        }) {
            return Err(Error::ReservedKey {
                key: key.iter().map(|b| format!("{b:02x}")).collect(),
            });
        }
        let mut batch = sled::Batch::default();
        // The last write of each body, so that a body put and removed in one batch is
        // neither kept nor leaked.
        let mut bodies = BTreeMap::new();
        for write in writes {
            match write {
                Write::Put { key, value } => batch.insert(key, value.as_ref()),
                Write::Delete { key } => batch.remove(key),
                Write::PutBody { id, data } => {
                    bodies.insert(id, Some((data, false)));
                }
                Write::PutNewBody { id, data } => {
                    bodies.insert(id, Some((data, true)));
                }
                Write::DeleteBody { id } => {
                    bodies.insert(id, None);
                }
            }
        }
        // Bodies are appended to the pack files before the batch that refers to them; the
        // space of the bodies they replace or remove is returned after it.
        let mut freed = Vec::new();
        for (id, data) in bodies {
            let key = body_key(&id);
            let new = matches!(data, Some((_, true)));
            if !new
                && let Some(old) = self.db.get(&key).map_err(Error::database)?
                && let Some((&(TAG_PACK | TAG_PACK_CRC), rest)) = old.split_first()
            {
                freed.push(PackLocation::decode(&rest[..rest.len().min(16)])?);
            }
            let Some((data, _)) = data else {
                batch.remove(key);
                continue;
            };
            let mut record = Vec::with_capacity(21);
            if data.len() <= INLINE_MAX {
                record.push(TAG_INLINE);
                record.extend_from_slice(&data);
            } else {
                record.push(TAG_PACK_CRC);
                record.extend_from_slice(&self.packs.append(&data)?.encode());
                record.extend_from_slice(&crc32fast::hash(&data).to_le_bytes());
            }
            batch.insert(key, record);
        }
        self.db.apply_batch(batch).map_err(Error::database)?;
        for loc in freed {
            self.packs.free(loc);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), Error> {
        self.packs.sync()?;
        self.db.flush().map(|_| ()).map_err(Error::database)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PackLocation {
    segment: u32,
    offset: u64,
    len: u32,
}

impl PackLocation {
    fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&self.segment.to_le_bytes());
        b[4..12].copy_from_slice(&self.offset.to_le_bytes());
        b[12..].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Self, Error> {
        let bad = || Error::CorruptMetadata {
            key: "body".into(),
            reason: format!("pack location of {} bytes, expected 16", b.len()),
        };
        let b: &[u8; 16] = b.try_into().map_err(|_| bad())?;
        let (seg, rest) = b.split_first_chunk::<4>().ok_or_else(bad)?;
        let (off, len) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        let len: [u8; 4] = len.try_into().map_err(|_| bad())?;
        Ok(PackLocation {
            segment: u32::from_le_bytes(*seg),
            offset: u64::from_le_bytes(*off),
            len: u32::from_le_bytes(len),
        })
    }

    fn padded_len(&self) -> u64 {
        u64::from(self.len).div_ceil(PACK_ALIGN) * PACK_ALIGN
    }
}

/// Append-only pack files `packs/NNNNNNNN.pack`, 1 GiB each.
#[derive(Debug)]
struct Packs {
    dir: PathBuf,
    files: RwLock<Vec<Arc<File>>>,
    active: Mutex<Active>,
}

/// The segment being appended to, its end, and where writeback was last started.
#[derive(Debug)]
struct Active {
    segment: u32,
    end: u64,
    written_back: u64,
}

impl Packs {
    fn open(dir: PathBuf) -> Result<Self, Error> {
        std::fs::create_dir_all(&dir).map_err(Error::database)?;
        let mut files = Vec::new();
        let mut end = 0;
        loop {
            let path = dir.join(format!("{:08}.pack", files.len()));
            if !path.exists() {
                break;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(Error::database)?;
            end = file
                .metadata()
                .map_err(Error::database)?
                .len()
                .div_ceil(PACK_ALIGN)
                * PACK_ALIGN;
            files.push(Arc::new(file));
        }
        if files.is_empty() {
            files.push(Arc::new(Self::create(&dir, 0)?));
            end = 0;
        }
        let active = Active {
            segment: files.len() as u32 - 1,
            end,
            written_back: end,
        };
        Ok(Packs {
            dir,
            files: RwLock::new(files),
            active: Mutex::new(active),
        })
    }

    fn create(dir: &Path, segment: u32) -> Result<File, Error> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(format!("{segment:08}.pack")))
            .map_err(Error::database)
    }

    fn file(&self, segment: u32) -> Result<Arc<File>, Error> {
        let files = self.files.read().unwrap_or_else(|p| p.into_inner());
        files
            .get(segment as usize)
            .cloned()
            .ok_or_else(|| Error::CorruptMetadata {
                key: "body".into(),
                reason: format!("pack segment {segment} does not exist"),
            })
    }

    fn append(&self, data: &[u8]) -> Result<PackLocation, Error> {
        let len = u32::try_from(data.len())
            .map_err(|_| Error::database(std::io::Error::other("body over 4 GiB")))?;
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let padded = u64::from(len).div_ceil(PACK_ALIGN) * PACK_ALIGN;
        if active.end > 0 && active.end + padded > SEGMENT_BYTES {
            let segment = active.segment + 1;
            let file = Self::create(&self.dir, segment)?;
            self.file(active.segment)?
                .sync_data()
                .map_err(Error::database)?;
            self.files
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::new(file));
            *active = Active {
                segment,
                end: 0,
                written_back: 0,
            };
        }
        let loc = PackLocation {
            segment: active.segment,
            offset: active.end,
            len,
        };
        let file = self.file(loc.segment)?;
        file.write_all_at(data, loc.offset)
            .map_err(Error::database)?;
        active.end += padded;
        if active.end - active.written_back >= WRITEBACK_BYTES {
            // POSIX_FADV_DONTNEED starts writeback of the dirty range and returns.
            let len = std::num::NonZeroU64::new(active.end - active.written_back);
            let _ = rustix::fs::fadvise(
                &*file,
                active.written_back,
                len,
                rustix::fs::Advice::DontNeed,
            );
            active.written_back = active.end;
        }
        Ok(loc)
    }

    fn read(&self, loc: PackLocation) -> Result<Bytes, Error> {
        let file = self.file(loc.segment)?;
        let len = loc.len as usize;
        // A recycled buffer, read into its spare capacity: no zeroing of memory about to
        // be filled.
        let mut buf = codex_core::buffers::take(len);
        while buf.len() < len {
            let offset = loc.offset + buf.len() as u64;
            match rustix::io::pread(&*file, rustix::buffer::spare_capacity(&mut buf), offset) {
                Ok(0) => {
                    return Err(Error::database(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("pack segment {} ends inside a body", loc.segment),
                    )));
                }
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Error::database(std::io::Error::from(e))),
            }
        }
        Ok(codex_core::buffers::freeze(buf))
    }

    /// Returns a body's space to the file system. Failure only wastes space.
    fn free(&self, loc: PackLocation) {
        use rustix::fs::{FallocateFlags, fallocate};
        let Ok(file) = self.file(loc.segment) else {
            return;
        };
        if let Err(e) = fallocate(
            &*file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            loc.offset,
            loc.padded_len(),
        ) {
            tracing::debug!(error = %e, "cannot punch a hole in a pack file");
        }
    }

    fn sync(&self) -> Result<(), Error> {
        let segment = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .segment;
        self.file(segment)?.sync_data().map_err(Error::database)
    }
}

/// In memory: an ordered map of records and a map of bodies under one lock; nothing
/// survives the process.
#[derive(Debug, Default)]
pub struct MemKv {
    maps: RwLock<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    records: BTreeMap<Vec<u8>, Bytes>,
    bodies: BTreeMap<Vec<u8>, Bytes>,
}

impl MemKv {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        Ok(self.read().records.get(key).cloned())
    }

    fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        Ok(self.read().records.contains_key(key))
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes)>, Error> {
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(self
            .read()
            .records
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn get_body(&self, id: &[u8]) -> Result<Option<Body>, Error> {
        // Nothing can change a body held in memory.
        Ok(self
            .read()
            .bodies
            .get(id)
            .cloned()
            .map(|data| Body { data, intact: true }))
    }

    fn contains_body(&self, id: &[u8]) -> Result<bool, Error> {
        Ok(self.read().bodies.contains_key(id))
    }

    fn body_ids(&self, start: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, Error> {
        Ok(self
            .read()
            .bodies
            .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn apply(&self, writes: Vec<Write>) -> Result<(), Error> {
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        for write in writes {
            match write {
                Write::Put { key, value } => {
                    maps.records.insert(key, value);
                }
                Write::Delete { key } => {
                    maps.records.remove(&key);
                }
                Write::PutBody { id, data } | Write::PutNewBody { id, data } => {
                    maps.bodies.insert(id, data);
                }
                Write::DeleteBody { id } => {
                    maps.bodies.remove(&id);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sled key of body `[n]`'s record.
    fn raw(n: u8) -> Vec<u8> {
        body_key(&[n])
    }

    fn put_body(n: u8, data: Bytes) -> Write {
        Write::PutBody { id: vec![n], data }
    }

    fn open() -> (tempfile::TempDir, SledKv) {
        let dir = tempfile::tempdir().expect("temp dir");
        let kv = SledKv::open(dir.path(), 1 << 20).expect("open");
        (dir, kv)
    }

    #[test]
    fn pack_bodies_carry_a_checksum_that_reads_check() {
        let (_dir, kv) = open();
        let data = Bytes::from((0..70_000u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
        kv.apply(vec![put_body(1, data.clone())]).expect("apply");
        let record = kv.db.get(raw(1)).expect("get").expect("record");
        assert_eq!(record[0], TAG_PACK_CRC);
        assert_eq!(record.len(), 21);
        let body = kv.get_body(&[1]).expect("read").expect("body");
        assert!(body.intact);
        assert_eq!(body.data, data);

        // A flipped bit in the pack file: the checksum fails, the bytes are not vouched for.
        let seg = kv.packs.file(0).expect("segment");
        let mut byte = [0u8; 1];
        seg.read_exact_at(&mut byte, 5000).expect("read byte");
        seg.write_all_at(&[byte[0] ^ 1], 5000).expect("write byte");
        let body = kv.get_body(&[1]).expect("read").expect("body");
        assert!(!body.intact);
        assert_ne!(body.data, data);
        seg.write_all_at(&byte, 5000).expect("restore byte");

        // A damaged checksum over good bytes: not vouched for either (the store then hashes
        // the bytes, finds them good and returns the block).
        let mut bad = record.to_vec();
        bad[20] ^= 0xff;
        kv.db.insert(raw(1), bad).expect("insert");
        let body = kv.get_body(&[1]).expect("read").expect("body");
        assert!(!body.intact);
        assert_eq!(body.data, data);
    }

    #[test]
    fn records_without_a_checksum_and_inline_bodies_read_unchecked() {
        let (_dir, kv) = open();
        let data = Bytes::from(vec![9u8; 10_000]);
        kv.apply(vec![put_body(1, data.clone())]).expect("apply");
        // A record as stores wrote it before checksums: the tag and the location only.
        let record = kv.db.get(raw(1)).expect("get").expect("record");
        let mut old = vec![TAG_PACK];
        old.extend_from_slice(&record[1..17]);
        kv.db.insert(raw(2), old).expect("insert");
        let body = kv.get_body(&[2]).expect("read").expect("body");
        assert!(!body.intact);
        assert_eq!(body.data, data);

        kv.apply(vec![put_body(3, Bytes::from_static(b"small"))])
            .expect("apply");
        let body = kv.get_body(&[3]).expect("read").expect("body");
        assert!(!body.intact);
        assert_eq!(&body.data[..], b"small");
        assert!(kv.get_body(&[4]).expect("read").is_none());

        // Removing the old-style record frees its body's space like a new one.
        kv.apply(vec![Write::DeleteBody { id: vec![2] }])
            .expect("remove");
        assert!(kv.get_body(&[2]).expect("read").is_none());
    }

    #[test]
    fn memory_bodies_are_intact() {
        let kv = MemKv::default();
        kv.apply(vec![put_body(1, Bytes::from_static(b"abc"))])
            .expect("apply");
        let body = kv.get_body(&[1]).expect("read").expect("body");
        assert!(body.intact);
        assert_eq!(&body.data[..], b"abc");
    }

    /// Records and bodies are separate namespaces: the same bytes name both, ranges list
    /// records only, and `body_ids` lists bodies only.
    fn namespaces_are_separate(kv: &impl Kv) {
        let big = Bytes::from(vec![5u8; 3 * INLINE_MAX]);
        kv.apply(vec![
            Write::Put {
                key: b"A1".to_vec(),
                value: Bytes::from_static(b"a"),
            },
            Write::Put {
                key: b"C1".to_vec(),
                value: Bytes::from_static(b"c"),
            },
            Write::PutBody {
                id: b"C1".to_vec(),
                data: big.clone(),
            },
            Write::PutBody {
                id: b"A1".to_vec(),
                data: Bytes::from_static(b"inline"),
            },
        ])
        .expect("apply");
        assert_eq!(kv.get(b"C1").expect("get"), Some(Bytes::from_static(b"c")));
        assert_eq!(kv.get_body(b"C1").expect("get").expect("body").data, big);
        let all: Vec<Vec<u8>> = kv
            .range(&[], &[0xff], usize::MAX)
            .expect("range")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(all, [b"A1".to_vec(), b"C1".to_vec()]);
        assert_eq!(kv.range(&[], &[0xff], 1).expect("range").len(), 1);
        assert_eq!(
            kv.body_ids(&[], usize::MAX).expect("ids"),
            [b"A1".to_vec(), b"C1".to_vec()]
        );
        assert_eq!(
            kv.body_ids(b"B", usize::MAX).expect("ids"),
            [b"C1".to_vec()]
        );

        // Removing the record leaves the body of the same name, and the other way round.
        kv.apply(vec![
            Write::Delete {
                key: b"C1".to_vec(),
            },
            Write::DeleteBody { id: b"A1".to_vec() },
        ])
        .expect("apply");
        assert!(!kv.contains(b"C1").expect("contains"));
        assert!(kv.contains_body(b"C1").expect("contains"));
        assert!(kv.contains(b"A1").expect("contains"));
        assert!(!kv.contains_body(b"A1").expect("contains"));

        // A body put and removed in one batch is gone; the last write wins.
        kv.apply(vec![
            put_body(7, big.clone()),
            Write::DeleteBody { id: vec![7] },
            put_body(8, Bytes::from_static(b"first")),
            put_body(8, Bytes::from_static(b"second")),
        ])
        .expect("apply");
        assert!(!kv.contains_body(&[7]).expect("contains"));
        let body = kv.get_body(&[8]).expect("get").expect("body");
        assert_eq!(&body.data[..], b"second");
    }

    #[test]
    fn records_and_bodies_are_separate_namespaces() {
        namespaces_are_separate(&MemKv::default());
        let (_dir, kv) = open();
        namespaces_are_separate(&kv);
    }

    /// Batches that each write a body and the record that refers to it (and later remove
    /// both) are seen whole by a concurrent reader: never a record without its body, nor a
    /// body without its record.
    fn body_and_record_are_atomic(kv: &impl Kv) {
        const N: u8 = 200;
        let body = Bytes::from(vec![1u8; INLINE_MAX + 1]);
        fn record(i: u8) -> Vec<u8> {
            vec![b'M', i]
        }
        // Runs `writes` for every `i` on one thread while another looks at body, record
        // and body again: `seen(body, record, body)` must hold.
        fn watch(
            kv: &impl Kv,
            writes: impl Fn(u8) -> Vec<Write> + Sync,
            seen: fn(bool, bool, bool) -> bool,
        ) {
            let done = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    for i in 0..N {
                        kv.apply(writes(i)).expect("apply");
                    }
                    done.store(true, std::sync::atomic::Ordering::Release);
                });
                let mut rounds = 0;
                while !done.load(std::sync::atomic::Ordering::Acquire) || rounds < 10 {
                    for i in 0..N {
                        let a = kv.contains_body(&[i]).expect("body");
                        let b = kv.contains(&record(i)).expect("record");
                        let c = kv.contains_body(&[i]).expect("body");
                        assert!(seen(a, b, c), "body {i} and its record seen apart");
                    }
                    rounds += 1;
                }
            });
        }
        // While both only appear, a body seen implies its record seen after, and a record
        // seen implies its body seen after.
        watch(
            kv,
            |i| {
                vec![
                    put_body(i, body.clone()),
                    Write::Put {
                        key: record(i),
                        value: Bytes::new(),
                    },
                ]
            },
            |a, b, c| (!a || b) && (!b || c),
        );
        // While both only disappear, the same with absence.
        watch(
            kv,
            |i| {
                vec![
                    Write::Delete { key: record(i) },
                    Write::DeleteBody { id: vec![i] },
                ]
            },
            |a, b, c| (a || !b) && (b || !c),
        );
        assert!(kv.body_ids(&[], usize::MAX).expect("ids").is_empty());
        assert!(
            kv.range(&[], &[0xff], usize::MAX)
                .expect("range")
                .is_empty()
        );
    }

    #[test]
    fn a_body_and_its_record_change_together() {
        body_and_record_are_atomic(&MemKv::default());
        let (_dir, kv) = open();
        body_and_record_are_atomic(&kv);
    }

    #[test]
    fn a_held_database_is_waited_for_then_refused_as_in_use() {
        let (dir, kv) = open();
        kv.apply(vec![put_body(1, Bytes::from_static(b"kept"))])
            .expect("apply");
        kv.flush().expect("flush");
        // Held all along: refused after the wait, with the database's path.
        let start = Instant::now();
        match SledKv::open(dir.path(), 1 << 20) {
            Err(Error::InUse { path }) => assert_eq!(path, dir.path().join("meta")),
            other => panic!("expected InUse, got {other:?}"),
        }
        assert!(start.elapsed() >= SledKv::LOCK_WAIT);
        // Let go while the second open waits: it opens, and sees what was written.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(kv);
        });
        let kv = SledKv::open(dir.path(), 1 << 20).expect("open once released");
        release.join().expect("release");
        let body = kv.get_body(&[1]).expect("get").expect("body");
        assert_eq!(body.data, Bytes::from_static(b"kept"));
    }

    #[test]
    fn sled_refuses_reserved_keys_without_writing_anything() {
        let (dir, kv) = open();
        let data = Bytes::from(vec![3u8; 2 * INLINE_MAX]);
        let batch = vec![
            put_body(1, data.clone()),
            Write::Put {
                key: b"M1".to_vec(),
                value: Bytes::new(),
            },
            Write::Put {
                key: raw(1),
                value: Bytes::new(),
            },
        ];
        assert!(matches!(kv.apply(batch), Err(Error::ReservedKey { .. })));
        assert!(!kv.contains_body(&[1]).expect("contains"));
        assert!(!kv.contains(b"M1").expect("contains"));
        // Bodies' records are not metadata.
        kv.apply(vec![put_body(1, data.clone())]).expect("apply");
        assert!(!kv.contains(&raw(1)).expect("contains"));
        assert_eq!(kv.get(&raw(1)).expect("get"), None);

        // A body and its record survive a reopen together, and go together.
        let record = || Write::Put {
            key: b"M1".to_vec(),
            value: Bytes::from_static(b"meta"),
        };
        kv.apply(vec![put_body(2, data.clone()), record()])
            .expect("apply");
        kv.flush().expect("flush");
        drop(kv);
        let kv = SledKv::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(kv.get_body(&[2]).expect("get").expect("body").data, data);
        assert!(kv.contains(b"M1").expect("contains"));
        kv.apply(vec![
            Write::DeleteBody { id: vec![2] },
            Write::Delete {
                key: b"M1".to_vec(),
            },
        ])
        .expect("apply");
        kv.flush().expect("flush");
        drop(kv);
        let kv = SledKv::open(dir.path(), 1 << 20).expect("reopen");
        assert!(!kv.contains_body(&[2]).expect("contains"));
        assert!(!kv.contains(b"M1").expect("contains"));
        assert!(kv.contains_body(&[1]).expect("contains"));
    }
}
