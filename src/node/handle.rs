//! [`Handle`]: every typed call a running node offers. The REST API translates to these.

use std::sync::Arc;

use bytes::Bytes;
use codex_core::prelude::*;
use codex_core::{Cid, Manifest, Space, codec};
use codex_store::dataset::Added;
use futures::{Stream, StreamExt, TryStreamExt};

use crate::error::Error;
use crate::error::Result;
use crate::node::data::{self, Dataset, UploadOptions};

/// A cloneable handle on a running node's services: data (add, read, fetch from the
/// network, delete, list, erasure coding, verifiable datasets), purchasing, sales and
/// validation. [`crate::Node`] dereferences to it; clone it to use the node from other
/// tasks. Calls after [`crate::Node::shutdown`] fail or find the network gone.
#[derive(Clone, Debug)]
pub struct Handle {
    pub(crate) store: Arc<dyn BlockStore>,
    #[cfg(feature = "net")]
    pub(crate) network: Option<codex_net::Network>,
    #[cfg_attr(not(feature = "rest"), allow(dead_code))]
    pub(crate) data_dir: String,
    #[cfg(feature = "market")]
    pub(crate) market: Option<Arc<crate::node::market::Market>>,
    /// Work a call leaves running (announcing, a download the API started), stopped
    /// with the node.
    pub(crate) background: Arc<crate::node::tasks::TaskSet>,
    /// The kept keys of encrypted uploads, with `keep_keys`.
    pub(crate) keys: Option<Arc<crate::node::keys::KeyRing>>,
    /// What the node has done since it started.
    pub(crate) counters: Arc<Counters>,
    /// What changes the log level (`POST /debug/chronicles/loglevel`).
    #[cfg(feature = "rest")]
    pub(crate) log_control: Option<crate::logging::SharedLogControl>,
}

/// What a node has done since it started ([`Handle::counters`]; its metrics).
#[derive(Debug, Default)]
pub struct Counters {
    /// Network downloads started ([`Handle::fetch`], [`Handle::fetch_stream`]).
    pub downloads: std::sync::atomic::AtomicU64,
    /// Network downloads that failed ([`Handle::fetch`]), or could not start.
    pub downloads_failed: std::sync::atomic::AtomicU64,
}

impl Counters {
    #[cfg(feature = "net")]
    fn count(c: &std::sync::atomic::AtomicU64) {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Handle {
    /// The node's block store.
    pub fn store(&self) -> &Arc<dyn BlockStore> {
        &self.store
    }

    /// What the node has done since it started.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Stores a byte stream as a dataset ([`codex_store::dataset::add_stream`]) and
    /// announces it in the DHT. Returns the manifest's CID and the manifest.
    ///
    /// # Errors
    /// [`Error::EmptyUpload`], [`Error::Source`], [`codex_core::Error::QuotaExceeded`];
    /// nothing of the dataset stays then.
    pub async fn add<S, E>(&self, source: S, options: UploadOptions) -> Result<Added>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let added = codex_store::dataset::add_stream(&*self.store, source, options)
            .await
            .map_err(data::from_dataset_error)?;
        self.announce(added.cid, &added.manifest);
        Ok(added)
    }

    /// Encrypts a byte stream with [`codex_crypto`] and stores the ciphertext as a
    /// dataset, then announces it. The file name and MIME type of `options` go into the
    /// encrypted metadata, not the manifest; the manifest records only the public
    /// parameters. Returns the dataset and its key: unless the node keeps keys
    /// ([`crate::NodeConfig::keep_keys`]) this is the only time the key is seen, so the
    /// caller must keep it. Unlike [`Handle::add`], an empty source gives a dataset.
    ///
    /// # Errors
    /// [`Error::Crypto`] for a block size under [`codex_crypto::MIN_BLOCK_SIZE`], a name
    /// too long, or passphrase parameters out of bounds; then as [`Handle::add`].
    pub async fn add_encrypted<S, E>(
        &self,
        source: S,
        mut options: UploadOptions,
        key: codex_crypto::NewKey,
    ) -> Result<(Added, codex_crypto::Key)>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // A passphrase means Argon2: tens of milliseconds, on a blocking thread.
        let (key, params) =
            tokio::task::spawn_blocking(move || codex_crypto::new_dataset(&key)).await??;
        let cipher = Arc::new(codex_crypto::Cipher::new(&key, &params)?);
        let metadata = codex_crypto::Metadata {
            filename: options.filename.take(),
            mimetype: options.mimetype.take(),
        };
        let block_size = *options
            .block_size
            .get_or_insert(codex_core::DEFAULT_BLOCK_SIZE);
        options.encryption = Some(params.clone());
        let ciphertext = codex_crypto::encrypt(source, cipher, &metadata, block_size)?;
        let added = codex_store::dataset::add_stream(&*self.store, ciphertext, options)
            .await
            .map_err(data::from_dataset_error)?;
        if let Some(ring) = &self.keys {
            ring.keep(added.cid, &params, &key).await?;
        }
        self.announce(added.cid, &added.manifest);
        Ok((added, key))
    }

    /// Decrypts an encrypted dataset opened by [`Handle::read`] or
    /// [`Handle::fetch_stream`]: checks the secret against the manifest (a wrong key is
    /// refused before any byte), opens the first block, and decrypts the rest as it
    /// streams; `size` and `metadata` become the plaintext's.
    ///
    /// # Errors
    /// [`Error::Crypto`]: [`codex_crypto::Error::NotEncrypted`],
    /// [`codex_crypto::Error::WrongKey`], [`codex_crypto::Error::NeedsKey`], the first
    /// block's errors; the stream ends with a later block's error
    /// ([`codex_crypto::Error::Tampered`] and the like, naming the block) or with the
    /// read's own.
    pub async fn decrypt(&self, dataset: Dataset, secret: codex_crypto::Secret) -> Result<Dataset> {
        let manifest = dataset
            .manifest
            .ok_or(Error::Crypto(codex_crypto::Error::NotEncrypted))?;
        let params = manifest
            .encryption
            .clone()
            .ok_or(Error::Crypto(codex_crypto::Error::NotEncrypted))?;
        let cipher = tokio::task::spawn_blocking(move || {
            let key = secret.key_for(&params)?;
            codex_crypto::Cipher::new(&key, &params)
        })
        .await??;
        let opened = codex_crypto::decrypt(dataset.stream, Arc::new(cipher), &manifest).await?;
        Ok(Dataset {
            manifest: Some(manifest),
            size: opened.size,
            stream: opened.stream.map_err(Error::from).boxed(),
            metadata: Some(opened.metadata),
        })
    }

    /// The key this node kept for an encrypted dataset (found by the dataset's nonce, so
    /// for its erasure-coded and verifiable versions too); `None` when it keeps none.
    ///
    /// # Errors
    /// Reading the key file fails.
    pub async fn kept_key(&self, manifest: &Manifest) -> Result<Option<codex_crypto::Key>> {
        match (&self.keys, &manifest.encryption) {
            (Some(ring), Some(params)) => ring.find(params).await,
            _ => Ok(None),
        }
    }

    /// Reads a stored dataset (or a single block) from this node's store; a protected
    /// dataset's missing blocks are rebuilt from their columns on the fly.
    ///
    /// # Errors
    /// [`codex_core::Error::NotFound`] when it is not stored here (see
    /// [`Handle::fetch_stream`] to fetch it from the network).
    pub async fn read(&self, cid: Cid) -> Result<Dataset> {
        data::open(Arc::clone(&self.store), cid).await
    }

    /// Downloads a dataset from the network into the store (resuming an earlier
    /// attempt), rebuilding by erasure decoding what no peer serves. Feature `net`.
    ///
    /// # Errors
    /// [`Error::NoNetwork`], and when no provider serves it.
    #[cfg(feature = "net")]
    pub async fn fetch(&self, cid: Cid) -> Result<Manifest> {
        Counters::count(&self.counters.downloads);
        let out = match self.net() {
            Ok(net) => crate::node::network::download(net, &self.store, cid).await,
            Err(e) => Err(e),
        };
        if out.is_err() {
            Counters::count(&self.counters.downloads_failed);
        }
        out
    }

    /// Streams a dataset while it downloads from the network into the store (read
    /// locally when it is stored here already). Feature `net`.
    ///
    /// # Errors
    /// As [`Handle::fetch`].
    #[cfg(feature = "net")]
    pub async fn fetch_stream(&self, cid: Cid) -> Result<Dataset> {
        Counters::count(&self.counters.downloads);
        let out = match self.net() {
            Ok(net) => crate::node::network::stream(net, Arc::clone(&self.store), cid).await,
            Err(e) => Err(e),
        };
        if out.is_err() {
            Counters::count(&self.counters.downloads_failed);
        }
        out
    }

    /// Deletes a dataset (a manifest CID: the manifest, its tree and every block no other
    /// dataset uses, and withdraws it from the DHT) or a single block.
    pub async fn delete(&self, cid: Cid) -> Result<()> {
        if cid.codec() == codec::MANIFEST && self.store.has_block(&cid).await? {
            #[cfg(feature = "net")]
            if let Some(net) = &self.network
                && let Ok(m) = Manifest::decode(self.store.get_block(&cid).await?.data())
            {
                crate::node::network::withdraw(net, cid, &m).await;
            }
            self.store.delete_dataset(&cid).await?;
        } else {
            self.store.delete_block(&cid).await?;
        }
        Ok(())
    }

    /// The datasets stored here.
    pub async fn list(&self) -> Result<Vec<(Cid, Manifest)>> {
        Ok(self.store.manifests().await?)
    }

    /// The store's counters and quota.
    pub async fn space(&self) -> Result<Space> {
        Ok(self.store.space().await?)
    }

    /// Erasure-codes a stored dataset with K data and M parity rows; returns the
    /// protected manifest's CID and the manifest. See [`codex_erasure::encode`].
    pub async fn erasure_encode(
        &self,
        manifest: Cid,
        k: usize,
        m: usize,
    ) -> Result<(Cid, Manifest)> {
        let (cid, protected) = data::erasure_encode(&*self.store, manifest, k, m).await?;
        self.announce(cid, &protected);
        Ok((cid, protected))
    }

    /// Makes a stored dataset verifiable: erasure-coded first with `ec` (K, M; 2, 1 when
    /// `None`) when it is plain, then slot trees, verify root and verifiable manifest.
    /// Returns the manifest CID, the manifest and the verify root CID. Feature `proofs`.
    #[cfg(feature = "proofs")]
    pub async fn make_verifiable(
        &self,
        manifest: Cid,
        ec: Option<(usize, usize)>,
    ) -> Result<(Cid, Manifest, Cid)> {
        let out = data::make_verifiable(&*self.store, manifest, ec).await?;
        self.announce(out.0, &out.1);
        Ok(out)
    }

    /// The node's network, unless it runs without one. Feature `net`.
    #[cfg(feature = "net")]
    pub fn network(&self) -> Option<&codex_net::Network> {
        self.network.as_ref()
    }

    #[cfg(feature = "net")]
    fn net(&self) -> Result<&codex_net::Network> {
        self.network.as_ref().ok_or(Error::NoNetwork)
    }

    /// Provides the dataset `cid`, just stored with `manifest`, in the DHT (in the
    /// background).
    #[cfg(feature = "net")]
    fn announce(&self, cid: Cid, manifest: &Manifest) {
        if let Some(net) = self.network.clone() {
            let m = manifest.clone();
            self.background.spawn(async move {
                crate::node::network::announce(&net, cid, &m).await;
            });
        }
    }

    /// Without a network there is nobody to tell.
    #[cfg(not(feature = "net"))]
    fn announce(&self, _cid: Cid, _manifest: &Manifest) {}

    // ------------------------------------------------------------ marketplace

    /// The node's marketplace, when it runs with one. Feature `market`.
    #[cfg(feature = "market")]
    pub fn market(&self) -> Option<&Arc<crate::node::market::Market>> {
        self.market.as_ref()
    }

    #[cfg(feature = "market")]
    fn require_market(&self) -> Result<&Arc<crate::node::market::Market>> {
        self.market.as_ref().ok_or(Error::NoMarketplace)
    }

    /// Buys storage for the stored dataset `cid`: checks the request and starts the
    /// purchase in the background (erasure coding, slot building, the request on
    /// chain); returns the purchase id, whose progress [`Handle::purchase`] shows.
    /// Feature `market`.
    ///
    /// # Errors
    /// [`Error::NoMarketplace`], [`Error::InvalidRequest`] for parameters Codex refuses,
    /// [`Error::NotAManifest`], not found for a dataset the node does not hold.
    #[cfg(feature = "market")]
    pub async fn request_storage(
        &self,
        cid: Cid,
        params: crate::node::purchasing::RequestParams,
    ) -> Result<String> {
        let ctx = crate::node::purchasing::Ctx {
            store: Arc::clone(&self.store),
            network: self.network.clone(),
            market: Arc::clone(self.require_market()?),
        };
        crate::node::purchasing::request_storage(ctx, cid, params).await
    }

    /// The ids of this node's purchases. Feature `market`.
    ///
    /// # Errors
    /// [`Error::NoMarketplace`].
    #[cfg(feature = "market")]
    pub fn purchases(&self) -> Result<Vec<String>> {
        Ok(self.require_market()?.purchases().ids())
    }

    /// A purchase by id (`None`: unknown). Feature `market`.
    ///
    /// # Errors
    /// [`Error::NoMarketplace`].
    #[cfg(feature = "market")]
    pub fn purchase(&self, id: &str) -> Result<Option<crate::node::purchasing::Purchase>> {
        Ok(self.require_market()?.purchases().get(id))
    }

    /// Offers storage for sale: adds an availability, after checking that the store's
    /// quota has `total_size` bytes free. Returns once it is saved. Feature `market`.
    ///
    /// # Errors
    /// [`Error::NoMarketplace`], [`Error::InvalidRequest`] when the quota is short.
    #[cfg(feature = "market")]
    pub async fn offer(&self, availability: crate::node::sales::Availability) -> Result<()> {
        let market = self.require_market()?;
        let free = self.store.space().await?.available();
        if availability.total_size > free {
            return Err(Error::InvalidRequest(format!(
                "Not enough storage quota: totalSize {} > {free} bytes free",
                availability.total_size
            )));
        }
        market.sales().add_availability(availability).await;
        Ok(())
    }

    /// Changes availability `id`; `Ok(None)` when there is none. Feature `market`.
    ///
    /// # Errors
    /// [`Error::NoMarketplace`], [`Error::InvalidRequest`] for a refused change (nothing
    /// changes then).
    #[cfg(feature = "market")]
    pub async fn update_availability(
        &self,
        id: &str,
        update: &crate::node::sales::AvailabilityUpdate,
    ) -> Result<Option<crate::node::sales::Availability>> {
        self.require_market()?
            .sales()
            .update_availability(id, update)
            .await
    }

    /// Every availability. Feature `market`.
    ///
    /// # Errors
    /// [`Error::NoMarketplace`].
    #[cfg(feature = "market")]
    pub fn availabilities(&self) -> Result<Vec<crate::node::sales::Availability>> {
        Ok(self.require_market()?.sales().availabilities())
    }

    /// The slots this host sells or sold. Feature `market`.
    ///
    /// # Errors
    /// [`Error::NoMarketplace`].
    #[cfg(feature = "market")]
    pub fn slots(&self) -> Result<Vec<crate::node::sales::Sale>> {
        Ok(self.require_market()?.sales().sales())
    }

    /// What the validator watched and marked (empty unless the node validates).
    /// Feature `market`.
    ///
    /// # Errors
    /// [`Error::NoMarketplace`].
    #[cfg(feature = "market")]
    pub fn validation(&self) -> Result<&crate::node::validator::Validation> {
        Ok(self.require_market()?.validation())
    }
}
