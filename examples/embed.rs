//! The smallest program that embeds the SDK: two nodes in this process, on loopback.
//! The first stores some bytes; the second fetches them over libp2p (block exchange,
//! every block checked against the dataset's tree) and reads them back.
//!
//! ```text
//! cargo run --example embed
//! ```

use bytes::Bytes;
use codex::net::NetConfig;
use codex::{Node, NodeConfig};
use futures::TryStreamExt;

/// A node with its store in `dir`, its API on a free port and libp2p on loopback.
async fn node(
    dir: &std::path::Path,
    bootstrap: Vec<codex::net::Multiaddr>,
) -> anyhow::Result<Node> {
    Ok(Node::start(NodeConfig {
        data_dir: dir.to_path_buf(),
        api_port: 0,
        network: Some(NetConfig {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            bootstrap,
            ..NetConfig::default()
        }),
        ..NodeConfig::default()
    })
    .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;

    // Node A stores the bytes and announces the dataset.
    let a = node(&dir.path().join("a"), vec![]).await?;
    let data = Bytes::from("Hello from an embedded Codex node!\n".repeat(5000));
    let source = futures::stream::iter([Ok::<_, std::io::Error>(data.clone())]);
    let cid = a.upload(source, Default::default()).await?;
    println!("A stored {} bytes as {cid}", data.len());

    // Node B knows A as its bootstrap peer, finds A as the provider and downloads.
    let b = node(&dir.path().join("b"), a.addresses().await?).await?;
    let fetched = b.fetch(cid).await?;
    let read: Vec<Bytes> = b.download(cid).await?.stream.try_collect().await?;
    anyhow::ensure!(read.concat() == data, "B read other bytes than A stored");
    println!(
        "B fetched {cid} over libp2p ({} blocks) and read the same {} bytes",
        fetched.blocks_count(),
        data.len()
    );
    println!("next: the REST API of A is at {}/data", a.api_url());

    b.shutdown().await?;
    a.shutdown().await?;
    Ok(())
}
