//! Networks assembled with `Network::builder`: transports, key, Kademlia protocol name,
//! limits and timeouts, and the settings it refuses.

use std::sync::Arc;
use std::time::Duration;

use codex_net::{
    Download, Error, ExchangeConfig, Keypair, Limits, Multiaddr, NetConfig, Network, Protocol,
    Timeouts, Transports, libp2p_stream,
};

mod common;
use common::{listen_addr, mem, put_dataset, random};

/// A loopback listen address of `transports`' one transport.
fn loopback(transports: Transports) -> anyhow::Result<Multiaddr> {
    Ok(if transports.quic {
        "/ip4/127.0.0.1/udp/0/quic-v1".parse()?
    } else {
        "/ip4/127.0.0.1/tcp/0".parse()?
    })
}

fn option_of<T: std::fmt::Debug>(result: codex_net::Result<T>) -> Option<&'static str> {
    match result {
        Err(Error::InvalidOption { option, .. }) => Some(option),
        other => panic!("expected an invalid option, got {other:?}"),
    }
}

/// Over TCP only and over QUIC only: B knows A only as its bootstrap peer, finds it as
/// a provider through the DHT (on a Kademlia protocol name of their own) and downloads
/// A's dataset, every block checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_networks_built_on_loopback_exchange_a_dataset() -> anyhow::Result<()> {
    for transports in [Transports::TCP, Transports::QUIC] {
        let a_store = mem();
        let data = random(3 * 65536 + 100, 31);
        let (cid, manifest) = put_dataset(&*a_store, &data).await?;
        let a_key = Keypair::generate_ed25519();
        let a_peer = a_key.public().to_peer_id();
        let a = Network::builder(a_store)
            .key(a_key)
            .transports(transports)
            .listen([loopback(transports)?])
            .kad_protocol("/codex-test/kad/1.0.0")
            .start()
            .await?;
        assert_eq!(a.peer_id(), a_peer, "the key given is the node's");
        let a_addr = listen_addr(&a).await?;
        assert_eq!(
            a_addr.iter().any(|p| p == Protocol::QuicV1),
            transports.quic,
            "{a_addr} over {transports:?}"
        );
        a.provide(cid).await?;
        a.provide(manifest.tree_cid).await?;

        let b_store = mem();
        let b = Network::builder(Arc::clone(&b_store))
            .transports(transports)
            .listen([loopback(transports)?])
            .kad_protocol("/codex-test/kad/1.0.0")
            .bootstrap([a_addr])
            .start()
            .await?;
        let mut providers = Vec::new();
        for _ in 0..20 {
            providers = b.find_providers(manifest.tree_cid).await?;
            if !providers.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(providers, vec![a_peer], "over {transports:?}");
        let fetched = codex_net::fetch_manifest(&b, &b_store, cid).await?;
        assert_eq!(fetched, manifest);
        let report = Download::new(&b, Arc::clone(&b_store), &fetched)
            .cid(cid)
            .run()
            .await?;
        assert_eq!(
            report.fetched,
            manifest.blocks_count(),
            "over {transports:?}"
        );
        assert!(report.missing.is_empty());
        let served = a
            .exchange()
            .stats
            .served
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            served > manifest.blocks_count(),
            "A served {served}: the manifest and every block, over {transports:?}"
        );
        a.shutdown().await;
        b.shutdown().await;
    }
    Ok(())
}

/// Every setting that cannot work is refused before anything is bound, with the
/// setting's name.
#[tokio::test]
async fn invalid_options_are_refused_with_a_typed_error() -> anyhow::Result<()> {
    let start = |b: codex_net::NetworkBuilder| async move { option_of(b.start().await) };
    let builder = || Network::builder(mem()).listen([]);

    assert_eq!(
        start(builder().kad_protocol("codex/kad/1.0.0")).await,
        Some("kad_protocol")
    );
    assert_eq!(
        start(builder().transports(Transports {
            tcp: false,
            quic: false
        }))
        .await,
        Some("transports")
    );
    assert_eq!(
        start(
            builder()
                .transports(Transports::TCP)
                .listen(["/ip4/127.0.0.1/udp/0/quic-v1".parse()?])
        )
        .await,
        Some("listen_addrs")
    );
    assert_eq!(
        start(builder().bootstrap(["/ip4/127.0.0.1/tcp/4001".parse()?])).await,
        Some("bootstrap")
    );
    assert_eq!(
        start(builder().limits(Limits {
            max_connections: Some(0),
            ..Limits::default()
        }))
        .await,
        Some("limits.max_connections")
    );
    assert_eq!(
        start(builder().timeouts(Timeouts {
            kad_query: Duration::ZERO,
            ..Timeouts::default()
        }))
        .await,
        Some("timeouts.kad_query")
    );
    assert_eq!(
        start(builder().exchange(ExchangeConfig {
            serve_concurrency_per_peer: 0,
            ..ExchangeConfig::default()
        }))
        .await,
        Some("exchange.serve_concurrency_per_peer")
    );
    // From a whole configuration, as `Network::start` takes it.
    let config = NetConfig {
        transports: Transports::TCP, // the default listen addresses include QUIC's
        ..NetConfig::default()
    };
    assert_eq!(
        option_of(Network::start(Keypair::generate_ed25519(), config, mem()).await),
        Some("listen_addrs")
    );
    // The exchange mounted on an app's swarm checks its limits too.
    let control = libp2p_stream::Behaviour::new().new_control();
    let zero = ExchangeConfig {
        max_message_bytes: 0,
        ..ExchangeConfig::default()
    };
    assert_eq!(
        option_of(codex_net::Exchange::mount(control, mem(), zero)),
        Some("exchange.max_message_bytes")
    );
    Ok(())
}

/// Transports without listen addresses of their own: the defaults follow them.
#[tokio::test]
async fn default_listen_addresses_follow_the_transports() -> anyhow::Result<()> {
    let net = Network::builder(mem())
        .transports(Transports::TCP)
        .start()
        .await?;
    let addr = listen_addr(&net).await?;
    assert!(
        net.info()
            .await?
            .listen_addrs
            .iter()
            .all(|a| !a.iter().any(|p| p == Protocol::QuicV1)),
        "a TCP-only node listens on QUIC ({addr})"
    );
    net.shutdown().await;
    Ok(())
}

/// A key file gives the same peer id at every start; no key gives a new one.
#[tokio::test]
async fn a_key_file_keeps_the_peer_id() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keys").join("node");
    let start = || Network::builder(mem()).key_file(&path).listen([]).start();
    let first = start().await?;
    let peer = first.peer_id();
    first.shutdown().await;
    let again = start().await?;
    assert_eq!(again.peer_id(), peer);
    let fresh = Network::builder(mem()).listen([]).start().await?;
    assert_ne!(fresh.peer_id(), peer);
    // A file that is not a key is an error, not a new identity.
    std::fs::write(&path, b"not a key")?;
    assert!(matches!(start().await, Err(Error::KeyMalformed { .. })));
    Ok(())
}

/// A node allowed one connection keeps the first peer it dials and cannot reach a
/// second; with that limit lifted, it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_hold() -> anyhow::Result<()> {
    let tcp = || {
        Network::builder(mem())
            .transports(Transports::TCP)
            .listen(["/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr")])
    };
    let b = tcp().start().await?;
    let c = tcp().start().await?;
    let (b_addr, c_addr) = (listen_addr(&b).await?, listen_addr(&c).await?);
    let one = Limits {
        max_connections: Some(1),
        ..Limits::default()
    };
    let a = tcp()
        .limits(one)
        .timeouts(Timeouts {
            dial: Duration::from_secs(5),
            ..Timeouts::default()
        })
        .start()
        .await?;
    a.dial(b.peer_id(), vec![b_addr]).await?;
    let refused = a.dial(c.peer_id(), vec![c_addr.clone()]).await;
    assert!(
        matches!(refused, Err(Error::Libp2p(_))),
        "a second connection over a limit of one: {refused:?}"
    );
    assert_eq!(a.info().await?.connected, vec![b.peer_id()]);

    let unlimited = tcp().limits(Limits::UNLIMITED).start().await?;
    unlimited
        .dial(b.peer_id(), vec![listen_addr(&b).await?])
        .await?;
    unlimited.dial(c.peer_id(), vec![c_addr]).await?;
    assert_eq!(unlimited.info().await?.connected.len(), 2);
    Ok(())
}

/// Nodes on different Kademlia protocol names do not see each other's records; the
/// query ends within the Kademlia timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_kad_protocol_is_another_dht() -> anyhow::Result<()> {
    let a_store = mem();
    let (cid, _) = put_dataset(&*a_store, &random(1000, 32)).await?;
    let a = Network::builder(a_store)
        .transports(Transports::TCP)
        .listen(["/ip4/127.0.0.1/tcp/0".parse()?])
        .start()
        .await?;
    a.provide(cid).await?;
    let b = Network::builder(mem())
        .transports(Transports::TCP)
        .listen([])
        .kad_protocol("/ipfs/kad/1.0.0")
        .timeouts(Timeouts {
            kad_query: Duration::from_secs(3),
            ..Timeouts::default()
        })
        .bootstrap([listen_addr(&a).await?])
        .start()
        .await?;
    let started = tokio::time::Instant::now();
    let providers = b.find_providers(cid).await?;
    assert!(providers.is_empty(), "{providers:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}
