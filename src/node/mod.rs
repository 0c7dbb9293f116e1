//! The node: the layers composed behind Codex's REST API.
//!
//! A node stores and serves datasets, exchanges blocks with peers, erasure-codes and
//! makes datasets verifiable, and with a marketplace buys storage (purchasing), sells it
//! (sales, with lazy repair of freed slots) and validates other hosts' proofs.
//!
//! What a node does follows the crate's features: without `rest` it serves no API
//! (embed it and call [`Node`]'s methods), without `net` it has no peers, without
//! `proofs` it cannot make datasets verifiable, without `market` it neither buys nor
//! sells storage. Storage, erasure coding and the expiry sweep are always there.

#[cfg(feature = "rest")]
pub mod api;
pub mod data;
mod handle;
mod keys;
#[cfg(feature = "market")]
pub mod market;
#[cfg(feature = "net")]
pub mod network;
#[cfg(feature = "net")]
pub mod provided;
#[cfg(feature = "market")]
pub mod purchasing;
#[cfg(feature = "market")]
pub mod sales;
#[cfg(feature = "rest")]
pub mod security;
pub mod tasks;
#[cfg(feature = "market")]
pub mod validator;

#[cfg(feature = "rest")]
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codex_core::Cid;
use codex_core::prelude::*;
use codex_store::{SledStore, StoreConfig};
use futures::Stream;
#[cfg(feature = "rest")]
use tokio::task::JoinHandle;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
pub use crate::node::data::{Dataset, UploadOptions};
pub use crate::node::handle::{Counters, Handle};
pub use codex_store::dataset::Added;

/// A node's settings; the defaults are Codex's. Its `Debug` never shows the API token.
#[derive(Clone)]
pub struct NodeConfig {
    /// Where the store lives (`--data-dir`).
    pub data_dir: PathBuf,
    /// API address (`--api-bindaddr`, default 127.0.0.1: loopback only). Feature `rest`.
    #[cfg(feature = "rest")]
    pub api_bindaddr: IpAddr,
    /// API port (`--api-port`, default 8080; 0 picks a free port). Feature `rest`.
    #[cfg(feature = "rest")]
    pub api_port: u16,
    /// The API's bearer token (`--api-token-file`, or `CODEX_API_TOKEN`): when set,
    /// every route answers 401 unless the request carries `Authorization: Bearer
    /// TOKEN`. Visible ASCII, no spaces. Never logged. Feature `rest`.
    #[cfg(feature = "rest")]
    pub api_token: Option<String>,
    /// The origin browsers may call the API from (`--api-cors-origin`): `*` for any,
    /// or one origin such as `https://app.example`; `None` (or empty) sends no CORS
    /// headers, so browsers keep pages of other origins out. Feature `rest`.
    #[cfg(feature = "rest")]
    pub api_cors_origin: Option<String>,
    /// What changes the process's log level when the API is asked to
    /// (`POST /debug/chronicles/loglevel`); `None` answers 500 there. The reference
    /// node passes [`crate::logging::init`]'s. Feature `rest`.
    #[cfg(feature = "rest")]
    pub log_control: Option<crate::logging::SharedLogControl>,
    /// Serve Prometheus metrics ([`crate::metrics`]) at `GET /metrics` on this address
    /// (`--metrics --metrics-address --metrics-port`, Codex's default
    /// 127.0.0.1:8008; port 0 picks a free one); `None` serves none. Feature
    /// `metrics`.
    #[cfg(feature = "metrics")]
    pub metrics_addr: Option<SocketAddr>,
    /// Quota in bytes (`--storage-quota`, default 20 GiB).
    pub storage_quota: u64,
    /// Block lifetime (`--block-ttl`, default 30 days).
    pub block_ttl: Duration,
    /// Time between expiry sweeps (`--block-mi`, default 10 minutes).
    pub block_maintenance_interval: Duration,
    /// Expiry records per sweep (`--block-mn`, default 1000).
    pub block_maintenance_batch: usize,
    /// The network (`--listen-addrs`, `--bootstrap-node`); `None` runs a node without one.
    /// Feature `net`.
    #[cfg(feature = "net")]
    pub network: Option<codex_net::NetConfig>,
    /// The network key's file (`--net-privkey`, default `key`), relative to `data_dir`
    /// unless absolute: libp2p's protobuf encoding of the private key, as Codex keeps
    /// it, mode 0600. Created when missing. Feature `net`.
    #[cfg(feature = "net")]
    pub net_privkey: PathBuf,
    /// The type of a network key the node creates (`--net-key-type`, default
    /// Ed25519); a key file that exists keeps its key. Codex nodes take secp256k1
    /// keys only. Feature `net`.
    #[cfg(feature = "net")]
    pub net_key_type: codex_net::KeyType,
    /// The marketplace (`--eth-provider`, `--marketplace-address`, `--eth-private-key`);
    /// `None` runs a node that neither buys nor sells storage. Feature `market`.
    #[cfg(feature = "market")]
    pub marketplace: Option<market::MarketConfig>,
    /// Validate (`--validator`): mark missing proofs of filled slots, with the
    /// marketplace account. Needs `marketplace`. Feature `market`.
    #[cfg(feature = "market")]
    pub validator: Option<validator::ValidatorConfig>,
    /// Keep the keys of datasets encrypted on upload (`--keep-keys`), in the file
    /// `keys` of the data directory (mode 0600), so that `GET /data/{cid}?decrypt=true`
    /// and [`Handle::kept_key`] find them. Off by default: the node then forgets each key
    /// once it has returned it.
    pub keep_keys: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("codex-data"),
            #[cfg(feature = "rest")]
            api_bindaddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            #[cfg(feature = "rest")]
            api_port: 8080,
            #[cfg(feature = "rest")]
            api_token: None,
            #[cfg(feature = "rest")]
            api_cors_origin: None,
            #[cfg(feature = "rest")]
            log_control: None,
            #[cfg(feature = "metrics")]
            metrics_addr: None,
            storage_quota: 20 << 30,
            block_ttl: Duration::from_secs(30 * 24 * 3600),
            block_maintenance_interval: Duration::from_secs(600),
            block_maintenance_batch: 1000,
            #[cfg(feature = "net")]
            network: Some(codex_net::NetConfig::default()),
            #[cfg(feature = "net")]
            net_privkey: PathBuf::from("key"),
            #[cfg(feature = "net")]
            net_key_type: codex_net::KeyType::default(),
            #[cfg(feature = "market")]
            marketplace: None,
            #[cfg(feature = "market")]
            validator: None,
            keep_keys: false,
        }
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("NodeConfig");
        d.field("data_dir", &self.data_dir);
        #[cfg(feature = "rest")]
        d.field("api_bindaddr", &self.api_bindaddr)
            .field("api_port", &self.api_port)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("api_cors_origin", &self.api_cors_origin)
            .field("log_control", &self.log_control.as_ref().map(|c| c.level()));
        #[cfg(feature = "metrics")]
        d.field("metrics_addr", &self.metrics_addr);
        d.field("storage_quota", &self.storage_quota)
            .field("block_ttl", &self.block_ttl)
            .field(
                "block_maintenance_interval",
                &self.block_maintenance_interval,
            )
            .field("block_maintenance_batch", &self.block_maintenance_batch);
        #[cfg(feature = "net")]
        d.field("network", &self.network)
            .field("net_privkey", &self.net_privkey)
            .field("net_key_type", &self.net_key_type);
        #[cfg(feature = "market")]
        d.field("marketplace", &self.marketplace)
            .field("validator", &self.validator);
        d.finish()
    }
}

/// A running node: its services ([`Handle`], to which it dereferences), its background
/// tasks and, when asked for, the REST API. Build one with [`Node::builder`].
///
/// Every task the node starts (the expiry sweep, sales, the validator, the API server,
/// announcing) is owned by it: [`Node::shutdown`] cancels them and waits for each.
/// Dropping the node cancels them without waiting.
#[derive(Debug)]
pub struct Node {
    handle: Handle,
    #[cfg(feature = "rest")]
    api: Option<Api>,
    /// The metrics server: its address and task.
    #[cfg(feature = "metrics")]
    metrics: Option<(SocketAddr, JoinHandle<std::io::Result<()>>)>,
    tasks: JoinSet<()>,
    cancel: CancellationToken,
    /// The node opened its store (else the app gave it and may hold it too).
    owns_store: bool,
    /// Keeps the provided keys in the data directory (a network the node started).
    #[cfg(feature = "net")]
    provided: Option<Arc<provided::Persist>>,
}

/// The REST API server of a running node.
#[cfg(feature = "rest")]
#[derive(Debug)]
struct Api {
    addr: SocketAddr,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::ops::Deref for Node {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

/// Builds a [`Node`]: each part given ready-made (a store, a network, a marketplace with
/// its prover) or made from settings, and the REST API only when asked for.
///
/// ```no_run
/// # async fn f() -> codex::Result<()> {
/// let node = codex::Node::builder()
///     .data_dir("/tmp/codex-example")
///     .without_network()
///     .start()
///     .await?;
/// let added = node
///     .add(futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("hello"))]), Default::default())
///     .await?;
/// println!("stored {}", added.cid);
/// node.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until start"]
pub struct NodeBuilder {
    config: NodeConfig,
    store: Option<Arc<dyn BlockStore>>,
    #[cfg(feature = "rest")]
    serve_api: bool,
    #[cfg(feature = "net")]
    network: Option<codex_net::Network>,
    #[cfg(feature = "market")]
    market: Option<market::Market>,
}

impl NodeBuilder {
    /// Takes every setting from `config` (what the CLI parses). Parts given with
    /// [`NodeBuilder::store`], [`NodeBuilder::network`] or [`NodeBuilder::market`]
    /// take precedence over it.
    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }

    /// Where the node keeps its store, network key and marketplace books (default
    /// `codex-data`).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self
    }

    /// The quota of the store the node opens (default 20 GiB); ignored with
    /// [`NodeBuilder::store`].
    pub fn storage_quota(mut self, bytes: u64) -> Self {
        self.config.storage_quota = bytes;
        self
    }

    /// Uses `store` instead of opening a `SledStore` in the data directory: any
    /// implementation of the store traits (see `codex_store::conformance`). Its expiry
    /// sweep, if it has one, is its owner's business.
    pub fn store(mut self, store: Arc<dyn BlockStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Serves the REST API on the address and port of the config (default
    /// 127.0.0.1:8080; port 0 picks a free one) with its token. Off unless asked for.
    /// Feature `rest`.
    #[cfg(feature = "rest")]
    pub fn serve_api(mut self) -> Self {
        self.serve_api = true;
        self
    }

    /// Serves the REST API at `addr` (port 0 picks a free one). Feature `rest`.
    #[cfg(feature = "rest")]
    pub fn api_addr(mut self, addr: SocketAddr) -> Self {
        self.config.api_bindaddr = addr.ip();
        self.config.api_port = addr.port();
        self.serve_api = true;
        self
    }

    /// Starts a network with these settings (the default: listen on all interfaces,
    /// no bootstrap nodes). Feature `net`.
    #[cfg(feature = "net")]
    pub fn network_config(mut self, config: codex_net::NetConfig) -> Self {
        self.config.network = Some(config);
        self
    }

    /// Uses a network the app started itself (e.g. with `codex_net::Network::builder`
    /// over this node's store). Feature `net`.
    #[cfg(feature = "net")]
    pub fn network(mut self, network: codex_net::Network) -> Self {
        self.network = Some(network);
        self
    }

    /// Runs without a network: the node stores and serves data only to this process.
    #[cfg_attr(not(feature = "net"), allow(unused_mut))]
    pub fn without_network(mut self) -> Self {
        #[cfg(feature = "net")]
        {
            self.config.network = None;
            self.network = None;
        }
        self
    }

    /// Connects to a marketplace on chain with these settings. Feature `market`.
    #[cfg(feature = "market")]
    pub fn marketplace(mut self, config: market::MarketConfig) -> Self {
        self.config.marketplace = Some(config);
        self
    }

    /// Uses a marketplace the app made: any [`codex_market::Marketplace`] (on chain, or
    /// `codex_market::memory::MemoryMarketplace`) with its prover setup and books, see
    /// [`market::Market::new`]. Feature `market`.
    #[cfg(feature = "market")]
    pub fn market(mut self, market: market::Market) -> Self {
        self.market = Some(market);
        self
    }

    /// Validates other hosts' proofs with the marketplace's account. Feature `market`.
    #[cfg(feature = "market")]
    pub fn validator(mut self, config: validator::ValidatorConfig) -> Self {
        self.config.validator = Some(config);
        self
    }

    /// Starts the node: opens (or takes) the store and starts the expiry sweep, the
    /// network, the marketplace roles (sales need a network) and the API.
    ///
    /// # Errors
    /// When the API token is unusable (see `security::check_token`), the store cannot
    /// be opened, the network or marketplace cannot start or the API address cannot be
    /// bound.
    pub async fn start(self) -> Result<Node> {
        let NodeBuilder {
            config,
            store,
            #[cfg(feature = "rest")]
            serve_api,
            #[cfg(feature = "net")]
                network: given_network,
            #[cfg(feature = "market")]
                market: given_market,
        } = self;
        #[cfg(feature = "rest")]
        if serve_api && let Some(token) = &config.api_token {
            security::check_token(token)?;
        }
        std::fs::create_dir_all(&config.data_dir)?;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let owns_store = store.is_none();
        let store: Arc<dyn BlockStore> = match store {
            Some(store) => store,
            None => {
                let store_config = StoreConfig {
                    quota_max_bytes: config.storage_quota,
                    block_ttl: config.block_ttl,
                    ..StoreConfig::default()
                };
                let dir = config.data_dir.join("repo");
                let store = tokio::task::spawn_blocking(move || SledStore::open(dir, store_config))
                    .await??;
                let sweep = store.start_maintenance(
                    config.block_maintenance_interval,
                    config.block_maintenance_batch,
                );
                let stop = cancel.clone();
                tasks.spawn(async move {
                    stop.cancelled().await;
                    sweep.abort();
                    let _ = sweep.await;
                });
                Arc::new(store)
            }
        };

        #[cfg(feature = "net")]
        let (network, provided) = match (given_network, config.network.clone()) {
            (Some(net), _) => (Some(net), None),
            (None, Some(net_config)) => {
                let (net, provided) =
                    start_network(&config, net_config, &store, &mut tasks, &cancel).await?;
                (Some(net), Some(provided))
            }
            (None, None) => (None, None),
        };

        #[cfg(feature = "market")]
        let market = {
            let market = match (given_market, config.marketplace.clone()) {
                (Some(m), _) => Some(Arc::new(m)),
                (None, Some(mc)) => Some(Arc::new(
                    market::Market::connect(mc, &config.data_dir).await?,
                )),
                (None, None) if config.validator.is_some() => {
                    return Err(crate::Error::NoMarketplace);
                }
                (None, None) => None,
            };
            if let Some(m) = &market {
                if let Some(n) = &network {
                    let ctx = sales::Ctx {
                        store: Arc::clone(&store),
                        network: n.clone(),
                        market: Arc::clone(m),
                    };
                    tasks.spawn(sales::run(ctx, cancel.child_token()));
                }
                tasks.spawn(purchasing::resume(purchasing::Ctx {
                    store: Arc::clone(&store),
                    network: network.clone(),
                    market: Arc::clone(m),
                }));
                if let Some(v) = config.validator {
                    tasks.spawn(validator::run(Arc::clone(m), v, cancel.child_token()));
                }
            }
            market
        };

        let handle = Handle {
            store,
            #[cfg(feature = "net")]
            network,
            data_dir: config.data_dir.display().to_string(),
            #[cfg(feature = "market")]
            market,
            background: Arc::new(tasks::TaskSet::new(cancel.child_token())),
            keys: config
                .keep_keys
                .then(|| Arc::new(keys::KeyRing::new(&config.data_dir))),
            counters: Arc::default(),
            #[cfg(feature = "rest")]
            log_control: config.log_control.clone(),
        };

        #[cfg(feature = "rest")]
        let api = if serve_api {
            Some(start_api(&config, handle.clone(), &cancel).await?)
        } else {
            None
        };
        #[cfg(feature = "metrics")]
        let metrics = match config.metrics_addr {
            Some(addr) => {
                Some(crate::metrics::serve(addr, handle.clone(), cancel.child_token()).await?)
            }
            None => None,
        };
        tracing::info!(data_dir = %config.data_dir.display(), "node started");
        Ok(Node {
            handle,
            #[cfg(feature = "rest")]
            api,
            #[cfg(feature = "metrics")]
            metrics,
            tasks,
            cancel,
            owns_store,
            #[cfg(feature = "net")]
            provided,
        })
    }
}

/// Binds the API and serves it until `cancel`.
#[cfg(feature = "rest")]
async fn start_api(config: &NodeConfig, handle: Handle, cancel: &CancellationToken) -> Result<Api> {
    let listener = tokio::net::TcpListener::bind((config.api_bindaddr, config.api_port)).await?;
    let addr = listener.local_addr()?;
    let router = security::protect(api::router(handle), config.api_token.as_deref())?;
    // Outermost: a browser's preflight carries no token.
    let router = match api::cors(config.api_cors_origin.as_deref())? {
        Some(cors) => router.layer(cors),
        None => router,
    };
    let auth = config.api_token.is_some();
    if !auth && !addr.ip().is_loopback() {
        tracing::warn!(api_addr = %addr, "the API is reachable beyond this machine without a token (--api-token-file)");
    }
    let stop = cancel.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    tracing::info!(api_addr = %addr, auth, "API started");
    Ok(Api {
        addr,
        server: Some(server),
    })
}

impl Node {
    /// A builder: set the parts, then [`NodeBuilder::start`].
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Starts a node from `config` with the REST API: what the CLI runs. Same as
    /// `Node::builder().config(config).serve_api().start()`.
    ///
    /// # Errors
    /// As [`NodeBuilder::start`].
    #[cfg(feature = "rest")]
    pub async fn start(config: NodeConfig) -> Result<Node> {
        Node::builder().config(config).serve_api().start().await
    }

    /// Starts a node from `config` (no REST API in this build).
    ///
    /// # Errors
    /// As [`NodeBuilder::start`].
    #[cfg(not(feature = "rest"))]
    pub async fn start(config: NodeConfig) -> Result<Node> {
        Node::builder().config(config).start().await
    }

    /// A handle on the node's services, for other tasks.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The address the REST API listens on. Feature `rest`.
    ///
    /// # Panics
    /// When the node serves no API (built without [`NodeBuilder::serve_api`]).
    #[cfg(feature = "rest")]
    pub fn api_addr(&self) -> SocketAddr {
        self.api
            .as_ref()
            .map(|a| a.addr)
            .expect("this node serves no REST API (NodeBuilder::serve_api)")
    }

    /// Where the metrics are served ([`NodeConfig::metrics_addr`], the port bound);
    /// `None` when they are not. Feature `metrics`.
    #[cfg(feature = "metrics")]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    /// The API's base URL, e.g. `http://127.0.0.1:8080/api/codex/v1`. Feature `rest`.
    ///
    /// # Panics
    /// As [`Node::api_addr`].
    #[cfg(feature = "rest")]
    pub fn api_url(&self) -> String {
        format!("http://{}{}", self.api_addr(), api::BASE)
    }

    /// The addresses peers can dial, each with this node's `/p2p/` suffix (what
    /// another node takes as `--bootstrap-node`).
    ///
    /// # Errors
    /// [`crate::Error::NoNetwork`] for a node without a network. Feature `net`.
    #[cfg(feature = "net")]
    pub async fn addresses(&self) -> Result<Vec<codex_net::Multiaddr>> {
        let net = self
            .handle
            .network
            .as_ref()
            .ok_or(crate::Error::NoNetwork)?;
        let info = net.info().await?;
        let peer = net.peer_id();
        Ok(info
            .listen_addrs
            .into_iter()
            .map(|a| a.with(codex_net::Protocol::P2p(peer)))
            .collect())
    }

    /// Stores a byte stream as a dataset; returns its CID. See [`Handle::add`].
    ///
    /// # Errors
    /// As [`Handle::add`].
    pub async fn upload<S, E>(&self, source: S, options: UploadOptions) -> Result<Cid>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Ok(self.handle.add(source, options).await?.cid)
    }

    /// Stops the node: the API (finishing requests in flight), the marketplace roles,
    /// the expiry sweep, the purchases' watchers and the network, waiting for each.
    ///
    /// # Errors
    /// When the API server failed.
    pub async fn shutdown(mut self) -> Result<()> {
        self.cancel.cancel();
        #[cfg(feature = "rest")]
        if let Some(server) = self.api.as_mut().and_then(|a| a.server.take()) {
            server.await??;
        }
        #[cfg(feature = "metrics")]
        if let Some((_, server)) = self.metrics.take() {
            server.await??;
        }
        self.handle.background.shutdown().await;
        while let Some(done) = self.tasks.join_next().await {
            if let Err(e) = done
                && e.is_panic()
            {
                tracing::warn!(error = %e, "a node task panicked");
            }
        }
        #[cfg(feature = "market")]
        if let Some(m) = &self.handle.market {
            m.shutdown().await;
        }
        #[cfg(feature = "net")]
        if let Some(net) = self.handle.network.take() {
            // Every announcement the node's work made is in; the next start provides
            // these keys without reading the manifests.
            if let Some(p) = &self.provided {
                p.save(&net, true).await;
            }
            net.shutdown().await;
        }
        // Work that still holds a store the node opened (a blocking task of an upload
        // finishing, a reader kept by the app) ends before this returns, so that the
        // store can be opened again at once; bounded, in case a reader keeps a dataset
        // open. A store the app gave is the app's to close.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.owns_store
            && Arc::strong_count(&self.handle.store) > 1
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Every task stops at the token (the API server gracefully); the task set
        // aborts what is left when it drops.
        self.cancel.cancel();
    }
}

/// Starts the network (its key in `net_privkey`, `key` in the data directory by
/// default) providing the keys saved at the last stop ([`provided`]), or, without a
/// usable file, announcing the stored datasets in the background; then saves the
/// provided keys every minute while they change.
#[cfg(feature = "net")]
async fn start_network(
    config: &NodeConfig,
    net_config: codex_net::NetConfig,
    store: &Arc<dyn BlockStore>,
    tasks: &mut JoinSet<()>,
    cancel: &CancellationToken,
) -> Result<(codex_net::Network, Arc<provided::Persist>)> {
    let persist = Arc::new(provided::Persist::new(&config.data_dir));
    let (keys, announce_all) = persist.load(&**store).await;
    // Started means listening (others are told the addresses at once), or 5 s passed.
    let net = codex_net::Network::builder(Arc::clone(store))
        .key_file(config.data_dir.join(&config.net_privkey))
        .key_type(config.net_key_type)
        .config(net_config)
        .provided(keys)
        .start()
        .await?;
    tasks.spawn(Arc::clone(&persist).run(
        net.clone(),
        Arc::clone(store),
        announce_all,
        cancel.clone(),
    ));
    tracing::info!(peer_id = %net.peer_id(), "network started");
    Ok((net, persist))
}
