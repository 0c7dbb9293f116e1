//! An app with its own libp2p swarm mounts Codex's block exchange beside behaviours of
//! its own (identify and ping here), and fetches a dataset from a Codex node with it.
//!
//! The node runs in this process on loopback and stores a dataset; the app dials it,
//! fetches the manifest and then the dataset's blocks through the exchange (every block
//! checked against the dataset's tree), and compares the bytes with what the node stored.
//!
//! ```text
//! cargo run --example custom_swarm
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codex::net::{Download, Exchange, ExchangeConfig, NetConfig, libp2p_stream};
use codex::store::{MemoryStore, StoreConfig};
use codex::{Node, NodeConfig};
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, noise, ping, tcp, yamux};
use tokio::sync::oneshot;

/// The app's behaviours: two of its own, and the stream behaviour the block exchange
/// runs on.
#[derive(NetworkBehaviour)]
struct AppBehaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    blocks: libp2p_stream::Behaviour,
}

/// Deterministic bytes that do not compress or repeat.
fn dataset(len: usize) -> Bytes {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;

    // A Codex node on loopback, holding a dataset.
    let node = Node::start(NodeConfig {
        data_dir: dir.path().join("node"),
        api_port: 0,
        network: Some(NetConfig {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            ..NetConfig::default()
        }),
        ..NodeConfig::default()
    })
    .await?;
    let data = dataset((5 << 20) + 4321);
    let source = futures::stream::iter([Ok::<_, std::io::Error>(data.clone())]);
    let cid = node.upload(source, Default::default()).await?;
    let node_addr: Multiaddr = node
        .addresses()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the node listens nowhere"))?;
    println!(
        "node stored {} bytes as {cid}, listening on {node_addr}",
        data.len()
    );

    // The app's own swarm.
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| AppBehaviour {
            identify: identify::Behaviour::new(identify::Config::new(
                "/my-app/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new()),
            blocks: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    println!("app peer id {}", swarm.local_peer_id());

    // Codex's block exchange, mounted on the app's swarm, with a store of the app's.
    let store = Arc::new(MemoryStore::new(StoreConfig::default()));
    let exchange = Exchange::mount(
        swarm.behaviour().blocks.new_control(),
        store.clone(),
        ExchangeConfig::default(),
    )?;

    // The app drives its swarm: it dials the node and hears its own behaviours' events.
    swarm.dial(node_addr)?;
    let (connected_tx, connected) = oneshot::channel::<PeerId>();
    let (pinged_tx, pinged) = oneshot::channel::<Duration>();
    let ex = Arc::clone(&exchange);
    let swarm_task =
        tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            let mut pinged_tx = Some(pinged_tx);
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(peer_id);
                        }
                    }
                    SwarmEvent::ConnectionClosed {
                        peer_id,
                        num_established: 0,
                        ..
                    } => ex.peer_disconnected(peer_id),
                    SwarmEvent::Behaviour(AppBehaviourEvent::Ping(ping::Event {
                        result: Ok(rtt),
                        ..
                    })) => {
                        if let Some(tx) = pinged_tx.take() {
                            let _ = tx.send(rtt);
                        }
                    }
                    SwarmEvent::Behaviour(AppBehaviourEvent::Identify(
                        identify::Event::Received { peer_id, info, .. },
                    )) => println!(
                        "identify: {peer_id} runs {} ({} protocols)",
                        info.protocol_version,
                        info.protocols.len()
                    ),
                    _ => {}
                }
            }
        });
    let node_peer = tokio::time::timeout(Duration::from_secs(10), connected).await??;
    println!("app connected to the node {node_peer}");

    // Fetch the dataset through the exchange, as a stream of its bytes in order.
    let started = Instant::now();
    let manifest = exchange.fetch_manifest(&[node_peer], cid).await?;
    let mut bytes = Download::with_exchange(&exchange, store.clone(), &manifest)
        .peers([node_peer])
        .stream();
    let mut fetched = Vec::with_capacity(data.len());
    while let Some(chunk) = bytes.next().await {
        fetched.extend_from_slice(&chunk?);
    }
    let elapsed = started.elapsed();
    let report = bytes
        .report()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the download ended without a report"))?;
    anyhow::ensure!(
        fetched.len() == data.len(),
        "fetched {} bytes, the node stored {}",
        fetched.len(),
        data.len()
    );
    anyhow::ensure!(fetched == data, "the fetched bytes differ from the node's");
    anyhow::ensure!(
        report.missing.is_empty(),
        "missing blocks {:?}",
        report.missing
    );
    println!(
        "app fetched {cid} through the exchange: {} blocks, {} bytes, identical, in {elapsed:?} ({:.1} MB/s)",
        report.fetched,
        fetched.len(),
        fetched.len() as f64 / elapsed.as_secs_f64() / 1e6
    );

    // The app's own behaviour ran beside the exchange.
    let rtt = tokio::time::timeout(Duration::from_secs(20), pinged).await??;
    println!("ping to the node: {rtt:?}");

    println!(
        "next: cargo run --example embed (two whole nodes), or the node's REST API at {}/data",
        node.api_url()
    );
    swarm_task.abort();
    node.shutdown().await?;
    Ok(())
}
