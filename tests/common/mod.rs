//! What the marketplace tests share: funded accounts, nodes on loopback with a
//! marketplace, JSON over the REST API, polling, and waiting for a host's proof.

// Each test crate uses a part.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use codex::market::LocalChain;
use codex::node::market::MarketConfig;
use codex::{Node, NodeConfig};
use serde_json::Value;

pub mod codex_openapi;
mod loopback;
pub use loopback::loopback;

/// Anvil account `index`, with ether for gas and 10^18 of the marketplace's `token`.
pub async fn funded(
    chain: &LocalChain,
    token: codex::market::alloy::primitives::Address,
    index: u64,
) -> anyhow::Result<codex::market::alloy::signers::local::PrivateKeySigner> {
    let signer = chain.account(index).await?;
    let p = codex::market::deploy::signing_provider(chain.url(), &signer)?;
    let tokens = codex::market::alloy::primitives::U256::from(10u64).pow(18u64.try_into()?);
    codex::market::deploy::mint(&p, token, signer.address(), tokens).await?;
    Ok(signer)
}

/// A node's marketplace settings for anvil account `index` (funded as [`funded`]) on
/// deployment `d`, reached at `rpc`: development parameters, `samples` samples, a
/// 500 ms poll, proving keys cached in `cache`.
pub async fn host_market(
    chain: &LocalChain,
    d: &codex::market::Deployment,
    index: u64,
    (rpc, samples, cache): (&str, usize, &Path),
) -> anyhow::Result<MarketConfig> {
    let signer = funded(chain, d.token, index).await?;
    let mut mc = MarketConfig::new(
        rpc,
        d.marketplace,
        codex::node::market::EthKey::from_signer(signer),
        codex::proofs::Srs::Development,
    );
    mc.poll_interval = Duration::from_millis(500);
    mc.proof_cache_dir = Some(cache.to_path_buf());
    mc.proof_samples = samples;
    Ok(mc)
}

pub async fn node(
    dir: &Path,
    bootstrap: Vec<codex::net::Multiaddr>,
    market: MarketConfig,
) -> anyhow::Result<Node> {
    Ok(Node::start(NodeConfig {
        marketplace: Some(market),
        ..loopback(dir, bootstrap)?
    })
    .await?)
}

/// `GET url` as JSON, the response checked against Codex's OpenAPI file
/// ([`codex_openapi::check`]) when the path is one of Codex's.
pub async fn get_json(http: &reqwest::Client, url: String) -> anyhow::Result<Value> {
    let (status, _, body) = codex_openapi::send(http.get(&url)).await?;
    let text = String::from_utf8_lossy(&body);
    anyhow::ensure!((200..300).contains(&status), "GET {url}: {status} {text}");
    Ok(serde_json::from_str(&text)?)
}

/// The sale `node` proves a slot with (`/sales/slots`, state `SaleProving`), waited
/// for up to 30 s: a request starts when its last fill lands, and that host's sale
/// moves on once it has read the fill's receipt.
pub async fn proving_sale(
    http: &reqwest::Client,
    node: &Node,
    name: &str,
) -> anyhow::Result<Value> {
    let url = format!("{}/sales/slots", node.api_url());
    wait_for(
        &format!("{name} to prove a slot"),
        Duration::from_secs(30),
        || async {
            let sales = get_json(http, url.clone()).await?;
            Ok(sales
                .as_array()
                .and_then(|a| a.iter().find(|s| s["state"] == "SaleProving").cloned()))
        },
    )
    .await
}

/// Polls `f` every 500 ms until it returns `Some`, for at most `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The sale of host `h` with a proof in a period after `period`, waited for up to `limit`.
pub async fn proved_after(
    http: &reqwest::Client,
    h: &Node,
    period: u64,
    what: &str,
    limit: Duration,
) -> anyhow::Result<Value> {
    let url = format!("{}/sales/slots", h.api_url());
    wait_for(what, limit, || {
        let url = url.clone();
        async move {
            let sales = get_json(http, url).await?;
            Ok(sales.as_array().and_then(|a| {
                a.iter()
                    .find(|s| {
                        s["proofPeriods"]
                            .as_array()
                            .is_some_and(|p| p.iter().any(|x| x.as_u64() > Some(period)))
                    })
                    .cloned()
            }))
        }
    })
    .await
}

/// Moves the chain's clock on by one proof period (`period_secs`) and mines a block, then
/// waits for every one of `hosts` to prove in a period after `period`; their sales, in
/// order.
pub async fn next_period_proved(
    chain: &LocalChain,
    period_secs: u64,
    (http, hosts): (&reqwest::Client, &[Node]),
    period: u64,
    what: &str,
    limit: Duration,
) -> anyhow::Result<Vec<Value>> {
    chain.increase_time(period_secs).await?;
    chain.mine(1).await?;
    let mut sales = Vec::with_capacity(hosts.len());
    for h in hosts {
        sales.push(proved_after(http, h, period, what, limit).await?);
    }
    Ok(sales)
}
