//! `Node::builder` with injected parts, used through the typed API only (no HTTP).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codex::Node;
use codex::market::alloy::primitives::{Address, U256};
use codex::market::memory::{MemoryMarketplace, TestVerifier};
use codex::market::{Marketplace, MarketplaceConfig, RequestState};
use codex::node::market::{Market, ProverSetup};
use codex::node::purchasing::{PurchaseState, RequestParams};
use codex::node::sales::{Availability, Sales};
use codex_core::prelude::*;
use codex_store::{MemoryStore, StoreConfig};
use futures::TryStreamExt;

fn bytes(seed: u8, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<u8>>(),
    )
}

fn source(
    data: &Bytes,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + use<> {
    futures::stream::iter([Ok(data.clone())])
}

/// A node over the app's own store: what it adds lands there, reads come from there,
/// and after shutdown the app still holds the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_over_an_injected_store_without_network_or_api() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(MemoryStore::new(StoreConfig::default()));
    let node = Node::builder()
        .data_dir(dir.path())
        .store(store.clone())
        .without_network()
        .start()
        .await?;
    let data = bytes(1, 300_000);
    let added = node.add(source(&data), Default::default()).await?;
    // The dataset is in the app's store, and nothing was opened on disk.
    assert!(store.has_block(&added.cid).await?);
    assert!(!dir.path().join("repo").exists());
    let read: Vec<Bytes> = node.read(added.cid).await?.stream.try_collect().await?;
    assert_eq!(read.concat(), data);
    assert_eq!(
        node.list().await?,
        vec![(added.cid, added.manifest.clone())]
    );
    // Without a network, fetching says so.
    assert!(matches!(
        node.fetch(added.cid).await,
        Err(codex::Error::NoNetwork)
    ));
    // Without a marketplace, so do the market's calls.
    assert!(matches!(node.purchases(), Err(codex::Error::NoMarketplace)));

    let handle = node.handle();
    node.shutdown().await?;
    // The store outlives the node; deleting through a handle still works on it.
    handle.delete(added.cid).await?;
    assert_eq!(store.space().await?.total_blocks, 0);
    Ok(())
}

/// A node over an in-memory marketplace: storage is offered and bought through the
/// typed API, and the request lands on the marketplace with the node's account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_over_an_in_memory_marketplace_buys_and_offers_storage() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let chain = MemoryMarketplace::deploy(MarketplaceConfig::default(), TestVerifier)?;
    let account = Address::repeat_byte(7);
    let client = chain.connect(account);
    let tokens = U256::from(10u64.pow(12));
    chain.mint(account, tokens);
    let market = Market::new(
        Arc::new(client.clone()) as Arc<dyn Marketplace>,
        ProverSetup::new(
            codex::proofs::Srs::Development,
            5,
            dir.path().join("proof-keys"),
        ),
        Sales::in_memory(),
        Duration::from_millis(10),
    );
    let node = Node::builder()
        .data_dir(dir.path())
        .storage_quota(1 << 30)
        .without_network()
        .market(market)
        .start()
        .await?;

    // Offer storage: refused beyond the quota, kept within it.
    let too_big = Availability::new(
        "a".into(),
        2 << 30,
        3600,
        U256::from(1),
        U256::from(1_000_000),
    )?;
    assert!(matches!(
        node.offer(too_big).await,
        Err(codex::Error::InvalidRequest(_))
    ));
    let fits = Availability::new(
        "b".into(),
        100 << 20,
        3600,
        U256::from(1),
        U256::from(1_000_000),
    )?;
    node.offer(fits).await?;
    assert_eq!(node.availabilities()?.len(), 1);

    // Buy storage for a dataset: erasure coding, slots, then the request on chain.
    let data = bytes(2, 200_000);
    let added = node.add(source(&data), Default::default()).await?;
    let params = RequestParams {
        duration: 3600,
        proof_probability: U256::from(1),
        price_per_byte_per_second: U256::from(1),
        collateral_per_byte: U256::from(1),
        expiry: 600,
        nodes: 3,
        tolerance: 1,
    };
    let id = node.request_storage(added.cid, params).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let purchase = loop {
        let p = node
            .purchase(&id)?
            .ok_or_else(|| anyhow::anyhow!("no purchase {id}"))?;
        if p.state == PurchaseState::Submitted {
            break p;
        }
        anyhow::ensure!(
            p.state != PurchaseState::Errored && tokio::time::Instant::now() < deadline,
            "the purchase did not reach submitted: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let request = purchase
        .request
        .ok_or_else(|| anyhow::anyhow!("no request"))?;
    assert_eq!(request.client, account);
    assert_eq!(request.ask.slots, 3);
    let on_chain = client.my_requests().await?;
    assert_eq!(on_chain.len(), 1);
    assert_eq!(client.request_state(on_chain[0]).await?, RequestState::New);
    // The full price was paid up front: slots x duration x price per byte x slot size.
    let price = U256::from(3u64 * 3600) * U256::from(request.ask.slot_size);
    assert_eq!(request.ask.max_price(), price);
    assert_eq!(client.balance_of(account).await?, tokens - price);
    assert_eq!(node.purchases()?, vec![id]);
    node.shutdown().await?;
    Ok(())
}
