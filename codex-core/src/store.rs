//! The [`BlockStore`] trait: what every layer needs from local block storage.

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

/// A group of writes that becomes permanent at [`BlockStore::commit`] or disappears at
/// [`BlockStore::abort`] — or, after a crash, when the store is next opened.
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

/// Local block storage: blocks by CID, leaves of dataset trees with their proofs,
/// manifests, quota.
///
/// Blocks are reference-counted: a block stays while a tree leaf or an open write
/// session refers to it, so datasets that share blocks can be deleted independently.
/// Every read is checked: a block whose bytes do not hash to its CID is reported as
/// [`crate::Error::Corrupt`] and never returned.
///
/// Writes that belong together are atomic. A dataset is written in a session: its
/// blocks and leaves first, its manifest last at [`BlockStore::commit`]; a session that
/// is aborted or interrupted by a crash leaves nothing behind.
#[async_trait]
pub trait BlockStore: Send + Sync + fmt::Debug + 'static {
    /// Stores a block on its own (a manifest, or a block fetched by CID). Storing a block
    /// that is already present only refreshes its expiry.
    ///
    /// # Errors
    /// [`crate::Error::QuotaExceeded`] when it does not fit.
    async fn put_block(&self, block: Block) -> Result<()>;

    /// Stores `block` as leaf `index` of `tree` with its proof, atomically.
    async fn put_leaf(&self, tree: &Cid, index: u64, block: Block, proof: CodexProof)
    -> Result<()>;

    /// Reads a block by CID.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`], or [`crate::Error::Corrupt`] when the stored bytes are damaged.
    async fn get_block(&self, cid: &Cid) -> Result<Block>;

    /// Reads leaf `index` of `tree` and its proof.
    async fn get_leaf(&self, tree: &Cid, index: u64) -> Result<(Block, CodexProof)>;

    /// The block CID and proof stored for leaf `index` of `tree`, without the block.
    async fn get_leaf_meta(&self, tree: &Cid, index: u64) -> Result<LeafMeta>;

    /// Reads the blocks of leaves `indices` of `tree` in one call, in order; a leaf that is
    /// missing or damaged gives its error in its place. Cheaper than one
    /// [`BlockStore::get_leaf`] per block when reading many.
    async fn get_leaf_blocks(&self, tree: &Cid, indices: Vec<u64>) -> Result<Vec<Result<Block>>> {
        let mut out = Vec::with_capacity(indices.len());
        for i in indices {
            out.push(self.get_leaf(tree, i).await.map(|(b, _)| b));
        }
        Ok(out)
    }

    /// Reads a block by address.
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

    /// Deletes a block stored on its own. A block that a tree leaf still refers to stays
    /// until its dataset is deleted.
    async fn delete_block(&self, cid: &Cid) -> Result<()>;

    /// Deletes a dataset: its manifest, the leaves of its tree, and every block no other
    /// dataset refers to.
    async fn delete_dataset(&self, manifest: &Cid) -> Result<()>;

    /// The manifests in the store.
    async fn manifests(&self) -> Result<Vec<(Cid, Manifest)>>;

    /// Opens a write session.
    async fn begin(&self) -> Result<SessionId>;

    /// Stores blocks in a session: they count against the quota at once and are removed
    /// again if the session does not commit.
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
    /// with [`BlockStore::get_leaf_meta`], deleted with the dataset whose verifiable
    /// manifest names the tree.
    async fn session_put_leaf_refs(
        &self,
        session: SessionId,
        tree: &Cid,
        leaves: Vec<LeafMeta>,
    ) -> Result<()>;

    /// Makes the session's writes permanent, storing `manifest` last, and flushes to disk.
    async fn commit(&self, session: SessionId, manifest: Option<Block>) -> Result<()>;

    /// Undoes the session's writes.
    async fn abort(&self, session: SessionId) -> Result<()>;

    /// The counters.
    async fn space(&self) -> Result<Space>;

    /// Reserves `bytes` of the quota for later writes.
    ///
    /// # Errors
    /// [`crate::Error::QuotaExceeded`] when they are not free.
    async fn reserve(&self, bytes: u64) -> Result<()>;

    /// Returns reserved bytes to the free pool (at most what is reserved).
    async fn release(&self, bytes: u64) -> Result<()>;
}

/// Stores `blocks` (already cut and hashed, in order) as a dataset of `dataset_size`
/// bytes in one session: the blocks, the leaves of their tree with proofs, then the
/// manifest. Returns the manifest's CID and the manifest.
///
/// For datasets already in memory (tests, small files); builds the tree on the caller's
/// thread. Streams of any size go through the node's upload path instead.
pub async fn store_dataset<S: BlockStore + ?Sized>(
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
    let session = store.begin().await?;
    let written = async {
        store.session_put_blocks(session, blocks).await?;
        store
            .session_put_leaves(session, &tree.root_cid(), leaves)
            .await?;
        store.commit(session, Some(block)).await
    }
    .await;
    if let Err(e) = written {
        let _ = store.abort(session).await;
        return Err(e);
    }
    Ok((cid, manifest))
}
