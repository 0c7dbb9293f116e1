//! Nodes on loopback: a protected dataset downloads whole even when no peer has all of
//! it, the missing blocks rebuilt by erasure decoding where the layers meet.

#[path = "common/loopback.rs"]
mod loopback;

use std::time::Duration;

use bytes::Bytes;
use codex::Node;
use codex::node::network;
use codex_core::Block;
use codex_erasure::Layout;
use futures::TryStreamExt;
use rand::{RngCore, SeedableRng, rngs::StdRng};

async fn start(
    dir: &std::path::Path,
    bootstrap: Vec<codex_net::Multiaddr>,
) -> anyhow::Result<Node> {
    Ok(Node::start(loopback::loopback(dir, bootstrap)?).await?)
}

async fn address(node: &Node) -> anyhow::Result<codex_net::Multiaddr> {
    let net = node
        .network()
        .ok_or_else(|| anyhow::anyhow!("no network"))?;
    let info = net.info().await?;
    let addr = info
        .listen_addrs
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("not listening"))?;
    Ok(addr.with(libp2p_p2p(net.peer_id())))
}

fn libp2p_p2p(peer: codex_net::PeerId) -> codex_net::Protocol<'static> {
    codex_net::Protocol::P2p(peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_dataset_downloads_whole_from_a_peer_missing_two_slots() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut bytes = vec![0u8; 30 * 65536 + 123];
    StdRng::seed_from_u64(5).fill_bytes(&mut bytes);

    // A uploads and protects the file (K = 3, M = 2).
    let a = start(&dir.path().join("a"), vec![]).await?;
    let body = futures::stream::iter(
        bytes
            .chunks(70_000)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c))),
    );
    let cid = a.upload(body, Default::default()).await?;
    let (protected_cid, protected) = a.erasure_encode(cid, 3, 2).await?;

    // B holds all but data slots 0 and 2, and announces the dataset.
    let b = start(&dir.path().join("b"), vec![]).await?;
    let layout = Layout::new(protected.original_blocks_count(), 3, 2)?;
    for i in 0..protected.blocks_count() {
        if layout.slot(0).contains(&i) || layout.slot(2).contains(&i) {
            continue;
        }
        let (block, proof) = a.store().get_leaf(&protected.tree_cid, i).await?;
        b.store()
            .put_leaf(&protected.tree_cid, i, block, proof)
            .await?;
    }
    b.store()
        .put_block(Block::manifest(protected.encode()))
        .await?;
    let b_net = b.network().ok_or_else(|| anyhow::anyhow!("no network"))?;
    network::announce(b_net, protected_cid, &protected).await;
    a.shutdown().await?;

    // C knows only B: it downloads what B has and rebuilds the rest.
    let c = start(&dir.path().join("c"), vec![address(&b).await?]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let manifest = c.fetch(protected_cid).await?;
    assert_eq!(manifest, protected);
    let read: Vec<Bytes> = c.read(protected_cid).await?.stream.try_collect().await?;
    assert!(
        read.concat() == bytes,
        "the file, rebuilt where no peer had it"
    );
    Ok(())
}
