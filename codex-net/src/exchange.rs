//! The block exchange on `/codex/blockexc/1.0.0`: serving blocks from the store to peers
//! that want them, and asking peers for blocks, checking every delivery.
//!
//! As in Codex each side writes its messages on a stream it opened, and reads the
//! messages of its peer on the stream the peer opened.
//!
//! The exchange runs over a [`libp2p_stream::Control`]: a node's [`Network`] starts one
//! on its own swarm, and an app mounts one on its own swarm with [`Exchange::mount`],
//! beside its own behaviours:
//!
//! ```no_run
//! use codex_net::{Exchange, ExchangeConfig, libp2p_stream};
//! use libp2p::swarm::NetworkBehaviour;
//!
//! #[derive(NetworkBehaviour)]
//! struct AppBehaviour {
//!     ping: libp2p::ping::Behaviour,
//!     blocks: libp2p_stream::Behaviour,
//! }
//!
//! # fn demo(swarm: libp2p::Swarm<AppBehaviour>, store: std::sync::Arc<dyn codex_core::BlockRead>)
//! # -> codex_net::Result<()> {
//! let exchange = Exchange::mount(swarm.behaviour().blocks.new_control(), store, ExchangeConfig::default())?;
//! # Ok(()) }
//! ```
//!
//! [`Network`]: crate::Network

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codex_core::{Block, BlockAddress, BlockRead, Cid, CodexProof, Error as CoreError, Manifest};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::ban::BanList;
use crate::error::{Error, Result};
use crate::message::{
    Delivery, Entry, Message, PROTOCOL, Presence, PresenceType, WantList, WantType, read_message,
    write_message,
};
use crate::network::{CommandSender, disconnect_command};

/// Limits of the block exchange. Each must be more than zero
/// ([`ExchangeConfig::validate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// Largest message read from a peer (Codex allows 100 MiB; default 16 MiB).
    pub max_message_bytes: usize,
    /// Most want-list entries in one message; a peer that sends more is dropped
    /// (default 1024, as Codex batches).
    pub max_entries_per_message: usize,
    /// Blocks served to one peer at the same time (default 32).
    pub serve_concurrency_per_peer: usize,
    /// Wants of one peer waiting to be served; more is a flood and the peer is dropped
    /// (default 4096).
    pub max_queued_wants_per_peer: usize,
    /// How long a peer dropped for misbehaving stays banned: its streams are refused
    /// and it is not asked for blocks (default 10 minutes).
    pub ban_duration: Duration,
    /// Most peers banned at once; banning one more lifts the oldest ban (default 1024).
    pub max_banned_peers: usize,
    /// How long a request for a block waits for its delivery, opening the stream
    /// included (default 15 s).
    pub request_timeout: Duration,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        ExchangeConfig {
            max_message_bytes: 16 << 20,
            max_entries_per_message: 1024,
            serve_concurrency_per_peer: 32,
            max_queued_wants_per_peer: 4096,
            ban_duration: Duration::from_secs(10 * 60),
            max_banned_peers: 1024,
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// What a request returns: the block and, for a leaf address, its proof.
pub type Fetched = (Block, Option<CodexProof>);

type Waiter = oneshot::Sender<Result<Fetched>>;

/// Counters, for tests and `/debug/info`.
#[derive(Debug, Default)]
pub struct ExchangeStats {
    /// Blocks sent to peers.
    pub served: AtomicU64,
    /// Blocks received and accepted.
    pub received: AtomicU64,
    /// Deliveries rejected.
    pub rejected: AtomicU64,
    /// Peers dropped for misbehaving.
    pub dropped_peers: AtomicU64,
}

struct Serving {
    slots: Arc<Semaphore>,
    queued: AtomicU64,
}

/// The block exchange of one node: serves the blocks of its store to peers that want
/// them, and asks peers for blocks ([`Exchange::request`], and [`Download`] for whole
/// datasets).
///
/// [`Download`]: crate::Download
pub struct Exchange {
    control: Mutex<libp2p_stream::Control>,
    store: Arc<dyn BlockRead>,
    config: ExchangeConfig,
    /// The swarm's command channel, to disconnect misbehaving peers (none when mounted
    /// on an app's swarm).
    commands: Option<CommandSender>,
    outbound: Mutex<HashMap<PeerId, mpsc::Sender<Message>>>,
    pending: Mutex<HashMap<(PeerId, BlockAddress), Waiter>>,
    serving: Mutex<HashMap<PeerId, Arc<Serving>>>,
    banned: Mutex<BanList>,
    /// Counters.
    pub stats: ExchangeStats,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn protocol() -> StreamProtocol {
    StreamProtocol::new(PROTOCOL)
}

impl Exchange {
    /// Mounts the block exchange on an app's own swarm: `control` comes from a
    /// [`libp2p_stream::Behaviour`] in the app's `#[derive(NetworkBehaviour)]`. The
    /// exchange accepts `/codex/blockexc/1.0.0` streams from then on and serves them
    /// from `store`; it opens streams (dialing if needed) when asked for blocks.
    ///
    /// The app keeps its swarm: to fail the requests to a peer as soon as its last
    /// connection closes, it calls [`Exchange::peer_disconnected`] on
    /// `SwarmEvent::ConnectionClosed { num_established: 0, .. }` (otherwise they time
    /// out). A misbehaving peer is banned (its streams are refused, see
    /// [`Exchange::is_banned`]); the app may disconnect it too.
    ///
    /// Serving only reads the store: any [`BlockRead`] will do (a store, an `Arc` of
    /// one, an `Arc<dyn BlockStore>`).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] when a limit of `config` is zero
    /// ([`ExchangeConfig::validate`]); [`Error::Libp2p`] when another handler already
    /// accepts the protocol on this `control`'s behaviour.
    pub fn mount(
        control: libp2p_stream::Control,
        store: impl BlockRead + 'static,
        config: ExchangeConfig,
    ) -> Result<Arc<Self>> {
        Self::start(control, Arc::new(store), config, None)
    }

    pub(crate) fn start(
        control: libp2p_stream::Control,
        store: Arc<dyn BlockRead>,
        config: ExchangeConfig,
        commands: Option<CommandSender>,
    ) -> Result<Arc<Self>> {
        config.validate()?;
        let ex = Arc::new(Exchange {
            control: Mutex::new(control.clone()),
            store,
            commands,
            outbound: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            serving: Mutex::new(HashMap::new()),
            banned: Mutex::new(BanList::new(config.ban_duration, config.max_banned_peers)),
            stats: ExchangeStats::default(),
            config,
        });
        let mut control = control;
        match control.accept(protocol()) {
            Ok(mut incoming) => {
                let weak = Arc::downgrade(&ex);
                tokio::spawn(async move {
                    while let Some((peer, stream)) = incoming.next().await {
                        let Some(ex) = weak.upgrade() else { break };
                        if ex.is_banned(&peer) {
                            continue;
                        }
                        tokio::spawn(ex.read_loop(peer, stream));
                    }
                });
            }
            Err(e) => {
                return Err(Error::Libp2p(format!(
                    "cannot accept {PROTOCOL} streams: {e}"
                )));
            }
        }
        Ok(ex)
    }

    async fn read_loop(self: Arc<Self>, peer: PeerId, mut stream: libp2p::Stream) {
        loop {
            match read_message(&mut stream, self.config.max_message_bytes).await {
                Ok(Some(msg)) => {
                    if let Err(e) = self.on_message(peer, msg) {
                        self.punish(peer, &e.to_string());
                        break;
                    }
                    if self.is_banned(&peer) {
                        break; // a delivery of this message failed its check
                    }
                }
                Ok(None) => break,
                Err(e @ (Error::Malformed(_) | Error::TooLarge { .. } | Error::Core(_))) => {
                    self.punish(peer, &e.to_string());
                    break;
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "block-exchange stream closed");
                    break;
                }
            }
        }
    }

    /// Drops a misbehaving peer: its requests fail, it is disconnected and not served
    /// again for [`ExchangeConfig::ban_duration`].
    fn punish(&self, peer: PeerId, reason: &str) {
        if !lock(&self.banned).ban(peer, Instant::now()) {
            return; // dropped already
        }
        tracing::warn!(%peer, reason, "dropping a misbehaving peer");
        self.stats.dropped_peers.fetch_add(1, Ordering::Relaxed);
        if let Some(commands) = &self.commands {
            let _ = commands.try_send(disconnect_command(peer));
        }
        self.peer_disconnected(peer);
    }

    /// Whether `peer` was dropped for misbehaving, less than
    /// [`ExchangeConfig::ban_duration`] ago.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        lock(&self.banned).is_banned(peer, Instant::now())
    }

    /// How many peers are banned (at most [`ExchangeConfig::max_banned_peers`]; expired
    /// bans count until the next ban clears them).
    pub fn banned_count(&self) -> usize {
        lock(&self.banned).len()
    }

    /// Forgets a peer whose connections are all closed: its outstanding requests fail
    /// now, its stream and serving state are dropped. A node's [`Network`] calls it
    /// itself; an app that mounted the exchange calls it on
    /// `SwarmEvent::ConnectionClosed { num_established: 0, .. }`.
    ///
    /// [`Network`]: crate::Network
    pub fn peer_disconnected(&self, peer: PeerId) {
        lock(&self.outbound).remove(&peer);
        lock(&self.serving).remove(&peer);
        let mut pending = lock(&self.pending);
        let keys: Vec<_> = pending
            .keys()
            .filter(|(p, _)| *p == peer)
            .copied()
            .collect();
        for k in keys {
            if let Some(w) = pending.remove(&k) {
                let _ = w.send(Err(Error::Unavailable(format!(
                    "{} (peer {peer} left)",
                    k.1
                ))));
            }
        }
    }

    fn on_message(self: &Arc<Self>, peer: PeerId, msg: Message) -> Result<()> {
        if msg.wantlist.entries.len() > self.config.max_entries_per_message {
            return Err(Error::Malformed("want-list longer than allowed"));
        }
        for entry in msg.wantlist.entries {
            if !entry.cancel {
                self.want(peer, entry)?;
            }
        }
        for d in msg.payload {
            self.delivered(peer, d);
        }
        for p in msg.presences {
            if p.kind == PresenceType::DontHave
                && let Some(w) = lock(&self.pending).remove(&(peer, p.address))
            {
                let _ = w.send(Err(Error::Unavailable(format!(
                    "{} (peer {peer} lacks it)",
                    p.address
                ))));
            }
        }
        Ok(())
    }

    fn want(self: &Arc<Self>, peer: PeerId, entry: Entry) -> Result<()> {
        let serving = Arc::clone(lock(&self.serving).entry(peer).or_insert_with(|| {
            Arc::new(Serving {
                slots: Arc::new(Semaphore::new(self.config.serve_concurrency_per_peer)),
                queued: AtomicU64::new(0),
            })
        }));
        if serving.queued.fetch_add(1, Ordering::Relaxed)
            >= self.config.max_queued_wants_per_peer as u64
        {
            return Err(Error::Malformed("want-list flood"));
        }
        let ex = Arc::clone(self);
        tokio::spawn(async move {
            let permit = serving.slots.clone().acquire_owned().await;
            let answer = ex.answer(&entry).await;
            drop(permit);
            serving.queued.fetch_sub(1, Ordering::Relaxed);
            if let Some(msg) = answer
                && let Err(e) = ex.send(peer, msg).await
            {
                tracing::debug!(%peer, error = %e, "cannot answer a want");
            }
        });
        Ok(())
    }

    async fn answer(&self, entry: &Entry) -> Option<Message> {
        let dont_have = || {
            entry.send_dont_have.then(|| Message {
                presences: vec![Presence {
                    address: entry.address,
                    kind: PresenceType::DontHave,
                    price: Vec::new(),
                }],
                ..Message::default()
            })
        };
        if entry.want_type == WantType::WantHave {
            let has = match entry.address {
                BlockAddress::Leaf { tree, index } => self.store.has_leaf(&tree, index).await,
                BlockAddress::Cid(cid) => self.store.has_block(&cid).await,
            };
            return match has {
                Ok(true) => Some(Message {
                    presences: vec![Presence {
                        address: entry.address,
                        kind: PresenceType::Have,
                        price: Vec::new(),
                    }],
                    ..Message::default()
                }),
                _ => dont_have(),
            };
        }
        let found = match entry.address {
            BlockAddress::Leaf { tree, index } => self
                .store
                .get_leaf(&tree, index)
                .await
                .map(|(b, p)| (b, Some(p))),
            BlockAddress::Cid(cid) => self.store.get_block(&cid).await.map(|b| (b, None)),
        };
        match found {
            Ok((block, proof)) => {
                self.stats.served.fetch_add(1, Ordering::Relaxed);
                Some(Message {
                    payload: vec![Delivery {
                        cid: *block.cid(),
                        data: block.into_data(),
                        address: entry.address,
                        proof,
                    }],
                    ..Message::default()
                })
            }
            Err(CoreError::NotFound(_)) => dont_have(),
            Err(e) => {
                tracing::warn!(address = %entry.address, error = %e, "cannot serve a block");
                dont_have()
            }
        }
    }

    /// Checks a delivery on the blocking pool (deliveries are hashed in parallel, and the
    /// stream is read on meanwhile) and hands it to its waiter; a bad one gets the peer
    /// dropped before the waiter hears of it.
    fn delivered(self: &Arc<Self>, peer: PeerId, d: Delivery) {
        let Some(waiter) = lock(&self.pending).remove(&(peer, d.address)) else {
            // Unsolicited or late (after a timeout): ignore it.
            return;
        };
        let ex = Arc::clone(self);
        tokio::spawn(async move {
            let address = d.address;
            let checked = tokio::task::spawn_blocking(move || verify(&d))
                .await
                .unwrap_or_else(|e| Err(format!("verification failed: {e}")));
            match checked {
                Ok(fetched) => {
                    ex.stats.received.fetch_add(1, Ordering::Relaxed);
                    let _ = waiter.send(Ok(fetched));
                }
                Err(reason) => {
                    ex.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    let e = Error::BadBlock {
                        peer: peer.to_string(),
                        address: address.to_string(),
                        reason,
                    };
                    ex.punish(peer, &e.to_string());
                    let _ = waiter.send(Err(e));
                }
            }
        });
    }

    /// The sending side of our stream to `peer`, opened on first use.
    async fn sender(&self, peer: PeerId) -> Result<mpsc::Sender<Message>> {
        if let Some(tx) = lock(&self.outbound).get(&peer).filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let mut control = lock(&self.control).clone();
        let mut stream = control.open_stream(peer, protocol()).await.map_err(|e| {
            Error::Libp2p(format!(
                "cannot open a block-exchange stream to {peer}: {e}"
            ))
        })?;
        let (tx, mut rx) = mpsc::channel::<Message>(64);
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                // Write what is queued, flush once the queue is empty.
                let mut next = Some(msg);
                let mut result = Ok(());
                while let Some(m) = next.take() {
                    result = write_message(&mut stream, &m, false).await;
                    if result.is_err() {
                        break;
                    }
                    next = rx.try_recv().ok();
                }
                if result.is_ok() {
                    result = futures::AsyncWriteExt::flush(&mut stream)
                        .await
                        .map_err(Error::from);
                }
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "block-exchange write failed");
                    break;
                }
            }
        });
        let mut outbound = lock(&self.outbound);
        let tx = match outbound.get(&peer).filter(|t| !t.is_closed()) {
            Some(existing) => existing.clone(),
            None => {
                outbound.insert(peer, tx.clone());
                tx
            }
        };
        Ok(tx)
    }

    async fn send(&self, peer: PeerId, msg: Message) -> Result<()> {
        let tx = self.sender(peer).await?;
        tx.send(msg).await.map_err(|_| {
            lock(&self.outbound).remove(&peer);
            Error::Libp2p(format!("stream to {peer} closed"))
        })
    }

    /// The manifest of `cid`, asked of all `peers` at once; the first block that is a
    /// manifest wins (its bytes are checked against `cid` like every delivery). Nothing
    /// is stored.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when no peer delivered a manifest (each request is bounded
    /// by [`ExchangeConfig::request_timeout`]).
    ///
    /// # Cancel safety
    /// Dropping the future withdraws the requests.
    pub async fn fetch_manifest(&self, peers: &[PeerId], cid: Cid) -> Result<Manifest> {
        let mut asks: FuturesUnordered<_> = peers
            .iter()
            .filter(|p| !self.is_banned(p))
            .map(|&peer| async move { (peer, self.request(peer, BlockAddress::Cid(cid)).await) })
            .collect();
        while let Some((peer, answer)) = asks.next().await {
            match answer {
                Ok((block, _)) => match Manifest::decode(block.data()) {
                    Ok(m) => return Ok(m),
                    Err(e) => tracing::debug!(%peer, error = %e, "not a manifest"),
                },
                Err(e) => tracing::debug!(%peer, error = %e, "manifest not from this peer"),
            }
        }
        Err(Error::Unavailable(cid.to_string()))
    }

    /// Asks `peer` for the block at `address` and waits (at most the configured timeout)
    /// for a delivery that passes verification: the bytes hash to the CID, and for a
    /// leaf the proof puts that CID at that index of the tree.
    ///
    /// # Errors
    /// [`Error::BadBlock`] (the peer is dropped), [`Error::Unavailable`] when the peer
    /// lacks the block, leaves or does not answer in time.
    ///
    /// # Cancel safety
    /// Dropping the future withdraws the request: a later delivery is ignored.
    pub async fn request(&self, peer: PeerId, address: BlockAddress) -> Result<Fetched> {
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert((peer, address), tx);
        let _withdraw = Withdraw {
            pending: &self.pending,
            key: (peer, address),
        };
        let want = Message {
            wantlist: WantList {
                entries: vec![Entry {
                    address,
                    priority: 0,
                    cancel: false,
                    want_type: WantType::WantBlock,
                    send_dont_have: true,
                }],
                full: false,
            },
            ..Message::default()
        };
        // The whole exchange, opening the stream included, is bounded by the timeout.
        let result = tokio::time::timeout(self.config.request_timeout, async {
            self.send(peer, want).await?;
            rx.await
                .map_err(|_| Error::Unavailable(address.to_string()))?
        })
        .await;
        match result {
            Ok(Ok(fetched)) => Ok(fetched),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Unavailable(format!(
                "{address} (peer {peer} timed out)"
            ))),
        }
    }
}

/// Removes a request's waiter when the request ends, however it ends (answered, failed,
/// timed out or dropped). A waiter that was answered is gone from the map already.
struct Withdraw<'a> {
    pending: &'a Mutex<HashMap<(PeerId, BlockAddress), Waiter>>,
    key: (PeerId, BlockAddress),
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        let mut pending = lock(self.pending);
        // Only our own waiter: a newer request for the same block may have replaced it.
        if pending.get(&self.key).is_some_and(|w| w.is_closed()) {
            pending.remove(&self.key);
        }
    }
}

/// Checks a delivery: the bytes hash to the CID; a leaf delivery carries a proof for
/// that index which puts the CID under the tree root.
fn verify(d: &Delivery) -> std::result::Result<Fetched, String> {
    let block = Block::verified(d.cid, d.data.clone()).map_err(|e| e.to_string())?;
    match d.address {
        BlockAddress::Cid(cid) => {
            if cid != d.cid {
                return Err(format!("asked for {cid}, got {}", d.cid));
            }
            Ok((block, None))
        }
        BlockAddress::Leaf { tree, index } => {
            let proof = d.proof.clone().ok_or("leaf delivery without a proof")?;
            if proof.index != index {
                return Err(format!("proof for leaf {}, asked for {index}", proof.index));
            }
            if !proof.verify_cids(&d.cid, &tree) {
                return Err("proof does not lead to the tree root".into());
            }
            Ok((block, Some(proof)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codex_core::MerkleTree;

    #[test]
    fn deliveries_are_verified() {
        let blocks: Vec<Block> = (0..4u8).map(|i| Block::new(vec![i; 64])).collect();
        let tree = MerkleTree::from_cids(blocks.iter().map(Block::cid)).expect("tree");
        let root = tree.root_cid();
        let good = Delivery {
            cid: *blocks[2].cid(),
            data: blocks[2].data().clone(),
            address: BlockAddress::Leaf {
                tree: root,
                index: 2,
            },
            proof: Some(tree.proof(2).expect("proof")),
        };
        assert!(verify(&good).is_ok());
        let mut bad = good.clone();
        bad.data = bytes::Bytes::from(vec![9u8; 64]);
        assert!(verify(&bad).is_err(), "wrong bytes");
        let mut bad = good.clone();
        bad.proof = Some(tree.proof(1).expect("proof"));
        assert!(verify(&bad).is_err(), "proof of another leaf");
        let mut bad = good.clone();
        bad.address = BlockAddress::Leaf {
            tree: root,
            index: 3,
        };
        assert!(verify(&bad).is_err(), "another index");
        let mut bad = good.clone();
        bad.proof = None;
        assert!(verify(&bad).is_err(), "no proof");
        let mut bad = good;
        bad.cid = *blocks[1].cid();
        bad.data = blocks[1].data().clone();
        assert!(
            verify(&bad).is_err(),
            "another block of the tree at this index"
        );
    }
}
