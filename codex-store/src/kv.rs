//! The two key-value backends under the repository store: sled on disk, a B-tree in memory.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use crate::error::Error;

/// One write of a batch: `Some(value)` puts, `None` removes.
pub type Write = (Vec<u8>, Option<Bytes>);

/// Keys that start with this byte hold block bodies: large values that a backend may keep
/// outside its index. [`Kv::range`] over them returns the backend's own records.
pub const BODY_PREFIX: u8 = b'B';

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

/// An ordered key-value map with atomic batches: what [`crate::Repo`] needs from its
/// backend. Implemented by [`SledKv`] and [`MemKv`].
pub trait Kv: Send + Sync + fmt::Debug + 'static {
    /// Reads one key.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error>;
    /// Reads a block body (a key that starts with [`BODY_PREFIX`]).
    fn get_body(&self, key: &[u8]) -> Result<Option<Body>, Error>;
    /// Whether a key exists.
    fn contains(&self, key: &[u8]) -> Result<bool, Error>;
    /// Up to `limit` entries with keys in `[start, end)`, in key order.
    fn range(&self, start: &[u8], end: &[u8], limit: usize)
    -> Result<Vec<(Vec<u8>, Bytes)>, Error>;
    /// Applies all writes atomically: after a crash either all of them are visible or none.
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
#[derive(Debug)]
pub struct SledKv {
    db: sled::Db,
    packs: Packs,
}

/// Bodies up to this size stay inline in sled.
pub const INLINE_MAX: usize = 4096;
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
    /// Opens (or creates) the database in `dir` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, Error> {
        let db = sled::Config::new()
            .path(dir.join("meta"))
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(200))
            .open()
            .map_err(Error::database)?;
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

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        let Some(v) = self.db.get(key).map_err(Error::database)? else {
            return Ok(None);
        };
        if key.first() == Some(&BODY_PREFIX) {
            return self.read_body(&v).map(|b| Some(b.data));
        }
        Ok(Some(Bytes::copy_from_slice(&v)))
    }

    fn get_body(&self, key: &[u8]) -> Result<Option<Body>, Error> {
        match self.db.get(key).map_err(Error::database)? {
            Some(v) => self.read_body(&v).map(Some),
            None => Ok(None),
        }
    }

    fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        self.db.contains_key(key).map_err(Error::database)
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes)>, Error> {
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
        let mut freed = Vec::new();
        for (k, v) in writes {
            if k.first() == Some(&BODY_PREFIX) {
                // The store writes a body only for a new block; the old location matters
                // only when a body is removed.
                if v.is_none()
                    && let Some(old) = self.db.get(&k).map_err(Error::database)?
                    && let Some((&(TAG_PACK | TAG_PACK_CRC), rest)) = old.split_first()
                {
                    freed.push(PackLocation::decode(&rest[..rest.len().min(16)])?);
                }
                if let Some(data) = v {
                    let mut record = Vec::with_capacity(21);
                    if data.len() <= INLINE_MAX {
                        record.push(TAG_INLINE);
                        record.extend_from_slice(&data);
                    } else {
                        record.push(TAG_PACK_CRC);
                        record.extend_from_slice(&self.packs.append(&data)?.encode());
                        record.extend_from_slice(&crc32fast::hash(&data).to_le_bytes());
                    }
                    batch.insert(k, record);
                    continue;
                }
                batch.remove(k);
                continue;
            }
            match v {
                Some(v) => batch.insert(k, v.as_ref()),
                None => batch.remove(k),
            }
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

    fn get_body(&self, key: &[u8]) -> Result<Option<Body>, Error> {
        // Nothing can change a body held in memory.
        Ok(self
            .read()
            .get(key)
            .cloned()
            .map(|data| Body { data, intact: true }))
    }

    fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        Ok(self.read().contains_key(key))
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes)>, Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body_key(n: u8) -> Vec<u8> {
        vec![BODY_PREFIX, n]
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
        kv.apply(vec![(body_key(1), Some(data.clone()))])
            .expect("apply");
        let record = kv.db.get(body_key(1)).expect("get").expect("record");
        assert_eq!(record[0], TAG_PACK_CRC);
        assert_eq!(record.len(), 21);
        let body = kv.get_body(&body_key(1)).expect("read").expect("body");
        assert!(body.intact);
        assert_eq!(body.data, data);

        // A flipped bit in the pack file: the checksum fails, the bytes are not vouched for.
        let seg = kv.packs.file(0).expect("segment");
        let mut byte = [0u8; 1];
        seg.read_exact_at(&mut byte, 5000).expect("read byte");
        seg.write_all_at(&[byte[0] ^ 1], 5000).expect("write byte");
        let body = kv.get_body(&body_key(1)).expect("read").expect("body");
        assert!(!body.intact);
        assert_ne!(body.data, data);
        seg.write_all_at(&byte, 5000).expect("restore byte");

        // A damaged checksum over good bytes: not vouched for either (the store then hashes
        // the bytes, finds them good and returns the block).
        let mut bad = record.to_vec();
        bad[20] ^= 0xff;
        kv.db.insert(body_key(1), bad).expect("insert");
        let body = kv.get_body(&body_key(1)).expect("read").expect("body");
        assert!(!body.intact);
        assert_eq!(body.data, data);
    }

    #[test]
    fn records_without_a_checksum_and_inline_bodies_read_unchecked() {
        let (_dir, kv) = open();
        let data = Bytes::from(vec![9u8; 10_000]);
        kv.apply(vec![(body_key(1), Some(data.clone()))])
            .expect("apply");
        // A record as stores wrote it before checksums: the tag and the location only.
        let record = kv.db.get(body_key(1)).expect("get").expect("record");
        let mut old = vec![TAG_PACK];
        old.extend_from_slice(&record[1..17]);
        kv.db.insert(body_key(2), old).expect("insert");
        let body = kv.get_body(&body_key(2)).expect("read").expect("body");
        assert!(!body.intact);
        assert_eq!(body.data, data);
        assert_eq!(kv.get(&body_key(2)).expect("get"), Some(data));

        kv.apply(vec![(body_key(3), Some(Bytes::from_static(b"small")))])
            .expect("apply");
        let body = kv.get_body(&body_key(3)).expect("read").expect("body");
        assert!(!body.intact);
        assert_eq!(&body.data[..], b"small");
        assert!(kv.get_body(&body_key(4)).expect("read").is_none());

        // Removing the old-style record frees its body's space like a new one.
        kv.apply(vec![(body_key(2), None)]).expect("remove");
        assert!(kv.get_body(&body_key(2)).expect("read").is_none());
    }

    #[test]
    fn memory_bodies_are_intact() {
        let kv = MemKv::default();
        kv.apply(vec![(body_key(1), Some(Bytes::from_static(b"abc")))])
            .expect("apply");
        let body = kv.get_body(&body_key(1)).expect("read").expect("body");
        assert!(body.intact);
        assert_eq!(&body.data[..], b"abc");
    }
}
