//! The block exchange mounted on an app's own swarm, beside a behaviour of the app's own
//! (ping): the app fetches a dataset from a node, and the node fetches one from the app.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use codex_net::{Download, Exchange, ExchangeConfig, NetConfig, Network, libp2p_stream};
use futures::{StreamExt, TryStreamExt};
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, noise, ping, tcp, yamux};
use tokio::sync::oneshot;

mod common;
use common::{listen_addr, mem, put_dataset, random};

#[derive(NetworkBehaviour)]
struct App {
    ping: ping::Behaviour,
    blocks: libp2p_stream::Behaviour,
}

/// Starts the app's swarm with the exchange mounted on it, connected to `node`.
async fn app(
    store: Arc<dyn codex_core::BlockStore>,
    node: Multiaddr,
    pings: Arc<AtomicU64>,
) -> anyhow::Result<(PeerId, Arc<Exchange>)> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| App {
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(200)),
            ),
            blocks: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    let exchange = Exchange::mount(
        swarm.behaviour().blocks.new_control(),
        store,
        ExchangeConfig::default(),
    )?;
    // Mounting twice on the same behaviour is refused.
    assert!(
        Exchange::mount(
            swarm.behaviour().blocks.new_control(),
            mem(),
            ExchangeConfig::default()
        )
        .is_err()
    );
    let peer = *swarm.local_peer_id();
    swarm.dial(node)?;
    let (connected, is_connected) = oneshot::channel();
    let ex = Arc::clone(&exchange);
    tokio::spawn(async move {
        let mut connected = Some(connected);
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    if let Some(c) = connected.take() {
                        let _ = c.send(peer_id);
                    }
                }
                SwarmEvent::ConnectionClosed {
                    peer_id,
                    num_established: 0,
                    ..
                } => ex.peer_disconnected(peer_id),
                SwarmEvent::Behaviour(AppEvent::Ping(ping::Event { result: Ok(_), .. })) => {
                    pings.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    });
    let node_peer = tokio::time::timeout(Duration::from_secs(10), is_connected).await??;
    tracing::debug!(%node_peer, "app connected");
    Ok((peer, exchange))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_swarm_with_the_exchange_mounted_fetches_and_serves() -> anyhow::Result<()> {
    // The node: a plain Network with a store holding a dataset.
    let node_store = mem();
    let data = random((2 << 20) + 12345, 21);
    let (cid, manifest) = put_dataset(&*node_store, &data).await?;
    let net = Network::start(
        Keypair::generate_ed25519(),
        NetConfig {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            ..NetConfig::default()
        },
        Arc::clone(&node_store),
    )
    .await?;
    let addr = listen_addr(&net).await?;

    // The app: its own swarm, its own store.
    let app_store = mem();
    let pings = Arc::new(AtomicU64::new(0));
    let (app_peer, exchange) = app(Arc::clone(&app_store), addr, Arc::clone(&pings)).await?;

    // The app fetches the dataset from the node through the mounted exchange.
    let fetched = exchange.fetch_manifest(&[net.peer_id()], cid).await?;
    assert_eq!(fetched, manifest);
    let mut stream = Download::with_exchange(&exchange, Arc::clone(&app_store), &manifest)
        .peers([net.peer_id()])
        .stream();
    let mut got = Vec::with_capacity(data.len());
    while let Some(chunk) = stream.try_next().await? {
        got.extend_from_slice(&chunk);
    }
    assert!(got == data, "fetched bytes differ");
    let report = stream
        .report()
        .cloned()
        .expect("a finished download reports");
    assert_eq!(report.fetched, manifest.blocks_count());
    assert!(report.missing.is_empty());
    // Run again: everything is in the app's store now.
    let report = Download::with_exchange(&exchange, Arc::clone(&app_store), &manifest)
        .peers([net.peer_id()])
        .run()
        .await?;
    assert_eq!(report.present, manifest.blocks_count());

    // A range of blocks, into a fresh store: run, and streamed.
    let report = Download::with_exchange(&exchange, mem(), &manifest)
        .peers([net.peer_id()])
        .range(3..7)
        .run()
        .await?;
    assert_eq!((report.fetched, report.present), (4, 0));
    let part: Vec<u8> = Download::with_exchange(&exchange, mem(), &manifest)
        .peers([net.peer_id()])
        .range(3..7)
        .stream()
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await?;
    assert!(
        part == data[3 * 65536..7 * 65536],
        "the range's bytes differ"
    );

    // The other way: the node fetches a dataset only the app has.
    let other = random(700_000, 22);
    let (cid2, manifest2) = put_dataset(&*app_store, &other).await?;
    let fetched = codex_net::fetch_manifest(&net, &node_store, cid2).await?;
    assert_eq!(fetched, manifest2);
    let report = Download::new(&net, Arc::clone(&node_store), &manifest2)
        .cid(cid2)
        .run()
        .await?;
    assert!(report.missing.is_empty());
    let read: Vec<u8> = Download::new(&net, Arc::clone(&node_store), &manifest2)
        .stream()
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await?;
    assert!(read == other, "the node read other bytes");
    assert!(exchange.stats.served.load(Ordering::Relaxed) >= manifest2.blocks_count());

    // The app's own behaviour ran beside the exchange.
    for _ in 0..50 {
        if pings.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pings.load(Ordering::Relaxed) > 0, "no ping went through");

    // A download from the app without any peer given ends, everything missing.
    let report = Download::with_exchange(&exchange, mem(), &manifest)
        .options(codex_net::FetchOptions {
            stall_timeout: Duration::from_millis(600),
            ..codex_net::FetchOptions::default()
        })
        .run()
        .await?;
    assert_eq!(report.missing.len() as u64, manifest.blocks_count());

    let _ = app_peer;
    Ok(())
}
