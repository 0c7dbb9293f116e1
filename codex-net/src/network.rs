//! The swarm: one task owns it; [`Network`] is the cloneable handle the rest of the
//! program uses, over a bounded command channel.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use codex_core::{BlockRead, Cid};
use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult, RecordKey};
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

/// Loads the node key from `path`, or creates one there (mode 0600).
pub fn load_or_create_key(path: &Path) -> Result<Keypair> {
    if let Ok(bytes) = std::fs::read(path) {
        return Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| Error::Libp2p(format!("node key {} is unreadable: {e}", path.display())));
    }
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| Error::Libp2p(format!("cannot encode the node key: {e}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    Ok(key)
}

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
    kad: kad::Behaviour<kad::store::MemoryStore>,
    autonat: autonat::Behaviour,
    relay: relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    stream: libp2p_stream::Behaviour,
}

pub(crate) enum Command {
    Provide(Cid),
    Unprovide(Cid),
    FindProviders(Cid, oneshot::Sender<Vec<PeerId>>),
    Dial(PeerId, Vec<Multiaddr>, oneshot::Sender<Result<()>>),
    Disconnect(PeerId),
    Info(oneshot::Sender<NetInfo>),
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
}

/// The handle to the network. Cheap to clone.
#[derive(Clone)]
pub struct Network {
    peer_id: PeerId,
    dial_timeout: Duration,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    exchange: Arc<Exchange>,
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
    ) -> Result<Network> {
        let peer_id = key.public().to_peer_id();
        let kad_protocol = config.kad_stream_protocol()?;
        let reprovide = config.reprovide_interval;
        let timeouts = config.timeouts;
        let limits = config.limits.to_libp2p();
        let transports = config.transports;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|key| transport(key, transports))
            .map_err(|e| Error::Libp2p(e.to_string()))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| Error::Libp2p(e.to_string()))?
            .with_behaviour(|key, relay| {
                let mut kad_config = kad::Config::new(kad_protocol);
                kad_config.set_provider_publication_interval(Some(reprovide));
                kad_config.set_query_timeout(timeouts.kad_query);
                let mut kad = kad::Behaviour::with_config(
                    key.public().to_peer_id(),
                    kad::store::MemoryStore::new(key.public().to_peer_id()),
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
                        autonat::Config::default(),
                    ),
                    relay,
                    dcutr: dcutr::Behaviour::new(key.public().to_peer_id()),
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
        let exchange = Exchange::start(control, store, config.exchange.clone(), Some(tx.clone()))?;
        let mut task = SwarmTask {
            swarm,
            commands: rx,
            providers: HashMap::new(),
            dials: HashMap::new(),
            exchange: Arc::clone(&exchange),
        };
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
        for addr in &config.bootstrap {
            // Checked: every bootstrap address ends in /p2p/<peer id>.
            if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
                let swarm = &mut task.swarm;
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                if let Err(e) = swarm.dial(addr.clone()) {
                    tracing::warn!(%addr, error = %e, "cannot dial a bootstrap node");
                }
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
        })
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
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

    /// Announces in the DHT that we provide `cid`; the record is published again every
    /// [`NetConfig::reprovide_interval`].
    ///
    /// # Errors
    /// [`Error::Stopped`] when the network task has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: a command already sent is carried out, its answer dropped.
    pub async fn provide(&self, cid: Cid) -> Result<()> {
        self.send(Command::Provide(cid)).await
    }

    /// Withdraws our provider record for `cid`.
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
/// QUIC. At least one is enabled (the configuration is checked before).
fn transport(
    key: &Keypair,
    enabled: Transports,
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
    out.ok_or_else(|| "no transport enabled".into())
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
}

impl SwarmTask {
    async fn run(mut self) {
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(c) => self.on_command(c),
                },
            }
        }
        tracing::debug!("network task stopped");
    }

    fn on_command(&mut self, command: Command) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        match command {
            Command::Provide(cid) => {
                if let Err(e) = kad.start_providing(provider_key(&cid)) {
                    tracing::warn!(%cid, error = %e, "cannot provide");
                }
            }
            Command::Unprovide(cid) => kad.stop_providing(&provider_key(&cid)),
            Command::FindProviders(cid, reply) => {
                let id = kad.get_providers(provider_key(&cid));
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
                        let _ = reply.send(Err(Error::Libp2p(format!("cannot dial {peer}: {e}"))));
                    }
                }
            }
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
                let _ = reply.send(NetInfo {
                    peer_id: self.swarm.local_peer_id().to_string(),
                    listen_addrs: self.swarm.listeners().cloned().collect(),
                    connected: self.swarm.connected_peers().copied().collect(),
                    routing_table: table,
                });
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "listening"),
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
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
