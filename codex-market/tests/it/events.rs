//! Events within a hosted endpoint's limits: a long history read through a proxy that
//! refuses wide log ranges and rate-limits; confirmations; a reorganisation followed.

use std::sync::atomic::Ordering;

use anyhow::Result;
use codex_market::alloy::providers::Provider;
use codex_market::deploy::VerifierSource;
use codex_market::*;

use crate::common::*;
use crate::proxy::Proxy;

fn requested(events: &[LoggedEvent]) -> Vec<RequestId> {
    events
        .iter()
        .filter_map(|e| match e.event {
            MarketEvent::StorageRequested { request, .. } => Some(request),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_long_history_is_read_through_an_endpoint_that_refuses_wide_ranges_and_rate_limits()
-> Result<()> {
    // A chain with 100 000 blocks of history.
    let market = Market::start_on(
        LocalChain::start_with_history(100_000).await?,
        MarketplaceConfig::default(),
        VerifierSource::Test,
    )
    .await?;
    let direct = market.account(1).await?;
    let first = direct
        .request_storage(&request(direct.account(), 1, 3600, 600, 1))
        .await?
        .0;
    market.chain.mine(2_000).await?;
    let proxy = Proxy::start(market.chain.url(), 500, 7).await?;
    let signer = market.chain.account(1).await?;
    let client =
        MarketplaceClient::connect(&proxy.url, &signer, market.deployment.marketplace).await?;
    // Sends through the proxy too (rate-limited on the way).
    let second = client
        .request_storage(&request(client.account(), 1, 3600, 600, 2))
        .await?
        .0;
    market.chain.mine(2).await?;
    let latest = client.block_number().await?;
    assert!(latest > 100_000);

    // A client that asks for everything at once learns the endpoint's limit.
    client.set_log_range(1_000_000);
    let all = client.events(0, latest).await?;
    assert_eq!(requested(&all), vec![first, second]);
    assert!(
        client.log_range() <= 500,
        "range now {}",
        client.log_range()
    );
    assert!(proxy.counts.refused.load(Ordering::Relaxed) > 0);

    // A poller from genesis catches up in steps and sees each event once.
    let mut events = Events::from_block(0).with_confirmations(2);
    let mut seen = Vec::new();
    let mut polls = 0;
    while events.next_block() + 2 <= client.block_number().await? {
        seen.extend(events.poll(&client).await?);
        polls += 1;
        assert!(polls < 100, "never caught up");
    }
    assert_eq!(requested(&seen), vec![first, second]);
    assert!(polls >= 10, "{polls} polls for 100 000 blocks");
    assert!(
        proxy.counts.limited.load(Ordering::Relaxed) > 0,
        "429s were answered"
    );
    Ok(())
}

#[tokio::test]
async fn confirmations_hold_events_back_until_blocks_are_on_top() -> Result<()> {
    let market = Market::start(MarketplaceConfig::default(), VerifierSource::Test).await?;
    let client = market.account(1).await?;
    let mut events = Events::from_block(client.block_number().await? + 1).with_confirmations(3);
    let id = client
        .request_storage(&request(client.account(), 1, 3600, 600, 3))
        .await?
        .0;
    assert_eq!(requested(&events.poll(&client).await?), vec![]);
    market.chain.mine(2).await?;
    assert_eq!(requested(&events.poll(&client).await?), vec![]);
    market.chain.mine(1).await?;
    assert_eq!(requested(&events.poll(&client).await?), vec![id]);
    assert_eq!(requested(&events.poll(&client).await?), vec![]);
    Ok(())
}

#[tokio::test]
async fn a_reorganisation_is_found_and_the_blocks_read_again() -> Result<()> {
    let market = Market::start(MarketplaceConfig::default(), VerifierSource::Test).await?;
    let client = market.account(1).await?;
    let start = client.block_number().await? + 1;
    let mut events = Events::from_block(start);
    let id = client
        .request_storage(&request(client.account(), 1, 3600, 600, 4))
        .await?
        .0;
    market.chain.mine(1).await?;
    assert_eq!(requested(&events.poll(&client).await?), vec![id]);
    let handled = events.next_block();
    // Saved and loaded, as a node does across a restart.
    let saved = serde_json::to_string(&events)?;
    let mut events: Events = serde_json::from_str(&saved)?;

    // The chain drops its last 3 blocks (the request's included) for 3 empty ones.
    let _: serde_json::Value = market
        .chain
        .provider()
        .raw_request(
            "anvil_reorg".into(),
            (3u64, Vec::<serde_json::Value>::new()),
        )
        .await?;
    assert!(client.get_request(id).await.is_err(), "the request is gone");
    // A poll with no new block costs one call and looks no further; the next block
    // shows the reorganisation.
    assert_eq!(requested(&events.poll(&client).await?), vec![]);
    assert_eq!(events.reorgs(), 0);
    market.chain.mine(1).await?;
    let again = events.poll(&client).await?;
    assert_eq!(events.reorgs(), 1);
    assert!(events.next_block() > handled - 3);
    assert_eq!(
        requested(&again),
        vec![],
        "the abandoned block's event is not read"
    );
    // Made again (by a client started afresh: the reorganisation took its nonces
    // back), it is seen again.
    let client = market.account(1).await?;
    let id2 = client
        .request_storage(&request(client.account(), 1, 3600, 600, 4))
        .await?
        .0;
    assert_eq!(id2, id);
    assert_eq!(requested(&events.poll(&client).await?), vec![id]);
    Ok(())
}

/// Codex's default provider scheme: a client over `ws://` sends (its request lands,
/// the allowance and nonces through the same transaction manager), reads views and
/// polls events; a URL of another scheme is refused with a clear error.
#[tokio::test]
async fn a_client_over_a_websocket_requests_and_reads_events() -> Result<()> {
    let market = Market::start(MarketplaceConfig::default(), VerifierSource::Test).await?;
    market.account(1).await?; // funded with tokens
    let signer = market.chain.account(1).await?;
    let ws = market.chain.url().replacen("http://", "ws://", 1);
    assert!(ws.starts_with("ws://"), "{ws}");
    let client = MarketplaceClient::connect(&ws, &signer, market.deployment.marketplace).await?;
    let mut events = Events::from_block(client.block_number().await? + 1);
    let (id, receipt) = client
        .request_storage(&request(client.account(), 1, 3600, 600, 7))
        .await?;
    assert!(receipt.block_number > 0);
    assert_eq!(client.request_state(id).await?, RequestState::New);
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.extend(requested(&events.poll(&client).await?));
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(seen, vec![id]);

    let refused =
        MarketplaceClient::connect("ftp://127.0.0.1:1", &signer, market.deployment.marketplace)
            .await
            .err()
            .map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("neither http(s) nor ws(s)")),
        "{refused:?}"
    );
    // Nothing listens: a clear error, not a hang.
    let closed =
        MarketplaceClient::connect("ws://127.0.0.1:9", &signer, market.deployment.marketplace)
            .await;
    assert!(closed.is_err());
    Ok(())
}
