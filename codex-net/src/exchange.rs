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
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use codex_core::{Block, BlockAddress, BlockRead, Cid, CodexProof, Error as CoreError, Manifest};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::ban::BanList;
use crate::error::{Error, Result};
use crate::message::{
    Delivery, Entry, Message, PROTOCOL, Presence, PresenceType, WantList, WantType, read_message,
    write_message,
};
use crate::network::{CommandSender, disconnect_command};

/// Limits of the block exchange. Each must be more than zero
/// ([`ExchangeConfig::validate`]).
///
/// What one peer can make the node hold, whatever it sends and however slowly it reads:
/// `max_queued_wants_per_peer` wants (a few hundred bytes each) and
/// `max_queued_bytes_per_peer` bytes of answers (blocks read from the store, not yet
/// written to its stream), plus the one message being written; a write that makes no
/// progress for `write_timeout` drops the peer and frees all of it. All peers together
/// are held to `max_queued_wants_total` wants and `max_queued_bytes_total` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// Largest message read from a peer (Codex allows 100 MiB; default 16 MiB).
    pub max_message_bytes: usize,
    /// Most want-list entries in one message; a peer that sends more is dropped
    /// (default 1024, as Codex batches).
    pub max_entries_per_message: usize,
    /// Blocks read from the store for one peer at the same time (default 32).
    pub serve_concurrency_per_peer: usize,
    /// Wants of one peer taken and not yet answered on its stream (waiting, being read,
    /// or queued for writing); more is a flood and the peer is dropped (default 4096).
    pub max_queued_wants_per_peer: usize,
    /// Wants of all peers taken and not yet answered. At the limit the node stops
    /// reading want-lists until some are answered: no peer is dropped for it. At least
    /// `max_entries_per_message` (default 16384).
    pub max_queued_wants_total: usize,
    /// Bytes of answers queued for one peer: blocks read for it and not yet written to
    /// its stream. A block is read only once its room is reserved (a block's size is
    /// guessed from the largest answer so far, 65 KiB at first); a peer that does not
    /// read keeps its wants waiting for room, not holding blocks (default 4 MiB, at most
    /// 4 GiB; a block larger than this takes the whole of it).
    pub max_queued_bytes_per_peer: usize,
    /// Bytes of answers queued for all peers; at the limit answers wait for room
    /// (default 256 MiB, at most 4 GiB).
    pub max_queued_bytes_total: usize,
    /// How long writing one message to a peer may take. A peer that does not read its
    /// stream for this long is dropped: disconnected and banned, everything queued for
    /// it freed (default 20 s).
    pub write_timeout: Duration,
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
            max_queued_wants_total: 16384,
            max_queued_bytes_per_peer: 4 << 20,
            max_queued_bytes_total: 256 << 20,
            write_timeout: Duration::from_secs(20),
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
    /// Bytes of the blocks sent to peers (their data, without proofs and framing).
    pub served_bytes: AtomicU64,
    /// Blocks received and accepted.
    pub received: AtomicU64,
    /// Bytes of the blocks received and accepted.
    pub received_bytes: AtomicU64,
    /// Deliveries rejected.
    pub rejected: AtomicU64,
    /// Peers dropped for misbehaving.
    pub dropped_peers: AtomicU64,
    /// Peers dropped because a write to them took longer than
    /// [`ExchangeConfig::write_timeout`].
    pub write_timeouts: AtomicU64,
    /// Wants of all peers taken and not yet answered, now.
    pub queued_wants: AtomicU64,
    /// Bytes of answers queued for all peers (room reserved, block read, or being
    /// written), now.
    pub queued_bytes: AtomicU64,
    /// The most bytes ever queued for one peer at once (at most
    /// [`ExchangeConfig::max_queued_bytes_per_peer`]).
    pub peak_queued_bytes_per_peer: AtomicU64,
}

/// What is queued for one peer now ([`Exchange::queued`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerQueue {
    /// Its wants taken and not yet answered on its stream.
    pub wants: u64,
    /// Bytes of answers queued for it: room reserved, block read, or being written.
    pub bytes: u64,
}

/// The room a want's answer reserves before its block is read, until the largest
/// answer so far is known: a 64 KiB block with its proof, CIDs and framing.
const FIRST_GUESS: u64 = 65 << 10;
/// What a presence answer, or the CIDs and framing of a delivery, count for.
const SMALL_ANSWER: u64 = 128;

/// About how many bytes `msg` takes: its blocks' bytes, their proofs, and
/// [`SMALL_ANSWER`] for each delivery's and presence's CIDs and framing.
fn cost(msg: &Message) -> u64 {
    let deliveries: u64 = msg
        .payload
        .iter()
        .map(|d| {
            let proof = d.proof.as_ref().map_or(0, |p| 32 * p.path.len() as u64);
            d.data.len() as u64 + proof + SMALL_ANSWER
        })
        .sum();
    deliveries + SMALL_ANSWER * msg.presences.len() as u64
}

/// Serving one peer: its wants and the room its answers take.
struct Serving {
    /// Blocks read for it at once.
    slots: Semaphore,
    /// Its budget of queued bytes, one permit a byte.
    room: Arc<Semaphore>,
    wants: AtomicU64,
    bytes: AtomicU64,
}

impl Serving {
    /// Ends the serving of a dropped or departed peer: answers waiting for a slot or
    /// room give up.
    fn close(&self) {
        self.slots.close();
        self.room.close();
    }
}

/// What a want's answer holds until it is written to its peer's stream, or dropped:
/// its place among the node's wants and its room in the peer's and the node's byte
/// budgets. Dropping it gives all of them back.
struct Held {
    serving: Arc<Serving>,
    stats: Arc<ExchangeStats>,
    _place: OwnedSemaphorePermit,
    /// The room in the peer's budget and in the node's.
    room: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Held {
    fn new(serving: Arc<Serving>, stats: Arc<ExchangeStats>, place: OwnedSemaphorePermit) -> Self {
        stats.queued_wants.fetch_add(1, Ordering::Relaxed);
        Held {
            serving,
            stats,
            _place: place,
            room: None,
        }
    }

    fn bytes(&self) -> u64 {
        self.room
            .as_ref()
            .map_or(0, |(p, _)| p.num_permits() as u64)
    }

    fn count(&self, old: u64, new: u64) {
        if new >= old {
            let more = new - old;
            let now = self.serving.bytes.fetch_add(more, Ordering::Relaxed) + more;
            self.stats.queued_bytes.fetch_add(more, Ordering::Relaxed);
            self.stats
                .peak_queued_bytes_per_peer
                .fetch_max(now, Ordering::Relaxed);
        } else {
            let less = old - new;
            self.serving.bytes.fetch_sub(less, Ordering::Relaxed);
            self.stats.queued_bytes.fetch_sub(less, Ordering::Relaxed);
        }
    }

    /// Makes the room held `bytes` (at most `cap`). Shrinking gives the rest back at
    /// once; growing gives back what is held and waits for the whole, so that no answer
    /// waits while it holds part of a budget.
    ///
    /// # Errors
    /// When the peer's budget is closed: the peer was dropped or left.
    async fn reserve(
        &mut self,
        bytes: u64,
        cap: u32,
        node: &Arc<Semaphore>,
    ) -> std::result::Result<(), AcquireError> {
        let want = u32::try_from(bytes).unwrap_or(u32::MAX).min(cap);
        let held = self.bytes();
        if u64::from(want) <= held {
            let less = (held - u64::from(want)) as usize;
            if let Some((peer, node)) = &mut self.room {
                drop(peer.split(less));
                drop(node.split(less));
            }
            self.count(held, u64::from(want));
            return Ok(());
        }
        self.room = None;
        self.count(held, 0);
        let peer = Arc::clone(&self.serving.room)
            .acquire_many_owned(want)
            .await?;
        let node = Arc::clone(node).acquire_many_owned(want).await?;
        self.room = Some((peer, node));
        self.count(0, u64::from(want));
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.count(self.bytes(), 0);
        self.serving.wants.fetch_sub(1, Ordering::Relaxed);
        self.stats.queued_wants.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A message for a peer's stream, with what it holds until it is written.
struct Outgoing {
    msg: Message,
    _held: Option<Held>,
}

/// Why a stream's writer stopped.
enum WriteEnd {
    /// A write or flush took longer than the write timeout: the peer does not read.
    TimedOut,
    /// The stream failed.
    Failed(Error),
}

/// `write` bounded by `deadline`.
async fn timed(
    deadline: Duration,
    write: impl std::future::Future<Output = Result<()>>,
) -> std::result::Result<(), WriteEnd> {
    match tokio::time::timeout(deadline, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(WriteEnd::Failed(e)),
        Err(_) => Err(WriteEnd::TimedOut),
    }
}

/// Writes what is queued for a peer, flushing once the queue is empty; each write and
/// flush is bounded by `deadline`. Returns when the queue closes, or at the first
/// failure.
async fn write_queued(
    stream: &mut libp2p::Stream,
    queue: &mut mpsc::Receiver<Outgoing>,
    deadline: Duration,
) -> std::result::Result<(), WriteEnd> {
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            timed(deadline, write_message(stream, &out.msg, false)).await?;
            // `out` is dropped here: once written, its room is free.
            next = queue.try_recv().ok();
        }
        let flush = async {
            futures::AsyncWriteExt::flush(stream)
                .await
                .map_err(Error::from)
        };
        timed(deadline, flush).await?;
    }
    Ok(())
}

/// The writer of our stream to `peer`: opens it (within the request timeout), then
/// writes what is queued. A peer that does not read is dropped; when the stream cannot
/// be opened the requests to the peer fail at once. Whatever is still queued is dropped
/// with the writer, and its room freed.
async fn writer(
    me: Weak<Exchange>,
    mut control: libp2p_stream::Control,
    peer: PeerId,
    mut queue: mpsc::Receiver<Outgoing>,
    config: ExchangeConfig,
) {
    let open = tokio::time::timeout(
        config.request_timeout,
        control.open_stream(peer, protocol()),
    );
    let mut stream = match open.await {
        Ok(Ok(stream)) => stream,
        failed => {
            let reason = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no stream after {:?}", config.request_timeout),
            };
            tracing::debug!(%peer, %reason, "cannot open a block-exchange stream");
            // Closed first: a request queued from now on fails when it is sent.
            queue.close();
            if let Some(ex) = me.upgrade() {
                ex.fail_requests(peer, |_| {
                    Error::Libp2p(format!(
                        "cannot open a block-exchange stream to {peer}: {reason}"
                    ))
                });
            }
            return;
        }
    };
    match write_queued(&mut stream, &mut queue, config.write_timeout).await {
        Ok(()) => {}
        Err(WriteEnd::TimedOut) => {
            if let Some(ex) = me.upgrade() {
                let reason = format!("a write did not complete in {:?}", config.write_timeout);
                if ex.punish(peer, &reason) {
                    ex.stats.write_timeouts.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Err(WriteEnd::Failed(e)) => {
            tracing::debug!(%peer, error = %e, "block-exchange write failed");
        }
    }
}

/// The block exchange of one node: serves the blocks of its store to peers that want
/// them, and asks peers for blocks ([`Exchange::request`], and [`Download`] for whole
/// datasets).
///
/// What it holds for each peer is bounded (see [`ExchangeConfig`]), and a peer that
/// does not read what it asked for is dropped after [`ExchangeConfig::write_timeout`].
///
/// [`Download`]: crate::Download
pub struct Exchange {
    me: Weak<Exchange>,
    control: Mutex<libp2p_stream::Control>,
    store: Arc<dyn BlockRead>,
    config: ExchangeConfig,
    /// The swarm's command channel, to disconnect misbehaving peers (none when mounted
    /// on an app's swarm).
    commands: Option<CommandSender>,
    outbound: Mutex<HashMap<PeerId, mpsc::Sender<Outgoing>>>,
    pending: Mutex<HashMap<(PeerId, BlockAddress), Waiter>>,
    serving: Mutex<HashMap<PeerId, Arc<Serving>>>,
    /// The node's wants, one permit each.
    places: Arc<Semaphore>,
    /// The node's budget of queued bytes, one permit a byte.
    room: Arc<Semaphore>,
    /// The room one answer may take: the smaller of the peer's and the node's budget.
    room_cap: u32,
    /// The largest answer so far: the room a block's answer reserves before it is read.
    largest_answer: AtomicU64,
    banned: Mutex<BanList>,
    /// Counters.
    pub stats: Arc<ExchangeStats>,
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

/// A byte budget as semaphore permits (at most `u32::MAX`, what one acquire takes).
fn budget(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
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
        let node_room = budget(config.max_queued_bytes_total);
        let room_cap = budget(config.max_queued_bytes_per_peer).min(node_room);
        let ex = Arc::new_cyclic(|me| Exchange {
            me: me.clone(),
            control: Mutex::new(control.clone()),
            store,
            commands,
            outbound: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            serving: Mutex::new(HashMap::new()),
            places: Arc::new(Semaphore::new(
                config.max_queued_wants_total.min(Semaphore::MAX_PERMITS),
            )),
            room: Arc::new(Semaphore::new(node_room as usize)),
            room_cap,
            largest_answer: AtomicU64::new(FIRST_GUESS),
            banned: Mutex::new(BanList::new(config.ban_duration, config.max_banned_peers)),
            stats: Arc::new(ExchangeStats::default()),
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
                    if let Err(e) = self.on_message(peer, msg).await {
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
    /// again for [`ExchangeConfig::ban_duration`]. False when it was dropped already.
    fn punish(&self, peer: PeerId, reason: &str) -> bool {
        if !lock(&self.banned).ban(peer, Instant::now()) {
            return false; // dropped already
        }
        tracing::warn!(%peer, reason, "dropping a misbehaving peer");
        self.stats.dropped_peers.fetch_add(1, Ordering::Relaxed);
        if let Some(commands) = &self.commands {
            let _ = commands.try_send(disconnect_command(peer));
        }
        self.peer_disconnected(peer);
        true
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

    /// What is queued for `peer` now: wants taken and not yet answered, and bytes of
    /// answers (at most [`ExchangeConfig::max_queued_wants_per_peer`] and
    /// [`ExchangeConfig::max_queued_bytes_per_peer`]). Zero for a peer that is not being
    /// served; the node's totals are in [`Exchange::stats`].
    pub fn queued(&self, peer: &PeerId) -> PeerQueue {
        lock(&self.serving)
            .get(peer)
            .map_or_else(PeerQueue::default, |s| PeerQueue {
                wants: s.wants.load(Ordering::Relaxed),
                bytes: s.bytes.load(Ordering::Relaxed),
            })
    }

    /// Forgets a peer whose connections are all closed: its outstanding requests fail
    /// now, its stream and serving state are dropped. A node's [`Network`] calls it
    /// itself; an app that mounted the exchange calls it on
    /// `SwarmEvent::ConnectionClosed { num_established: 0, .. }`.
    ///
    /// [`Network`]: crate::Network
    pub fn peer_disconnected(&self, peer: PeerId) {
        lock(&self.outbound).remove(&peer);
        if let Some(serving) = lock(&self.serving).remove(&peer) {
            serving.close();
        }
        self.fail_requests(peer, |address| {
            Error::Unavailable(format!("{address} (peer {peer} left)"))
        });
    }

    /// Our connection to `peer` that carried the streams closes while another stays (a
    /// relayed connection replaced by a direct one): our stream to the peer is dropped,
    /// so the next message opens one on the connection that stays, and the requests
    /// sent on the old one fail now (a download asks again) instead of timing out. A
    /// node's [`Network`] calls it itself.
    ///
    /// [`Network`]: crate::Network
    pub fn connection_replaced(&self, peer: PeerId) {
        lock(&self.outbound).remove(&peer);
        self.fail_requests(peer, |address| {
            Error::Unavailable(format!("{address} (connection to {peer} replaced)"))
        });
    }

    async fn on_message(self: &Arc<Self>, peer: PeerId, msg: Message) -> Result<()> {
        if msg.wantlist.entries.len() > self.config.max_entries_per_message {
            return Err(Error::Malformed("want-list longer than allowed"));
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
        let wants: Vec<Entry> = msg
            .wantlist
            .entries
            .into_iter()
            .filter(|e| !e.cancel)
            .collect();
        if wants.is_empty() {
            return Ok(());
        }
        // At the node's limit of wants, this peer's stream is not read on until some
        // are answered (the limit is at least one message's worth: this ends).
        let count = u32::try_from(wants.len())
            .map_err(|_| Error::Malformed("want-list longer than allowed"))?;
        let Ok(mut places) = Arc::clone(&self.places).acquire_many_owned(count).await else {
            return Err(Error::Stopped);
        };
        if self.is_banned(&peer) {
            return Ok(()); // dropped while it waited
        }
        for entry in wants {
            let Some(place) = places.split(1) else { break };
            self.want(peer, entry, place)?;
        }
        Ok(())
    }

    fn want(
        self: &Arc<Self>,
        peer: PeerId,
        entry: Entry,
        place: OwnedSemaphorePermit,
    ) -> Result<()> {
        let serving = Arc::clone(lock(&self.serving).entry(peer).or_insert_with(|| {
            Arc::new(Serving {
                slots: Semaphore::new(self.config.serve_concurrency_per_peer),
                room: Arc::new(Semaphore::new(
                    budget(self.config.max_queued_bytes_per_peer) as usize,
                )),
                wants: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
            })
        }));
        if serving.wants.fetch_add(1, Ordering::Relaxed)
            >= self.config.max_queued_wants_per_peer as u64
        {
            serving.wants.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::Malformed("want-list flood"));
        }
        let held = Held::new(Arc::clone(&serving), Arc::clone(&self.stats), place);
        tokio::spawn(Arc::clone(self).serve(peer, serving, entry, held));
        Ok(())
    }

    /// Answers one want. Room for the answer is reserved before its block is read, so
    /// that the wants of a peer that does not read wait here without holding blocks; it
    /// is held until the answer is written.
    async fn serve(
        self: Arc<Self>,
        peer: PeerId,
        serving: Arc<Serving>,
        entry: Entry,
        mut held: Held,
    ) {
        let guess = match entry.want_type {
            WantType::WantBlock => self.largest_answer.load(Ordering::Relaxed),
            WantType::WantHave => SMALL_ANSWER,
        };
        if held
            .reserve(guess, self.room_cap, &self.room)
            .await
            .is_err()
        {
            return; // the peer was dropped or left
        }
        let answer = {
            let Ok(_slot) = serving.slots.acquire().await else {
                return;
            };
            self.answer(&entry).await
        };
        let Some(msg) = answer else { return };
        let cost = cost(&msg);
        self.largest_answer.fetch_max(cost, Ordering::Relaxed);
        if held.reserve(cost, self.room_cap, &self.room).await.is_err() {
            return;
        }
        if let Err(e) = self.send(peer, msg, Some(held)).await {
            tracing::debug!(%peer, error = %e, "cannot answer a want");
        }
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
                self.stats
                    .served_bytes
                    .fetch_add(block.data().len() as u64, Ordering::Relaxed);
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
                    ex.stats
                        .received_bytes
                        .fetch_add(fetched.0.data().len() as u64, Ordering::Relaxed);
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

    /// The queue of our stream to `peer`. The first use starts its writer, which opens
    /// the stream (one per peer however many answers and requests come at once) and
    /// drops the peer when a write takes longer than [`ExchangeConfig::write_timeout`].
    fn sender(&self, peer: PeerId) -> Result<mpsc::Sender<Outgoing>> {
        if self.is_banned(&peer) {
            return Err(Error::Unavailable(format!("peer {peer} is banned")));
        }
        let mut outbound = lock(&self.outbound);
        if let Some(tx) = outbound.get(&peer).filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel::<Outgoing>(64);
        outbound.insert(peer, tx.clone());
        let control = lock(&self.control).clone();
        tokio::spawn(writer(
            self.me.clone(),
            control,
            peer,
            rx,
            self.config.clone(),
        ));
        Ok(tx)
    }

    /// Fails every outstanding request to `peer` with `error`.
    fn fail_requests(&self, peer: PeerId, error: impl Fn(BlockAddress) -> Error) {
        let mut pending = lock(&self.pending);
        let keys: Vec<_> = pending
            .keys()
            .filter(|(p, _)| *p == peer)
            .copied()
            .collect();
        for k in keys {
            if let Some(w) = pending.remove(&k) {
                let _ = w.send(Err(error(k.1)));
            }
        }
    }

    /// Queues `msg` on our stream to `peer`, with what it holds until written.
    async fn send(&self, peer: PeerId, msg: Message, held: Option<Held>) -> Result<()> {
        let tx = self.sender(peer)?;
        let out = Outgoing { msg, _held: held };
        tx.send(out).await.map_err(|_| {
            let mut outbound = lock(&self.outbound);
            if outbound.get(&peer).is_some_and(mpsc::Sender::is_closed) {
                outbound.remove(&peer);
            }
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
            self.send(peer, want, None).await?;
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
