//! The node's [`SlotHost`]: slots fetched over the network with `codex_net::Download`
//! (rebuilt from the other slots with `codex_erasure::repair` when no peer serves
//! them: lazy repair), checked against the verifiable manifest's slot root, and proved
//! with halo2 on a blocking thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codex_core::prelude::*;
use codex_core::{Block, Cid, Manifest};
use codex_market::{MarketplaceConfig, SlotId, StorageRequest};
use codex_net::{Download, FetchOptions, Network};
use codex_proofs::{ProofInput, SlotGeometry, SlotTree, entropy_from_challenge};

use super::driver::{Fetched, SlotHost};
use crate::error::{Error, Result};
use crate::node::market::ProverSetup;

/// The slot's data, checked: the verifiable manifest, its geometry and the slot tree.
#[derive(Debug)]
struct SlotData {
    cid: Cid,
    manifest: Manifest,
    geometry: SlotGeometry,
    tree: Arc<SlotTree>,
    roots: Arc<Vec<codex_proofs::Fe>>,
    /// The slot was rebuilt from the other slots' blocks, fetched for it into a store
    /// that did not hold the dataset: once the fill proved the slot, they go.
    prune: bool,
}

/// The node's slots: its store, its network and its prover.
#[derive(Debug)]
pub struct NodeHost {
    store: Arc<dyn BlockStore>,
    network: Network,
    prover: Arc<ProverSetup>,
    slots: Mutex<BTreeMap<SlotId, Arc<SlotData>>>,
    /// How long the last proof took, in ms (0: none yet).
    last_prove_ms: AtomicU64,
    /// The manifest blocks [`SlotHost::vet`] fetched last (at most
    /// [`VETTED_KEPT`]), taken by the fetch that follows instead of asking the
    /// network again.
    vetted: Mutex<std::collections::VecDeque<Block>>,
}

/// How many vetted manifest blocks a host keeps for the fetches that follow.
const VETTED_KEPT: usize = 8;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl NodeHost {
    /// Dataset `cid`'s manifest block: one vetted lately, or from the store or the
    /// network.
    async fn manifest_block(&self, cid: Cid) -> Result<Block> {
        let kept = lock(&self.vetted).iter().find(|b| *b.cid() == cid).cloned();
        match kept {
            Some(block) => Ok(block),
            None => Ok(codex_net::fetch_manifest_block(&self.network, &self.store, cid).await?),
        }
    }

    /// Slots in `store`, fetched over `network`, proved with `prover`.
    pub fn new(store: Arc<dyn BlockStore>, network: Network, prover: Arc<ProverSetup>) -> Self {
        NodeHost {
            store,
            network,
            prover,
            slots: Mutex::new(BTreeMap::new()),
            last_prove_ms: AtomicU64::new(0),
            vetted: Mutex::default(),
        }
    }

    /// Fetches slot `index`'s blocks from whichever peers serve them. A slot in
    /// `Repair` (its host was slashed out), or one some of whose blocks no peer serves,
    /// is rebuilt instead, as Codex does: the blocks of the other slots are fetched
    /// from their hosts and the slot is rebuilt by erasure decoding, each rebuilt block
    /// checked against the dataset's tree (lazy repair). Returns whether it rebuilt.
    async fn fetch_slot(
        &self,
        cid: Cid,
        manifest: &Manifest,
        geometry: &SlotGeometry,
        index: u64,
        repair: bool,
    ) -> Result<bool> {
        let range =
            geometry.block_index(index, 0)..geometry.block_index(index, geometry.slot_blocks);
        let options = FetchOptions {
            stall_timeout: Duration::from_secs(20),
            ..FetchOptions::default()
        };
        let fetch = |r: std::ops::Range<u64>| {
            Download::new(&self.network, Arc::clone(&self.store), manifest)
                .cid(cid)
                .range(r)
                .options(options.clone())
                .run()
        };
        if !repair {
            let report = fetch(range.clone()).await?;
            if report.missing.is_empty() {
                return Ok(false);
            }
            tracing::info!(%cid, index, missing = report.missing.len(), "no peer serves the whole slot: rebuilding it from the others");
        }
        // Any K of each column's K + M blocks rebuild it: fetch what the other slots'
        // hosts serve.
        fetch(0..range.start).await?;
        fetch(range.end..manifest.blocks_count()).await?;
        let rebuilt = codex_erasure::repair(&*self.store, manifest, &[index as usize]).await?;
        tracing::info!(%cid, index, rebuilt, "slot rebuilt from the other slots");
        Ok(true)
    }
}

/// Checks that `manifest` (of dataset `cid`) is what `request` asks hosts to store:
/// a verifiable manifest with as many slots as the request, slots of the request's
/// size, slot roots whose verify tree has the request's root. A client whose request
/// disagrees would have its hosts' proofs fail on chain, and their collateral slashed.
///
/// # Errors
/// [`Error::RequestMismatch`] naming the first difference.
pub(crate) fn check_request(request: &StorageRequest, cid: Cid, manifest: &Manifest) -> Result<()> {
    let mismatch = |what: String| Error::RequestMismatch { cid, what };
    let verification = manifest
        .protection
        .as_ref()
        .and_then(|p| p.verification.as_ref())
        .ok_or_else(|| mismatch("not a verifiable manifest".into()))?;
    let slots = verification.slot_roots.len() as u64;
    if slots != request.ask.slots {
        return Err(mismatch(format!(
            "the request has {} slots, the dataset {slots}",
            request.ask.slots
        )));
    }
    let geometry = SlotGeometry::new(manifest)?;
    if geometry.slot_bytes() != request.ask.slot_size {
        return Err(mismatch(format!(
            "the request's slots have {} bytes, the dataset's {}",
            request.ask.slot_size,
            geometry.slot_bytes()
        )));
    }
    let roots = verification
        .slot_roots
        .iter()
        .map(codex_proofs::slot::cid_element)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let root = codex_proofs::MerkleTree::new(roots)?.root().to_le_bytes();
    let named = verification.verify_root.digest32();
    if named != Some(root) {
        return Err(mismatch(
            "its slot roots do not give its verify root".into(),
        ));
    }
    if root != request.content.merkle_root {
        return Err(mismatch(format!(
            "the request's root is 0x{}, the dataset's 0x{}",
            hex::encode(request.content.merkle_root),
            hex::encode(root)
        )));
    }
    Ok(())
}

/// Builds slot `index`'s tree from the stored blocks and checks its root against the
/// verifiable manifest.
async fn check_slot(
    store: &Arc<dyn BlockStore>,
    cid: Cid,
    manifest: Manifest,
    index: u64,
) -> Result<SlotData> {
    let geometry = SlotGeometry::new(&manifest)?;
    let verification = manifest
        .protection
        .as_ref()
        .and_then(|p| p.verification.clone())
        .ok_or(Error::NotAManifest(cid))?;
    let tree = codex_proofs::build_slot_tree(&**store, &manifest, index, 16).await?;
    let expected = verification
        .slot_roots
        .get(index as usize)
        .copied()
        .ok_or(Error::Proofs(codex_proofs::Error::SlotIndex {
            index,
            slots: verification.slot_roots.len() as u64,
        }))?;
    if tree.root_cid() != expected {
        return Err(Error::InvalidRequest(format!(
            "slot {index} of {cid}: the stored blocks give slot root {}, the manifest says {expected}",
            tree.root_cid()
        )));
    }
    let roots = verification
        .slot_roots
        .iter()
        .map(codex_proofs::slot::cid_element)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(SlotData {
        cid,
        manifest,
        geometry,
        tree: Arc::new(tree),
        roots: Arc::new(roots),
        prune: false,
    })
}

#[async_trait::async_trait]
impl SlotHost for NodeHost {
    async fn check(&self, config: &MarketplaceConfig) -> Result<()> {
        self.prover.check_verifying_key(config).await
    }

    async fn has_dataset(&self, cid: &Cid) -> bool {
        self.store.has_block(cid).await.unwrap_or(false)
    }

    async fn vet(&self, request: &StorageRequest) -> Result<()> {
        let cid = Cid::from_bytes(&request.content.cid)?;
        let block = self.manifest_block(cid).await?;
        check_request(request, cid, &Manifest::decode(block.data())?)?;
        let mut vetted = lock(&self.vetted);
        vetted.retain(|b| *b.cid() != cid);
        vetted.push_back(block);
        while vetted.len() > VETTED_KEPT {
            vetted.pop_front();
        }
        Ok(())
    }

    async fn fetch(&self, request: &StorageRequest, index: u64, repair: bool) -> Result<Fetched> {
        let t = Instant::now();
        let cid = Cid::from_bytes(&request.content.cid)?;
        let block = self.manifest_block(cid).await?;
        let manifest = Manifest::decode(block.data())?;
        check_request(request, cid, &manifest)?;
        let had = self.store.has_block(&cid).await.unwrap_or(true);
        // The manifest first: what is fetched is then a dataset of the store, listed,
        // and deleted with it if the sale fails.
        self.store.put_block(block).await?;
        let geometry = SlotGeometry::new(&manifest)?;
        let rebuilt = self
            .fetch_slot(cid, &manifest, &geometry, index, repair)
            .await?;
        let download = t.elapsed();
        let t = Instant::now();
        let mut data = check_slot(&self.store, cid, manifest, index).await?;
        data.prune = rebuilt && !had;
        let slot_root = t.elapsed();
        lock(&self.slots).insert(request.slot_id(index), Arc::new(data));
        Ok(Fetched {
            rebuilt,
            timings: vec![
                (if rebuilt { "repair" } else { "download" }, download),
                ("slotRoot", slot_root),
            ],
        })
    }

    async fn load(&self, request: &StorageRequest, index: u64) -> Result<()> {
        let cid = Cid::from_bytes(&request.content.cid)?;
        let manifest = Manifest::decode(self.store.get_block(&cid).await?.data())?;
        let data = check_slot(&self.store, cid, manifest, index).await?;
        lock(&self.slots).insert(request.slot_id(index), Arc::new(data));
        Ok(())
    }

    async fn prove(
        &self,
        request: &StorageRequest,
        index: u64,
        challenge: [u8; 32],
    ) -> Result<Vec<u8>> {
        let slot = request.slot_id(index);
        let data = lock(&self.slots)
            .get(&slot)
            .cloned()
            .ok_or_else(|| Error::InvalidRequest(format!("slot {slot}: its data is not loaded")))?;
        let prover = self.prover.get().await?;
        let store = Arc::clone(&self.store);
        let (tree, roots) = (Arc::clone(&data.tree), Arc::clone(&data.roots));
        let (tree_cid, geometry) = (data.manifest.tree_cid, data.geometry);
        let handle = tokio::runtime::Handle::current();
        let started = Instant::now();
        let proof = tokio::task::spawn_blocking(move || {
            let input = ProofInput::new(
                entropy_from_challenge(&challenge),
                &roots,
                index,
                &tree,
                prover.samples(),
                |b| {
                    if b >= geometry.slot_blocks {
                        return Ok(None);
                    }
                    let (block, _) = handle
                        .block_on(store.get_leaf(&tree_cid, geometry.block_index(index, b)))
                        .map_err(codex_proofs::Error::Store)?;
                    Ok((!block.is_empty()).then(|| Bytes::clone(block.data())))
                },
            )?;
            Ok::<_, codex_proofs::Error>(prover.prove(&input)?.bytes)
        })
        .await??;
        self.last_prove_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(proof)
    }

    fn last_prove_ms(&self) -> Option<u64> {
        match self.last_prove_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    async fn filled(&self, request: &StorageRequest, index: u64) {
        let data = lock(&self.slots).get(&request.slot_id(index)).cloned();
        if let Some(data) = data {
            if data.prune {
                // Lazy repair fetched the other slots' blocks to rebuild this one; the
                // fill proved it, and the host is paid for this slot alone.
                let g = &data.geometry;
                let (start, end) = (g.block_index(index, 0), g.block_index(index, g.slot_blocks));
                let tree = data.manifest.tree_cid;
                let mut deleted = 0;
                for range in [0..start, end..u64::MAX] {
                    match self.store.delete_leaves(&tree, range).await {
                        Ok(n) => deleted += n,
                        Err(e) => {
                            tracing::warn!(cid = %data.cid, error = %e, "cannot delete the other slots' blocks")
                        }
                    }
                }
                tracing::info!(cid = %data.cid, index, deleted, "repaired slot filled: the other slots' blocks deleted");
            }
            crate::node::network::announce(&self.network, data.cid, &data.manifest).await;
        }
    }

    async fn forget(&self, slot: SlotId) {
        lock(&self.slots).remove(&slot);
    }

    async fn delete_dataset(&self, cid: &Cid) -> Result<()> {
        Ok(self.store.delete_dataset(cid).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codex_market::alloy::primitives::U256;
    use codex_market::{Ask, Content};
    use codex_store::{MemoryStore, StoreConfig};

    /// A verifiable dataset of 3 slots (K = 2, M = 1) and the request its client
    /// would make for it.
    async fn dataset() -> anyhow::Result<(Cid, Manifest, StorageRequest)> {
        let store: Arc<dyn BlockStore> = Arc::new(MemoryStore::new(StoreConfig::default()));
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let cid = crate::node::data::store_stream(
            Arc::clone(&store),
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]),
            Default::default(),
        )
        .await?;
        let (cid, manifest, root) =
            crate::node::data::make_verifiable(&*store, cid, Some((2, 1))).await?;
        let geometry = SlotGeometry::new(&manifest)?;
        let request = StorageRequest {
            client: Default::default(),
            ask: Ask {
                proof_probability: U256::from(1),
                price_per_byte_per_second: U256::from(1),
                collateral_per_byte: U256::from(1),
                slots: 3,
                slot_size: geometry.slot_bytes(),
                duration: 3600,
                max_slot_loss: 1,
            },
            content: Content {
                cid: cid.to_bytes(),
                merkle_root: root.digest32().ok_or_else(|| anyhow::anyhow!("a root"))?,
            },
            expiry: 600,
            nonce: [1; 32],
        };
        Ok((cid, manifest, request))
    }

    #[tokio::test]
    async fn a_request_is_checked_against_its_manifest() -> anyhow::Result<()> {
        let (cid, manifest, request) = dataset().await?;
        check_request(&request, cid, &manifest)?;
        let refused = |r: &StorageRequest, m: &Manifest| match check_request(r, cid, m) {
            Err(Error::RequestMismatch { what, .. }) => what,
            other => format!("not refused: {other:?}"),
        };
        let mut r = request.clone();
        r.ask.slots = 4;
        assert_eq!(
            refused(&r, &manifest),
            "the request has 4 slots, the dataset 3"
        );
        let mut r = request.clone();
        r.ask.slot_size /= 2;
        assert!(
            refused(&r, &manifest).contains("slots have"),
            "{}",
            refused(&r, &manifest)
        );
        let mut r = request.clone();
        r.content.merkle_root[0] ^= 1;
        assert!(refused(&r, &manifest).contains("the request's root is 0x"));
        // A manifest whose slot roots do not give its verify root.
        let mut m = manifest.clone();
        if let Some(v) = m.protection.as_mut().and_then(|p| p.verification.as_mut()) {
            v.slot_roots.swap(0, 1);
        }
        assert_eq!(
            refused(&request, &m),
            "its slot roots do not give its verify root"
        );
        // A manifest that is not verifiable.
        let mut m = manifest.clone();
        if let Some(p) = m.protection.as_mut() {
            p.verification = None;
        }
        assert_eq!(refused(&request, &m), "not a verifiable manifest");
        Ok(())
    }
}
