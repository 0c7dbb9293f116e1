//! What the network tests share: seeded data, datasets in a store, memory stores,
//! nodes on loopback, want-lists; network namespaces and node processes in them
//! ([`netns`]).

// Each test crate uses a part.
#![allow(dead_code)]

pub mod netns;

use std::sync::Arc;
use std::time::Duration;

use codex_core::{Block, BlockAddress, BlockRead, BlockStore, Chunker, Cid, Manifest};
use codex_net::message::{Entry, Message, WantList, WantType};
use codex_net::{ExchangeConfig, Multiaddr, Network, Protocol, Transports};
use codex_store::{MemoryStore, StoreConfig};
use rand::{RngCore, SeedableRng, rngs::StdRng};

pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub async fn put_dataset(store: &dyn BlockStore, data: &[u8]) -> anyhow::Result<(Cid, Manifest)> {
    let blocks: Vec<Block> = Chunker::new(data, 65536)
        .map(|b| b.map(Block::new))
        .collect::<Result<_, _>>()?;
    Ok(codex_core::store_dataset(store, blocks, 65536, data.len() as u64).await?)
}

pub fn mem() -> Arc<dyn BlockStore> {
    Arc::new(MemoryStore::new(StoreConfig::default()))
}

/// `net`'s first listen address with its `/p2p/PEER` (listeners bind just after start).
pub async fn listen_addr(net: &Network) -> anyhow::Result<Multiaddr> {
    for _ in 0..50 {
        if let Some(a) = net.info().await?.listen_addrs.into_iter().next() {
            return Ok(a.with(Protocol::P2p(net.peer_id())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("no listen address")
}

/// A node serving `store` over TCP on loopback, its exchange set by `exchange`.
pub async fn node(
    store: impl BlockRead + 'static,
    exchange: ExchangeConfig,
) -> anyhow::Result<Network> {
    Ok(Network::builder(store)
        .transports(Transports::TCP)
        .listen(["/ip4/127.0.0.1/tcp/0".parse()?])
        .exchange(exchange)
        .start()
        .await?)
}

/// A node with an empty store over TCP on loopback, joined through `bootstrap`, its
/// provider records set by `providers`; its listen address.
pub async fn dht_node(
    bootstrap: Vec<Multiaddr>,
    providers: codex_net::ProviderConfig,
) -> anyhow::Result<(Network, Multiaddr)> {
    let net = Network::builder(mem())
        .transports(Transports::TCP)
        .listen(["/ip4/127.0.0.1/tcp/0".parse()?])
        .bootstrap(bootstrap)
        .providers(providers)
        .start()
        .await?;
    let addr = listen_addr(&net).await?;
    Ok((net, addr))
}

/// A want-list message asking for the blocks at `indices` of `tree`.
pub fn want_blocks(tree: Cid, indices: impl IntoIterator<Item = u64>) -> Message {
    let entries = indices
        .into_iter()
        .map(|index| Entry {
            address: BlockAddress::Leaf { tree, index },
            priority: 0,
            cancel: false,
            want_type: WantType::WantBlock,
            send_dont_have: false,
        })
        .collect();
    Message {
        wantlist: WantList {
            entries,
            full: false,
        },
        ..Message::default()
    }
}
