//! The download engine: fetch a dataset's blocks from every peer that has them through a
//! sliding window, scoring peers, retrying elsewhere, and streaming the bytes out in order.
//!
//! A [`Download`] is built, then run to the end ([`Download::run`]) or read as a stream
//! of the dataset's bytes ([`Download::stream`]). Its decisions (which block, which
//! peer, when to give up) are taken by the [`scheduler::Scheduler`], a state machine
//! without I/O; the driver here sends the requests, stores the blocks and emits the
//! bytes.

pub mod scheduler;

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use codex_core::{Block, BlockAddress, BlockRead, BlockStore, BlockWrite, Cid, Manifest};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::exchange::{Exchange, Fetched};
use crate::network::Network;
use scheduler::Scheduler;

/// How often a download looks for a request to hedge while one may pay off and
/// nothing else happens.
const HEDGE_TICK: Duration = Duration::from_millis(10);

/// Knobs of a download ([`Download::options`]). The timeout of each request is the
/// exchange's ([`ExchangeConfig::request_timeout`](crate::ExchangeConfig::request_timeout)).
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Requests in flight over all peers, hedges included, and blocks being stored
    /// (default 256).
    pub window: usize,
    /// The most requests in flight to one peer (default 128). Each peer's own window
    /// is sized by what it delivers (see `peer_queue`), at most this.
    pub per_peer: usize,
    /// How much work, in time, a peer's window holds beyond its latency: a peer is
    /// given as many requests at once as it delivers in its latency plus this long
    /// (default 100 ms). Less holds less work at a peer that slows down; too little
    /// leaves a peer idle between requests.
    pub peer_queue: Duration,
    /// Hedging: when no block is left to ask (the tail, or a reader holding the
    /// download back), a request outstanding at a slow peer is sent to a faster peer
    /// with room as well, the first delivery winning, so that a slow peer does not
    /// hold the tail (default true). See [`scheduler`].
    pub hedge: bool,
    /// Verified blocks being written to the store at the same time; the window keeps
    /// moving while they are written (default 16).
    pub store_concurrency: usize,
    /// How many blocks ahead of the reader are fetched; bounds memory when streaming
    /// (default 512, 32 MiB of 64 KiB blocks).
    pub max_ahead: u64,
    /// Give up on the blocks left when no progress was made for this long, also while
    /// requests are still outstanding (a peer that takes want-lists but never delivers)
    /// (default 60 s).
    pub stall_timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            window: 256,
            per_peer: 128,
            peer_queue: Duration::from_millis(100),
            hedge: true,
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
    /// What each peer asked did, ordered by peer id.
    pub peers: Vec<PeerReport>,
}

/// What one peer did in a download ([`FetchReport::peers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerReport {
    /// The peer.
    pub peer: PeerId,
    /// Requests sent to it, hedges included.
    pub requested: u64,
    /// Requests sent to it as hedges: blocks outstanding at a slower peer.
    pub hedged: u64,
    /// Blocks it delivered first, which the download kept.
    pub delivered: u64,
    /// Blocks it delivered after another peer had (answers to hedged requests).
    pub duplicates: u64,
    /// Requests to it that failed.
    pub failed: u64,
    /// Its average time per block at the end (the inverse of its throughput), once it
    /// delivered.
    pub service: Option<Duration>,
    /// Its window at the end: the requests it could have in flight.
    pub window: usize,
}

enum Event<S, F> {
    Stored(S),
    Fetched(F),
    /// The stall deadline passed.
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
///
/// # Errors
/// [`Error::Unavailable`] when no peer served it within 60 s; [`Error::Core`] when the
/// block is not a manifest.
///
/// # Cancel safety
/// Cancel safe: nothing is stored.
pub async fn fetch_manifest(
    net: &Network,
    store: &Arc<dyn BlockStore>,
    cid: Cid,
) -> Result<Manifest> {
    let block = fetch_manifest_block(net, store, cid).await?;
    Ok(Manifest::decode(block.data())?)
}

/// The manifest block of `cid` (its bytes as the network has them), like [`fetch_manifest`].
///
/// # Errors
/// [`Error::Unavailable`] when no peer served it within 60 s.
///
/// # Cancel safety
/// Cancel safe: nothing is stored.
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

/// Where a download finds peers and asks them for blocks.
#[derive(Clone, Debug)]
enum Source {
    /// A node's network: providers found through the DHT, and connected peers.
    Network(Network),
    /// An exchange mounted on an app's swarm: only the peers given.
    Exchange(Arc<Exchange>),
}

impl Source {
    fn exchange(&self) -> &Arc<Exchange> {
        match self {
            Source::Network(net) => net.exchange(),
            Source::Exchange(ex) => ex,
        }
    }

    async fn peers(&self, lookup: &[Cid], given: &[PeerId]) -> Vec<PeerId> {
        let mut found: HashSet<PeerId> = given.iter().copied().collect();
        if let Source::Network(net) = self {
            found.extend(discover(net, lookup).await);
            found.remove(&net.peer_id());
        }
        let ex = self.exchange();
        found.into_iter().filter(|p| !ex.is_banned(p)).collect()
    }
}

/// A download of a dataset's blocks (or a range of them) into a store, from every peer
/// that has them. Built with [`Download::new`] (a node's [`Network`]: peers found
/// through the DHT) or [`Download::with_exchange`] (a block exchange mounted on an
/// app's own swarm: the peers it is given), tuned with the other methods, then
/// [`run`](Download::run) or [`stream`](Download::stream)ed.
///
/// Blocks already in the store are not fetched again (an interrupted download
/// resumes). Every block is verified against the dataset's tree before it is stored.
///
/// ```no_run
/// # async fn demo(net: codex_net::Network, store: std::sync::Arc<dyn codex_core::BlockStore>,
/// #     cid: codex_core::Cid) -> codex_net::Result<()> {
/// let manifest = codex_net::fetch_manifest(&net, &store, cid).await?;
/// let report = codex_net::Download::new(&net, store, &manifest)
///     .cid(cid)
///     .run()
///     .await?;
/// assert!(report.missing.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a download does nothing until it is run or streamed"]
pub struct Download {
    source: Source,
    store: Arc<dyn BlockStore>,
    manifest: Manifest,
    cid: Option<Cid>,
    range: Option<Range<u64>>,
    options: FetchOptions,
    peers: Vec<PeerId>,
}

/// Capacity of the hand-over between a [`DownloadStream`]'s driver and its reader, in
/// blocks (the driver's own look-ahead is [`FetchOptions::max_ahead`]).
const STREAM_BUFFER: usize = 16;

impl Download {
    /// A download of `manifest`'s dataset through `net` into `store`: peers are the
    /// providers of the dataset's tree (and of its manifest, see [`Download::cid`])
    /// found through the DHT, and the peers `net` is connected to.
    pub fn new(net: &Network, store: Arc<dyn BlockStore>, manifest: &Manifest) -> Self {
        Self::from_source(Source::Network(net.clone()), store, manifest)
    }

    /// A download of `manifest`'s dataset through `exchange` (for instance one mounted on
    /// an app's own swarm with [`Exchange::mount`]) into `store`, from the peers given
    /// with [`Download::peers`]; there is no discovery.
    pub fn with_exchange(
        exchange: &Arc<Exchange>,
        store: Arc<dyn BlockStore>,
        manifest: &Manifest,
    ) -> Self {
        Self::from_source(Source::Exchange(Arc::clone(exchange)), store, manifest)
    }

    fn from_source(source: Source, store: Arc<dyn BlockStore>, manifest: &Manifest) -> Self {
        Download {
            source,
            store,
            manifest: manifest.clone(),
            cid: None,
            range: None,
            options: FetchOptions::default(),
            peers: Vec::new(),
        }
    }

    /// The manifest's CID: its providers are looked up too.
    pub fn cid(mut self, manifest_cid: Cid) -> Self {
        self.cid = Some(manifest_cid);
        self
    }

    /// Only the blocks `indices` of the dataset's tree (default: all of them).
    pub fn range(mut self, indices: Range<u64>) -> Self {
        self.range = Some(indices);
        self
    }

    /// The window, limits and timeouts (default [`FetchOptions::default`]).
    pub fn options(mut self, options: FetchOptions) -> Self {
        self.options = options;
        self
    }

    /// Peers to ask besides those discovered (with [`Download::with_exchange`], the only
    /// ones asked). Peers banned by the exchange are skipped.
    pub fn peers(mut self, peers: impl IntoIterator<Item = PeerId>) -> Self {
        self.peers.extend(peers);
        self
    }

    /// Fetches the blocks into the store. Blocks no peer provides before the stall
    /// timeout are reported in [`FetchReport::missing`], not as an error.
    ///
    /// # Errors
    /// When the store fails.
    ///
    /// # Cancel safety
    /// Dropping the future stops the download; what was fetched stays in the store.
    pub async fn run(self) -> Result<FetchReport> {
        self.drive(None).await
    }

    /// The dataset's bytes in order (the last block cut to the dataset's size), while
    /// later blocks are still being fetched; the blocks are stored as well. Memory is
    /// bounded by [`FetchOptions::max_ahead`] blocks. The download runs as a task of
    /// its own (it needs a tokio runtime), up to `max_ahead` blocks past what was read
    /// even while the reader pauses; dropping the stream stops it.
    ///
    /// A block no peer provides ends the stream with [`Error::Unavailable`] after the
    /// bytes before it.
    pub fn stream(self) -> DownloadStream {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        DownloadStream {
            driver: Some(tokio::spawn(self.drive(Some(tx)))),
            rx,
            report: None,
            error: None,
        }
    }

    /// The driver: feeds the scheduler what happens and does what it decides.
    async fn drive(self, output: Option<mpsc::Sender<Bytes>>) -> Result<FetchReport> {
        let Download {
            source,
            store,
            manifest,
            cid,
            range,
            options,
            peers: given,
        } = self;
        let tree = manifest.tree_cid;
        let size = manifest.original_size();
        let bs = u64::from(manifest.block_size);
        let indices = range.unwrap_or(0..manifest.blocks_count());
        let exchange = Arc::clone(source.exchange());
        let mut report = FetchReport::default();

        let mut present = HashSet::new();
        let mut wanted = Vec::new();
        for i in indices.clone() {
            if store.has_leaf(&tree, i).await? {
                present.insert(i);
                report.present += 1;
            } else {
                wanted.push(i);
            }
        }
        let mut lookup: Vec<Cid> = vec![tree];
        lookup.extend(cid);
        let mut sched = Scheduler::new(wanted, &options, Instant::now().into_std());
        if output.is_some() {
            sched.follow_reader(indices.start);
        }
        let mut requests = FuturesUnordered::new();
        let mut storing = FuturesUnordered::new();
        // Blocks stored and not yet emitted (only with an output; at most max_ahead).
        let mut completed: BTreeMap<u64, Bytes> = BTreeMap::new();
        let mut next_emit = indices.start;
        let mut last_discovery: Option<Instant> = None;

        // The block `next_emit`, cut to the dataset's size, once it can be emitted.
        let ready = |completed: &mut BTreeMap<u64, Bytes>, sched: &Scheduler, i: u64| {
            let cut = move |mut d: Bytes| {
                d.truncate(size.saturating_sub(i * bs).min(bs) as usize);
                d
            };
            let store = Arc::clone(&store);
            let taken = completed.remove(&i);
            let (is_present, missing) = (present.contains(&i), sched.is_missing(i));
            async move {
                Ok(match taken {
                    Some(d) => Some(cut(d)),
                    None if is_present => Some(cut(store.get_leaf(&tree, i).await?.0.into_data())),
                    None if missing => {
                        return Err(Error::Unavailable(format!("block {i} of {tree}")));
                    }
                    None => None,
                })
            }
        };
        let is_ready = |completed: &BTreeMap<u64, Bytes>, sched: &Scheduler, i: u64| {
            i < indices.end
                && (completed.contains_key(&i) || present.contains(&i) || sched.is_missing(i))
        };

        loop {
            // Emit what is ready, in order, as long as the reader has room: a reader
            // that pauses does not stop the download, which goes on up to max_ahead.
            if let Some(out) = &output {
                while is_ready(&completed, &sched, next_emit) {
                    let permit = match out.try_reserve() {
                        Ok(permit) => permit,
                        Err(mpsc::error::TrySendError::Full(())) => break,
                        // The reader went away.
                        Err(mpsc::error::TrySendError::Closed(())) => return Ok(report),
                    };
                    if let Some(data) = ready(&mut completed, &sched, next_emit).await? {
                        permit.send(data);
                    }
                    next_emit += 1;
                    sched.on_read(next_emit, Instant::now().into_std());
                }
            }
            if sched.is_finished() {
                break;
            }
            // Waiting for the reader to take what is ready (not a stall).
            let reader_bound = output.is_some() && is_ready(&completed, &sched, next_emit);

            // Find peers when none is left to ask.
            if sched.peer_count() == 0
                && last_discovery.is_none_or(|t| t.elapsed() > Duration::from_secs(2))
            {
                for p in source.peers(&lookup, &given).await {
                    sched.on_peer_added(p);
                }
                last_discovery = Some(Instant::now());
            }

            // Send what the scheduler allows.
            let now = Instant::now().into_std();
            while let Some((peer, i)) = sched.next_request(now) {
                let ex = Arc::clone(&exchange);
                requests.push(
                    async move {
                        let r: Result<Fetched> = ex
                            .request(peer, BlockAddress::Leaf { tree, index: i })
                            .await;
                        (i, peer, r)
                    }
                    .boxed(),
                );
            }

            if requests.is_empty() && storing.is_empty() {
                if reader_bound {
                    room(output.as_ref()).await;
                    continue;
                }
                if sched.stalled(now) {
                    sched.give_up();
                    continue;
                }
                // Nobody to ask: find peers again, and give those that failed a new chance.
                tokio::time::sleep(Duration::from_millis(200)).await;
                last_discovery = None;
                sched.forgive();
                continue;
            }

            // Wait for a request to complete or a block to be stored; while the store is
            // full, only for the store. No progress by the stall deadline (peers that
            // take wants and stay silent, longer than their request timeout) ends the
            // download.
            let store_full = storing.len() >= options.store_concurrency.max(1);
            let stall_at = sched.stall_deadline().map(Instant::from_std);
            let may_hedge = sched.may_hedge();
            let event = tokio::select! {
                Some(stored) = storing.next(), if !storing.is_empty() => Event::Stored(stored),
                Some(done) = requests.next(), if !requests.is_empty() && !store_full => Event::Fetched(done),
                () = sleep_until(stall_at), if stall_at.is_some() => Event::Stalled,
                // Time makes a request late, and a hedge pay off.
                () = tokio::time::sleep(HEDGE_TICK), if may_hedge => continue,
                () = room(output.as_ref()), if reader_bound => continue,
                else => continue,
            };
            let now = Instant::now().into_std();
            match event {
                Event::Stored((i, stored, data)) => {
                    stored?;
                    report.fetched += 1;
                    sched.on_stored(i, now);
                    if output.is_some() {
                        completed.insert(i, data);
                    }
                }
                Event::Stalled => {
                    if sched.stalled(now) {
                        tracing::debug!(
                            outstanding = sched.outstanding(),
                            "no block for the stall timeout; giving up on the rest"
                        );
                        sched.give_up();
                        // Dropping the requests withdraws them (see `Exchange::request`).
                        requests = FuturesUnordered::new();
                    }
                }
                Event::Fetched((i, peer, result)) => match result {
                    Ok((block, Some(proof))) => {
                        if sched.on_delivered(&peer, i, now) {
                            let data = block.data().clone();
                            let store = Arc::clone(&store);
                            storing.push(async move {
                                let stored = store.put_leaf(&tree, i, block, proof).await;
                                (i, stored, data)
                            });
                        }
                    }
                    Ok((_, None)) => {
                        sched.on_failed(&peer, i, now);
                    }
                    Err(e) => {
                        tracing::debug!(index = i, %peer, error = %e, "block request failed; retrying elsewhere");
                        sched.on_failed(&peer, i, now);
                        if matches!(e, Error::BadBlock { .. }) || exchange.is_banned(&peer) {
                            sched.on_peer_removed(&peer);
                        }
                    }
                },
            }
        }
        // What the reader has not taken yet, now that nothing else is left to do.
        if let Some(out) = &output {
            while is_ready(&completed, &sched, next_emit) {
                let Ok(permit) = out.reserve().await else {
                    return Ok(report); // the reader went away
                };
                if let Some(data) = ready(&mut completed, &sched, next_emit).await? {
                    permit.send(data);
                }
                next_emit += 1;
            }
        }
        report.missing = sched.missing().collect();
        report.peers = sched
            .all_peers()
            .map(|(peer, p)| PeerReport {
                peer: *peer,
                requested: p.requested,
                hedged: p.hedged,
                delivered: p.delivered,
                duplicates: p.duplicates,
                failed: p.failures,
                service: p.service,
                window: p.window,
            })
            .collect();
        report.peers.sort_by_key(|p| p.peer);
        tracing::info!(
            fetched = report.fetched,
            present = report.present,
            missing = report.missing.len(),
            "fetch finished"
        );
        Ok(report)
    }
}

/// Returns once the reader has room for a block (or went away; the driver finds out
/// when it sends); never without a reader.
async fn room(output: Option<&mpsc::Sender<Bytes>>) {
    match output {
        Some(out) => drop(out.reserve().await),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The bytes of a [`Download`], in order: see [`Download::stream`].
#[must_use = "streams do nothing unless polled"]
pub struct DownloadStream {
    /// The download's own task, aborted when the stream is dropped.
    driver: Option<tokio::task::JoinHandle<Result<FetchReport>>>,
    rx: mpsc::Receiver<Bytes>,
    report: Option<FetchReport>,
    error: Option<Error>,
}

impl std::fmt::Debug for DownloadStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadStream")
            .field("running", &self.driver.is_some())
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl DownloadStream {
    /// What the download did, once it has finished (the stream then ends, or has only
    /// the bytes already fetched left to yield). `None` while it runs, and when it
    /// failed or the stream was dropped before the end.
    pub fn report(&self) -> Option<&FetchReport> {
        self.report.as_ref()
    }
}

impl Drop for DownloadStream {
    fn drop(&mut self) {
        if let Some(driver) = &self.driver {
            driver.abort();
        }
    }
}

impl Stream for DownloadStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => Poll::Ready(Some(Ok(bytes))),
            // Every sender is gone: the driver has returned; its outcome ends the stream.
            Poll::Ready(None) => {
                if let Some(driver) = &mut this.driver {
                    let outcome = match Pin::new(driver).poll(cx) {
                        Poll::Ready(outcome) => outcome,
                        Poll::Pending => return Poll::Pending,
                    };
                    this.driver = None;
                    match outcome {
                        Ok(Ok(report)) => this.report = Some(report),
                        Ok(Err(e)) => this.error = Some(e),
                        Err(e) => {
                            this.error = Some(Error::Unavailable(format!(
                                "the download's task failed: {e}"
                            )))
                        }
                    }
                }
                Poll::Ready(this.error.take().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
