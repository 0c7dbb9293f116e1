//! The swarm: one task owns it; [`Network`] is the cloneable handle the rest of the
//! program uses, over a bounded command channel.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codex_core::{BlockRead, Cid};
use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::transport::timeout::TransportTimeout;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::kad::{self, GetProvidersOk, ProviderRecord, QueryId, QueryResult, RecordKey};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, Transport, autonat, connection_limits, dcutr, identify, noise, ping,
    quic, relay, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

use crate::builder::NetworkBuilder;
use crate::config::{NetConfig, Transports};
use crate::error::{Error, Result};
use crate::exchange::Exchange;
use crate::nat::{
    ConnectionInfo, HolePunchStats, Reachability, RelayReservation, RelayServerStats,
};
use crate::providers::ProviderStats;
use crate::providers::schedule::Schedule;
use crate::providers::store::ProviderStore;
use crate::spr::{SignedPeerRecord, next_seq};

mod traversal;
use traversal::NatState;

/// The key Kademlia provider records use for a CID: its multihash bytes, as standard
/// libp2p Kademlia peers key them.
pub fn provider_key(cid: &Cid) -> RecordKey {
    RecordKey::new(&cid.multihash_bytes())
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// First, so that a connection over a limit is refused before another behaviour
    /// sees it.
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<ProviderStore>,
    autonat: autonat::Behaviour,
    relay: relay::client::Behaviour,
    /// Serving as a relay ([`NatConfig::relay_server`](crate::NatConfig::relay_server)).
    relay_server: Toggle<relay::Behaviour>,
    dcutr: dcutr::Behaviour,
    /// Port mappings on a UPnP gateway (`--nat any|upnp`).
    upnp: Toggle<libp2p::upnp::tokio::Behaviour>,
    stream: libp2p_stream::Behaviour,
}

pub(crate) enum Command {
    Provide(Vec<Cid>),
    Unprovide(Cid),
    Provided(oneshot::Sender<Vec<Cid>>),
    ProviderStats(oneshot::Sender<ProviderStats>),
    FindProviders(Cid, oneshot::Sender<Vec<PeerId>>),
    Dial(PeerId, Vec<Multiaddr>, oneshot::Sender<Result<()>>),
    Disconnect(PeerId),
    Info(oneshot::Sender<NetInfo>),
    Spr(oneshot::Sender<Result<SignedPeerRecord>>),
    AddExternalAddress(Multiaddr),
    Shutdown,
}

/// What the node knows of the network (for `/debug/info`).
#[derive(Clone, Debug, Default)]
pub struct NetInfo {
    /// Our peer id.
    pub peer_id: String,
    /// Where we listen.
    pub listen_addrs: Vec<Multiaddr>,
    /// Peers we are connected to.
    pub connected: Vec<PeerId>,
    /// Peers in the Kademlia routing table.
    pub routing_table: Vec<PeerId>,
    /// Whether others can dial us, as AutoNAT decided.
    pub reachability: Reachability,
    /// Our external addresses: confirmed (AutoNAT, UPnP, a relay reservation's
    /// `/p2p-circuit` address), `--nat extip:` and announced ones.
    pub external_addrs: Vec<Multiaddr>,
    /// Every open connection: its peer, address, and whether it is relayed or direct.
    pub connections: Vec<ConnectionInfo>,
    /// Our reservations on relays (held while we are not publicly reachable).
    pub reservations: Vec<RelayReservation>,
    /// Relayed connections upgraded to direct ones (DCUtR), and failures.
    pub hole_punches: HolePunchStats,
    /// What we relay for others, when we serve as a relay.
    pub relay_server: Option<RelayServerStats>,
}

/// The handle to the network. Cheap to clone.
#[derive(Clone)]
pub struct Network {
    peer_id: PeerId,
    dial_timeout: Duration,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    exchange: Arc<Exchange>,
    /// libp2p's metrics (connections, Kademlia, identify, ping, relay, DCUtR).
    metrics: Arc<std::sync::Mutex<libp2p::metrics::Registry>>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Network {
    /// A builder of a network that serves blocks from `store`: set the key, listen
    /// addresses, bootstrap peers, Kademlia protocol name, transports, limits and
    /// timeouts, then [`start`](NetworkBuilder::start) it. Serving needs reads only,
    /// so any [`BlockRead`] will do: a store, an `Arc` of one, an
    /// `Arc<dyn BlockStore>`.
    ///
    /// ```no_run
    /// # async fn demo(store: std::sync::Arc<dyn codex_core::BlockStore>,
    /// #     boot: codex_net::Multiaddr) -> codex_net::Result<()> {
    /// use codex_net::{Network, Transports};
    ///
    /// let net = Network::builder(store)
    ///     .key_file("data/key")
    ///     .transports(Transports::TCP)
    ///     .listen(["/ip4/0.0.0.0/tcp/8070".parse().expect("a multiaddr")])
    ///     .bootstrap([boot])
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(store: impl BlockRead + 'static) -> NetworkBuilder {
        NetworkBuilder::new(Arc::new(store))
    }

    /// Starts a network with `key` and every setting from `config`, serving blocks from
    /// `store`: short for `Network::builder(store).key(key).config(config).start()`.
    ///
    /// # Errors
    /// As [`NetworkBuilder::start`].
    ///
    /// # Cancel safety
    /// Dropping the future before it returns drops the swarm: nothing keeps running.
    pub async fn start(
        key: Keypair,
        config: NetConfig,
        store: impl BlockRead + 'static,
    ) -> Result<Network> {
        Self::builder(store).key(key).config(config).start().await
    }

    /// Starts the swarm with a checked `config`. Returns when it listens (or after 5 s).
    pub(crate) async fn launch(
        key: Keypair,
        config: NetConfig,
        store: Arc<dyn BlockRead>,
        provided: Vec<Cid>,
    ) -> Result<Network> {
        let peer_id = key.public().to_peer_id();
        let kad_protocol = config.kad_stream_protocol()?;
        let providing = config.providers;
        let timeouts = config.timeouts;
        let limits = config.limits.to_libp2p();
        let transports = config.transports;
        let nat = config.nat.clone();
        let record_key = key.clone();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|key| transport(key, transports, timeouts.dial))
            .map_err(|e| Error::Libp2p(e.to_string()))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| Error::Libp2p(e.to_string()))?
            .with_behaviour(|key, relay| {
                let mut kad_config = kad::Config::new(kad_protocol);
                // Our records are announced by our own schedule (`Schedule`): Kademlia's
                // job would announce them all at once.
                kad_config.set_provider_publication_interval(None);
                kad_config.set_provider_record_ttl(Some(providing.record_ttl));
                kad_config.set_query_timeout(timeouts.kad_query);
                let local = key.public().to_peer_id();
                let mut kad = kad::Behaviour::with_config(
                    local,
                    ProviderStore::new(
                        local,
                        providing.max_records,
                        providing.max_providers_per_key,
                    ),
                    kad_config,
                );
                kad.set_mode(Some(kad::Mode::Server));
                Behaviour {
                    limits: connection_limits::Behaviour::new(limits),
                    // Listen addresses added later (a second transport, a new
                    // interface) are pushed to connected peers.
                    identify: identify::Behaviour::new(
                        identify::Config::new("/codex/1.0.0".into(), key.public())
                            .with_push_listen_addr_updates(true),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    kad,
                    autonat: autonat::Behaviour::new(
                        key.public().to_peer_id(),
                        nat.autonat.to_libp2p(),
                    ),
                    relay,
                    relay_server: Toggle::from(nat.relay_server.map(|limits| {
                        relay::Behaviour::new(key.public().to_peer_id(), limits.to_libp2p())
                    })),
                    dcutr: dcutr::Behaviour::new(key.public().to_peer_id()),
                    upnp: Toggle::from(
                        nat.nat
                            .uses_upnp()
                            .then(libp2p::upnp::tokio::Behaviour::default),
                    ),
                    stream: libp2p_stream::Behaviour::new(),
                }
            })
            .map_err(|e| Error::Libp2p(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(timeouts.idle_connection))
            .build();

        for addr in &config.listen_addrs {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Libp2p(format!("cannot listen on {addr}: {e}")))?;
        }
        let control = swarm.behaviour().stream.new_control();
        let (tx, rx) = mpsc::channel(256);
        let mut registry = libp2p::metrics::Registry::default();
        let metrics = libp2p::metrics::Metrics::new(&mut registry);
        let exchange = Exchange::start(control, store, config.exchange.clone(), Some(tx.clone()))?;
        let mut task = SwarmTask {
            swarm,
            commands: rx,
            providers: HashMap::new(),
            dials: HashMap::new(),
            exchange: Arc::clone(&exchange),
            schedule: Schedule::new(&providing),
            announcing: HashMap::new(),
            wake: Box::pin(tokio::time::sleep(Duration::ZERO)),
            wake_armed: false,
            key: record_key,
            spr: None,
            nat: NatState::new(config.nat.clone()),
            relay_dialed: HashSet::new(),
            metrics,
        };
        task.nat_start();
        task.add_provided(provided);
        // Wait (at most 5 s) for the first listen address, so that callers can print it
        // and hand it to other nodes at once.
        if !config.listen_addrs.is_empty() {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while task.swarm.listeners().next().is_none() {
                match tokio::time::timeout_at(deadline, task.swarm.select_next_some()).await {
                    Ok(event) => task.on_event(event),
                    Err(_) => break,
                }
            }
        }
        // Dialed once we listen: identify tells a peer our listen addresses when the
        // connection opens, and a bootstrap node that learns none cannot route to us
        // (nor name us as a provider).
        // A peer at several addresses (a signed peer record's) is dialed once, at all.
        let mut peers: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for addr in &config.bootstrap {
            // Checked: every bootstrap address ends in /p2p/<peer id>.
            if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
                task.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
                match peers.iter_mut().find(|(p, _)| *p == peer) {
                    Some((_, addrs)) => addrs.push(addr.clone()),
                    None => peers.push((peer, vec![addr.clone()])),
                }
            }
        }
        for (peer, addrs) in peers {
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs)
                .build();
            if let Err(e) = task.swarm.dial(opts) {
                tracing::warn!(%peer, error = %e, "cannot dial a bootstrap node");
            }
        }
        if !config.bootstrap.is_empty() {
            let _ = task.swarm.behaviour_mut().kad.bootstrap();
        }
        let control = task.swarm.behaviour().stream.new_control();
        tokio::spawn(task.run());
        Ok(Network {
            peer_id,
            dial_timeout: timeouts.dial,
            control,
            commands: tx,
            exchange,
            metrics: Arc::new(std::sync::Mutex::new(registry)),
        })
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// libp2p's own metrics (libp2p-metrics: connections opened and closed, dial
    /// errors, Kademlia queries, identify, relay and hole punching), `libp2p_`
    /// prefixed, appended to `out` in the OpenMetrics text format without the closing
    /// `# EOF` (the caller ends the whole text).
    ///
    /// # Errors
    /// A formatting error from the encoder.
    pub fn encode_metrics(&self, out: &mut String) -> std::fmt::Result {
        let registry = self
            .metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        prometheus_client::encoding::text::encode_registry(out, &registry)
    }

    /// Where other nodes reach us: our listen addresses, each ending in
    /// `/p2p/<our peer id>`, as another node's [`bootstrap`](NetworkBuilder::bootstrap)
    /// or [`Network::dial`] takes them. Addresses on all interfaces (`0.0.0.0`) are
    /// given per interface.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the network task has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: a command already sent is carried out, its answer dropped.
    pub async fn addresses(&self) -> Result<Vec<Multiaddr>> {
        let peer = libp2p::multiaddr::Protocol::P2p(self.peer_id);
        Ok(self
            .info()
            .await?
            .listen_addrs
            .into_iter()
            .map(|a| a.with(peer.clone()))
            .collect())
    }

    /// The block exchange.
    pub fn exchange(&self) -> &Arc<Exchange> {
        &self.exchange
    }

    async fn send(&self, c: Command) -> Result<()> {
        self.commands.send(c).await.map_err(|_| Error::Stopped)
    }

    /// Adds `cid` to the keys we provide: we answer for it at once, announce it in the
    /// DHT before keys due again (within the announce rate), and again every
    /// [`ProviderConfig::reprovide_interval`](crate::ProviderConfig::reprovide_interval).
    /// A key provided already stays as it is. Returns when the network task has the
    /// key, before it is announced ([`provider_stats`](Self::provider_stats) tells).
    ///
    /// # Errors
    /// [`Error::Stopped`] when the network task has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: a command already sent is carried out, its answer dropped.
    pub async fn provide(&self, cid: Cid) -> Result<()> {
        self.send(Command::Provide(vec![cid])).await
    }

    /// [`provide`](Self::provide) for many keys in one command.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the network task has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: a command already sent is carried out, its answer dropped.
    pub async fn provide_many(&self, cids: Vec<Cid>) -> Result<()> {
        self.send(Command::Provide(cids)).await
    }

    /// The keys we provide, in no order: what the caller saves to hand to
    /// [`NetworkBuilder::provided`] at the next start.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the network task has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: a command already sent is carried out, its answer dropped.
    pub async fn provided(&self) -> Result<Vec<Cid>> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Provided(tx)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// What our provider records are doing: keys provided, not yet announced,
    /// announcements under way, done and failed; other peers' records held.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the network task has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: a command already sent is carried out, its answer dropped.
    pub async fn provider_stats(&self) -> Result<ProviderStats> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::ProviderStats(tx)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Removes `cid` from the keys we provide: it is no longer announced, and we no
    /// longer answer for it (records at other peers live until they expire).
    ///
    /// # Errors
    /// [`Error::Stopped`] when the network task has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: a command already sent is carried out, its answer dropped.
    pub async fn unprovide(&self, cid: Cid) -> Result<()> {
        self.send(Command::Unprovide(cid)).await
    }

    /// Peers that provide `cid`, found through the DHT: the first answer that names
    /// some, or what the query found when it ends (at most
    /// [`Timeouts::kad_query`](crate::Timeouts::kad_query), default 30 s).
    ///
    /// # Errors
    /// [`Error::Stopped`] when the network task has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: a command already sent is carried out, its answer dropped.
    pub async fn find_providers(&self, cid: Cid) -> Result<Vec<PeerId>> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::FindProviders(cid, tx)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Connects to `peer`, at `addrs` if given, else at addresses the swarm knows.
    ///
    /// # Errors
    /// [`Error::Libp2p`] when the dial fails or takes longer than
    /// [`Timeouts::dial`](crate::Timeouts::dial) (default 20 s),
    /// [`Error::Stopped`] when the network task has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: the dial goes on in the swarm, its answer is dropped.
    pub async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Dial(peer, addrs, tx)).await?;
        tokio::time::timeout(self.dial_timeout, rx)
            .await
            .map_err(|_| Error::Libp2p(format!("dialing {peer} timed out")))?
            .map_err(|_| Error::Stopped)?
    }

    /// What the node knows of the network.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the network task has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: a command already sent is carried out, its answer dropped.
    pub async fn info(&self) -> Result<NetInfo> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Info(tx)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// The node's signed peer record (SPR): our peer id and the addresses we are reached
    /// at (listen addresses, per interface for `0.0.0.0`, and external addresses
    /// confirmed), signed by the node's key. Its `to_string()` is the `spr:...` text
    /// Codex's `GET /spr` answers and `--bootstrap-node` takes. The record is made again
    /// when the addresses change, with a higher sequence number (the Unix time in
    /// seconds, or one more than the last record's); until then the same record is
    /// returned. A node that does not listen has a record without addresses.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the network task has stopped; [`Error::SprEnvelope`]
    /// when the key cannot sign.
    ///
    /// # Cancel safety
    /// Cancel safe: a command already sent is carried out, its answer dropped.
    pub async fn spr(&self) -> Result<SignedPeerRecord> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Spr(tx)).await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Announces `addr` as an address we are reached at (a public address a NAT maps
    /// to ours, as Codex's `--nat extip:`): it goes into our signed peer record
    /// ([`spr`](Self::spr)) and what identify tells peers. Returns when the network
    /// task has it.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the network task has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: a command already sent is carried out.
    pub async fn add_external_address(&self, addr: Multiaddr) -> Result<()> {
        self.send(Command::AddExternalAddress(addr)).await
    }

    /// Stops the swarm: every connection closes, the node leaves the network.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn shutdown(&self) {
        let _ = self.send(Command::Shutdown).await;
    }

    /// A handle to open and accept streams of other protocols over the node's
    /// connections, for custom protocols.
    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Closes every connection to `peer` (a misbehaving one).
    ///
    /// # Errors
    /// [`Error::Stopped`] when the network task has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: a command already sent is carried out, its answer dropped.
    pub async fn disconnect(&self, peer: PeerId) -> Result<()> {
        self.send(Command::Disconnect(peer)).await
    }
}

/// The transports `enabled` asks for, as one: TCP upgraded with Noise and Yamux, and
/// QUIC, each connection set up within `timeout`. At least one is enabled (the
/// configuration is checked before).
fn transport(
    key: &Keypair,
    enabled: Transports,
    timeout: Duration,
) -> std::result::Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>>
{
    let mut out: Option<Boxed<(PeerId, StreamMuxerBox)>> = None;
    if enabled.tcp {
        let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .upgrade(Version::V1Lazy)
            .authenticate(noise::Config::new(key)?)
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed();
        out = Some(tcp);
    }
    if enabled.quic {
        let quic = quic::tokio::Transport::new(quic::Config::new(key))
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed();
        out = Some(match out {
            Some(tcp) => tcp
                .or_transport(quic)
                .map(|either, _| either.into_inner())
                .boxed(),
            None => quic,
        });
    }
    // A connection not set up within the dial timeout fails (a NAT that drops an
    // unsolicited SYN would otherwise hold an AutoNAT dial-back for minutes).
    out.map(|t| TransportTimeout::new(t, timeout).boxed())
        .ok_or_else(|| "no transport enabled".into())
}

pub(crate) fn disconnect_command(peer: PeerId) -> Command {
    Command::Disconnect(peer)
}

pub(crate) type CommandSender = mpsc::Sender<Command>;

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    providers: HashMap<QueryId, (HashSet<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    dials: HashMap<PeerId, Vec<oneshot::Sender<Result<()>>>>,
    exchange: Arc<Exchange>,
    /// When each of our keys is announced.
    schedule: Schedule<Cid>,
    /// Our announcements under way: the key and its generation in the schedule.
    announcing: HashMap<QueryId, (Cid, u64)>,
    /// Wakes the task when the schedule has a key to announce.
    wake: Pin<Box<tokio::time::Sleep>>,
    wake_armed: bool,
    /// The node's key, which signs its peer record.
    key: Keypair,
    /// The last peer record made, kept while the addresses stay the same.
    spr: Option<SignedPeerRecord>,
    /// NAT traversal: reachability, reservations, connections.
    nat: NatState,
    /// Peers of dials under way that failed at their own addresses and are dialed
    /// through relays (at most the dials under way).
    relay_dialed: HashSet<PeerId>,
    /// libp2p's metrics (libp2p-metrics), recorded from the swarm's events.
    metrics: libp2p::metrics::Metrics,
}

impl SwarmTask {
    async fn run(mut self) {
        self.announce();
        // Reservations are tried again (a relay backed off, a new candidate) this often.
        let mut nat_tick = tokio::time::interval(Duration::from_secs(5));
        nat_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                _ = nat_tick.tick() => self.maintain_reservations(),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(c) => self.on_command(c),
                },
                () = &mut self.wake, if self.wake_armed => self.wake_armed = false,
            }
            self.announce();
        }
        tracing::debug!("network task stopped");
    }

    /// Adds keys to the set we provide: the store answers for them at once, the
    /// schedule announces them.
    fn add_provided(&mut self, cids: Vec<Cid>) {
        let local = *self.swarm.local_peer_id();
        for cid in cids {
            if self.schedule.insert(cid) {
                let record = ProviderRecord::new(provider_key(&cid), local, Vec::new());
                // Our own records are held apart, without a limit: this cannot fail.
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .add_provider_at(record, Instant::now())
                {
                    tracing::warn!(%cid, error = %e, "cannot provide");
                }
            }
        }
    }

    /// Starts the announcements the schedule allows now, and sets the timer for the
    /// next. Nothing is announced while the routing table is empty (there is no one to
    /// tell; a peer added wakes the task).
    fn announce(&mut self) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        if kad.kbuckets().next().is_none() {
            self.wake_armed = false;
            return;
        }
        let now = Instant::now();
        while let Some((cid, generation)) = self.schedule.next(now) {
            match kad.start_providing(provider_key(&cid)) {
                Ok(id) => {
                    self.announcing.insert(id, (cid, generation));
                }
                Err(e) => {
                    tracing::warn!(%cid, error = %e, "cannot provide");
                    self.schedule.finished(cid, generation, false, now);
                }
            }
        }
        match self.schedule.wake_at(now) {
            Some(at) => {
                self.wake.as_mut().reset(tokio::time::Instant::from_std(at));
                self.wake_armed = true;
            }
            None => self.wake_armed = false,
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Provide(cids) => self.add_provided(cids),
            Command::Unprovide(cid) => {
                self.schedule.remove(&cid);
                self.swarm
                    .behaviour_mut()
                    .kad
                    .stop_providing(&provider_key(&cid));
            }
            Command::Provided(reply) => {
                let _ = reply.send(self.schedule.keys().copied().collect());
            }
            Command::ProviderStats(reply) => {
                let c = self.schedule.counts();
                let store = self.swarm.behaviour_mut().kad.store_mut();
                store.expire(Instant::now());
                let _ = reply.send(ProviderStats {
                    provided: c.keys,
                    never_announced: c.never_announced,
                    announcing: c.announcing,
                    announcements: c.announcements,
                    failures: c.failures,
                    records: store.others_len(),
                });
            }
            Command::FindProviders(cid, reply) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(provider_key(&cid));
                self.providers.insert(id, (HashSet::new(), reply));
            }
            Command::Dial(peer, addrs, reply) => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                for a in &addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer, a.clone());
                }
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .build();
                match self.swarm.dial(opts) {
                    // A dial already under way: wait for it.
                    Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                        self.dials.entry(peer).or_default().push(reply)
                    }
                    Err(e) => {
                        // No address of its own (a provider found through the DHT
                        // behind a NAT): through the relays we know.
                        if self.dial_through_relays(peer) {
                            self.dials.entry(peer).or_default().push(reply);
                        } else {
                            let _ =
                                reply.send(Err(Error::Libp2p(format!("cannot dial {peer}: {e}"))));
                        }
                    }
                }
            }
            Command::Spr(reply) => {
                let _ = reply.send(self.peer_record());
            }
            Command::AddExternalAddress(addr) => self.swarm.add_external_address(addr),
            Command::Shutdown => {}
            Command::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Info(reply) => {
                let mut table = Vec::new();
                for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
                    for entry in bucket.iter() {
                        table.push(*entry.node.key.preimage());
                    }
                }
                let nat = self.nat.snapshot();
                let _ = reply.send(NetInfo {
                    peer_id: self.swarm.local_peer_id().to_string(),
                    listen_addrs: self.swarm.listeners().cloned().collect(),
                    connected: self.swarm.connected_peers().copied().collect(),
                    routing_table: table,
                    reachability: nat.reachability,
                    external_addrs: self.swarm.external_addresses().cloned().collect(),
                    connections: nat.connections,
                    reservations: nat.reservations,
                    hole_punches: nat.hole_punches,
                    relay_server: nat.relay_server,
                });
            }
        }
    }

    /// A dial of `peer` (by [`Network::dial`]) failed at the peer's own addresses: dials
    /// it once more through the relays we know (`<relay>/p2p-circuit/p2p/<peer>`), as a
    /// peer behind a NAT is reached. Returns whether it did.
    fn dial_through_relays(&mut self, peer: PeerId) -> bool {
        if self.relay_dialed.contains(&peer) {
            return false;
        }
        let addrs = self.nat.relayed_addresses(peer);
        if addrs.is_empty() {
            return false;
        }
        tracing::debug!(%peer, ?addrs, "dialing through relays");
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .condition(libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing)
            .addresses(addrs)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.relay_dialed.insert(peer);
                true
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot dial through relays");
                false
            }
        }
    }

    /// Our signed peer record at our current addresses: the last one while they stay
    /// the same, else a new one with a higher sequence number.
    fn peer_record(&mut self) -> Result<SignedPeerRecord> {
        let mut addrs: Vec<Multiaddr> = Vec::new();
        for a in self
            .swarm
            .listeners()
            .chain(self.swarm.external_addresses())
        {
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        if let Some(spr) = &self.spr
            && spr.addresses() == addrs.as_slice()
        {
            return Ok(spr.clone());
        }
        let seq = next_seq(self.spr.as_ref().map(SignedPeerRecord::seq));
        let spr = SignedPeerRecord::new(&self.key, seq, addrs)?;
        tracing::debug!(seq, addrs = ?spr.addresses(), "new signed peer record");
        self.spr = Some(spr.clone());
        Ok(spr)
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        use libp2p::metrics::Recorder as _;
        self.metrics.record(&event);
        match &event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => self.metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::RelayServer(e)) => self.metrics.record(e),
            _ => {}
        }
        self.nat_on_swarm_event(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "listening"),
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.relay_dialed.remove(&peer_id);
                if let Some(waiters) = self.dials.remove(&peer_id) {
                    for w in waiters {
                        let _ = w.send(Ok(()));
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => self.exchange.peer_disconnected(peer_id),
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                if self.dials.contains_key(&peer)
                    && !self.swarm.is_connected(&peer)
                    && self.dial_through_relays(peer)
                {
                    return;
                }
                self.relay_dialed.remove(&peer);
                if let Some(waiters) = self.dials.remove(&peer) {
                    for w in waiters {
                        let _ = w.send(Err(Error::Libp2p(format!(
                            "cannot connect to {peer}: {error}"
                        ))));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                for addr in info.listen_addrs {
                    kad.add_address(&peer_id, addr);
                }
                if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
                    self.relay_discovered(peer_id);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(e)) => self.on_autonat(e),
            SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => self.on_relay_client(e),
            SwarmEvent::Behaviour(BehaviourEvent::RelayServer(e)) => self.on_relay_server(e),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => self.on_dcutr(e),
            SwarmEvent::Behaviour(BehaviourEvent::Upnp(e)) => self.on_upnp(e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::StartProviding(r),
                stats,
                ..
            })) => {
                if let Some((cid, generation)) = self.announcing.remove(&id) {
                    // Kademlia reports success when the walk found no peer to tell.
                    let ok = r.is_ok() && stats.num_successes() > 0;
                    if !ok {
                        tracing::debug!(%cid, result = ?r, "an announcement reached no peer");
                    }
                    self.schedule.finished(cid, generation, ok, Instant::now());
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::GetProviders(r),
                step,
                ..
            })) => {
                let local = *self.swarm.local_peer_id();
                if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = r
                    && let Some((found, _)) = self.providers.get_mut(&id)
                {
                    found.extend(providers.into_iter().filter(|p| *p != local));
                }
                // Answer with the first providers found (records are replicated, so the
                // first answer usually names them all) or when the query ends.
                let has_some = self.providers.get(&id).is_some_and(|(f, _)| !f.is_empty());
                if (step.last || has_some)
                    && let Some((found, reply)) = self.providers.remove(&id)
                {
                    let _ = reply.send(found.into_iter().collect());
                    if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        q.finish();
                    }
                }
            }
            _ => {}
        }
    }
}
