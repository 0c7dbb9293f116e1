//! The node's marketplace: its settings (`--eth-provider`, `--marketplace-address`,
//! `--eth-private-key`), the account key, the prover, and the state that purchasing,
//! sales and the validator share ([`Market`], over any [`Marketplace`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use codex_market::alloy::primitives::Address;
use codex_market::alloy::signers::local::PrivateKeySigner;
use codex_market::{Marketplace, MarketplaceClient, MarketplaceConfig};
use codex_proofs::{Prover, Srs};
use tokio::sync::OnceCell;

use crate::error::{Error, Result};

/// The account key the node signs marketplace transactions with. Its `Debug` shows
/// the address only: the key is never logged.
#[derive(Clone)]
pub struct EthKey(PrivateKeySigner);

impl std::fmt::Debug for EthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EthKey({}, secret redacted)", self.0.address())
    }
}

impl EthKey {
    /// The key from `--eth-private-key`: 32 bytes in hex (with or without `0x`), or
    /// the path of a file holding them, which only its owner may read (mode 0600, as
    /// Codex requires).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when the text is neither, the file is readable by others,
    /// or the bytes are not a valid secp256k1 key.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        let hex = t.strip_prefix("0x").unwrap_or(t);
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Self::from_hex(hex);
        }
        let path = Path::new(text);
        if !path.exists() {
            // Not named in the error: a mistyped key would be printed as a path.
            return Err(Error::InvalidKey(
                "neither 32 bytes in hex nor the path of a key file".into(),
            ));
        }
        Self::from_file(path)
    }

    /// The key in the file at `path` (hex, 0600).
    ///
    /// # Errors
    /// As [`EthKey::parse`].
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |why: String| Error::InvalidKey(format!("{}: {why}", path.display()));
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(bad(format!(
                    "mode {mode:o} lets others read the key; chmod 600 it"
                )));
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let t = text.trim();
        Self::from_hex(t.strip_prefix("0x").unwrap_or(t)).map_err(|_| bad("not a hex key".into()))
    }

    fn from_hex(hex: &str) -> Result<Self> {
        let bytes = codex_market::alloy::primitives::hex::decode(hex)
            .map_err(|_| Error::InvalidKey("not hex".into()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::InvalidKey("a key has 32 bytes".into()))?;
        PrivateKeySigner::from_bytes(&bytes.into())
            .map(EthKey)
            .map_err(|_| Error::InvalidKey("not a valid secp256k1 key".into()))
    }

    /// A key from a signer (e.g. an anvil account in tests).
    pub fn from_signer(signer: PrivateKeySigner) -> Self {
        EthKey(signer)
    }

    /// The account's address.
    pub fn address(&self) -> Address {
        self.0.address()
    }

    /// The signer (the key itself: never log it).
    pub fn signer(&self) -> &PrivateKeySigner {
        &self.0
    }
}

/// The marketplace settings of a node.
#[derive(Clone, Debug)]
pub struct MarketConfig {
    /// JSON-RPC URL of the chain (`--eth-provider`): `http(s)://` or `ws(s)://`
    /// (Codex's default is `ws://localhost:8545`).
    pub eth_provider: String,
    /// The marketplace contract (`--marketplace-address`).
    pub marketplace_address: Address,
    /// The account (`--eth-private-key`).
    pub eth_private_key: EthKey,
    /// Where the proving parameters come from (`--circuit-params FILE`: a ceremony's
    /// `.ptau` or imported parameters; `--dev-params`: [`Srs::Development`], whose
    /// proofs anyone can forge). They must be the parameters the marketplace's verifier
    /// was generated from: a host checks this against the marketplace's `zkeyHash`.
    pub srs: Srs,
    /// Samples per proof; must match the verifier deployed with the marketplace.
    pub proof_samples: usize,
    /// How often the chain is polled for events and the proof clock (`--eth-poll-interval`).
    pub poll_interval: std::time::Duration,
    /// Blocks on top of a block before the roles read its events
    /// (`--eth-confirmations`; 0: up to the latest, reorganisations followed by block
    /// hash).
    pub confirmations: u64,
    /// How transactions are sent: the receipt deadline before a replacement with
    /// higher fees (`--eth-receipt-timeout`), the fee cap (`--eth-max-fee-gwei`), the
    /// confirmations a receipt needs.
    pub tx: codex_market::TxConfig,
    /// Where proving parameters and keys are cached (default: `proof-keys` in the data
    /// directory); nodes of one machine may share it.
    pub proof_cache_dir: Option<PathBuf>,
}

impl MarketConfig {
    /// Settings with the proving parameters `srs`, 5 samples, a 1 s poll, events read
    /// up to the latest block and [`codex_market::TxConfig::default`]. There is
    /// no default for `srs`: [`Srs::Development`] makes proofs that anyone can forge, so
    /// a caller chooses it explicitly.
    pub fn new(
        eth_provider: impl Into<String>,
        marketplace_address: Address,
        key: EthKey,
        srs: Srs,
    ) -> Self {
        MarketConfig {
            eth_provider: eth_provider.into(),
            marketplace_address,
            eth_private_key: key,
            srs,
            proof_samples: 5,
            poll_interval: std::time::Duration::from_secs(1),
            confirmations: 0,
            tx: codex_market::TxConfig::default(),
            proof_cache_dir: None,
        }
    }
}

/// Proving for the marketplace: the parameters, the sample count and where keys are
/// cached; the prover is set up on first use.
#[derive(Debug)]
pub struct ProverSetup {
    srs: Srs,
    samples: usize,
    key_dir: PathBuf,
    prover: OnceCell<Arc<Prover>>,
}

impl ProverSetup {
    /// A prover with `samples` samples per proof over `srs`, its keys cached in `key_dir`.
    pub fn new(srs: Srs, samples: usize, key_dir: PathBuf) -> Self {
        ProverSetup {
            srs,
            samples,
            key_dir,
            prover: OnceCell::new(),
        }
    }

    /// The prover, set up on first use on a blocking thread.
    ///
    /// # Errors
    /// [`Error::Proofs`] when the setup fails.
    pub async fn get(&self) -> Result<Arc<Prover>> {
        let prover = self
            .prover
            .get_or_try_init(|| async {
                let (srs, samples, dir) = (self.srs.clone(), self.samples, self.key_dir.clone());
                let prover = tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(&dir)?;
                    let (p, report) = Prover::new(&srs, samples, Some(&dir))?;
                    tracing::info!(
                        ?report,
                        verifying_key = p.verifying_key_digest(),
                        "prover ready"
                    );
                    Ok::<_, Error>(Arc::new(p))
                })
                .await??;
                Ok::<_, Error>(prover)
            })
            .await?;
        Ok(Arc::clone(prover))
    }

    /// Checks that this prover's verifying key is the one the marketplace's verifier
    /// checks proofs against (its `zkeyHash`), setting the prover up if needed. A
    /// marketplace whose `zkeyHash` is empty records no key: the check passes with a
    /// warning.
    ///
    /// # Errors
    /// [`Error::VerifyingKeyMismatch`] with both digests; [`Error::Proofs`] when the
    /// prover cannot be set up.
    pub async fn check_verifying_key(&self, config: &MarketplaceConfig) -> Result<()> {
        let prover = self.get().await?;
        let on_chain = config.proofs.zkey_hash.trim();
        let ours = prover.verifying_key_digest();
        if on_chain.is_empty() {
            tracing::warn!(
                verifying_key = ours,
                "the marketplace records no verifying key digest (zkeyHash): cannot check that this node's proofs will be accepted"
            );
            return Ok(());
        }
        if !on_chain.eq_ignore_ascii_case(ours) {
            return Err(Error::VerifyingKeyMismatch {
                ours: ours.to_string(),
                on_chain: on_chain.to_string(),
            });
        }
        Ok(())
    }
}

pub use crate::node::tasks::TaskSet;

/// What purchasing, sales and the validator share: the marketplace (any
/// [`Marketplace`]; on chain a [`MarketplaceClient`]), the prover, the books the API
/// shows, and the purchases' background tasks.
#[derive(Debug)]
pub struct Market<M = Arc<dyn Marketplace>> {
    pub(crate) client: M,
    pub(crate) poll_interval: Duration,
    pub(crate) confirmations: u64,
    pub(crate) prover: Arc<ProverSetup>,
    pub(crate) purchases: Arc<crate::node::purchasing::Purchases>,
    pub(crate) sales: Arc<crate::node::sales::Sales>,
    pub(crate) validation: Arc<crate::node::validator::Validation>,
    pub(crate) tasks: TaskSet,
    /// The chain calls counted, when the client is [`codex_market::Metered`].
    pub(crate) calls: Option<Arc<codex_market::CallCounts>>,
}

impl Market {
    /// Connects to the marketplace (reads its configuration and token).
    ///
    /// # Errors
    /// [`Error::Market`] when the chain or the contract cannot be reached.
    pub async fn connect(config: MarketConfig, data_dir: &Path) -> Result<Self> {
        let client = MarketplaceClient::connect_with(
            &config.eth_provider,
            config.eth_private_key.signer(),
            config.marketplace_address,
            config.tx.clone(),
        )
        .await?;
        tracing::info!(
            account = %client.account(),
            marketplace = %config.marketplace_address,
            "connected to the marketplace"
        );
        if config.srs.is_forgeable() {
            tracing::warn!(
                "proving with the development setup (--dev-params): every proof this node makes is forgeable by anyone; use --circuit-params FILE on a real network"
            );
        }
        let key_dir = config
            .proof_cache_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("proof-keys"));
        // Every call counted, for the metrics.
        let client = codex_market::Metered::new(client);
        let calls = Arc::clone(client.counts());
        Ok(Market::new(
            Arc::new(client) as Arc<dyn Marketplace>,
            ProverSetup::new(config.srs, config.proof_samples, key_dir),
            crate::node::sales::Sales::open(data_dir.join("sales").join("state.json")),
            config.poll_interval,
        )
        .confirmations(config.confirmations)
        .call_counts(calls))
    }
}

impl<M: Marketplace + Clone + 'static> Market<M> {
    /// The roles' shared state over `marketplace`: proofs by `prover`, the host's book
    /// `sales` (e.g. [`crate::node::sales::Sales::open`] in the data directory), the
    /// chain polled every `poll_interval`.
    pub fn new(
        marketplace: M,
        prover: ProverSetup,
        sales: crate::node::sales::Sales,
        poll_interval: Duration,
    ) -> Self {
        Market {
            client: marketplace,
            poll_interval,
            confirmations: 0,
            prover: Arc::new(prover),
            purchases: Default::default(),
            sales: Arc::new(sales),
            validation: Default::default(),
            tasks: TaskSet::default(),
            calls: None,
        }
    }

    /// `counts` are those of the marketplace's calls ([`codex_market::Metered::counts`]
    /// when it is metered): the node reports them as chain calls and errors.
    #[must_use]
    pub fn call_counts(mut self, counts: Arc<codex_market::CallCounts>) -> Self {
        self.calls = Some(counts);
        self
    }

    /// The chain calls counted, where [`Market::call_counts`] gave them.
    pub fn calls(&self) -> Option<&Arc<codex_market::CallCounts>> {
        self.calls.as_ref()
    }

    /// The roles read events only of blocks with `n` blocks on top (default 0).
    #[must_use]
    pub fn confirmations(mut self, n: u64) -> Self {
        self.confirmations = n;
        self
    }

    /// The marketplace (on chain: the client signing for the node's account).
    pub fn client(&self) -> &M {
        &self.client
    }

    /// How often the roles poll the chain.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// The node's purchases.
    pub fn purchases(&self) -> &crate::node::purchasing::Purchases {
        &self.purchases
    }

    /// The host's availabilities and sales.
    pub fn sales(&self) -> &crate::node::sales::Sales {
        &self.sales
    }

    /// What the validator did (empty unless the node validates).
    pub fn validation(&self) -> &crate::node::validator::Validation {
        &self.validation
    }

    /// The prover setup (shared with the node's [`crate::node::sales::NodeHost`]).
    pub fn prover_setup(&self) -> &Arc<ProverSetup> {
        &self.prover
    }

    /// The prover, set up on first use on a blocking thread (keys cached in the data
    /// directory's `proof-keys`).
    ///
    /// # Errors
    /// [`Error::Proofs`] when the setup fails.
    pub async fn prover(&self) -> Result<Arc<Prover>> {
        self.prover.get().await
    }

    /// Checks that this node's verifying key is the one the marketplace's verifier
    /// checks proofs against (its `zkeyHash`); see [`ProverSetup::check_verifying_key`].
    ///
    /// # Errors
    /// [`Error::VerifyingKeyMismatch`] with both digests; [`Error::Proofs`] when the
    /// prover cannot be set up.
    pub async fn check_verifying_key(&self) -> Result<()> {
        self.prover.check_verifying_key(self.client.config()).await
    }

    /// Stops the purchases' background work (their watchers) and waits for it.
    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    #[test]
    fn keys_from_hex_and_from_a_private_file_only() -> Result<()> {
        let k = EthKey::parse(KEY)?;
        assert_eq!(
            k.address().to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        assert!(!format!("{k:?}").contains(KEY), "the key is never printed");
        assert_eq!(EthKey::parse(&format!("0x{KEY}"))?.address(), k.address());

        let dir = tempfile::tempdir()?;
        let path = dir.path().join("key");
        std::fs::write(&path, format!("0x{KEY}\n"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
            assert!(matches!(
                EthKey::parse(path.to_str().unwrap_or_default()),
                Err(Error::InvalidKey(_))
            ));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        assert_eq!(EthKey::from_file(&path)?.address(), k.address());
        assert!(EthKey::parse("nonsense").is_err());
        // A mistyped key (a digit short) is not echoed back as a missing file's path.
        let short = &KEY[1..];
        let e = EthKey::parse(short).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| !e.contains(short)), "the key is shown");
        Ok(())
    }
}
