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
#[cfg(feature = "market")]
pub mod market;
#[cfg(feature = "net")]
pub mod network;
#[cfg(feature = "market")]
pub mod purchasing;
#[cfg(feature = "market")]
pub mod sales;
#[cfg(feature = "rest")]
pub mod security;
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
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::Result;
pub use crate::node::data::{Dataset, UploadOptions};

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
    /// The marketplace (`--eth-provider`, `--marketplace-address`, `--eth-private-key`);
    /// `None` runs a node that neither buys nor sells storage. Feature `market`.
    #[cfg(feature = "market")]
    pub marketplace: Option<market::MarketConfig>,
    /// Validate (`--validator`): mark missing proofs of filled slots, with the
    /// marketplace account. Needs `marketplace`. Feature `market`.
    #[cfg(feature = "market")]
    pub validator: Option<validator::ValidatorConfig>,
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
            storage_quota: 20 << 30,
            block_ttl: Duration::from_secs(30 * 24 * 3600),
            block_maintenance_interval: Duration::from_secs(600),
            block_maintenance_batch: 1000,
            #[cfg(feature = "net")]
            network: Some(codex_net::NetConfig::default()),
            #[cfg(feature = "market")]
            marketplace: None,
            #[cfg(feature = "market")]
            validator: None,
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
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"));
        d.field("storage_quota", &self.storage_quota)
            .field("block_ttl", &self.block_ttl)
            .field(
                "block_maintenance_interval",
                &self.block_maintenance_interval,
            )
            .field("block_maintenance_batch", &self.block_maintenance_batch);
        #[cfg(feature = "net")]
        d.field("network", &self.network);
        #[cfg(feature = "market")]
        d.field("marketplace", &self.marketplace)
            .field("validator", &self.validator);
        d.finish()
    }
}

/// A running node. Dropping it stops the API; call [`Node::shutdown`] to wait for that.
#[derive(Debug)]
pub struct Node {
    store: Arc<dyn BlockStore>,
    #[cfg(feature = "net")]
    network: Option<codex_net::Network>,
    #[cfg(feature = "market")]
    market: Option<Arc<market::Market>>,
    #[cfg(feature = "rest")]
    api: Api,
    maintenance: JoinHandle<()>,
    /// Background tasks stopped with the node (sales, validator).
    tasks: Vec<JoinHandle<()>>,
}

/// The REST API server of a running node.
#[cfg(feature = "rest")]
#[derive(Debug)]
struct Api {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Node {
    /// Opens the store in `config.data_dir` and starts the maintenance task, and with
    /// the crate's features the network, the marketplace tasks and the API.
    ///
    /// # Errors
    /// When the API token is unusable (see `security::check_token`), the store cannot
    /// be opened, the network or marketplace cannot start or the API address cannot be
    /// bound.
    pub async fn start(config: NodeConfig) -> Result<Node> {
        #[cfg(feature = "rest")]
        if let Some(token) = &config.api_token {
            security::check_token(token)?;
        }
        std::fs::create_dir_all(&config.data_dir)?;
        let store_config = StoreConfig {
            quota_max_bytes: config.storage_quota,
            block_ttl: config.block_ttl,
            ..StoreConfig::default()
        };
        let dir = config.data_dir.join("repo");
        let store =
            tokio::task::spawn_blocking(move || SledStore::open(dir, store_config)).await??;
        let maintenance = store.start_maintenance(
            config.block_maintenance_interval,
            config.block_maintenance_batch,
        );
        let store: Arc<dyn BlockStore> = Arc::new(store);
        #[cfg_attr(not(feature = "market"), allow(unused_mut))]
        let mut tasks = Vec::new();

        #[cfg(feature = "net")]
        let network = match config.network.clone() {
            Some(net_config) => Some(start_network(&config, net_config, &store).await?),
            None => None,
        };

        #[cfg(feature = "market")]
        let market = match config.marketplace.clone() {
            Some(mc) => {
                let m = Arc::new(market::Market::connect(mc, &config.data_dir).await?);
                if let Some(n) = &network {
                    tasks.push(tokio::spawn(sales::run(sales::Ctx {
                        store: Arc::clone(&store),
                        network: n.clone(),
                        market: Arc::clone(&m),
                    })));
                }
                tokio::spawn(purchasing::resume(purchasing::Ctx {
                    store: Arc::clone(&store),
                    network: network.clone(),
                    market: Arc::clone(&m),
                }));
                if let Some(v) = config.validator {
                    tasks.push(tokio::spawn(validator::run(Arc::clone(&m), v)));
                }
                Some(m)
            }
            None if config.validator.is_some() => return Err(crate::Error::NoMarketplace),
            None => None,
        };

        #[cfg(feature = "rest")]
        let api = {
            let listener =
                tokio::net::TcpListener::bind((config.api_bindaddr, config.api_port)).await?;
            let addr = listener.local_addr()?;
            let router = security::protect(
                api::router(api::ApiState {
                    store: Arc::clone(&store),
                    #[cfg(feature = "net")]
                    network: network.clone(),
                    data_dir: config.data_dir.display().to_string(),
                    #[cfg(feature = "market")]
                    market: market.clone(),
                }),
                config.api_token.as_deref(),
            )?;
            let auth = config.api_token.is_some();
            if !auth && !addr.ip().is_loopback() {
                tracing::warn!(api_addr = %addr, "the API is reachable beyond this machine without a token (--api-token-file)");
            }
            let (stop, stopped) = oneshot::channel::<()>();
            let server = tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
            });
            tracing::info!(api_addr = %addr, auth, "API started");
            Api {
                addr,
                stop: Some(stop),
                server: Some(server),
            }
        };
        tracing::info!(data_dir = %config.data_dir.display(), "node started");
        Ok(Node {
            store,
            #[cfg(feature = "net")]
            network,
            #[cfg(feature = "market")]
            market,
            #[cfg(feature = "rest")]
            api,
            maintenance,
            tasks,
        })
    }

    /// The address the REST API listens on. Feature `rest`.
    #[cfg(feature = "rest")]
    pub fn api_addr(&self) -> SocketAddr {
        self.api.addr
    }

    /// The API's base URL, e.g. `http://127.0.0.1:8080/api/codex/v1`. Feature `rest`.
    #[cfg(feature = "rest")]
    pub fn api_url(&self) -> String {
        format!("http://{}{}", self.api.addr, api::BASE)
    }

    /// The node's network, unless it runs without one. Feature `net`.
    #[cfg(feature = "net")]
    pub fn network(&self) -> Option<&codex_net::Network> {
        self.network.as_ref()
    }

    /// The addresses peers can dial, each with this node's `/p2p/` suffix (what
    /// another node takes as `--bootstrap-node`).
    ///
    /// # Errors
    /// [`crate::Error::NoNetwork`] for a node without a network. Feature `net`.
    #[cfg(feature = "net")]
    pub async fn addresses(&self) -> Result<Vec<codex_net::Multiaddr>> {
        let net = self.network.as_ref().ok_or(crate::Error::NoNetwork)?;
        let info = net.info().await?;
        let peer = net.peer_id();
        Ok(info
            .listen_addrs
            .into_iter()
            .map(|a| a.with(codex_net::Protocol::P2p(peer)))
            .collect())
    }

    /// The node's marketplace, when it runs with one. Feature `market`.
    #[cfg(feature = "market")]
    pub fn market(&self) -> Option<&Arc<market::Market>> {
        self.market.as_ref()
    }

    /// Buys storage for the stored dataset `cid`, as `POST /storage/request/{cid}` does:
    /// checks the request and starts the purchase in the background (erasure coding,
    /// slot building, the request on chain); returns the purchase id, whose progress
    /// [`market::Market::purchases`] shows. Feature `market`.
    ///
    /// # Errors
    /// [`crate::Error::NoMarketplace`] for a node without a marketplace,
    /// [`crate::Error::InvalidRequest`] for parameters Codex refuses,
    /// [`crate::Error::NotAManifest`], and not found for a dataset the node does not hold.
    #[cfg(feature = "market")]
    pub async fn request_storage(
        &self,
        cid: Cid,
        params: purchasing::RequestParams,
    ) -> Result<String> {
        let market = self.market.as_ref().ok_or(crate::Error::NoMarketplace)?;
        let ctx = purchasing::Ctx {
            store: Arc::clone(&self.store),
            network: self.network.clone(),
            market: Arc::clone(market),
        };
        purchasing::request_storage(ctx, cid, params).await
    }

    /// The node's block store.
    pub fn store(&self) -> &Arc<dyn BlockStore> {
        &self.store
    }

    /// Stores a byte stream as a dataset; see [`data::store_stream`].
    pub async fn upload<S, E>(&self, source: S, options: UploadOptions) -> Result<Cid>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let cid = data::store_stream(Arc::clone(&self.store), source, options).await?;
        self.announce(cid).await;
        Ok(cid)
    }

    /// Provides a stored dataset in the DHT.
    #[cfg(feature = "net")]
    async fn announce(&self, cid: Cid) {
        if let Some(net) = &self.network
            && let Ok(block) = self.store.get_block(&cid).await
            && let Ok(m) = codex_core::Manifest::decode(block.data())
        {
            network::announce(net, cid, &m).await;
        }
    }

    /// Without a network there is nobody to tell.
    #[cfg(not(feature = "net"))]
    async fn announce(&self, _cid: Cid) {}

    /// Downloads a dataset from the network into the store (resuming an earlier attempt),
    /// rebuilding by erasure decoding what no peer serves; see [`network::download`].
    /// Feature `net`.
    #[cfg(feature = "net")]
    pub async fn fetch(&self, cid: Cid) -> Result<codex_core::Manifest> {
        let net = self.network.as_ref().ok_or(crate::Error::NoNetwork)?;
        network::download(net, &self.store, cid).await
    }

    /// Opens a stored dataset for reading; see [`data::open`].
    pub async fn download(&self, cid: Cid) -> Result<Dataset> {
        data::open(Arc::clone(&self.store), cid).await
    }

    /// Erasure-codes a stored dataset with K data and M parity rows; returns the protected
    /// manifest's CID and the manifest. See [`codex_erasure::encode`].
    pub async fn erasure_encode(
        &self,
        manifest: Cid,
        k: usize,
        m: usize,
    ) -> Result<(Cid, codex_core::Manifest)> {
        let (cid, protected) = data::erasure_encode(&*self.store, manifest, k, m).await?;
        self.announce(cid).await;
        Ok((cid, protected))
    }

    /// Makes a stored dataset verifiable in one call: erasure-coded first with `ec` (K, M)
    /// when it is plain, then slot trees, verify root and verifiable manifest; see
    /// [`data::make_verifiable`]. Returns the manifest CID, the manifest and the verify
    /// root CID. Feature `proofs`.
    #[cfg(feature = "proofs")]
    pub async fn make_verifiable(
        &self,
        manifest: Cid,
        ec: Option<(usize, usize)>,
    ) -> Result<(Cid, codex_core::Manifest, Cid)> {
        let out = data::make_verifiable(&*self.store, manifest, ec).await?;
        self.announce(out.0).await;
        Ok(out)
    }

    /// Stops the API (finishing requests in flight), the maintenance task, the
    /// marketplace tasks and the network.
    pub async fn shutdown(mut self) -> Result<()> {
        #[cfg(feature = "rest")]
        {
            if let Some(stop) = self.api.stop.take() {
                let _ = stop.send(());
            }
            if let Some(server) = self.api.server.take() {
                server.await??;
            }
        }
        self.maintenance.abort();
        let _ = (&mut self.maintenance).await;
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        #[cfg(feature = "net")]
        if let Some(net) = self.network.take() {
            net.shutdown().await;
        }
        // Work that still holds the store (a blocking task of an upload or of the expiry
        // sweep finishing) ends before this returns, so that the store can be opened
        // again at once; bounded, in case a reader keeps a dataset open.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.store) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        #[cfg(feature = "rest")]
        if let Some(stop) = self.api.stop.take() {
            let _ = stop.send(());
        }
        self.maintenance.abort();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the network, waits (at most 5 s) for its listeners and announces the stored
/// datasets in the background.
#[cfg(feature = "net")]
async fn start_network(
    config: &NodeConfig,
    net_config: codex_net::NetConfig,
    store: &Arc<dyn BlockStore>,
) -> Result<codex_net::Network> {
    let key_path = config.data_dir.join("key");
    let key =
        tokio::task::spawn_blocking(move || codex_net::load_or_create_key(&key_path)).await??;
    let listens = !net_config.listen_addrs.is_empty();
    let net = codex_net::Network::start(key, net_config, Arc::clone(store)).await?;
    // The listeners come up just after the swarm starts: a started node
    // has its addresses (others are told them at once), or 5 s passed.
    for _ in 0..50 {
        if !listens || !net.info().await?.listen_addrs.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (n, s) = (net.clone(), Arc::clone(store));
    tokio::spawn(async move {
        match network::announce_all(&n, &*s).await {
            Ok(count) => tracing::info!(count, "announced stored datasets"),
            Err(e) => tracing::warn!(error = %e, "cannot announce stored datasets"),
        }
    });
    tracing::info!(peer_id = %net.peer_id(), "network started");
    Ok(net)
}
