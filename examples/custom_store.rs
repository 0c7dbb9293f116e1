//! A third-party block store: blocks, leaves and write sessions in `HashMap`s behind one
//! `Mutex`, with its own quota, reference counting and undo, written against
//! `codex_core`'s five store traits and nothing else.
//!
//! The example runs the store conformance suite (`codex_store::conformance`, feature
//! `test-utils`) on it, then starts a node over it (`Node::builder().store(..)`, libp2p
//! on loopback, no REST API) that stores a file in it, and a second node with a
//! `MemoryStore` that downloads the dataset from the first (every block checked against
//! the dataset's tree) and compares the bytes.
//!
//! ```text
//! cargo run --example custom_store
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use codex::Node;
use codex::net::{Multiaddr, NetConfig};
use codex_core::prelude::*; // the store traits' methods
use codex_core::{
    Block, BlockRead, BlockWrite, Cid, CodexProof, Error, LeafMeta, Manifest, Manifests, Quota,
    Result, SessionId, Sessions, Space, codec,
};
use codex_store::dataset::AddOptions;
use codex_store::{MemoryStore, StoreConfig, conformance};
use futures::TryStreamExt;

/// A block and how many leaves and open sessions refer to it.
#[derive(Debug)]
struct Stored {
    block: Block,
    refs: u32,
}

/// A leaf of a tree: the block CID, its proof, and whether the CID is only a reference
/// (a slot tree's leaf, whose "block" is not stored).
#[derive(Clone, Debug)]
struct Leaf {
    cid: Cid,
    proof: CodexProof,
    is_ref: bool,
}

/// What an open session did, so that aborting can undo it.
#[derive(Debug, Default)]
struct Session {
    /// Blocks the session holds a reference to, and whether it created them.
    pins: HashMap<Cid, bool>,
    /// Trees the session wrote leaves to, and whether the tree was new.
    trees: HashMap<Cid, bool>,
}

#[derive(Debug)]
struct State {
    blocks: HashMap<Cid, Stored>,
    trees: HashMap<Cid, BTreeMap<u64, Leaf>>,
    sessions: HashMap<u64, Session>,
    next_session: u64,
    quota: u64,
    used: u64,
    reserved: u64,
}

/// The third-party store. Everything happens under one lock, so every operation is
/// atomic; nothing survives the process.
#[derive(Debug)]
struct MapStore {
    state: Mutex<State>,
}

impl MapStore {
    fn new(quota: u64) -> Self {
        MapStore {
            state: Mutex::new(State {
                blocks: HashMap::new(),
                trees: HashMap::new(),
                sessions: HashMap::new(),
                next_session: 0,
                quota,
                used: 0,
                reserved: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn available(&self) -> u64 {
        self.quota
            .saturating_sub(self.used)
            .saturating_sub(self.reserved)
    }

    /// Checks that the new ones among `blocks` fit, before anything is written.
    fn check_fits<'a>(&self, blocks: impl IntoIterator<Item = &'a Block>) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        let mut needed = 0u64;
        for b in blocks {
            if self.blocks.contains_key(b.cid()) || !seen.insert(*b.cid()) {
                continue;
            }
            let size = b.len() as u64;
            let available = self.available().saturating_sub(needed);
            if size > available {
                return Err(Error::QuotaExceeded {
                    needed: size,
                    available,
                });
            }
            needed += size;
        }
        Ok(())
    }

    /// Adds a block with `refs` references (or adds them to a stored one); returns
    /// whether it was new. The caller checked the quota.
    fn add(&mut self, block: &Block, refs: u32) -> bool {
        if let Some(s) = self.blocks.get_mut(block.cid()) {
            s.refs += refs;
            return false;
        }
        self.used += block.len() as u64;
        let stored = Stored {
            block: block.clone(),
            refs,
        };
        self.blocks.insert(*block.cid(), stored);
        true
    }

    fn remove(&mut self, cid: &Cid) {
        if let Some(s) = self.blocks.remove(cid) {
            self.used -= s.block.len() as u64;
        }
    }

    /// Drops a reference; removes the block at zero references if `delete_at_zero`.
    fn unref(&mut self, cid: &Cid, delete_at_zero: bool) {
        if let Some(s) = self.blocks.get_mut(cid) {
            s.refs = s.refs.saturating_sub(1);
            if s.refs == 0 && delete_at_zero {
                self.remove(cid);
            }
        }
    }

    /// Sets leaves of `tree`, all or none: every block must be stored (unless the leaves
    /// are references). New references are taken before old ones are dropped, so a block
    /// that moves between leaves stays.
    fn set_leaves(&mut self, tree: &Cid, leaves: &[LeafMeta], is_ref: bool) -> Result<()> {
        if !is_ref
            && let Some(l) = leaves
                .iter()
                .find(|l| !self.blocks.contains_key(&l.block_cid))
        {
            return Err(Error::not_found(l.block_cid));
        }
        let mut old = Vec::new();
        for l in leaves {
            if !is_ref && let Some(s) = self.blocks.get_mut(&l.block_cid) {
                s.refs += 1;
            }
            let leaf = Leaf {
                cid: l.block_cid,
                proof: l.proof.clone(),
                is_ref,
            };
            if let Some(prev) = self.trees.entry(*tree).or_default().insert(l.index, leaf)
                && !prev.is_ref
            {
                old.push(prev.cid);
            }
        }
        for cid in old {
            self.unref(&cid, true);
        }
        Ok(())
    }

    /// Removes a tree's leaves and every block only they referred to.
    fn delete_tree(&mut self, tree: &Cid) {
        for leaf in self.trees.remove(tree).unwrap_or_default().into_values() {
            if !leaf.is_ref {
                self.unref(&leaf.cid, true);
            }
        }
    }

    fn leaf(&self, tree: &Cid, index: u64) -> Result<&Leaf> {
        self.trees
            .get(tree)
            .and_then(|t| t.get(&index))
            .ok_or(Error::not_found((*tree, index)))
    }

    fn block(&self, cid: &Cid) -> Result<Block> {
        self.blocks
            .get(cid)
            .map(|s| s.block.clone())
            .ok_or(Error::not_found(*cid))
    }

    fn session(&mut self, id: SessionId) -> Result<&mut Session> {
        self.sessions
            .get_mut(&id.0)
            .ok_or(Error::UnknownSession(id.0))
    }

    /// Remembers that `session` writes to `tree`, and whether the tree was new then.
    fn note_tree(&mut self, session: SessionId, tree: &Cid) -> Result<()> {
        let new = self.trees.get(tree).is_none_or(BTreeMap::is_empty);
        self.session(session)?.trees.entry(*tree).or_insert(new);
        Ok(())
    }

    /// Undoes a session: the trees it created, then the blocks it created and nothing
    /// else refers to.
    fn abort(&mut self, id: SessionId) -> Result<()> {
        let session = self
            .sessions
            .remove(&id.0)
            .ok_or(Error::UnknownSession(id.0))?;
        for (tree, created) in session.trees {
            if created {
                self.delete_tree(&tree);
            }
        }
        for (cid, created) in session.pins {
            self.unref(&cid, created);
        }
        Ok(())
    }

    fn manifests(&self) -> impl Iterator<Item = (Cid, Result<Manifest>)> + '_ {
        self.blocks
            .iter()
            .filter(|(cid, _)| cid.codec() == codec::MANIFEST)
            .map(|(cid, s)| (*cid, Manifest::decode(s.block.data())))
    }
}

#[async_trait]
impl BlockRead for MapStore {
    async fn get_block(&self, cid: &Cid) -> Result<Block> {
        self.lock().block(cid)
    }

    async fn get_leaf(&self, tree: &Cid, index: u64) -> Result<(Block, CodexProof)> {
        let st = self.lock();
        let leaf = st.leaf(tree, index)?;
        Ok((st.block(&leaf.cid)?, leaf.proof.clone()))
    }

    async fn get_leaf_meta(&self, tree: &Cid, index: u64) -> Result<LeafMeta> {
        let st = self.lock();
        let leaf = st.leaf(tree, index)?;
        Ok(LeafMeta {
            index,
            block_cid: leaf.cid,
            proof: leaf.proof.clone(),
        })
    }

    async fn has_block(&self, cid: &Cid) -> Result<bool> {
        Ok(self.lock().blocks.contains_key(cid))
    }

    async fn has_leaf(&self, tree: &Cid, index: u64) -> Result<bool> {
        let st = self.lock();
        Ok(st
            .leaf(tree, index)
            .is_ok_and(|l| st.blocks.contains_key(&l.cid)))
    }
}

#[async_trait]
impl BlockWrite for MapStore {
    async fn put_block(&self, block: Block) -> Result<()> {
        let mut st = self.lock();
        st.check_fits([&block])?;
        st.add(&block, 0);
        Ok(())
    }

    async fn put_leaf(
        &self,
        tree: &Cid,
        index: u64,
        block: Block,
        proof: CodexProof,
    ) -> Result<()> {
        let mut st = self.lock();
        st.check_fits([&block])?;
        st.add(&block, 0);
        let leaf = LeafMeta {
            index,
            block_cid: *block.cid(),
            proof,
        };
        st.set_leaves(tree, &[leaf], false)
    }

    async fn delete_block(&self, cid: &Cid) -> Result<()> {
        let mut st = self.lock();
        if st.blocks.get(cid).is_some_and(|s| s.refs == 0) {
            st.remove(cid);
        }
        Ok(())
    }

    async fn delete_dataset(&self, manifest: &Cid) -> Result<()> {
        let mut st = self.lock();
        let m = Manifest::decode(st.block(manifest)?.data())?;
        let shared = st
            .manifests()
            .any(|(cid, other)| cid != *manifest && other.is_ok_and(|o| o.tree_cid == m.tree_cid));
        st.remove(manifest);
        if !shared {
            st.delete_tree(&m.tree_cid);
        }
        // The slot trees of a verifiable dataset go with it.
        let slots = m.protection.as_ref().and_then(|p| p.verification.as_ref());
        for root in slots.map(|v| v.slot_roots.as_slice()).unwrap_or_default() {
            st.delete_tree(root);
        }
        Ok(())
    }
}

#[async_trait]
impl Sessions for MapStore {
    async fn begin(&self) -> Result<SessionId> {
        let mut st = self.lock();
        let id = st.next_session;
        st.next_session += 1;
        st.sessions.insert(id, Session::default());
        Ok(SessionId(id))
    }

    async fn session_put_blocks(&self, session: SessionId, blocks: Vec<Block>) -> Result<()> {
        let mut st = self.lock();
        let pinned = &st.session(session)?.pins;
        let new: Vec<&Block> = blocks
            .iter()
            .filter(|b| !pinned.contains_key(b.cid()))
            .collect();
        st.check_fits(new.iter().copied())?;
        for block in new {
            if st.session(session)?.pins.contains_key(block.cid()) {
                continue; // twice in one batch
            }
            let created = st.add(block, 1);
            st.session(session)?.pins.insert(*block.cid(), created);
        }
        Ok(())
    }

    async fn session_put_leaves(
        &self,
        session: SessionId,
        tree: &Cid,
        leaves: Vec<LeafMeta>,
    ) -> Result<()> {
        let mut st = self.lock();
        st.note_tree(session, tree)?;
        st.set_leaves(tree, &leaves, false)
    }

    async fn session_put_leaf_refs(
        &self,
        session: SessionId,
        tree: &Cid,
        leaves: Vec<LeafMeta>,
    ) -> Result<()> {
        let mut st = self.lock();
        st.note_tree(session, tree)?;
        st.set_leaves(tree, &leaves, true)
    }

    async fn commit(&self, session: SessionId, manifest: Option<Block>) -> Result<()> {
        let mut st = self.lock();
        st.session(session)?;
        if let Some(m) = &manifest {
            st.check_fits([m])?;
            st.add(m, 0);
        }
        // The session's references go; its blocks stay, held by its leaves or on their own.
        let done = st.sessions.remove(&session.0).unwrap_or_default();
        for cid in done.pins.keys() {
            st.unref(cid, false);
        }
        Ok(())
    }

    async fn abort(&self, session: SessionId) -> Result<()> {
        self.lock().abort(session)
    }

    fn abandon(&self, session: SessionId) {
        // In memory, undoing is quick: done at once, without a task.
        if let Err(e) = self.lock().abort(session) {
            eprintln!("cannot undo abandoned {session}: {e}");
        }
    }
}

#[async_trait]
impl Quota for MapStore {
    async fn space(&self) -> Result<Space> {
        let st = self.lock();
        Ok(Space {
            total_blocks: st.blocks.len() as u64,
            quota_max_bytes: st.quota,
            quota_used_bytes: st.used,
            quota_reserved_bytes: st.reserved,
        })
    }

    async fn reserve(&self, bytes: u64) -> Result<()> {
        let mut st = self.lock();
        let available = st.available();
        if bytes > available {
            return Err(Error::QuotaExceeded {
                needed: bytes,
                available,
            });
        }
        st.reserved += bytes;
        Ok(())
    }

    async fn release(&self, bytes: u64) -> Result<()> {
        let mut st = self.lock();
        st.reserved = st.reserved.saturating_sub(bytes);
        Ok(())
    }
}

#[async_trait]
impl Manifests for MapStore {
    async fn manifests(&self) -> Result<Vec<(Cid, Manifest)>> {
        let st = self.lock();
        st.manifests().map(|(cid, m)| Ok((cid, m?))).collect()
    }
}

/// Deterministic bytes that do not compress or repeat.
fn file(len: usize) -> Bytes {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// A node with no REST API, libp2p on loopback, over `store`.
async fn node(
    dir: &std::path::Path,
    store: Arc<dyn BlockStore>,
    bootstrap: Vec<Multiaddr>,
) -> anyhow::Result<Node> {
    Ok(Node::builder()
        .data_dir(dir)
        .store(store)
        .network_config(NetConfig {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            bootstrap,
            ..NetConfig::default()
        })
        .start()
        .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. The conformance suite, every case on a fresh store.
    let started = Instant::now();
    let passed = conformance::run(|| async { MapStore::new(conformance::MIN_QUOTA) }).await?;
    println!(
        "MapStore passed all {passed} conformance cases ({}) in {:?}",
        conformance::CASES.join(", "),
        started.elapsed()
    );

    // 2. A node over it: the node stores a file in the custom store and announces it.
    let dir = tempfile::tempdir()?;
    let a = node(
        &dir.path().join("a"),
        Arc::new(MapStore::new(1 << 30)),
        vec![],
    )
    .await?;
    let data = file((3 << 20) + 777);
    let source = futures::stream::iter(
        data.chunks(256 << 10)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c))),
    );
    let added = a.add(source, AddOptions::default()).await?;
    let space = a.space().await?;
    println!(
        "node A stored {} bytes in MapStore as {}: {} blocks, {} bytes of quota used",
        data.len(),
        added.cid,
        space.total_blocks,
        space.quota_used_bytes
    );

    // 3. Served to a peer: node B (a memory store) bootstraps from A, finds A as the
    //    provider and downloads the dataset, every block checked against its tree.
    let started = Instant::now();
    let memory: Arc<dyn BlockStore> = Arc::new(MemoryStore::new(StoreConfig::default()));
    let b = node(&dir.path().join("b"), memory, a.addresses().await?).await?;
    let fetched = b.fetch(added.cid).await?;
    let read: Vec<Bytes> = b.read(added.cid).await?.stream.try_collect().await?;
    anyhow::ensure!(read.concat() == data, "B read other bytes than A stored");
    println!(
        "node B fetched {} blocks from node A's MapStore and read the same {} bytes in {:?}",
        fetched.blocks_count(),
        data.len(),
        started.elapsed()
    );

    b.shutdown().await?;
    a.shutdown().await?;
    println!("next: cargo run --example store_and_erasure (storage and erasure coding alone)");
    Ok(())
}
