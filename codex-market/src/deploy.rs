//! Deployment: the token, the verifier and the marketplace with a configuration.

use alloy::contract::RawCallBuilder;
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::layers::{RateLimitRetryPolicy, RetryBackoffLayer, RetryPolicy};

use crate::bindings::{
    EchoProofCheck, Halo2Verifier, Marketplace, RefusingToken, TestToken, TestVerifier,
};
use crate::error::{Error, Result, Target};
use crate::types::MarketplaceConfig;

/// Which storage-proof verifier the marketplace checks proofs with.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum VerifierSource {
    /// Deploy the verifier generated from the halo2 verifying key (its creation
    /// bytecode, e.g. from codex-proofs) and the `Halo2Verifier` adapter in front of it.
    Halo2Bytecode(Vec<u8>),
    /// A generated halo2 verifier already on chain: deploy the adapter in front of it.
    Halo2At(Address),
    /// An `IStorageProofVerifier` already on chain (used as is).
    Existing(Address),
    /// `TestVerifier`: accepts any non-empty proof whose first byte is not 0.
    /// For tests of rules unrelated to proofs only.
    Test,
    /// For tests of the adapter and of the public inputs: the adapter in front of
    /// `EchoProofCheck`, which accepts exactly the proof that equals the public
    /// inputs as 32-byte big-endian words (see [`crate::echo_proof`]).
    Echo,
}

/// Which token the marketplace takes payments and collateral in.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum TokenSource {
    /// Deploy `TestToken` (OpenZeppelin ERC-20, anyone may mint).
    #[default]
    TestToken,
    /// Deploy `RefusingToken`, whose transfers can be made to return false (tests).
    Refusing,
    /// An ERC-20 already on chain.
    Existing(Address),
}

/// What was deployed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// The marketplace.
    pub marketplace: Address,
    /// The ERC-20 token.
    pub token: Address,
    /// The `IStorageProofVerifier` the marketplace calls (the adapter for halo2).
    pub verifier: Address,
    /// The generated halo2 verifier behind the adapter, when there is one.
    pub halo2_verifier: Option<Address>,
    /// The configuration the marketplace was deployed with.
    pub config: MarketplaceConfig,
}

/// A provider that signs with `signer`, over HTTP(S); rate-limited requests are
/// retried with back-off, and every request has a deadline ([`RPC_TIMEOUT`]).
///
/// Sent through it directly (as [`deploy()`] does), a transaction gets its gas and fees
/// estimated and the account's pending nonce from the node; a [`crate::MarketplaceClient`]
/// over it sets all three itself, through its [`crate::TxManager`].
///
/// # Errors
/// [`Error::InvalidInput`] for a malformed URL, or a WebSocket one (`ws://`, `wss://`:
/// connect with [`connect_signing_provider`]).
pub fn signing_provider(rpc_url: &str, signer: &PrivateKeySigner) -> Result<DynProvider> {
    http_signing_provider(parse_rpc_url(rpc_url)?, signer)
}

/// [`signing_provider`] of a parsed URL.
fn http_signing_provider(
    url: alloy::transports::http::reqwest::Url,
    signer: &PrivateKeySigner,
) -> Result<DynProvider> {
    match url.scheme() {
        "http" | "https" => {}
        "ws" | "wss" => {
            return Err(Error::InvalidInput {
                what: "rpc url",
                message: format!("{url}: a WebSocket URL needs connect_signing_provider"),
            });
        }
        other => {
            return Err(Error::InvalidInput {
                what: "rpc url",
                message: format!("{url}: scheme {other} is neither http(s) nor ws(s)"),
            });
        }
    }
    Ok(signing_provider_at(url, signer))
}

/// `rpc_url` as a URL.
fn parse_rpc_url(rpc_url: &str) -> Result<alloy::transports::http::reqwest::Url> {
    rpc_url.parse().map_err(|e| Error::InvalidInput {
        what: "rpc url",
        message: format!("{rpc_url}: {e}"),
    })
}

/// As [`signing_provider`], over HTTP(S) or a WebSocket (`ws://`, `wss://`: Codex's
/// default scheme), whose connection this opens (and alloy reopens when it drops).
///
/// # Errors
/// [`Error::InvalidInput`] for a malformed URL; [`Error::Rpc`] when a WebSocket
/// cannot be opened.
pub async fn connect_signing_provider(
    rpc_url: &str,
    signer: &PrivateKeySigner,
) -> Result<DynProvider> {
    let url = parse_rpc_url(rpc_url)?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return http_signing_provider(url, signer);
    }
    let connect = alloy::rpc::client::ClientBuilder::default()
        .layer(retry_layer())
        .layer(Deadline(RPC_TIMEOUT))
        .ws(alloy::providers::WsConnect::new(url.as_str()));
    let client = tokio::time::timeout(RPC_CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| {
            Error::rpc(
                format!("connecting to {rpc_url}"),
                format!("no WebSocket within {RPC_CONNECT_TIMEOUT:?}"),
            )
        })?
        .map_err(|e| Error::rpc(format!("connecting to {rpc_url}"), e))?;
    Ok(with_signer(signer, client))
}

/// Every request through the service it wraps answered within the duration, or failed
/// (a WebSocket has no deadline of its own: a node that stops answering would hang
/// its callers).
#[derive(Clone, Copy, Debug)]
struct Deadline(std::time::Duration);

impl<S> tower::Layer<S> for Deadline {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            after: self.0,
        }
    }
}

/// See [`Deadline`].
#[derive(Clone, Debug)]
struct DeadlineService<S> {
    inner: S,
    after: std::time::Duration,
}

impl<S> tower::Service<alloy::rpc::json_rpc::RequestPacket> for DeadlineService<S>
where
    S: tower::Service<
            alloy::rpc::json_rpc::RequestPacket,
            Response = alloy::rpc::json_rpc::ResponsePacket,
            Error = alloy::transports::TransportError,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = alloy::rpc::json_rpc::ResponsePacket;
    type Error = alloy::transports::TransportError;
    type Future = alloy::transports::TransportFut<'static>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: alloy::rpc::json_rpc::RequestPacket) -> Self::Future {
        let (call, after) = (self.inner.call(request), self.after);
        Box::pin(async move {
            tokio::time::timeout(after, call).await.map_err(|_| {
                alloy::transports::TransportErrorKind::custom_str(&format!(
                    "no answer within {after:?}"
                ))
            })?
        })
    }
}

pub(crate) fn signing_provider_at(
    url: alloy::transports::http::reqwest::Url,
    signer: &PrivateKeySigner,
) -> DynProvider {
    signing_provider_timed(url, signer, RPC_TIMEOUT)
}

fn signing_provider_timed(
    url: alloy::transports::http::reqwest::Url,
    signer: &PrivateKeySigner,
    timeout: std::time::Duration,
) -> DynProvider {
    // A chain node that accepts connections and never answers must not hang the
    // caller: every request gets a deadline (then it is an `Error::Rpc`, retried by
    // the node's loops like a refused connection).
    let http = alloy::transports::http::reqwest::Client::builder()
        .connect_timeout(RPC_CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .build()
        .unwrap_or_default();
    let client = alloy::rpc::client::ClientBuilder::default()
        .layer(retry_layer())
        .http_with_client(http, url);
    with_signer(signer, client)
}

/// A provider over `client` whose fillers estimate gas, count nonces locally, read
/// the chain id once and sign with `signer`.
fn with_signer(signer: &PrivateKeySigner, client: alloy::rpc::client::RpcClient) -> DynProvider {
    ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer.clone()))
        .connect_client(client)
        .erased()
}

/// Rate limits (HTTP 429, -32005 and the like) are retried with back-off; a refused
/// log range is not (the client halves it instead).
fn retry_layer() -> RetryBackoffLayer<RetryUnlessRangeRefused> {
    RetryBackoffLayer::new_with_policy(
        RATE_LIMIT_RETRIES,
        RATE_LIMIT_BACKOFF_MS,
        u64::MAX,
        RetryUnlessRangeRefused,
    )
}

/// Retries after a rate limit, at most this many times per request.
pub const RATE_LIMIT_RETRIES: u32 = 8;
/// The first back-off after a rate limit, in milliseconds (unless the node hints one).
const RATE_LIMIT_BACKOFF_MS: u64 = 250;

/// alloy's rate-limit policy, except for an `eth_getLogs` refused for its range.
#[derive(Clone, Copy, Debug)]
struct RetryUnlessRangeRefused;

impl RetryPolicy for RetryUnlessRangeRefused {
    fn should_retry(&self, error: &alloy::transports::TransportError) -> bool {
        !crate::client::is_range_refusal(&error.to_string())
            && RateLimitRetryPolicy::default().should_retry(error)
    }

    fn backoff_hint(
        &self,
        error: &alloy::transports::TransportError,
    ) -> Option<std::time::Duration> {
        RateLimitRetryPolicy::default().backoff_hint(error)
    }
}

/// How long a deployment waits for each of its transactions to be mined.
pub const RECEIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How long a JSON-RPC request to the chain may take, connecting included.
pub const RPC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long connecting to the chain's JSON-RPC endpoint may take.
pub const RPC_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn deploy_error(name: &'static str) -> impl FnOnce(alloy::contract::Error) -> Error {
    move |e| Error::from_contract("deploy", Target::Contract(name), e)
}

/// Deploys a contract from its creation bytecode (constructor arguments appended).
///
/// # Errors
/// [`Error::Reverted`] when the constructor reverts, [`Error::Rpc`] otherwise.
pub async fn deploy_bytecode(provider: &DynProvider, bytecode: &[u8]) -> Result<Address> {
    RawCallBuilder::new_raw_deploy(provider.clone(), Bytes::copy_from_slice(bytecode))
        .deploy()
        .await
        .map_err(deploy_error("contract"))
}

/// Deploys `TestToken`.
///
/// # Errors
/// [`Error::Rpc`].
pub async fn deploy_test_token(provider: &DynProvider) -> Result<Address> {
    TestToken::deploy_builder(provider.clone())
        .deploy()
        .await
        .map_err(deploy_error("TestToken"))
}

/// Deploys `RefusingToken` (tests of failed transfers).
///
/// # Errors
/// [`Error::Rpc`].
pub async fn deploy_refusing_token(provider: &DynProvider) -> Result<Address> {
    RefusingToken::deploy_builder(provider.clone())
        .deploy()
        .await
        .map_err(deploy_error("RefusingToken"))
}

/// Deploys `TestVerifier` (tests of rules unrelated to proofs).
///
/// # Errors
/// [`Error::Rpc`].
pub async fn deploy_test_verifier(provider: &DynProvider) -> Result<Address> {
    TestVerifier::deploy_builder(provider.clone())
        .deploy()
        .await
        .map_err(deploy_error("TestVerifier"))
}

/// Deploys the `Halo2Verifier` adapter in front of a generated verifier at `target`.
///
/// # Errors
/// [`Error::Rpc`].
pub async fn deploy_halo2_adapter(provider: &DynProvider, target: Address) -> Result<Address> {
    Halo2Verifier::deploy_builder(provider.clone(), target)
        .deploy()
        .await
        .map_err(deploy_error("Halo2Verifier"))
}

/// Deploys the generated halo2 verifier from its creation bytecode and the
/// adapter in front of it; returns `(generated, adapter)`.
///
/// # Errors
/// [`Error::Reverted`] or [`Error::Rpc`].
pub async fn deploy_halo2_verifier(
    provider: &DynProvider,
    bytecode: &[u8],
) -> Result<(Address, Address)> {
    let generated = deploy_bytecode(provider, bytecode).await?;
    let adapter = deploy_halo2_adapter(provider, generated).await?;
    Ok((generated, adapter))
}

/// Deploys the marketplace.
///
/// # Errors
/// [`Error::Reverted`] with the constructor's custom error (e.g. a configuration
/// above 100 %, or a chain at block 256 or lower), [`Error::Rpc`] otherwise.
pub async fn deploy_marketplace(
    provider: &DynProvider,
    config: &MarketplaceConfig,
    token: Address,
    verifier: Address,
) -> Result<Address> {
    Marketplace::deploy_builder(provider.clone(), config.to_abi(), token, verifier)
        .deploy()
        .await
        .map_err(deploy_error("Marketplace"))
}

/// Deploys the token, the verifier and the marketplace in that order.
///
/// A generated halo2 verifier ([`VerifierSource::Halo2Bytecode`],
/// [`VerifierSource::Halo2At`]) needs the digest of the verifying key it was generated
/// from in `config.proofs.zkey_hash` (codex-proofs' `Prover::verifying_key_digest`):
/// hosts compare it with their own before they sell.
///
/// # Errors
/// [`Error::InvalidInput`] for a halo2 verifier without `zkey_hash`; otherwise as the
/// single deployments.
pub async fn deploy(
    provider: &DynProvider,
    config: &MarketplaceConfig,
    token: TokenSource,
    verifier: VerifierSource,
) -> Result<Deployment> {
    if matches!(
        verifier,
        VerifierSource::Halo2Bytecode(_) | VerifierSource::Halo2At(_)
    ) && config.proofs.zkey_hash.trim().is_empty()
    {
        return Err(Error::InvalidInput {
            what: "marketplace configuration",
            message: "a halo2 verifier is deployed with the digest of its verifying key in proofs.zkey_hash (hosts check it before they sell)".into(),
        });
    }
    let token = match token {
        TokenSource::TestToken => deploy_test_token(provider).await?,
        TokenSource::Refusing => deploy_refusing_token(provider).await?,
        TokenSource::Existing(a) => a,
    };
    let (verifier, halo2_verifier) = match verifier {
        VerifierSource::Halo2Bytecode(code) => {
            let (generated, adapter) = deploy_halo2_verifier(provider, &code).await?;
            (adapter, Some(generated))
        }
        VerifierSource::Halo2At(generated) => (
            deploy_halo2_adapter(provider, generated).await?,
            Some(generated),
        ),
        VerifierSource::Existing(a) => (a, None),
        VerifierSource::Test => (deploy_test_verifier(provider).await?, None),
        VerifierSource::Echo => {
            let echo = EchoProofCheck::deploy_builder(provider.clone())
                .deploy()
                .await
                .map_err(deploy_error("EchoProofCheck"))?;
            (deploy_halo2_adapter(provider, echo).await?, Some(echo))
        }
    };
    let marketplace = deploy_marketplace(provider, config, token, verifier).await?;
    Ok(Deployment {
        marketplace,
        token,
        verifier,
        halo2_verifier,
        config: config.clone(),
    })
}

/// Mints `amount` of a `TestToken` (or `RefusingToken`) to `holder`.
///
/// # Errors
/// [`Error::Rpc`].
pub async fn mint(
    provider: &DynProvider,
    token: Address,
    holder: Address,
    amount: U256,
) -> Result<()> {
    let receipt = TestToken::new(token, provider)
        .mint(holder, amount)
        .send()
        .await
        .map_err(|e| Error::from_contract("mint", Target::Contract("TestToken"), e))?
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .map_err(|e| Error::rpc("mint receipt", e))?;
    if !receipt.status() {
        return Err(Error::Failed {
            call: "mint",
            target: Target::Contract("TestToken"),
            tx: receipt.transaction_hash,
        });
    }
    Ok(())
}

/// Makes a `RefusingToken`'s transfers return false (`true`) or work again.
///
/// # Errors
/// [`Error::Rpc`].
pub async fn set_refusing(provider: &DynProvider, token: Address, refusing: bool) -> Result<()> {
    RefusingToken::new(token, provider)
        .setRefusing(refusing)
        .send()
        .await
        .map_err(|e| Error::from_contract("setRefusing", Target::Contract("RefusingToken"), e))?
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .map_err(|e| Error::rpc("setRefusing receipt", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain endpoint that accepts connections and never answers gives an error
    /// when the deadline passes, instead of hanging the caller.
    #[tokio::test]
    async fn a_silent_rpc_endpoint_times_out() -> std::result::Result<(), Box<dyn std::error::Error>>
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?).parse()?;
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket); // read nothing, answer nothing
            }
        });
        let signer = PrivateKeySigner::random();
        let provider = signing_provider_timed(url, &signer, std::time::Duration::from_millis(500));
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            provider.get_block_number(),
        )
        .await?;
        assert!(answer.is_err(), "a silent endpoint gave {answer:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        held.abort();
        Ok(())
    }
}
