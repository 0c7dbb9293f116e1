//! Storing a byte stream as a dataset, and streaming a dataset back.

use std::sync::Arc;

use bytes::Bytes;
use codex_core::prelude::*;
use codex_core::{Cid, Manifest, RecoverBlock, codec};
use codex_store::dataset::{DatasetReader, add_stream};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};

use crate::error::{Error, Result};

/// What an upload carries besides its bytes.
pub type UploadOptions = codex_store::dataset::AddOptions;

/// Stores a stream of bytes as a dataset with [`codex_store::dataset::add_stream`]: 64 KiB
/// blocks (the last zero-padded), the SHA-256 tree with every leaf's proof, and the
/// manifest, written last. Returns the manifest CID.
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
    match add_stream(&*store, source, options).await {
        Ok(added) => Ok(added.cid),
        Err(e) => Err(from_dataset_error(e)),
    }
}

/// The node's error for one of [`codex_store::dataset`]'s.
pub(crate) fn from_dataset_error(e: codex_store::Error) -> Error {
    match e {
        codex_store::Error::EmptyUpload => Error::EmptyUpload,
        codex_store::Error::Source(s) => Error::Source(s),
        codex_store::Error::Core(c) => Error::Core(c),
        other => Error::Store(other),
    }
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

/// A dataset opened for reading: its manifest and its bytes.
pub struct Dataset {
    /// The manifest, when the CID was a manifest (else a single block is streamed).
    pub manifest: Option<Manifest>,
    /// The number of bytes the stream yields.
    pub size: u64,
    /// The bytes, in order: the original file for a manifest, the block otherwise.
    pub stream: BoxStream<'static, Result<Bytes>>,
    /// For a stream decrypted by [`crate::node::Handle::decrypt`]: the file name and
    /// MIME type kept in the encrypted metadata (the manifest has none).
    pub metadata: Option<codex_crypto::Metadata>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("manifest", &self.manifest)
            .field("size", &self.size)
            .field("metadata", &self.metadata)
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
    let recovery: Arc<dyn RecoverBlock> = Arc::new(codex_erasure::Recovery);
    let reader = DatasetReader::open(store, cid, Some(recovery))
        .await
        .map_err(from_dataset_error)?;
    Ok(Dataset {
        manifest: reader.manifest().cloned(),
        size: reader.size(),
        stream: reader.map_err(from_dataset_error).boxed(),
        metadata: None,
    })
}
