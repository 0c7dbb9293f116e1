//! What the network tests share: seeded data, datasets in a store, memory stores.

use std::sync::Arc;
use std::time::Duration;

use codex_core::{Block, BlockStore, Chunker, Cid, Manifest};
use codex_net::{Multiaddr, Network, Protocol};
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
