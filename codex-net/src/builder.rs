//! [`NetworkBuilder`]: a node's network assembled setting by setting, then started.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use codex_core::{BlockRead, Cid};
use libp2p::Multiaddr;
use libp2p::identity::Keypair;

use crate::config::{
    Limits, NetConfig, ProviderConfig, Timeouts, Transports, default_listen_addrs,
};
use crate::error::{Error, Result};
use crate::exchange::ExchangeConfig;
use crate::key::{KeyType, load_or_create_key_with};
use crate::nat::NatConfig;
use crate::network::Network;

/// Where the node's key comes from.
enum KeySource {
    /// A fresh key of the builder's key type: a new peer id at every start.
    Fresh,
    /// The caller's (boxed: a secp256k1 key pair is large).
    Key(Box<Keypair>),
    /// Loaded from a file, or created there.
    File(PathBuf),
}

/// Assembles a [`Network`]: made by [`Network::builder`], each method sets one knob
/// (every one has a default, listed with it), [`start`](NetworkBuilder::start) checks
/// them all and starts the swarm.
///
/// The settings other than the key live in a [`NetConfig`]: [`config`](Self::config)
/// sets them all at once (a configuration read from flags or a file), and the methods
/// after it change single ones.
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn codex_core::BlockStore>) -> codex_net::Result<()> {
/// use std::time::Duration;
/// use codex_net::{Limits, Network, Timeouts, Transports};
///
/// let net = Network::builder(store)
///     .key_file("data/key")
///     .transports(Transports::QUIC)
///     .kad_protocol("/ipfs/kad/1.0.0")
///     .limits(Limits { max_connections: Some(64), ..Limits::default() })
///     .timeouts(Timeouts { dial: Duration::from_secs(5), ..Timeouts::default() })
///     .start()
///     .await?;
/// println!("peer {}", net.peer_id());
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until it is started"]
pub struct NetworkBuilder {
    store: Arc<dyn BlockRead>,
    key: KeySource,
    key_type: KeyType,
    config: NetConfig,
    provided: Vec<Cid>,
}

impl std::fmt::Debug for NetworkBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = match &self.key {
            KeySource::Fresh => "fresh".to_string(),
            KeySource::Key(k) => k.public().to_peer_id().to_string(),
            KeySource::File(path) => path.display().to_string(),
        };
        f.debug_struct("NetworkBuilder")
            .field("key", &key)
            .field("key_type", &self.key_type)
            .field("config", &self.config)
            .field("provided", &self.provided.len())
            .finish_non_exhaustive()
    }
}

impl NetworkBuilder {
    pub(crate) fn new(store: Arc<dyn BlockRead>) -> Self {
        NetworkBuilder {
            store,
            key: KeySource::Fresh,
            key_type: KeyType::default(),
            config: NetConfig::default(),
            provided: Vec::new(),
        }
    }

    /// Every setting but the key from `config` (the key stays as set). Default
    /// [`NetConfig::default`].
    pub fn config(mut self, config: NetConfig) -> Self {
        self.config = config;
        self
    }

    /// The settings so far.
    pub fn net_config(&self) -> &NetConfig {
        &self.config
    }

    /// The node's key, which makes its peer id. Default: a fresh key of the
    /// [`key_type`](Self::key_type) (Ed25519), so a new peer id at every start (see
    /// [`key_file`](Self::key_file) for one that lasts).
    pub fn key(mut self, key: Keypair) -> Self {
        self.key = KeySource::Key(Box::new(key));
        self
    }

    /// The node's key from the file at `path` (libp2p's protobuf encoding, as Codex's
    /// `--net-privkey` file), created there (mode 0600, of the
    /// [`key_type`](Self::key_type)) when it does not exist, as
    /// [`load_or_create_key_with`] does: the same peer id at every start.
    pub fn key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key = KeySource::File(path.into());
        self
    }

    /// The type of a key the builder creates: a fresh one, or a new one in the
    /// [`key_file`](Self::key_file). A key file that exists keeps its key, whatever its
    /// type. Default [`KeyType::Ed25519`]; Codex nodes take [`KeyType::Secp256k1`] only.
    pub fn key_type(mut self, key_type: KeyType) -> Self {
        self.key_type = key_type;
        self
    }

    /// Listen on `addrs` (TCP `/ip4/<ip>/tcp/<port>` or QUIC
    /// `/ip4/<ip>/udp/<port>/quic-v1`, IPv6 alike), instead of the default of every
    /// enabled transport on all interfaces, any port. None: only dial out.
    pub fn listen(mut self, addrs: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.config.listen_addrs = addrs.into_iter().collect();
        self
    }

    /// Bootstrap the DHT from `peers`, each address ending in `/p2p/<peer id>`; they are
    /// dialed at start (a peer given at several addresses once, at all of them).
    /// Replaces earlier ones. Default none. A signed peer record (`spr:...`) gives its
    /// peer's through [`BootstrapNode::addresses`](crate::BootstrapNode::addresses) or
    /// [`SignedPeerRecord::dial_addresses`](crate::SignedPeerRecord::dial_addresses).
    pub fn bootstrap(mut self, peers: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.config.bootstrap = peers.into_iter().collect();
        self
    }

    /// The Kademlia protocol name. Default `/codex/kad/1.0.0`
    /// ([`DEFAULT_KAD_PROTOCOL`](crate::DEFAULT_KAD_PROTOCOL)); `/ipfs/kad/1.0.0` joins
    /// the public libp2p DHT's protocol (as Logos Storage does).
    pub fn kad_protocol(mut self, name: impl Into<String>) -> Self {
        self.config.kad_protocol = name.into();
        self
    }

    /// The transports. Default [`Transports::ALL`] (TCP and QUIC). Listen addresses
    /// still at their default follow: with [`Transports::TCP`] the node listens on TCP
    /// only.
    pub fn transports(mut self, transports: Transports) -> Self {
        if self.config.listen_addrs == default_listen_addrs(self.config.transports) {
            self.config.listen_addrs = default_listen_addrs(transports);
        }
        self.config.transports = transports;
        self
    }

    /// Connection limits. Default [`Limits::default`]: 1024 connections, 8 per peer,
    /// 128 pending each way.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Timeouts of idle connections, dials and DHT queries. Default
    /// [`Timeouts::default`]: 120 s, 20 s, 30 s.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.config.timeouts = timeouts;
        self
    }

    /// Limits of the block exchange. Default [`ExchangeConfig::default`]: messages up to
    /// 16 MiB with up to 1024 want-list entries, 32 blocks served to a peer at once and
    /// 4096 of its wants queued, requests answered within 15 s.
    pub fn exchange(mut self, exchange: ExchangeConfig) -> Self {
        self.config.exchange = exchange;
        self
    }

    /// How often each of our provider records is announced again. Default 12 hours
    /// ([`ProviderConfig::reprovide_interval`]).
    pub fn reprovide_interval(mut self, interval: Duration) -> Self {
        self.config.providers.reprovide_interval = interval;
        self
    }

    /// Our provider records and other peers': reprovide interval, record TTL,
    /// announce rate and burst, announcements at once, retry delay, records held.
    /// Default [`ProviderConfig::default`]: 12 h, 48 h, 20 a second in bursts of 20,
    /// 64 at once, 1 minute, 131 072 records and 20 providers a key.
    pub fn providers(mut self, providers: ProviderConfig) -> Self {
        self.config.providers = providers;
        self
    }

    /// NAT traversal: `--nat` ([`Nat`](crate::Nat)), announced addresses, relays to
    /// reserve on and when ([`RelayMode`](crate::RelayMode)), serving as a relay,
    /// AutoNAT's probes. Default [`NatConfig::default`]: `--nat any`, reserve on at most
    /// 2 relays when AutoNAT says private, no relay server.
    pub fn nat(mut self, nat: NatConfig) -> Self {
        self.config.nat = nat;
        self
    }

    /// Keys we provide from the start (added to those given before), as
    /// [`Network::provide_many`] would add them: the set
    /// [`Network::provided`] listed before the last stop, which the caller keeps.
    /// They are answered for at once and announced at the announce rate. Default none.
    pub fn provided(mut self, cids: impl IntoIterator<Item = Cid>) -> Self {
        self.provided.extend(cids);
        self
    }

    /// Checks the settings, then starts the swarm: binds the listen addresses, dials
    /// the bootstrap peers and starts the block exchange. Returns once the first listen
    /// address is up (at most 5 s), so that callers can print it. Needs a tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a setting that cannot work (nothing is started;
    /// see [`NetConfig::validate`]); [`Error::KeyFile`], [`Error::KeyMalformed`] or
    /// [`Error::KeyUnsupported`] when the key file cannot be read or written or holds
    /// no key the node takes; [`Error::Libp2p`] when a listen address cannot be bound.
    ///
    /// # Cancel safety
    /// Dropping the future before it returns drops the swarm: nothing keeps running.
    pub async fn start(self) -> Result<Network> {
        self.config.validate()?;
        let key = match self.key {
            KeySource::Fresh => self.key_type.generate(),
            KeySource::Key(key) => *key,
            KeySource::File(path) => {
                let key_type = self.key_type;
                tokio::task::spawn_blocking(move || load_or_create_key_with(&path, key_type))
                    .await
                    .map_err(|e| Error::Libp2p(format!("loading the node key failed: {e}")))??
            }
        };
        Network::launch(key, self.config, self.store, self.provided).await
    }
}
