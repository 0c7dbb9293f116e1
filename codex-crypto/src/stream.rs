//! Encrypting and decrypting byte streams, a batch of blocks at a time on a blocking
//! thread; memory stays at a few batches whatever the dataset's size.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use codex_core::Manifest;
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};

use crate::cipher::{Cipher, MIN_BLOCK_SIZE, Metadata, TAG_LEN};
use crate::error::{Error, Result};

/// Blocks sealed or opened per blocking task: 1 MiB of 64 KiB blocks.
const BATCH: usize = 16;

fn source_error<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> Error {
    Error::Source(e.into())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))
}

/// Batches sealed at once: one is gathered while the one before is sealed.
const SEALING_AHEAD: usize = 2;

/// The plaintext gathered for sealing, laid out as the ciphertext will be: each
/// segment followed by room for its tag, so blocks are sealed where they lie and the
/// ciphertext is never copied.
struct Sealing<St> {
    source: St,
    ended: bool,
    finished: bool,
    buf: BytesMut,
    /// Bytes of the unfinished segment at `buf`'s end.
    partial: usize,
    next_index: u64,
}

impl<St> Sealing<St> {
    fn push(&mut self, mut data: &[u8], segment: usize) {
        while !data.is_empty() {
            let take = (segment - self.partial).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            self.partial += take;
            if self.partial == segment {
                self.buf.put_bytes(0, TAG_LEN);
                self.partial = 0;
            }
        }
    }
}

/// Encrypts a byte stream into the ciphertext of a dataset with blocks of
/// `block_size` bytes: the metadata and the bytes are cut into segments of
/// `block_size - 16` bytes, each sealed into exactly one block (the last one shorter).
/// Feed the result to `codex_store::dataset::add_stream` with the same block size and
/// the encryption parameters in its options. An empty source gives a dataset too (its
/// one block holds the metadata).
///
/// Batches of 16 blocks are sealed on blocking threads, the next one gathered while one
/// is sealed; each item of the stream is a batch of whole blocks (the last item ends
/// with the shorter last block).
///
/// # Errors
/// [`Error::BlockSize`] below [`MIN_BLOCK_SIZE`], [`Error::NameTooLong`]; the stream
/// yields [`Error::Source`] when the source fails.
pub fn encrypt<St, E>(
    source: St,
    cipher: Arc<Cipher>,
    metadata: &Metadata,
    block_size: usize,
) -> Result<BoxStream<'static, Result<Bytes>>>
where
    St: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if block_size < MIN_BLOCK_SIZE {
        return Err(Error::BlockSize(block_size));
    }
    let segment = block_size - TAG_LEN;
    let batch_bytes = BATCH * block_size;
    let mut state = Sealing {
        source,
        ended: false,
        finished: false,
        buf: BytesMut::with_capacity(batch_bytes + block_size),
        partial: 0,
        next_index: 0,
    };
    state.push(&metadata.encode()?, segment);
    // Gathering: batches of whole blocks, with the index of their first block and
    // whether the batch ends the dataset.
    let batches = stream::try_unfold(state, move |mut s| async move {
        if s.finished {
            return Ok(None);
        }
        // Gather more than a batch, so that the batch's last block is known not to be
        // the dataset's last, or gather to the end.
        while !s.ended && s.buf.len() <= batch_bytes {
            match s.source.next().await {
                Some(chunk) => s.push(&chunk.map_err(source_error)?, segment),
                None => s.ended = true,
            }
        }
        let (batch, last) = if s.ended {
            if s.partial > 0 {
                s.buf.put_bytes(0, TAG_LEN);
            }
            (s.buf.split(), true)
        } else {
            let rest = BytesMut::with_capacity(batch_bytes + block_size);
            let batch = s.buf.split_to(batch_bytes);
            let tail = std::mem::replace(&mut s.buf, rest);
            s.buf.extend_from_slice(&tail);
            (batch, false)
        };
        let first = s.next_index;
        s.next_index += batch.len().div_ceil(block_size) as u64;
        s.finished = last;
        Ok(Some(((first, last, batch), s)))
    });
    let sealed = batches
        .map_ok(move |(first, last, mut batch)| {
            let cipher = Arc::clone(&cipher);
            blocking(move || {
                let count = batch.len().div_ceil(block_size);
                for (i, block) in batch.chunks_mut(block_size).enumerate() {
                    let is_last = last && i + 1 == count;
                    cipher.seal_in_place(first + i as u64, is_last, block);
                }
                batch.freeze()
            })
        })
        .try_buffered(SEALING_AHEAD);
    Ok(sealed.boxed())
}

/// An encrypted dataset opened for reading.
pub struct Decrypted {
    /// The file name and MIME type kept in the encrypted metadata.
    pub metadata: Metadata,
    /// The plaintext's size in bytes.
    pub size: u64,
    /// The plaintext. A block that fails authentication ends it with its error, before
    /// any of that block's bytes.
    pub stream: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted")
            .field("metadata", &self.metadata)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

struct Opening<St> {
    source: St,
    buf: BytesMut,
    next_index: u64,
}

/// The sizes of an encrypted dataset: block size, ciphertext size and block count.
fn layout(manifest: &Manifest) -> Result<(usize, u64, u64)> {
    let block_size = manifest.block_size as usize;
    let size = manifest.original_size();
    let count = size.div_ceil(block_size as u64);
    let last = size - (count.saturating_sub(1)) * block_size as u64;
    if block_size < MIN_BLOCK_SIZE || count == 0 {
        return Err(Error::Format(format!(
            "{size} bytes in blocks of {block_size} cannot be an encrypted dataset"
        )));
    }
    if last < TAG_LEN as u64 {
        return Err(Error::Format(format!(
            "its last block has {last} bytes, less than a tag"
        )));
    }
    Ok((block_size, size, count))
}

/// Reads the next blocks' ciphertext (`block_size` bytes each, fewer for the last), at
/// most `max` of them; returns the first one's index and the bytes.
async fn gather<St, E>(
    s: &mut Opening<St>,
    block_size: usize,
    size: u64,
    count: u64,
    max: u64,
) -> Result<(u64, Bytes)>
where
    St: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let first = s.next_index;
    let n = (count - first).min(max);
    let end = ((first + n).saturating_mul(block_size as u64)).min(size);
    let want = (end - first * block_size as u64) as usize;
    while s.buf.len() < want {
        match s.source.next().await {
            Some(chunk) => s.buf.extend_from_slice(&chunk.map_err(source_error)?),
            None => {
                return Err(Error::Truncated {
                    got: first + (s.buf.len() / block_size) as u64,
                });
            }
        }
    }
    let batch = s.buf.split_to(want).freeze();
    if first + n == count && !s.buf.is_empty() {
        return Err(Error::Format(
            "more bytes than the manifest's dataset size".into(),
        ));
    }
    s.next_index += n;
    Ok((first, batch))
}

fn open_batch(
    cipher: &Cipher,
    first: u64,
    count: u64,
    block_size: usize,
    batch: &[u8],
) -> Result<Bytes> {
    let mut out = BytesMut::with_capacity(batch.len());
    for (i, block) in batch.chunks(block_size).enumerate() {
        cipher.open_into(first + i as u64, count, block, &mut out)?;
    }
    Ok(out.freeze())
}

/// Decrypts the ciphertext of an encrypted dataset (the bytes a dataset reader yields,
/// in order) described by `manifest`. The first block is opened before this returns,
/// so a wrong key or a damaged first block is an error here, before any plaintext.
///
/// # Errors
/// [`Error::NotEncrypted`], [`Error::Format`] for sizes that no encrypted dataset has,
/// and the first block's errors; the stream yields each later block's error
/// ([`Error::Tampered`], [`Error::Misplaced`], [`Error::Truncated`], [`Error::Source`]).
pub async fn decrypt<St, E>(
    source: St,
    cipher: Arc<Cipher>,
    manifest: &Manifest,
) -> Result<Decrypted>
where
    St: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if manifest.encryption.is_none() {
        return Err(Error::NotEncrypted);
    }
    let (block_size, size, count) = layout(manifest)?;
    let mut state = Opening {
        source,
        buf: BytesMut::new(),
        next_index: 0,
    };
    // The first block alone: the metadata, and an early answer on a bad key or block.
    let (_, block0) = gather(&mut state, block_size, size, count, 1).await?;
    let c = Arc::clone(&cipher);
    let mut plain0 = blocking(move || open_batch(&c, 0, count, block_size, &block0)).await??;
    let (metadata, header) = Metadata::decode(&plain0)?;
    plain0.advance(header);
    let plaintext_total = size - count * TAG_LEN as u64;
    let file_size = plaintext_total - header as u64;

    let rest = stream::try_unfold(state, move |mut s| {
        let cipher = Arc::clone(&cipher);
        async move {
            if s.next_index >= count {
                return Ok(None);
            }
            let (first, batch) = gather(&mut s, block_size, size, count, BATCH as u64).await?;
            let plain =
                blocking(move || open_batch(&cipher, first, count, block_size, &batch)).await??;
            Ok(Some((plain, s)))
        }
    });
    let head = (!plain0.is_empty()).then_some(Ok(plain0));
    Ok(Decrypted {
        metadata,
        size: file_size,
        stream: stream::iter(head).chain(rest).boxed(),
    })
}
