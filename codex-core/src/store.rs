//! The store traits: what every layer needs from local block storage, one concern per
//! trait.
//!
//! - [`BlockRead`]: blocks by CID and leaves of dataset trees, every read hash-checked.
//! - [`BlockWrite`]: single blocks and leaves outside a session, and deletes.
//! - [`Sessions`]: writes that become permanent together; used through [`WriteSession`].
//! - [`Quota`]: the store's counters ([`Space`]) and reservations.
//! - [`Manifests`]: the datasets a store holds.
//!
//! [`BlockStore`] is all five. Each trait is implemented for `&T`, `Arc<T>` and `Box<T>`
//! and is object safe. [`RecoverBlock`] is the hook through which a reader rebuilds a
//! missing block of a protected dataset (implemented by the erasure layer).
//!
//! All methods are async (through `async_trait`); no runtime is assumed here, but the
//! stores of `codex-store` need a tokio runtime.

use std::fmt;

use async_trait::async_trait;

use crate::block::{Block, BlockAddress};
use crate::cid::Cid;
use crate::error::Result;
use crate::manifest::Manifest;
use crate::merkle::{CodexProof, MerkleTree};

/// Leaf `index` of a tree: the block CID stored there and its proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafMeta {
    /// The leaf index.
    pub index: u64,
    /// The block's CID.
    pub block_cid: Cid,
    /// The block's proof against the tree root.
    pub proof: CodexProof,
}

/// The id of a write session: a group of writes that becomes permanent at
/// [`Sessions::commit`] or disappears at [`Sessions::abort`] — or, after a crash, when
/// the store is next opened. Prefer the [`WriteSession`] guard to handling ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session {}", self.0)
    }
}

/// The store's counters (Codex's `GET /space`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Space {
    /// Blocks stored.
    pub total_blocks: u64,
    /// The quota in bytes.
    pub quota_max_bytes: u64,
    /// Bytes of block data stored.
    pub quota_used_bytes: u64,
    /// Bytes reserved for future writes.
    pub quota_reserved_bytes: u64,
}

impl Space {
    /// Bytes that a write can still take: `max - used - reserved`.
    pub fn available(&self) -> u64 {
        self.quota_max_bytes
            .saturating_sub(self.quota_used_bytes)
            .saturating_sub(self.quota_reserved_bytes)
    }
}

/// Reading blocks and leaves: all that serving blocks to peers needs.
///
/// Every read is checked: a block whose bytes do not hash to its CID is reported as
/// [`crate::Error::Corrupt`] and never returned.
#[async_trait]
pub trait BlockRead: Send + Sync {
    /// Reads a block by CID.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`], or [`crate::Error::Corrupt`] when the stored bytes are damaged.
    async fn get_block(&self, cid: &Cid) -> Result<Block>;

    /// Reads leaf `index` of `tree` and its proof.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] for a leaf or block that is not stored,
    /// [`crate::Error::Corrupt`] when the block's bytes are damaged.
    async fn get_leaf(&self, tree: &Cid, index: u64) -> Result<(Block, CodexProof)>;

    /// The block CID and proof stored for leaf `index` of `tree`, without the block.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] when the leaf is not recorded.
    async fn get_leaf_meta(&self, tree: &Cid, index: u64) -> Result<LeafMeta>;

    /// Reads the blocks of leaves `indices` of `tree` in one call, in order; a leaf that is
    /// missing or damaged gives its error in its place. Cheaper than one
    /// [`BlockRead::get_leaf`] per block when reading many.
    async fn get_leaf_blocks(&self, tree: &Cid, indices: Vec<u64>) -> Result<Vec<Result<Block>>> {
        let mut out = Vec::with_capacity(indices.len());
        for i in indices {
            out.push(self.get_leaf(tree, i).await.map(|(b, _)| b));
        }
        Ok(out)
    }

    /// Reads a block by address: [`BlockRead::get_block`] or [`BlockRead::get_leaf`].
    async fn get(&self, address: &BlockAddress) -> Result<Block> {
        match address {
            BlockAddress::Cid(cid) => self.get_block(cid).await,
            BlockAddress::Leaf { tree, index } => Ok(self.get_leaf(tree, *index).await?.0),
        }
    }

    /// Whether a block is present.
    async fn has_block(&self, cid: &Cid) -> Result<bool>;

    /// Whether leaf `index` of `tree` and its block are present.
    async fn has_leaf(&self, tree: &Cid, index: u64) -> Result<bool>;
}

/// Writing and deleting single blocks and leaves, outside a session: a block fetched by
/// CID, a leaf delivered by a peer with its proof.
///
/// Blocks are reference-counted: a block stays while a tree leaf or an open write session
/// refers to it, so datasets that share blocks can be deleted independently.
#[async_trait]
pub trait BlockWrite: Send + Sync {
    /// Stores a block on its own (a manifest, or a block fetched by CID). Storing a block
    /// that is already present only refreshes its expiry.
    ///
    /// # Errors
    /// [`crate::Error::QuotaExceeded`] when it does not fit.
    async fn put_block(&self, block: Block) -> Result<()>;

    /// Stores `block` as leaf `index` of `tree` with its proof, atomically. The proof is
    /// stored as given: callers check deliveries ([`CodexProof::verify_cids`]) first.
    ///
    /// # Errors
    /// [`crate::Error::QuotaExceeded`] when the block does not fit.
    async fn put_leaf(&self, tree: &Cid, index: u64, block: Block, proof: CodexProof)
    -> Result<()>;

    /// Deletes a block stored on its own. A block that a tree leaf still refers to stays
    /// until its dataset is deleted.
    async fn delete_block(&self, cid: &Cid) -> Result<()>;

    /// Deletes a dataset: its manifest, the leaves of its tree, and every block no other
    /// dataset refers to.
    async fn delete_dataset(&self, manifest: &Cid) -> Result<()>;

    /// Deletes the leaves `range` of `tree` that are stored, and the blocks only they
    /// referred to (a host that rebuilt one slot keeps that slot alone); returns how
    /// many leaves went. The default keeps them: they go with their dataset.
    async fn delete_leaves(&self, tree: &Cid, range: std::ops::Range<u64>) -> Result<u64> {
        let _ = (tree, range);
        Ok(0)
    }
}

/// Write sessions: writes that belong together become permanent at once or not at all.
///
/// A dataset is written in a session: its blocks and leaves first, its manifest last at
/// [`Sessions::commit`]; a session that is aborted, abandoned or interrupted by a crash
/// leaves nothing behind. Use it through [`WriteSession`], which aborts on drop.
#[async_trait]
pub trait Sessions: Send + Sync {
    /// Opens a write session. Prefer [`WriteSession::begin`], which aborts on drop.
    async fn begin(&self) -> Result<SessionId>;

    /// Stores blocks in a session: they count against the quota at once and are removed
    /// again if the session does not commit. The blocks are written atomically.
    ///
    /// # Errors
    /// [`crate::Error::QuotaExceeded`] when they do not fit (nothing of the batch is
    /// written), [`crate::Error::UnknownSession`] for a session that is not open.
    async fn session_put_blocks(&self, session: SessionId, blocks: Vec<Block>) -> Result<()>;

    /// Records leaves of `tree` (whose blocks are in the store) in a session.
    async fn session_put_leaves(
        &self,
        session: SessionId,
        tree: &Cid,
        leaves: Vec<LeafMeta>,
    ) -> Result<()>;

    /// Records leaves of a tree whose leaves are not stored blocks (a Poseidon2 slot tree:
    /// Codex's `putCidAndProof`) in a session: `(tree, index) -> (cid, proof)`, read back
    /// with [`BlockRead::get_leaf_meta`], deleted with the dataset whose verifiable
    /// manifest names the tree.
    async fn session_put_leaf_refs(
        &self,
        session: SessionId,
        tree: &Cid,
        leaves: Vec<LeafMeta>,
    ) -> Result<()>;

    /// Makes the session's writes permanent, storing `manifest` last, and flushes to disk.
    ///
    /// # Errors
    /// [`crate::Error::UnknownSession`] for a session that is not open (committed or
    /// aborted already).
    async fn commit(&self, session: SessionId, manifest: Option<Block>) -> Result<()>;

    /// Undoes the session's writes: its blocks (unless something else refers to them),
    /// its leaves, its quota.
    ///
    /// # Errors
    /// [`crate::Error::UnknownSession`] for a session that is not open.
    async fn abort(&self, session: SessionId) -> Result<()>;

    /// Undoes the session's writes without waiting for it: what [`WriteSession`] calls
    /// when it is dropped uncommitted (a cancelled future), where nothing can be awaited.
    /// Must not block for long; a store backed by disk hands the work to a blocking
    /// thread. Failures can only be logged; a session left open is undone when the store
    /// is next opened.
    fn abandon(&self, session: SessionId);
}

/// The quota: counters and reservations, all in bytes of block data.
#[async_trait]
pub trait Quota: Send + Sync {
    /// The counters, as Codex's `GET /space` shows them.
    async fn space(&self) -> Result<Space>;

    /// Reserves `bytes` of the quota for later writes.
    ///
    /// # Errors
    /// [`crate::Error::QuotaExceeded`] when they are not free.
    async fn reserve(&self, bytes: u64) -> Result<()>;

    /// Returns reserved bytes to the free pool (at most what is reserved).
    async fn release(&self, bytes: u64) -> Result<()>;
}

/// Listing the datasets a store holds.
#[async_trait]
pub trait Manifests: Send + Sync {
    /// The manifests in the store with their CIDs, in no particular order. Reads and
    /// decodes every manifest: cost grows with the number of datasets.
    async fn manifests(&self) -> Result<Vec<(Cid, Manifest)>>;
}

/// A complete local block store: [`BlockRead`], [`BlockWrite`], [`Sessions`], [`Quota`]
/// and [`Manifests`]. Implemented for every type that implements them all; take the
/// narrow trait a function needs and `Arc<dyn BlockStore>` where one value must do all.
///
/// `codex_store` has two implementations (`SledStore`, `MemoryStore`) and a conformance
/// suite (feature `test-utils`) that a third-party store can run.
pub trait BlockStore:
    BlockRead + BlockWrite + Sessions + Quota + Manifests + fmt::Debug + 'static
{
}

impl<T> BlockStore for T where
    T: BlockRead + BlockWrite + Sessions + Quota + Manifests + fmt::Debug + 'static + ?Sized
{
}

/// Forwards the store traits through a pointer type.
macro_rules! forward_store_traits {
    ($($ptr:ty),*) => {$(
        #[async_trait]
        impl<T: BlockRead + ?Sized> BlockRead for $ptr {
            async fn get_block(&self, cid: &Cid) -> Result<Block> {
                (**self).get_block(cid).await
            }
            async fn get_leaf(&self, tree: &Cid, index: u64) -> Result<(Block, CodexProof)> {
                (**self).get_leaf(tree, index).await
            }
            async fn get_leaf_meta(&self, tree: &Cid, index: u64) -> Result<LeafMeta> {
                (**self).get_leaf_meta(tree, index).await
            }
            async fn get_leaf_blocks(
                &self,
                tree: &Cid,
                indices: Vec<u64>,
            ) -> Result<Vec<Result<Block>>> {
                (**self).get_leaf_blocks(tree, indices).await
            }
            async fn get(&self, address: &BlockAddress) -> Result<Block> {
                (**self).get(address).await
            }
            async fn has_block(&self, cid: &Cid) -> Result<bool> {
                (**self).has_block(cid).await
            }
            async fn has_leaf(&self, tree: &Cid, index: u64) -> Result<bool> {
                (**self).has_leaf(tree, index).await
            }
        }

        #[async_trait]
        impl<T: BlockWrite + ?Sized> BlockWrite for $ptr {
            async fn put_block(&self, block: Block) -> Result<()> {
                (**self).put_block(block).await
            }
            async fn put_leaf(
                &self,
                tree: &Cid,
                index: u64,
                block: Block,
                proof: CodexProof,
            ) -> Result<()> {
                (**self).put_leaf(tree, index, block, proof).await
            }
            async fn delete_block(&self, cid: &Cid) -> Result<()> {
                (**self).delete_block(cid).await
            }
            async fn delete_dataset(&self, manifest: &Cid) -> Result<()> {
                (**self).delete_dataset(manifest).await
            }
            async fn delete_leaves(
                &self,
                tree: &Cid,
                range: std::ops::Range<u64>,
            ) -> Result<u64> {
                (**self).delete_leaves(tree, range).await
            }
        }

        #[async_trait]
        impl<T: Sessions + ?Sized> Sessions for $ptr {
            async fn begin(&self) -> Result<SessionId> {
                (**self).begin().await
            }
            async fn session_put_blocks(
                &self,
                session: SessionId,
                blocks: Vec<Block>,
            ) -> Result<()> {
                (**self).session_put_blocks(session, blocks).await
            }
            async fn session_put_leaves(
                &self,
                session: SessionId,
                tree: &Cid,
                leaves: Vec<LeafMeta>,
            ) -> Result<()> {
                (**self).session_put_leaves(session, tree, leaves).await
            }
            async fn session_put_leaf_refs(
                &self,
                session: SessionId,
                tree: &Cid,
                leaves: Vec<LeafMeta>,
            ) -> Result<()> {
                (**self).session_put_leaf_refs(session, tree, leaves).await
            }
            async fn commit(&self, session: SessionId, manifest: Option<Block>) -> Result<()> {
                (**self).commit(session, manifest).await
            }
            async fn abort(&self, session: SessionId) -> Result<()> {
                (**self).abort(session).await
            }
            fn abandon(&self, session: SessionId) {
                (**self).abandon(session)
            }
        }

        #[async_trait]
        impl<T: Quota + ?Sized> Quota for $ptr {
            async fn space(&self) -> Result<Space> {
                (**self).space().await
            }
            async fn reserve(&self, bytes: u64) -> Result<()> {
                (**self).reserve(bytes).await
            }
            async fn release(&self, bytes: u64) -> Result<()> {
                (**self).release(bytes).await
            }
        }

        #[async_trait]
        impl<T: Manifests + ?Sized> Manifests for $ptr {
            async fn manifests(&self) -> Result<Vec<(Cid, Manifest)>> {
                (**self).manifests().await
            }
        }
    )*};
}

forward_store_traits!(&T, std::sync::Arc<T>, Box<T>);

/// Rebuilds a data block of a protected dataset that a store lacks or holds damaged, from
/// the rest of its column: what a dataset reader calls when a block is missing.
/// `codex_erasure::Recovery` implements it with Reed-Solomon decoding.
#[async_trait]
pub trait RecoverBlock: Send + Sync + fmt::Debug {
    /// Block `index` (a data block: below the manifest's original block count) of the
    /// protected dataset `manifest`, rebuilt from what `store` holds, without storing it.
    ///
    /// # Errors
    /// When too few blocks of its column are present, or the dataset is not protected.
    async fn recover_block(
        &self,
        store: &dyn BlockRead,
        manifest: &Manifest,
        index: u64,
    ) -> std::result::Result<Block, Box<dyn std::error::Error + Send + Sync>>;
}

/// An open write session: writes through it become permanent at
/// [`WriteSession::commit`] and are undone at [`WriteSession::abort`] — or when it is
/// dropped uncommitted, so a cancelled future leaves nothing half-stored.
///
/// ```
/// # async fn f(store: &dyn codex_core::BlockStore, blocks: Vec<codex_core::Block>) -> codex_core::Result<()> {
/// use codex_core::WriteSession;
/// let session = WriteSession::begin(store).await?;
/// session.put_blocks(blocks).await?;
/// session.commit(None).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a session is aborted when dropped; call commit"]
pub struct WriteSession<'a, S: Sessions + ?Sized> {
    store: &'a S,
    id: SessionId,
    open: bool,
}

impl<'a, S: Sessions + ?Sized> WriteSession<'a, S> {
    /// Opens a session on `store`.
    ///
    /// # Errors
    /// The store's errors from [`Sessions::begin`].
    pub async fn begin(store: &'a S) -> Result<Self> {
        let id = store.begin().await?;
        Ok(WriteSession {
            store,
            id,
            open: true,
        })
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Stores blocks in the session; see [`Sessions::session_put_blocks`].
    pub async fn put_blocks(&self, blocks: Vec<Block>) -> Result<()> {
        self.store.session_put_blocks(self.id, blocks).await
    }

    /// Records leaves of `tree`; see [`Sessions::session_put_leaves`].
    pub async fn put_leaves(&self, tree: &Cid, leaves: Vec<LeafMeta>) -> Result<()> {
        self.store.session_put_leaves(self.id, tree, leaves).await
    }

    /// Records leaves that are not stored blocks; see [`Sessions::session_put_leaf_refs`].
    pub async fn put_leaf_refs(&self, tree: &Cid, leaves: Vec<LeafMeta>) -> Result<()> {
        self.store
            .session_put_leaf_refs(self.id, tree, leaves)
            .await
    }

    /// Makes the writes permanent, storing `manifest` (a manifest [`Block`]) last. When
    /// the commit fails the session is aborted.
    ///
    /// # Errors
    /// The store's errors from [`Sessions::commit`].
    ///
    /// # Cancel safety
    /// Dropped before it is first polled, the session is abandoned as on drop. Dropped
    /// later, the commit is no longer aborted from here: `codex-store`'s stores finish it
    /// on a blocking thread, and a session a store leaves open is undone when the store
    /// is next opened.
    pub async fn commit(mut self, manifest: Option<Block>) -> Result<()> {
        self.open = false;
        let committed = self.store.commit(self.id, manifest).await;
        if committed.is_err() {
            // A commit that failed before its record was written leaves an open session.
            let _ = self.store.abort(self.id).await;
        }
        committed
    }

    /// Undoes the writes now, waiting for it.
    pub async fn abort(mut self) -> Result<()> {
        self.open = false;
        self.store.abort(self.id).await
    }
}

impl<S: Sessions + ?Sized> Drop for WriteSession<'_, S> {
    fn drop(&mut self) {
        if self.open {
            self.store.abandon(self.id);
        }
    }
}

/// Stores `blocks` (already cut and hashed, in order) as a dataset of `dataset_size`
/// bytes in one session: the blocks, the leaves of their tree with proofs, then the
/// manifest. Returns the manifest's CID and the manifest.
///
/// For datasets already in memory (tests, small files); builds the tree on the caller's
/// thread (one SHA-256 of 65 bytes per block). Streams of any size go through
/// `codex_store::dataset::add_stream` instead.
///
/// # Errors
/// [`crate::Error::Tree`] for no blocks, and the store's errors
/// ([`crate::Error::QuotaExceeded`] when the dataset does not fit); on any error nothing
/// of the dataset stays in the store.
///
/// # Cancel safety
/// Dropping the future before the commit undoes the session (see [`WriteSession`]).
pub async fn store_dataset<S: Sessions + ?Sized>(
    store: &S,
    blocks: Vec<Block>,
    block_size: u32,
    dataset_size: u64,
) -> Result<(Cid, Manifest)> {
    let tree = MerkleTree::from_cids(blocks.iter().map(Block::cid))?;
    let leaves = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Ok(LeafMeta {
                index: i as u64,
                block_cid: *b.cid(),
                proof: tree.proof(i as u64)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let manifest = Manifest::new(tree.root_cid(), block_size, dataset_size);
    let block = Block::manifest(manifest.encode());
    let cid = *block.cid();
    let session = WriteSession::begin(store).await?;
    session.put_blocks(blocks).await?;
    session.put_leaves(&tree.root_cid(), leaves).await?;
    session.commit(Some(block)).await?;
    Ok((cid, manifest))
}
