//! A byte stream in, a dataset out, over any store: [`add_stream`] and [`DatasetReader`].
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use codex_store::dataset::{AddOptions, DatasetReader, add_stream};
//! use codex_store::{MemoryStore, StoreConfig};
//! use futures::TryStreamExt;
//!
//! let store = Arc::new(MemoryStore::new(StoreConfig::default()));
//! let bytes = bytes::Bytes::from(vec![7u8; 200_000]);
//! let source = futures::stream::iter([Ok::<_, std::io::Error>(bytes.clone())]);
//! let added = add_stream(&*store, source, AddOptions::default()).await.unwrap();
//! assert_eq!(added.manifest.blocks_count(), 4); // 64 KiB blocks
//!
//! let reader = DatasetReader::open(store, added.cid, None).await.unwrap();
//! let back: Vec<bytes::Bytes> = reader.try_collect().await.unwrap();
//! assert_eq!(back.concat(), bytes);
//! # });
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use codex_core::{
    Block, BlockRead, ChunkBuffer, Cid, DEFAULT_BLOCK_SIZE, Error as CoreError, LeafMeta, Manifest,
    MerkleTree, RecoverBlock, Sessions, WriteSession, codec,
};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::error::Error;

/// Blocks hashed and stored together: 2 MiB of 64 KiB blocks.
const BATCH_BLOCKS: usize = 32;
/// Leaves (with proofs) written per store call when committing a dataset.
const LEAF_BATCH: u64 = 4096;
/// Blocks read per store call while streaming a dataset out.
const READ_CHUNK: usize = 16;
/// Read calls in flight while streaming a dataset out.
const READ_AHEAD_CHUNKS: usize = 3;

/// What a dataset carries besides its bytes.
#[derive(Clone, Debug, Default)]
pub struct AddOptions {
    /// Kept in the manifest (Codex: from `Content-Disposition: filename=`).
    pub filename: Option<String>,
    /// Kept in the manifest (Codex: from `Content-Type`).
    pub mimetype: Option<String>,
    /// Block size; 64 KiB (Codex's) when `None`.
    pub block_size: Option<usize>,
    /// Kept in the manifest: the public parameters of a stream that is ciphertext
    /// (made by `codex_crypto::encrypt`); `None` for plain data.
    pub encryption: Option<codex_core::Encryption>,
}

/// A dataset that [`add_stream`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    /// The manifest's CID: the dataset's CID.
    pub cid: Cid,
    /// The manifest.
    pub manifest: Manifest,
}

/// Stores a stream of bytes as a dataset: blocks of 64 KiB (the last one zero-padded),
/// the SHA-256 tree with every leaf's proof, and the manifest, written last, all in one
/// write session. Returns the manifest's CID and the manifest.
///
/// Memory is bounded by a few batches of blocks whatever the stream's length; hashing
/// runs on two blocking threads while the next bytes arrive and the
/// previous batch is written.
///
/// # Errors
/// [`Error::EmptyUpload`] for zero bytes, [`Error::Source`] when the stream fails,
/// [`Error::InvalidBlockSize`], and the store's errors
/// ([`codex_core::Error::QuotaExceeded`] when it is full). On any error nothing of the
/// dataset stays in the store.
///
/// # Cancel safety
/// Dropping the future abandons the dataset: its session is undone (see
/// [`WriteSession`]).
pub async fn add_stream<S, St, E>(
    store: &S,
    source: St,
    options: AddOptions,
) -> Result<Added, Error>
where
    S: Sessions + ?Sized,
    St: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let block_size = options.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    if block_size == 0 || block_size > u32::MAX as usize {
        return Err(Error::InvalidBlockSize(block_size));
    }
    let session = WriteSession::begin(store).await?;
    let (total, cids) = write_blocks(&session, source, block_size).await?;
    if total == 0 {
        return Err(Error::EmptyUpload);
    }
    let tree = Arc::new(
        tokio::task::spawn_blocking(move || MerkleTree::from_cids(&cids))
            .await
            .map_err(|e| Error::Task(e.to_string()))??,
    );
    let root = tree.root_cid();
    let n = tree.leaves_count();
    for start in (0..n).step_by(LEAF_BATCH as usize) {
        let end = (start + LEAF_BATCH).min(n);
        let t = Arc::clone(&tree);
        let leaves = tokio::task::spawn_blocking(move || {
            (start..end)
                .map(|i| {
                    Ok(LeafMeta {
                        index: i,
                        block_cid: Cid::from_sha256(codec::BLOCK, t.leaves()[i as usize]),
                        proof: t.proof(i)?,
                    })
                })
                .collect::<codex_core::Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        session.put_leaves(&root, leaves).await?;
    }
    let mut manifest = Manifest::new(root, block_size as u32, total);
    manifest.filename = options.filename;
    manifest.mimetype = options.mimetype;
    manifest.encryption = options.encryption;
    let block = Block::manifest(manifest.encode());
    let cid = *block.cid();
    session.commit(Some(block)).await?;
    Ok(Added { cid, manifest })
}

/// Cuts, hashes and stores the stream's blocks in `session`; returns the byte count and
/// the blocks' CIDs in order.
async fn write_blocks<S, St, E>(
    session: &WriteSession<'_, S>,
    mut source: St,
    block_size: usize,
) -> Result<(u64, Vec<Cid>), Error>
where
    S: Sessions + ?Sized,
    St: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (tx, rx) = mpsc::channel::<Vec<Bytes>>(4);
    let produce = async move {
        let mut chunker = ChunkBuffer::new(block_size);
        let mut pending = Vec::with_capacity(BATCH_BLOCKS + 1);
        while let Some(piece) = source.next().await {
            let piece = piece.map_err(|e| Error::Source(e.into()))?;
            chunker.push_bytes(piece, &mut pending);
            if pending.len() >= BATCH_BLOCKS && tx.send(std::mem::take(&mut pending)).await.is_err()
            {
                break;
            }
        }
        pending.extend(chunker.finish());
        if !pending.is_empty() {
            let _ = tx.send(pending).await;
        }
        Ok::<_, Error>(chunker.total())
    };
    // Hashing (two blocking threads) and storing run side by side: while one batch is
    // written the next ones are hashed.
    let (wtx, mut wrx) = mpsc::channel::<Vec<Block>>(2);
    let hash = async move {
        let mut cids = Vec::new();
        let mut hashed = receiver_stream(rx)
            .map(|raw| tokio::task::spawn_blocking(move || hash_blocks(raw)))
            .buffered(2);
        while let Some(blocks) = hashed.next().await {
            let blocks = blocks.map_err(|e| Error::Task(e.to_string()))?;
            cids.extend(blocks.iter().map(|b| *b.cid()));
            if wtx.send(blocks).await.is_err() {
                break;
            }
        }
        Ok::<_, Error>(cids)
    };
    let write = async {
        while let Some(blocks) = wrx.recv().await {
            session.put_blocks(blocks).await?;
        }
        Ok::<_, Error>(())
    };
    let (total, cids, ()) = futures::try_join!(produce, hash, write)?;
    Ok((total, cids))
}

/// Hashes a batch on the calling thread: two batches are hashed at once on two blocking
/// threads (`buffered(2)`), one wake-up each. Splitting a batch over rayon's threads
/// woke a thread per few blocks, and those wake-ups cost more CPU than the hashing saved
/// on two cores (a fifth of the upload's samples in the scheduler).
fn hash_blocks(raw: Vec<Bytes>) -> Vec<Block> {
    raw.into_iter().map(Block::new).collect()
}

fn receiver_stream<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A stored dataset (or a single block) opened for reading: a [`Stream`] of its bytes in
/// order, also readable as a [`tokio::io::AsyncRead`] with
/// [`DatasetReader::into_async_read`].
///
/// Blocks are read 16 at a time with 48 read ahead, each checked against its CID. For a
/// protected dataset the original file is streamed (its data blocks); a block the store
/// lacks or holds damaged is rebuilt from its column by the [`RecoverBlock`] given to
/// [`DatasetReader::open`], when there is one.
pub struct DatasetReader {
    manifest: Option<Manifest>,
    size: u64,
    stream: BoxStream<'static, Result<Bytes, Error>>,
}

impl std::fmt::Debug for DatasetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetReader")
            .field("manifest", &self.manifest)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl DatasetReader {
    /// Opens the dataset `cid` (a manifest CID) or the single block `cid` in `store`.
    ///
    /// # Errors
    /// [`codex_core::Error::NotFound`] when the CID is not stored, a decoding error for
    /// a damaged manifest. Errors while streaming (a block missing and not recoverable,
    /// a corrupt block) end the stream with that error.
    pub async fn open<S>(
        store: S,
        cid: Cid,
        recovery: Option<Arc<dyn RecoverBlock>>,
    ) -> Result<Self, Error>
    where
        S: BlockRead + Clone + 'static,
    {
        let first = store.get_block(&cid).await?;
        if cid.codec() != codec::MANIFEST {
            let size = first.len() as u64;
            return Ok(DatasetReader {
                manifest: None,
                size,
                stream: stream::once(async move { Ok(first.into_data()) }).boxed(),
            });
        }
        let manifest = Manifest::decode(first.data())?;
        let size = manifest.original_size();
        let shared = Arc::new(manifest.clone());
        let blocks = manifest.original_blocks_count();
        let chunks = (0..blocks).step_by(READ_CHUNK).map(move |start| {
            let range = start..(start + READ_CHUNK as u64).min(blocks);
            read_chunk(store.clone(), Arc::clone(&shared), recovery.clone(), range)
        });
        let stream = stream::iter(chunks)
            .buffered(READ_AHEAD_CHUNKS)
            .map_ok(|blocks| stream::iter(blocks.into_iter().map(Ok)))
            .try_flatten()
            .boxed();
        Ok(DatasetReader {
            manifest: Some(manifest),
            size,
            stream,
        })
    }

    /// The manifest, when the CID was a manifest's (else a single block is read).
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// The number of bytes the reader yields: the file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes as a [`tokio::io::AsyncRead`] (errors become `std::io::Error`s
    /// carrying this crate's [`Error`]).
    pub fn into_async_read(self) -> impl tokio::io::AsyncRead + Send + Unpin {
        tokio_util::io::StreamReader::new(self.map_err(std::io::Error::other))
    }
}

impl Stream for DatasetReader {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.poll_next_unpin(cx)
    }
}

/// Reads data blocks `range` of a dataset, cut to the file's size.
async fn read_chunk<S: BlockRead>(
    store: S,
    manifest: Arc<Manifest>,
    recovery: Option<Arc<dyn RecoverBlock>>,
    range: std::ops::Range<u64>,
) -> Result<Vec<Bytes>, Error> {
    let size = manifest.original_size();
    let block_size = u64::from(manifest.block_size);
    let indices: Vec<u64> = range.collect();
    let blocks = store
        .get_leaf_blocks(&manifest.tree_cid, indices.clone())
        .await?;
    let mut out = Vec::with_capacity(indices.len());
    for (i, block) in indices.into_iter().zip(blocks) {
        let block = match block {
            Ok(b) => b,
            Err(e @ (CoreError::NotFound(_) | CoreError::Corrupt { .. }))
                if manifest.is_protected() =>
            {
                missing_data_block(&store, &manifest, recovery.as_deref(), i, e).await?
            }
            Err(e) => return Err(e.into()),
        };
        let mut data = block.into_data();
        let wanted = (size - i * block_size).min(block_size) as usize;
        if data.len() < wanted {
            return Err(CoreError::InvalidManifest(format!(
                "block {i} has {} bytes, {wanted} expected",
                data.len()
            ))
            .into());
        }
        data.truncate(wanted);
        out.push(data);
    }
    Ok(out)
}

/// A data block of a protected dataset that the protected tree lacks: from the original
/// tree (where decoding puts rebuilt blocks), else rebuilt from its column.
async fn missing_data_block<S: BlockRead>(
    store: &S,
    manifest: &Manifest,
    recovery: Option<&dyn RecoverBlock>,
    index: u64,
    cause: CoreError,
) -> Result<Block, Error> {
    match store.get_leaf(&manifest.original_tree_cid(), index).await {
        Ok((block, _)) => Ok(block),
        Err(CoreError::NotFound(_) | CoreError::Corrupt { .. }) => {
            let Some(recovery) = recovery else {
                return Err(cause.into());
            };
            tracing::info!(index, %cause, "rebuilding a missing block from its column");
            recovery
                .recover_block(store, manifest, index)
                .await
                .map_err(|source| Error::Recovery { index, source })
        }
        Err(e) => Err(e.into()),
    }
}
