//! The SDK embedded in an app: two nodes in this process, on loopback, without HTTP,
//! driven through the typed API ([`codex::node::Handle`]). The first adds some bytes;
//! the second fetches them over libp2p (block exchange, every block checked against the
//! dataset's tree), reads them back, lists and deletes them. Then A adds a file
//! encrypted: B holds and serves only ciphertext, and the key alone reads it.
//!
//! ```text
//! cargo run --example embed
//! ```

use bytes::Bytes;
use codex::Node;
use codex::net::NetConfig;
use futures::TryStreamExt;

/// A node with its store in `dir` and libp2p on loopback; no REST API.
async fn node(
    dir: &std::path::Path,
    bootstrap: Vec<codex::net::Multiaddr>,
) -> anyhow::Result<Node> {
    Ok(Node::builder()
        .data_dir(dir)
        .storage_quota(1 << 30)
        .network_config(NetConfig {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            bootstrap,
            ..NetConfig::default()
        })
        .start()
        .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;

    // Node A adds the bytes and announces the dataset.
    let a = node(&dir.path().join("a"), vec![]).await?;
    let data = Bytes::from("Hello from an embedded Codex node!\n".repeat(5000));
    let source = futures::stream::iter([Ok::<_, std::io::Error>(data.clone())]);
    let options = codex::node::UploadOptions {
        filename: Some("hello.txt".into()),
        mimetype: Some("text/plain".into()),
        ..Default::default()
    };
    let added = a.add(source, options).await?;
    println!(
        "A stored {} bytes as {} ({} blocks)",
        data.len(),
        added.cid,
        added.manifest.blocks_count()
    );

    // Node B knows A as its bootstrap peer, finds A as the provider and downloads.
    let b = node(&dir.path().join("b"), a.addresses().await?).await?;
    let fetched = b.fetch(added.cid).await?;
    let read: Vec<Bytes> = b.read(added.cid).await?.stream.try_collect().await?;
    anyhow::ensure!(read.concat() == data, "B read other bytes than A stored");
    println!(
        "B fetched {} over libp2p ({} blocks) and read the same {} bytes",
        added.cid,
        fetched.blocks_count(),
        data.len()
    );

    // A handle is cheap to clone and usable from any task.
    let handle = b.handle();
    let listed = tokio::spawn(async move { handle.list().await }).await??;
    anyhow::ensure!(
        listed
            .iter()
            .any(|(cid, m)| *cid == added.cid && m.filename.as_deref() == Some("hello.txt")),
        "B does not list the dataset"
    );
    b.delete(added.cid).await?;
    anyhow::ensure!(
        b.list().await?.is_empty(),
        "B still lists a deleted dataset"
    );
    println!(
        "B listed the dataset, deleted it, and holds {} blocks",
        b.space().await?.total_blocks
    );

    // Encrypted: A keeps no key (it returns it once); B fetches ciphertext.
    let secret = Bytes::from("the plans for next year\n".repeat(1000));
    let source = futures::stream::iter([Ok::<_, std::io::Error>(secret.clone())]);
    let options = codex::node::UploadOptions {
        filename: Some("plans.txt".into()),
        ..Default::default()
    };
    let (sealed, key) = a
        .add_encrypted(source, options, codex::crypto::NewKey::Random)
        .await?;
    b.fetch(sealed.cid).await?;
    let held: Vec<Bytes> = b.read(sealed.cid).await?.stream.try_collect().await?;
    anyhow::ensure!(
        !held.concat().windows(9).any(|w| w == b"the plans"),
        "B holds plaintext"
    );
    let opened = b
        .decrypt(b.read(sealed.cid).await?, codex::crypto::Secret::Key(key))
        .await?;
    let name = opened.metadata.as_ref().and_then(|m| m.filename.clone());
    let read: Vec<Bytes> = opened.stream.try_collect().await?;
    anyhow::ensure!(read.concat() == secret, "decrypted bytes differ");
    println!(
        "B fetched the encrypted {} ({} bytes of ciphertext) and, with the key, read {:?}: {} bytes",
        sealed.cid,
        sealed.manifest.dataset_size,
        name.unwrap_or_default(),
        secret.len()
    );

    b.shutdown().await?;
    a.shutdown().await?;
    Ok(())
}
