//! Storing a byte stream as a dataset, and streaming a dataset back.

use std::sync::Arc;

use bytes::Bytes;
use codex_core::{
    Block, BlockStore, ChunkBuffer, Cid, DEFAULT_BLOCK_SIZE, Error as CoreError, LeafMeta,
    Manifest, MerkleTree, SessionId, codec,
};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Blocks hashed and stored together: 2 MiB of 64 KiB blocks.
const BATCH_BLOCKS: usize = 32;
/// Leaves (with proofs) written per store call when committing a dataset.
const LEAF_BATCH: usize = 4096;
/// Blocks read per store call while streaming a dataset out.
const READ_CHUNK: usize = 16;
/// Read calls in flight while streaming a dataset out.
const READ_AHEAD_CHUNKS: usize = 3;

/// What an upload carries besides its bytes.
#[derive(Clone, Debug, Default)]
pub struct UploadOptions {
    /// Kept in the manifest (from `Content-Disposition: filename=`).
    pub filename: Option<String>,
    /// Kept in the manifest (from `Content-Type`).
    pub mimetype: Option<String>,
    /// Block size; 64 KiB when `None`.
    pub block_size: Option<usize>,
}

/// Aborts a write session that was neither committed nor aborted, e.g. because the
/// upload's future was dropped when its client went away.
struct SessionGuard {
    store: Arc<dyn BlockStore>,
    id: SessionId,
    open: bool,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.open
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (store, id) = (Arc::clone(&self.store), self.id);
            rt.spawn(async move {
                if let Err(e) = store.abort(id).await {
                    tracing::warn!(session = id.0, error = %e, "cannot abort an abandoned upload");
                }
            });
        }
    }
}

/// Stores a stream of bytes as a dataset: 64 KiB blocks (the last zero-padded), the
/// SHA-256 tree with every leaf's proof, and the manifest, written last. Returns the
/// manifest CID.
///
/// Memory is bounded by a few batches of blocks whatever the stream's length; hashing
/// runs on blocking threads (both cores) while the next bytes arrive.
///
/// # Errors
/// [`Error::EmptyUpload`] for zero bytes, [`codex_core::Error::QuotaExceeded`] when the
/// store is full, [`Error::Source`] when the stream fails. On any error nothing of the
/// upload stays in the store.
///
/// # Cancel safety
/// Dropping the future abandons the upload; its blocks are removed in the background.
pub async fn store_stream<S, E>(
    store: Arc<dyn BlockStore>,
    source: S,
    options: UploadOptions,
) -> Result<Cid>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let id = store.begin().await?;
    let mut guard = SessionGuard {
        store: Arc::clone(&store),
        id,
        open: true,
    };
    let result = write_dataset(&store, id, source, options).await;
    guard.open = false;
    match result {
        Ok((manifest, cid)) => {
            store.commit(id, Some(manifest)).await?;
            Ok(cid)
        }
        Err(e) => {
            if let Err(abort) = store.abort(id).await {
                tracing::warn!(error = %abort, "cannot abort a failed upload");
            }
            Err(e)
        }
    }
}

async fn write_dataset<S, E>(
    store: &Arc<dyn BlockStore>,
    id: SessionId,
    mut source: S,
    options: UploadOptions,
) -> Result<(Block, Cid)>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let block_size = options.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    let (tx, rx) = mpsc::channel::<Vec<Bytes>>(4);

    let produce = async move {
        let mut chunker = ChunkBuffer::new(block_size);
        let mut pending = Vec::with_capacity(BATCH_BLOCKS + 1);
        while let Some(piece) = source.next().await {
            let piece = piece.map_err(|e| Error::Source(e.into()))?;
            chunker.push(&piece, &mut pending);
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

    // Hashing (blocking threads, both cores) and storing run side by side: while one
    // batch is written the next ones are hashed.
    let (wtx, mut wrx) = mpsc::channel::<Vec<Block>>(2);
    let hash = async move {
        let mut cids = Vec::new();
        let mut hashed = tokio_stream_from(rx)
            .map(|raw| tokio::task::spawn_blocking(move || hash_blocks(raw)))
            .buffered(2);
        while let Some(blocks) = hashed.next().await {
            let blocks = blocks?;
            cids.extend(blocks.iter().map(|b| *b.cid()));
            if wtx.send(blocks).await.is_err() {
                break;
            }
        }
        Ok::<_, Error>(cids)
    };
    let write = async {
        while let Some(blocks) = wrx.recv().await {
            store.session_put_blocks(id, blocks).await?;
        }
        Ok::<_, Error>(())
    };

    let (total, cids, ()) = futures::try_join!(produce, hash, write)?;
    if total == 0 {
        return Err(Error::EmptyUpload);
    }

    let tree = Arc::new(tokio::task::spawn_blocking(move || MerkleTree::from_cids(&cids)).await??);
    let root = tree.root_cid();
    let n = tree.leaves_count();
    for start in (0..n).step_by(LEAF_BATCH) {
        let end = (start + LEAF_BATCH as u64).min(n);
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
        .await??;
        store.session_put_leaves(id, &root, leaves).await?;
    }

    let mut manifest = Manifest::new(root, block_size as u32, total);
    manifest.filename = options.filename;
    manifest.mimetype = options.mimetype;
    let block = Block::manifest(manifest.encode());
    let cid = *block.cid();
    Ok((block, cid))
}

/// A data block of a protected dataset that the protected tree lacks: from the original
/// tree (where `decode` puts rebuilt blocks), else rebuilt from its column on the fly.
fn missing_data_block(
    store: Arc<dyn BlockStore>,
    manifest: Arc<Manifest>,
    index: u64,
    cause: CoreError,
) -> BoxFuture<'static, Result<Block>> {
    let fut = async move {
        match store.get_leaf(&manifest.original_tree_cid(), index).await {
            Ok((block, _)) => Ok(block),
            Err(CoreError::NotFound(_) | CoreError::Corrupt { .. }) => {
                tracing::info!(index, %cause, "rebuilding a missing block from its column");
                Ok(codex_erasure::recover_block(&*store, &manifest, index).await?)
            }
            Err(e) => Err(e.into()),
        }
    };
    Box::pin(fut)
}

/// Erasure-codes the stored plain dataset `manifest_cid` with K data and M parity rows;
/// returns the protected manifest's CID and the manifest. See [`codex_erasure::encode`].
pub async fn erasure_encode(
    store: &dyn BlockStore,
    manifest_cid: Cid,
    k: usize,
    m: usize,
) -> Result<(Cid, Manifest)> {
    if manifest_cid.codec() != codec::MANIFEST {
        return Err(Error::NotAManifest(manifest_cid));
    }
    let manifest = Manifest::decode(store.get_block(&manifest_cid).await?.data())?;
    Ok(codex_erasure::encode(store, &manifest, k, m).await?)
}

/// Makes the stored dataset `manifest_cid` verifiable: a plain dataset is erasure-coded
/// first with `ec` (K, M; Codex's default 2, 1 when `None`), then its Poseidon2 slot trees
/// are built (stored with every leaf's proof) and the verifiable manifest stored.
/// Returns the verifiable manifest's CID, the manifest, and the verify root's CID.
/// Costs about 9 000 Poseidon2 permutations per MiB of protected data, on all cores.
/// Feature `proofs`.
#[cfg(feature = "proofs")]
pub async fn make_verifiable(
    store: &dyn BlockStore,
    manifest_cid: Cid,
    ec: Option<(usize, usize)>,
) -> Result<(Cid, Manifest, Cid)> {
    if manifest_cid.codec() != codec::MANIFEST {
        return Err(Error::NotAManifest(manifest_cid));
    }
    let mut manifest = Manifest::decode(store.get_block(&manifest_cid).await?.data())?;
    if !manifest.is_protected() {
        let (k, m) = ec.unwrap_or((2, 1));
        manifest = codex_erasure::encode(store, &manifest, k, m).await?.1;
    }
    let (cid, verifiable, slots) = codex_proofs::slot::build_verifiable(store, &manifest).await?;
    Ok((cid, verifiable, slots.verify_root_cid()))
}

fn hash_blocks(raw: Vec<Bytes>) -> Vec<Block> {
    use rayon::prelude::*;
    raw.into_par_iter().map(Block::new).collect()
}

fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A dataset opened for reading: its manifest and its bytes.
pub struct Dataset {
    /// The manifest, when the CID was a manifest (else a single block is streamed).
    pub manifest: Option<Manifest>,
    /// The number of bytes the stream yields.
    pub size: u64,
    /// The bytes, in order: the original file for a manifest, the block otherwise.
    pub stream: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("manifest", &self.manifest)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Opens a dataset (a manifest CID) or a single block from the local store. For a
/// protected dataset the original file is streamed: its data blocks come first.
///
/// # Errors
/// [`codex_core::Error::NotFound`] when the CID is not stored; errors while streaming
/// (a missing or corrupt block) end the stream with that error.
pub async fn open(store: Arc<dyn BlockStore>, cid: Cid) -> Result<Dataset> {
    let first = store.get_block(&cid).await?;
    if cid.codec() != codec::MANIFEST {
        let size = first.len() as u64;
        return Ok(Dataset {
            manifest: None,
            size,
            stream: stream::once(async move { Ok(first.into_data()) }).boxed(),
        });
    }
    let manifest = Manifest::decode(first.data())?;
    let size = manifest.original_size();
    let block_size = u64::from(manifest.block_size);
    let indices: Vec<u64> = (0..manifest.original_blocks_count()).collect();
    let shared = Arc::new(manifest.clone());
    let stream = stream::iter(
        indices
            .chunks(READ_CHUNK)
            .map(<[u64]>::to_vec)
            .collect::<Vec<_>>(),
    )
    .map(move |chunk| {
        let (store, manifest) = (Arc::clone(&store), Arc::clone(&shared));
        async move {
            let blocks = store
                .get_leaf_blocks(&manifest.tree_cid, chunk.clone())
                .await?;
            let mut out = Vec::with_capacity(chunk.len());
            for (i, block) in chunk.into_iter().zip(blocks) {
                let block = match block {
                    Ok(b) => b,
                    Err(e @ (CoreError::NotFound(_) | CoreError::Corrupt { .. }))
                        if manifest.is_protected() =>
                    {
                        missing_data_block(Arc::clone(&store), Arc::clone(&manifest), i, e).await?
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
                out.push(Ok::<_, Error>(data));
            }
            Ok::<_, Error>(stream::iter(out))
        }
    })
    .buffered(READ_AHEAD_CHUNKS)
    .try_flatten()
    .boxed();
    Ok(Dataset {
        manifest: Some(manifest),
        size,
        stream,
    })
}
