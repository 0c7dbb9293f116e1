//! The download engine: fetch a dataset's blocks from every peer that has them through a
//! sliding window, scoring peers, retrying elsewhere, and streaming the bytes out in order.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codex_core::{Block, BlockAddress, BlockStore, Cid, Manifest};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::exchange::Fetched;
use crate::network::Network;

/// Failed requests for one block to one peer before that peer is not asked for it again.
const MAX_TRIES: u32 = 3;

/// Knobs of a download.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Requests in flight over all peers.
    pub window: usize,
    /// Requests in flight to one peer.
    pub per_peer: usize,
    /// Verified blocks being written to the store at the same time (the window keeps
    /// moving while they are written).
    pub store_concurrency: usize,
    /// How far ahead of the reader blocks are fetched (bounds memory when streaming).
    pub max_ahead: u64,
    /// Give up on the blocks left when no progress was made for this long, also while
    /// requests are still outstanding (a peer that takes want-lists but never delivers).
    pub stall_timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            window: 256,
            per_peer: 128,
            store_concurrency: 16,
            max_ahead: 512,
            stall_timeout: Duration::from_secs(60),
        }
    }
}

/// What a download did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Blocks fetched from peers.
    pub fetched: u64,
    /// Blocks that were already in the store.
    pub present: u64,
    /// Blocks no peer provided.
    pub missing: Vec<u64>,
}

#[derive(Debug, Default)]
struct PeerState {
    inflight: usize,
    ok: u64,
    failed: u64,
    dropped: bool,
}

impl PeerState {
    /// Lower is better: busy peers and peers that failed are asked less.
    fn score(&self) -> u64 {
        2 * self.inflight as u64 + 5 * self.failed.saturating_sub(self.ok / 4)
    }
}

enum Event<S, F> {
    Stored(S),
    Fetched(F),
    /// No block arrived for the stall timeout while requests were outstanding.
    Stalled,
}

/// Peers that may have `cids`: providers found through the DHT and peers we are connected to.
async fn discover(net: &Network, cids: &[Cid]) -> Vec<PeerId> {
    let started = Instant::now();
    let mut found: HashSet<PeerId> = HashSet::new();
    for cid in cids {
        if let Ok(ps) = net.find_providers(*cid).await {
            found.extend(ps);
        }
    }
    for p in &found {
        if let Err(e) = net.dial(*p, Vec::new()).await {
            tracing::debug!(peer = %p, error = %e, "cannot reach a provider");
        }
    }
    if let Ok(info) = net.info().await {
        found.extend(info.connected);
    }
    found.remove(&net.peer_id());
    tracing::debug!(peers = found.len(), elapsed = ?started.elapsed(), "discovered peers");
    found.into_iter().collect()
}

/// The manifest of `cid`: from the store, or fetched from a provider (checked against the
/// CID). A fetched manifest is not stored: store it once its blocks are, so that no
/// stored manifest refers to missing blocks.
pub async fn fetch_manifest(
    net: &Network,
    store: &Arc<dyn BlockStore>,
    cid: Cid,
) -> Result<Manifest> {
    let block = fetch_manifest_block(net, store, cid).await?;
    Ok(Manifest::decode(block.data())?)
}

/// The manifest block of `cid` (its bytes as the network has them), like [`fetch_manifest`].
pub async fn fetch_manifest_block(
    net: &Network,
    store: &Arc<dyn BlockStore>,
    cid: Cid,
) -> Result<Block> {
    if let Ok(block) = store.get_block(&cid).await {
        return Ok(block);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Ask every candidate at once; the first valid answer wins.
        let mut asks: FuturesUnordered<_> = discover(net, &[cid])
            .await
            .into_iter()
            .filter(|p| !net.exchange().is_banned(p))
            .map(|peer| {
                let ex = Arc::clone(net.exchange());
                async move { (peer, ex.request(peer, BlockAddress::Cid(cid)).await) }
            })
            .collect();
        while let Some((peer, answer)) = asks.next().await {
            match answer {
                Ok((block, _)) if Manifest::decode(block.data()).is_ok() => return Ok(block),
                Ok(_) => tracing::debug!(%peer, "not a manifest"),
                Err(e) => tracing::debug!(%peer, error = %e, "manifest not from this peer"),
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Unavailable(cid.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Fetches leaves `indices` of `manifest`'s tree into `store` from the network, skipping
/// those already stored (an interrupted download resumes). With `output`, the blocks'
/// bytes (the last one of the dataset cut to its size) are sent there in order as the
/// window moves; a block no peer provides then ends the output with an error.
///
/// # Cancel safety
/// Dropping the future stops the download; what was fetched stays in the store.
pub async fn fetch(
    net: &Network,
    store: &Arc<dyn BlockStore>,
    manifest: &Manifest,
    manifest_cid: Option<Cid>,
    indices: Range<u64>,
    output: Option<mpsc::Sender<Result<Bytes>>>,
    options: &FetchOptions,
) -> Result<FetchReport> {
    let tree = manifest.tree_cid;
    let size = manifest.original_size();
    let bs = u64::from(manifest.block_size);
    let mut report = FetchReport::default();

    let mut present = HashSet::new();
    let mut queue = VecDeque::new();
    for i in indices.clone() {
        if store.has_leaf(&tree, i).await? {
            present.insert(i);
            report.present += 1;
        } else {
            queue.push_back(i);
        }
    }
    let mut lookup: Vec<Cid> = vec![tree];
    lookup.extend(manifest_cid);
    let mut peers: HashMap<PeerId, PeerState> = HashMap::new();
    // Failed attempts per block and peer; a peer is not asked for a block again after
    // MAX_TRIES failures, and a block is missing when every usable peer reached that.
    let mut tried: HashMap<u64, HashMap<PeerId, u32>> = HashMap::new();
    let mut completed: BTreeMap<u64, Bytes> = BTreeMap::new();
    let mut failed: HashSet<u64> = HashSet::new();
    let mut inflight = FuturesUnordered::new();
    // The blocks of the requests in `inflight`, and when the first of them was sent.
    let mut asked: HashSet<u64> = HashSet::new();
    let mut asking_since = Instant::now();
    let mut storing = FuturesUnordered::new();
    let mut next_emit = indices.start;
    let mut last_progress = Instant::now();
    let mut last_discovery: Option<Instant> = None;

    loop {
        // Emit what is ready, in order.
        if let Some(out) = &output {
            while next_emit < indices.end {
                let data = if let Some(d) = completed.remove(&next_emit) {
                    d
                } else if present.contains(&next_emit) {
                    store.get_leaf(&tree, next_emit).await?.0.into_data()
                } else if failed.contains(&next_emit) {
                    let _ = out
                        .send(Err(Error::Unavailable(format!(
                            "block {next_emit} of {tree}"
                        ))))
                        .await;
                    return Err(Error::Unavailable(format!("block {next_emit} of {tree}")));
                } else {
                    break;
                };
                let mut data = data;
                let wanted = size.saturating_sub(next_emit * bs).min(bs) as usize;
                data.truncate(wanted);
                if out.send(Ok(data)).await.is_err() {
                    return Ok(report); // the reader went away
                }
                next_emit += 1;
            }
        }
        if queue.is_empty() && inflight.is_empty() && storing.is_empty() {
            break;
        }

        // Refresh peers when none is usable.
        let usable = peers.values().filter(|p| !p.dropped).count();
        if usable == 0 && last_discovery.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
            for p in discover(net, &lookup).await {
                if !net.exchange().is_banned(&p) {
                    peers.entry(p).or_default();
                }
            }
            last_discovery = Some(Instant::now());
        }

        // Fill the window.
        let horizon = if output.is_some() {
            next_emit + options.max_ahead
        } else {
            u64::MAX
        };
        while inflight.len() + storing.len() < options.window {
            let Some(&i) = queue.front() else { break };
            if i >= horizon {
                break;
            }
            let skip = tried.get(&i);
            let exhausted = |id: &PeerId| {
                skip.and_then(|s| s.get(id))
                    .is_some_and(|n| *n >= MAX_TRIES)
            };
            let best = peers
                .iter()
                .filter(|(id, p)| !p.dropped && p.inflight < options.per_peer && !exhausted(id))
                .min_by_key(|(_, p)| p.score())
                .map(|(id, _)| *id);
            let Some(peer) = best else {
                // Every usable peer failed this block too often: it is missing.
                let usable: Vec<&PeerId> = peers
                    .iter()
                    .filter(|(_, p)| !p.dropped)
                    .map(|(id, _)| id)
                    .collect();
                if !usable.is_empty() && usable.iter().all(|id| exhausted(id)) {
                    queue.pop_front();
                    failed.insert(i);
                    report.missing.push(i);
                    continue;
                }
                break;
            };
            queue.pop_front();
            if let Some(p) = peers.get_mut(&peer) {
                p.inflight += 1;
            }
            if inflight.is_empty() {
                asking_since = Instant::now();
            }
            asked.insert(i);
            let ex = Arc::clone(net.exchange());
            inflight.push(
                async move {
                    let r: Result<Fetched> = ex
                        .request(peer, BlockAddress::Leaf { tree, index: i })
                        .await;
                    (i, peer, r)
                }
                .boxed(),
            );
        }

        if inflight.is_empty() && storing.is_empty() {
            if last_progress.elapsed() > options.stall_timeout {
                while let Some(i) = queue.pop_front() {
                    failed.insert(i);
                    report.missing.push(i);
                }
                continue;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Nobody to ask: try finding peers again, and give those that failed a new chance.
            last_discovery = None;
            for p in peers.values_mut() {
                if !p.dropped {
                    p.failed = 0;
                }
            }
            if peers.values().all(|p| p.dropped) {
                peers.retain(|_, p| !p.dropped);
            }
            tried.clear();
            continue;
        }

        // Wait for a request to complete or a block to be stored; while the store is
        // full, only for the store. Requests that bring nothing for the stall timeout
        // (peers that take wants and stay silent, longer than their request timeout)
        // end the download.
        let store_full = storing.len() >= options.store_concurrency.max(1);
        let stall_at = last_progress.max(asking_since) + options.stall_timeout;
        let event = tokio::select! {
            Some(stored) = storing.next(), if !storing.is_empty() => Event::Stored(stored),
            Some(done) = inflight.next(), if !inflight.is_empty() && !store_full => Event::Fetched(done),
            () = tokio::time::sleep_until(stall_at), if storing.is_empty() => Event::Stalled,
            else => continue,
        };
        let (i, peer, result) = match event {
            Event::Stored((i, stored, data)) => {
                stored?;
                report.fetched += 1;
                last_progress = Instant::now();
                if output.is_some() {
                    completed.insert(i, data);
                }
                continue;
            }
            Event::Fetched(done) => done,
            Event::Stalled => {
                tracing::debug!(
                    outstanding = asked.len(),
                    queued = queue.len(),
                    "no block for the stall timeout; giving up on the rest"
                );
                // Dropping the requests withdraws them (see `Exchange::request`).
                inflight = FuturesUnordered::new();
                for i in queue.drain(..).chain(asked.drain()) {
                    failed.insert(i);
                    report.missing.push(i);
                }
                continue;
            }
        };
        asked.remove(&i);
        let state = peers.entry(peer).or_default();
        state.inflight = state.inflight.saturating_sub(1);
        match result {
            Ok((block, Some(proof))) => {
                state.ok += 1;
                let data = block.data().clone();
                let store = Arc::clone(store);
                storing.push(async move {
                    let stored = store.put_leaf(&tree, i, block, proof).await;
                    (i, stored, data)
                });
            }
            Ok((_, None)) => {
                state.failed += 1;
                queue.push_front(i);
            }
            Err(e) => {
                if matches!(e, Error::BadBlock { .. }) || net.exchange().is_banned(&peer) {
                    state.dropped = true;
                } else {
                    state.failed += 1;
                }
                tracing::debug!(index = i, %peer, error = %e, "block request failed; retrying elsewhere");
                *tried.entry(i).or_default().entry(peer).or_default() += 1;
                queue.push_front(i);
            }
        }
    }
    report.missing.sort_unstable();
    tracing::info!(
        fetched = report.fetched,
        present = report.present,
        missing = report.missing.len(),
        "fetch finished"
    );
    Ok(report)
}
