//! The node: the layers composed behind Codex's REST API.
//!
//! A node stores and serves datasets, exchanges blocks with peers, erasure-codes and
//! makes datasets verifiable, and with a marketplace buys storage (purchasing), sells it
//! (sales, with lazy repair of freed slots) and validates other hosts' proofs.

pub mod api;
pub mod data;
pub mod market;
pub mod network;
pub mod purchasing;
pub mod sales;
pub mod security;
pub mod validator;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codex_core::{BlockStore, Cid};
use codex_store::{SledStore, StoreConfig};
use futures::Stream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::Result;
pub use crate::node::data::{Dataset, UploadOptions};

/// A node's settings; the defaults are Codex's. Its `Debug` never shows the API token.
#[derive(Clone)]
pub struct NodeConfig {
    /// Where the store lives (`--data-dir`).
    pub data_dir: PathBuf,
    /// API address (`--api-bindaddr`, default 127.0.0.1: loopback only).
    pub api_bindaddr: IpAddr,
    /// API port (`--api-port`, default 8080; 0 picks a free port).
    pub api_port: u16,
    /// The API's bearer token (`--api-token-file`, or `CODEX_API_TOKEN`): when set,
    /// every route answers 401 unless the request carries `Authorization: Bearer
    /// TOKEN`. Visible ASCII, no spaces. Never logged.
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
    pub network: Option<codex_net::NetConfig>,
    /// The marketplace (`--eth-provider`, `--marketplace-address`, `--eth-private-key`);
    /// `None` runs a node that neither buys nor sells storage.
    pub marketplace: Option<market::MarketConfig>,
    /// Validate (`--validator`): mark missing proofs of filled slots, with the
    /// marketplace account. Needs `marketplace`.
    pub validator: Option<validator::ValidatorConfig>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("codex-data"),
            api_bindaddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            api_port: 8080,
            api_token: None,
            storage_quota: 20 << 30,
            block_ttl: Duration::from_secs(30 * 24 * 3600),
            block_maintenance_interval: Duration::from_secs(600),
            block_maintenance_batch: 1000,
            network: Some(codex_net::NetConfig::default()),
            marketplace: None,
            validator: None,
        }
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("data_dir", &self.data_dir)
            .field("api_bindaddr", &self.api_bindaddr)
            .field("api_port", &self.api_port)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("storage_quota", &self.storage_quota)
            .field("block_ttl", &self.block_ttl)
            .field(
                "block_maintenance_interval",
                &self.block_maintenance_interval,
            )
            .field("block_maintenance_batch", &self.block_maintenance_batch)
            .field("network", &self.network)
            .field("marketplace", &self.marketplace)
            .field("validator", &self.validator)
            .finish()
    }
}

/// A running node. Dropping it stops the API; call [`Node::shutdown`] to wait for that.
#[derive(Debug)]
pub struct Node {
    store: Arc<dyn BlockStore>,
    network: Option<codex_net::Network>,
    market: Option<Arc<market::Market>>,
    api_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    maintenance: JoinHandle<()>,
    sales: Option<JoinHandle<()>>,
    validator: Option<JoinHandle<()>>,
}

impl Node {
    /// Opens the store in `config.data_dir` and starts the API and the maintenance task.
    ///
    /// # Errors
    /// When the API token is unusable (see [`security::check_token`]), the store cannot
    /// be opened or the API address cannot be bound.
    pub async fn start(config: NodeConfig) -> Result<Node> {
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

        let network = match config.network.clone() {
            Some(net_config) => {
                let key_path = config.data_dir.join("key");
                let key =
                    tokio::task::spawn_blocking(move || codex_net::load_or_create_key(&key_path))
                        .await??;
                let listens = !net_config.listen_addrs.is_empty();
                let net = codex_net::Network::start(key, net_config, Arc::clone(&store)).await?;
                // The listeners come up just after the swarm starts: a started node
                // has its addresses (others are told them at once), or 5 s passed.
                for _ in 0..50 {
                    if !listens || !net.info().await?.listen_addrs.is_empty() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                let (n, s) = (net.clone(), Arc::clone(&store));
                tokio::spawn(async move {
                    match network::announce_all(&n, &*s).await {
                        Ok(count) => tracing::info!(count, "announced stored datasets"),
                        Err(e) => tracing::warn!(error = %e, "cannot announce stored datasets"),
                    }
                });
                tracing::info!(peer_id = %net.peer_id(), "network started");
                Some(net)
            }
            None => None,
        };

        let market = match config.marketplace.clone() {
            Some(mc) => Some(Arc::new(
                market::Market::connect(mc, &config.data_dir).await?,
            )),
            None => None,
        };

        let sales = match (&market, &network) {
            (Some(m), Some(n)) => Some(tokio::spawn(sales::run(sales::Ctx {
                store: Arc::clone(&store),
                network: n.clone(),
                market: Arc::clone(m),
            }))),
            _ => None,
        };

        if let Some(m) = &market {
            tokio::spawn(purchasing::resume(purchasing::Ctx {
                store: Arc::clone(&store),
                network: network.clone(),
                market: Arc::clone(m),
            }));
        }
        let validator = match (&market, config.validator) {
            (Some(m), Some(v)) => Some(tokio::spawn(validator::run(Arc::clone(m), v))),
            (None, Some(_)) => return Err(crate::Error::NoMarketplace),
            _ => None,
        };

        let listener =
            tokio::net::TcpListener::bind((config.api_bindaddr, config.api_port)).await?;
        let api_addr = listener.local_addr()?;
        let router = security::protect(
            api::router(api::ApiState {
                store: Arc::clone(&store),
                network: network.clone(),
                data_dir: config.data_dir.display().to_string(),
                market: market.clone(),
            }),
            config.api_token.as_deref(),
        )?;
        let auth = config.api_token.is_some();
        if !auth && !api_addr.ip().is_loopback() {
            tracing::warn!(%api_addr, "the API is reachable beyond this machine without a token (--api-token-file)");
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%api_addr, auth, data_dir = %config.data_dir.display(), "node started");
        Ok(Node {
            store,
            network,
            market,
            api_addr,
            stop: Some(stop),
            server: Some(server),
            maintenance,
            sales,
            validator,
        })
    }

    /// The address the REST API listens on.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The API's base URL, e.g. `http://127.0.0.1:8080/api/codex/v1`.
    pub fn api_url(&self) -> String {
        format!("http://{}{}", self.api_addr, api::BASE)
    }

    /// The node's network, unless it runs without one.
    pub fn network(&self) -> Option<&codex_net::Network> {
        self.network.as_ref()
    }

    /// The addresses peers can dial, each with this node's `/p2p/` suffix (what
    /// another node takes as `--bootstrap-node`).
    ///
    /// # Errors
    /// [`crate::Error::NoNetwork`] for a node without a network.
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

    /// The node's marketplace, when it runs with one.
    pub fn market(&self) -> Option<&Arc<market::Market>> {
        self.market.as_ref()
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

    async fn announce(&self, cid: Cid) {
        if let Some(net) = &self.network
            && let Ok(block) = self.store.get_block(&cid).await
            && let Ok(m) = codex_core::Manifest::decode(block.data())
        {
            network::announce(net, cid, &m).await;
        }
    }

    /// Downloads a dataset from the network into the store (resuming an earlier attempt),
    /// rebuilding by erasure decoding what no peer serves; see [`network::download`].
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
    /// root CID.
    pub async fn make_verifiable(
        &self,
        manifest: Cid,
        ec: Option<(usize, usize)>,
    ) -> Result<(Cid, codex_core::Manifest, Cid)> {
        let out = data::make_verifiable(&*self.store, manifest, ec).await?;
        self.announce(out.0).await;
        Ok(out)
    }

    /// Stops the API (finishing requests in flight) and the maintenance task.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await??;
        }
        self.maintenance.abort();
        let _ = (&mut self.maintenance).await;
        for task in [self.sales.take(), self.validator.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
            let _ = task.await;
        }
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
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.maintenance.abort();
        for task in [&self.sales, &self.validator].into_iter().flatten() {
            task.abort();
        }
    }
}
