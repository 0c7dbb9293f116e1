//! The slot builder (nim-codex `codex/slots/builder/builder.nim`): block trees, slot
//! trees and the verify tree of a protected dataset.
//!
//! - **Block tree**: a Poseidon2 tree over the sponge digests of a block's 2 KiB cells
//!   (depth 5 for a 64 KiB block). Its root is the block's digest (multihash 0xCD11).
//! - **Slot tree**: over the block digests of the slot's blocks in order, padded with the
//!   digest of an all-zero block up to a power of two of cells. Slot `i` is row `i` of the
//!   erasure-coding matrix: blocks `i*steps .. (i+1)*steps`.
//! - **Verify tree**: over the slot roots, not padded.
//!
//! Hashing runs on rayon (all cores) and never on an async executor: [`Slots::build`]
//! and [`SlotTree::build`] are synchronous; [`build_verifiable`] reads the store
//! asynchronously and hashes on `spawn_blocking`. Memory is bounded by one batch of
//! blocks, never the dataset.

use std::sync::LazyLock;

use bytes::Bytes;
use codex_core::prelude::*;
use codex_core::{
    Block, Cid, Error as CoreError, LeafMeta, Manifest, StrategyType, Verification, codec,
};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::field::Fe;
use crate::merkle::{MerkleProof, MerkleTree, merkle_root};
use crate::poseidon2::hash_cells;

/// Cell size in bytes (`DefaultCellSize`).
pub const CELL_SIZE: usize = 2048;
/// Blocks hashed per batch by [`build_verifiable`] (4 MiB of 64 KiB blocks).
pub const DEFAULT_BATCH_BLOCKS: usize = 64;

/// The multihash code `poseidon2-alt_bn_128-merkle-2kb`: a block digest.
const POSEIDON2_MERKLE_2KB: u64 = codec::POSEIDON2_MERKLE_2KB;

/// The Poseidon2 tree over the sponge digests of `data`'s 2 KiB cells (the last cell may
/// be shorter). Costs 35 permutations per cell; cells are hashed in parallel.
///
/// # Errors
/// [`Error::EmptyTree`] for empty data.
pub fn block_tree(data: &[u8]) -> Result<MerkleTree> {
    MerkleTree::new(cell_digests(data))
}

/// The root of [`block_tree`]: the block digest (`SpongeMerkle.digest(data, 2048)`).
///
/// # Errors
/// [`Error::EmptyTree`] for empty data.
pub fn block_digest(data: &[u8]) -> Result<Fe> {
    merkle_root(&cell_digests(data))
}

fn cell_digests(data: &[u8]) -> Vec<Fe> {
    // Groups of eight cells: what the AVX-512 IFMA path hashes at once.
    data.par_chunks(CELL_SIZE * 8)
        .flat_map_iter(|group| hash_cells(group, CELL_SIZE))
        .collect()
}

static ZERO_64K_DIGEST: LazyLock<Fe> =
    LazyLock::new(|| block_digest(&[0u8; 65536]).unwrap_or(Fe::ZERO));

/// The digest of an all-zero block of `block_size` bytes (Codex's `emptyDigestTree`
/// root), cached for 64 KiB.
///
/// # Errors
/// [`Error::EmptyTree`] for a block size of 0.
pub fn zero_block_digest(block_size: usize) -> Result<Fe> {
    if block_size == 65536 {
        return Ok(*ZERO_64K_DIGEST);
    }
    block_digest(&vec![0u8; block_size])
}

/// The digests of a batch of blocks, in parallel. `None` is an empty or padding block,
/// hashed as zeros.
///
/// # Errors
/// [`Error::BlockLength`] for a block whose length is not `block_size` (`first` is the
/// dataset index of `blocks[0]`, used in the error).
pub fn block_digests(blocks: &[Option<Bytes>], block_size: usize, first: u64) -> Result<Vec<Fe>> {
    let zero = zero_block_digest(block_size)?;
    blocks
        .par_iter()
        .enumerate()
        .map(|(i, b)| match b {
            None => Ok(zero),
            Some(data) if data.len() != block_size => Err(Error::BlockLength {
                index: first + i as u64,
                len: data.len(),
                expected: block_size,
            }),
            Some(data) => block_digest(data),
        })
        .collect()
}

/// The slot geometry of a protected manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotGeometry {
    /// Slots: `K + M`.
    pub num_slots: u64,
    /// Real blocks per slot: `blocksCount / numSlots` (= `steps`).
    pub slot_blocks: u64,
    /// All-zero blocks appended to each slot so its cell count is a power of two.
    pub pad_blocks: u64,
    /// Block size in bytes.
    pub block_size: u32,
}

impl SlotGeometry {
    /// The geometry of `manifest` (reference §4.2).
    ///
    /// # Errors
    /// [`Error::NotProtected`], [`Error::BlockSize`] when the block is not a power of two
    /// of 2 KiB cells, [`Error::BlocksNotDivisible`].
    pub fn new(manifest: &Manifest) -> Result<Self> {
        let p = manifest.protection.as_ref().ok_or(Error::NotProtected)?;
        let num_slots = u64::from(p.ec_k) + u64::from(p.ec_m);
        let blocks = manifest.blocks_count();
        let block_size = manifest.block_size;
        let cells = block_size as usize / CELL_SIZE;
        if cells == 0
            || !(block_size as usize).is_multiple_of(CELL_SIZE)
            || !cells.is_power_of_two()
        {
            return Err(Error::BlockSize {
                block_size,
                cell_size: CELL_SIZE as u32,
            });
        }
        if num_slots == 0 || blocks == 0 || !blocks.is_multiple_of(num_slots) {
            return Err(Error::BlocksNotDivisible {
                blocks,
                slots: num_slots,
            });
        }
        let slot_blocks = blocks / num_slots;
        let cells_per_block = cells as u64;
        let pow2_cells = (slot_blocks * cells_per_block).next_power_of_two();
        Ok(SlotGeometry {
            num_slots,
            slot_blocks,
            pad_blocks: pow2_cells / cells_per_block - slot_blocks,
            block_size,
        })
    }

    /// Cells per block (32 for 64 KiB blocks).
    pub fn cells_per_block(&self) -> u64 {
        u64::from(self.block_size) / CELL_SIZE as u64
    }

    /// Cells per slot, a power of two (the circuit's `nCellsPerSlot`).
    pub fn cells_per_slot(&self) -> u64 {
        (self.slot_blocks + self.pad_blocks) * self.cells_per_block()
    }

    /// Bytes per slot including padding (`slotSize` on chain).
    pub fn slot_bytes(&self) -> u64 {
        (self.slot_blocks + self.pad_blocks) * u64::from(self.block_size)
    }

    /// The dataset index of block `i` of slot `slot`.
    pub fn block_index(&self, slot: u64, i: u64) -> u64 {
        slot * self.slot_blocks + i
    }
}

/// A slot's tree over its block digests, padded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotTree {
    tree: MerkleTree,
    blocks: u64,
    cells_per_block: u64,
}

impl SlotTree {
    /// The slot tree over the digests of the slot's real blocks, padded with
    /// `zero_digest` up to `blocks + pad` leaves.
    ///
    /// # Errors
    /// [`Error::EmptyTree`] when there are no leaves.
    pub fn from_block_digests(
        mut digests: Vec<Fe>,
        geometry: &SlotGeometry,
        zero_digest: Fe,
    ) -> Result<Self> {
        let blocks = digests.len() as u64;
        digests.resize(
            (geometry.slot_blocks + geometry.pad_blocks) as usize,
            zero_digest,
        );
        Ok(SlotTree {
            tree: MerkleTree::new(digests)?,
            blocks,
            cells_per_block: geometry.cells_per_block(),
        })
    }

    /// Builds slot `slot`'s tree, reading its blocks through `read` in batches of
    /// `batch` dataset indices. `read` returns one entry per index; `None` is an empty or
    /// padding block (zeros). Hashing runs on rayon's current pool.
    ///
    /// # Errors
    /// [`Error::SlotIndex`], what `read` returns, [`Error::BlockLength`].
    pub fn build(
        geometry: &SlotGeometry,
        slot: u64,
        batch: usize,
        mut read: impl FnMut(&[u64]) -> Result<Vec<Option<Bytes>>>,
    ) -> Result<Self> {
        if slot >= geometry.num_slots {
            return Err(Error::SlotIndex {
                index: slot,
                slots: geometry.num_slots,
            });
        }
        let bs = geometry.block_size as usize;
        let mut digests = Vec::with_capacity(geometry.slot_blocks as usize);
        let indices: Vec<u64> = (0..geometry.slot_blocks)
            .map(|i| geometry.block_index(slot, i))
            .collect();
        for chunk in indices.chunks(batch.max(1)) {
            let blocks = read(chunk)?;
            if blocks.len() != chunk.len() {
                return Err(Error::WrongLength {
                    field: "blocks read".into(),
                    expected: chunk.len(),
                    found: blocks.len(),
                });
            }
            digests.extend(block_digests(&blocks, bs, chunk[0])?);
        }
        Self::from_block_digests(digests, geometry, zero_block_digest(bs)?)
    }

    /// The slot root.
    pub fn root(&self) -> Fe {
        self.tree.root()
    }

    /// The slot root's CID: `CIDv1(codex-slot-root, identity(32 bytes LE))`.
    pub fn root_cid(&self) -> Cid {
        Cid::from_identity(codec::SLOT_ROOT, self.root().to_le_bytes())
    }

    /// The tree over block digests (real blocks then padding).
    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    /// Real (not padding) blocks in the slot.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Cells per block.
    pub fn cells_per_block(&self) -> u64 {
        self.cells_per_block
    }

    /// Cells in the slot, padding included (a power of two).
    pub fn cells(&self) -> u64 {
        self.tree.leaves_count() * self.cells_per_block
    }

    /// The proof of leaf `i` (a block digest) against the slot root.
    ///
    /// # Errors
    /// [`Error::LeafOutOfRange`].
    pub fn leaf_proof(&self, i: u64) -> Result<MerkleProof> {
        self.tree.proof(i)
    }

    /// What Codex stores per slot leaf (`putCidAndProof(slotRootCid, i, cellCid, proof)`):
    /// the leaf's cell CID and its `CodexProof` (identity codec). One entry per leaf,
    /// padding included.
    pub fn leaf_metas(&self) -> Vec<LeafMeta> {
        self.tree
            .leaves()
            .iter()
            .enumerate()
            .filter_map(|(i, &digest)| {
                let proof = self.tree.proof(i as u64).ok()?;
                Some(LeafMeta {
                    index: i as u64,
                    block_cid: cell_cid(digest)?,
                    proof: proof.to_codex(),
                })
            })
            .collect()
    }
}

/// A slot leaf's CID: `CIDv1(codex-slot-cell, multihash(poseidon2-merkle-2kb, 32 bytes LE))`.
/// `None` only if the CID library rejects the form, which it does not.
pub fn cell_cid(digest: Fe) -> Option<Cid> {
    let mh = multihash::Multihash::<64>::wrap(POSEIDON2_MERKLE_2KB, &digest.to_le_bytes()).ok()?;
    Cid::try_from(cid::Cid::new_v1(codec::SLOT_CELL, mh)).ok()
}

/// The digest inside a slot-root, verify-root or cell CID.
///
/// # Errors
/// [`Error::NotCanonical`] when the CID does not carry a 32-byte canonical element.
pub fn cid_element(cid: &Cid) -> Result<Fe> {
    Fe::from_le_bytes(&cid.digest32().ok_or(Error::NotCanonical)?)
}

/// All slot trees of a dataset and the verify tree over their roots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slots {
    geometry: SlotGeometry,
    slots: Vec<SlotTree>,
    verify: MerkleTree,
}

impl Slots {
    /// Builds every slot tree of `manifest`'s protected dataset and the verify tree,
    /// slot by slot, reading blocks through `read` in batches of `batch` dataset indices
    /// (see [`SlotTree::build`]). Costs about 1,120 permutations per 64 KiB block, on all
    /// cores of rayon's current pool; holds one batch of blocks at a time.
    ///
    /// # Errors
    /// As [`SlotGeometry::new`] and [`SlotTree::build`].
    pub fn build(
        manifest: &Manifest,
        batch: usize,
        mut read: impl FnMut(&[u64]) -> Result<Vec<Option<Bytes>>>,
    ) -> Result<Self> {
        let geometry = SlotGeometry::new(manifest)?;
        let slots = (0..geometry.num_slots)
            .map(|s| SlotTree::build(&geometry, s, batch, &mut read))
            .collect::<Result<Vec<_>>>()?;
        Self::from_slot_trees(geometry, slots)
    }

    /// The slots of in-memory data: `block(slot, i)` returns block `i` of `slot` (its
    /// real blocks; padding is added as the geometry says). For tests, benchmarks and
    /// data that is not in a store.
    ///
    /// # Errors
    /// [`Error::BlockLength`] for blocks of another size.
    pub fn from_blocks(
        geometry: SlotGeometry,
        mut block: impl FnMut(u64, u64) -> Bytes,
    ) -> Result<Self> {
        let bs = geometry.block_size as usize;
        let zero = zero_block_digest(bs)?;
        let slots = (0..geometry.num_slots)
            .map(|s| {
                let blocks: Vec<Option<Bytes>> = (0..geometry.slot_blocks)
                    .map(|i| Some(block(s, i)))
                    .collect();
                SlotTree::from_block_digests(block_digests(&blocks, bs, 0)?, &geometry, zero)
            })
            .collect::<Result<Vec<_>>>()?;
        Self::from_slot_trees(geometry, slots)
    }

    /// Assembles built slot trees (in slot order) and builds the verify tree.
    ///
    /// # Errors
    /// [`Error::WrongLength`] when the count differs from the geometry's slots.
    pub fn from_slot_trees(geometry: SlotGeometry, slots: Vec<SlotTree>) -> Result<Self> {
        if slots.len() as u64 != geometry.num_slots {
            return Err(Error::WrongLength {
                field: "slot trees".into(),
                expected: geometry.num_slots as usize,
                found: slots.len(),
            });
        }
        let verify = MerkleTree::new(slots.iter().map(SlotTree::root).collect())?;
        Ok(Slots {
            geometry,
            slots,
            verify,
        })
    }

    /// The geometry.
    pub fn geometry(&self) -> &SlotGeometry {
        &self.geometry
    }

    /// The slot trees, in slot order.
    pub fn slots(&self) -> &[SlotTree] {
        &self.slots
    }

    /// The slot roots, in slot order.
    pub fn slot_roots(&self) -> Vec<Fe> {
        self.verify.leaves().to_vec()
    }

    /// The verify tree over the slot roots.
    pub fn verify_tree(&self) -> &MerkleTree {
        &self.verify
    }

    /// The verify root (`dataSetRoot`; on chain `StorageContent.merkleRoot`, 32 bytes LE).
    pub fn verify_root(&self) -> Fe {
        self.verify.root()
    }

    /// The verify root's CID: `CIDv1(codex-proving-root, identity(32 bytes LE))`.
    pub fn verify_root_cid(&self) -> Cid {
        Cid::from_identity(codec::PROVING_ROOT, self.verify_root().to_le_bytes())
    }

    /// Slot `slot`'s proof against the verify root (the circuit's `slotProof`, unpadded).
    ///
    /// # Errors
    /// [`Error::LeafOutOfRange`].
    pub fn slot_proof(&self, slot: u64) -> Result<MerkleProof> {
        self.verify.proof(slot)
    }

    /// The manifest's `Verification`: verify root, slot roots, cell size 2048, linear.
    pub fn verification(&self) -> Verification {
        Verification {
            verify_root: self.verify_root_cid(),
            slot_roots: self.slots.iter().map(SlotTree::root_cid).collect(),
            cell_size: CELL_SIZE as u32,
            strategy: StrategyType::Linear,
        }
    }

    /// `protected` with this verification added: the verifiable manifest.
    ///
    /// # Errors
    /// [`Error::NotProtected`].
    pub fn verifiable_manifest(&self, protected: &Manifest) -> Result<Manifest> {
        let mut m = protected.clone();
        let p = m.protection.as_mut().ok_or(Error::NotProtected)?;
        p.verification = Some(self.verification());
        Ok(m)
    }
}

/// Reads blocks `indices` of the dataset tree `tree` from `store`: `None` for empty
/// (padding) blocks, which Codex does not store.
async fn read_blocks<S: BlockStore + ?Sized>(
    store: &S,
    tree: &Cid,
    indices: Vec<u64>,
) -> Result<Vec<Option<Bytes>>> {
    let empty = Cid::empty_block();
    let read = store.get_leaf_blocks(tree, indices.clone()).await?;
    let mut out = Vec::with_capacity(read.len());
    for (&i, r) in indices.iter().zip(read) {
        out.push(match r {
            Ok(b) if *b.cid() == empty => None,
            Ok(b) => Some(b.into_data()),
            Err(CoreError::NotFound(_))
                if store.get_leaf_meta(tree, i).await?.block_cid == empty =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        });
    }
    Ok(out)
}

/// Builds slot `slot`'s tree from `store` (reading the blocks while the previous batch
/// is hashed on a blocking thread).
///
/// # Errors
/// As [`SlotTree::build`], and [`Error::Store`] when blocks cannot be read.
///
/// # Cancel safety
/// Cancelling loses only the work done; nothing is written.
pub async fn build_slot_tree<S: BlockStore + ?Sized>(
    store: &S,
    manifest: &Manifest,
    slot: u64,
    batch: usize,
) -> Result<SlotTree> {
    let geometry = SlotGeometry::new(manifest)?;
    if slot >= geometry.num_slots {
        return Err(Error::SlotIndex {
            index: slot,
            slots: geometry.num_slots,
        });
    }
    let bs = geometry.block_size as usize;
    let indices: Vec<u64> = (0..geometry.slot_blocks)
        .map(|i| geometry.block_index(slot, i))
        .collect();
    let batches: Vec<Vec<u64>> = indices.chunks(batch.max(1)).map(<[u64]>::to_vec).collect();
    let mut digests = Vec::with_capacity(indices.len());
    let mut pending: Option<tokio::task::JoinHandle<Result<Vec<Fe>>>> = None;
    for chunk in batches {
        let first = chunk[0];
        let blocks = read_blocks(store, &manifest.tree_cid, chunk).await?;
        if let Some(h) = pending.take() {
            digests.extend(join(h).await?);
        }
        pending = Some(tokio::task::spawn_blocking(move || {
            block_digests(&blocks, bs, first)
        }));
    }
    if let Some(h) = pending.take() {
        digests.extend(join(h).await?);
    }
    let zero = tokio::task::spawn_blocking(move || zero_block_digest(bs));
    SlotTree::from_block_digests(digests, &geometry, join(zero).await?)
}

async fn join<T>(h: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    h.await.map_err(|e| Error::Task(e.to_string()))?
}

/// Makes a protected dataset verifiable: builds every slot tree from `store`, the
/// verify tree and the verifiable manifest, and stores the manifest. Returns its CID,
/// the manifest and the trees (whose [`SlotTree::leaf_metas`] are what Codex stores per
/// slot leaf).
///
/// Every slot leaf is stored with its proof (`session_put_leaf_refs`, Codex's
/// `putCidAndProof`), in the same session as the manifest.
///
/// # Errors
/// As [`build_slot_tree`]; [`Error::Store`] when the manifest cannot be stored.
///
/// # Cancel safety
/// Cancelling before the manifest is committed leaves the store unchanged.
pub async fn build_verifiable<S: BlockStore + ?Sized>(
    store: &S,
    manifest: &Manifest,
) -> Result<(Cid, Manifest, Slots)> {
    let geometry = SlotGeometry::new(manifest)?;
    let mut trees = Vec::with_capacity(geometry.num_slots as usize);
    for slot in 0..geometry.num_slots {
        trees.push(build_slot_tree(store, manifest, slot, DEFAULT_BATCH_BLOCKS).await?);
    }
    let slots = Slots::from_slot_trees(geometry, trees)?;
    let verifiable = slots.verifiable_manifest(manifest)?;
    let block = Block::manifest(verifiable.encode());
    let cid = *block.cid();
    let session = WriteSession::begin(store).await?;
    for tree in slots.slots() {
        session
            .put_leaf_refs(&tree.root_cid(), tree.leaf_metas())
            .await?;
    }
    session.commit(Some(block)).await?;
    Ok((cid, verifiable, slots))
}
