//! What a node provides is kept next to its data (`DATA_DIR/provided`): a restarted
//! node provides its datasets again from the file, without reading the manifests, and
//! a deleted dataset stays withdrawn; without a usable file it announces from the
//! manifests, as before.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use codex::net::{Multiaddr, NetConfig, Network, Transports};
use codex::node::provided::FILE;
use codex::{Node, NodeConfig};
use codex_core::{Cid, codec};

async fn start(dir: &Path, bootstrap: Vec<Multiaddr>) -> anyhow::Result<Node> {
    Ok(Node::builder()
        .config(NodeConfig {
            data_dir: dir.to_path_buf(),
            network: Some(NetConfig {
                listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
                transports: Transports::TCP,
                bootstrap,
                ..NetConfig::default()
            }),
            ..NodeConfig::default()
        })
        .start()
        .await?)
}

fn net(node: &Node) -> anyhow::Result<&Network> {
    node.network()
        .ok_or_else(|| anyhow::anyhow!("the node has no network"))
}

/// Stores `bytes` as a dataset; its manifest and tree CIDs.
async fn add(node: &Node, bytes: Vec<u8>) -> anyhow::Result<[Cid; 2]> {
    let source = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
    let added = node.add(source, Default::default()).await?;
    Ok([added.cid, added.manifest.tree_cid])
}

async fn provided(node: &Node) -> anyhow::Result<HashSet<Cid>> {
    Ok(net(node)?.provided().await?.into_iter().collect())
}

/// Polls until `node` provides exactly `want` (announcing runs in the background).
async fn wait_provided(node: &Node, want: &HashSet<Cid>) -> anyhow::Result<()> {
    let mut got = HashSet::new();
    for _ in 0..100 {
        got = provided(node).await?;
        if got == *want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("provided {got:?}, want {want:?}")
}

/// The file as the node writes it: header, then a CID a line.
fn file_text(state: &str, keys: &[Cid]) -> String {
    let mut text = format!("codex-provided 1 {state} {}\n", keys.len());
    for k in keys {
        text.push_str(&format!("{k}\n"));
    }
    text
}

fn saved(dir: &Path) -> anyhow::Result<(String, HashSet<Cid>)> {
    let text = std::fs::read_to_string(dir.join(FILE))?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().to_string();
    let keys = lines.map(str::parse).collect::<Result<_, _>>()?;
    Ok((header, keys))
}

/// A node stores three datasets and deletes one, stops, and starts again with the same
/// data directory: it provides the two datasets (manifest and tree) at once, from the
/// file; a node that never met it finds it as their provider through the DHT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_provides_its_datasets_from_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("b");
    let b = start(&data, Vec::new()).await?;
    let one = add(&b, vec![1; 70_000]).await?;
    let two = add(&b, vec![2; 10]).await?;
    let three = add(&b, vec![3; 200_000]).await?;
    let kept: HashSet<Cid> = one.iter().chain(&two).copied().collect();
    wait_provided(&b, &kept.iter().chain(&three).copied().collect()).await?;
    b.delete(three[0]).await?;
    wait_provided(&b, &kept).await?;
    let peer = net(&b)?.peer_id();
    b.shutdown().await?;

    let (header, keys) = saved(&data)?;
    assert_eq!(header, "codex-provided 1 clean 4");
    assert_eq!(keys, kept);

    // Proof that the restart reads the file and not the manifests: a tree key no
    // manifest names is provided; a manifest the store lacks is dropped.
    let tree_only = Cid::from_sha256(codec::ROOT, [7; 32]);
    let gone = Cid::from_sha256(codec::MANIFEST, [8; 32]);
    let mut listed: Vec<Cid> = kept.iter().copied().collect();
    listed.extend([tree_only, gone]);
    std::fs::write(data.join(FILE), file_text("clean", &listed))?;

    let boot = start(&dir.path().join("boot"), Vec::new()).await?;
    let boot_addr = boot
        .addresses()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the bootstrap node listens nowhere"))?;
    let b = start(&data, vec![boot_addr]).await?;
    assert_eq!(net(&b)?.peer_id(), peer, "the key file keeps the peer id");
    // At once: the keys were handed to the network at its start.
    let want: HashSet<Cid> = kept.iter().copied().chain([tree_only]).collect();
    assert_eq!(provided(&b).await?, want);

    // `boot` never met `b` before this start: its record is from the new announcement.
    let mut found = Vec::new();
    for _ in 0..40 {
        found = net(&boot)?.find_providers(one[0]).await?;
        if found.contains(&peer) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(found.contains(&peer), "found {found:?}");

    b.shutdown().await?;
    boot.shutdown().await?;
    assert_eq!(saved(&data)?.1, want);
    Ok(())
}

/// A corrupt file is a warning: the node announces every stored dataset from its
/// manifest and writes a good file at shutdown. A file written while the node ran (it
/// did not stop cleanly) is used, and the manifests are announced as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_file_the_node_announces_from_the_manifests() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(dir.path(), Vec::new()).await?;
    let one = add(&node, vec![9; 100_000]).await?;
    let keys: HashSet<Cid> = one.into_iter().collect();
    wait_provided(&node, &keys).await?;
    node.shutdown().await?;

    for garbage in [
        &b"garbage\n"[..],
        b"codex-provided 1 clean 3\nnot-a-cid\n",
        b"\xff\xfe",
    ] {
        std::fs::write(dir.path().join(FILE), garbage)?;
        let node = start(dir.path(), Vec::new()).await?;
        wait_provided(&node, &keys).await?;
        node.shutdown().await?;
        let (header, saved_keys) = saved(dir.path())?;
        assert_eq!(header, "codex-provided 1 clean 2");
        assert_eq!(saved_keys, keys);
    }

    // The node died while running: what the file lists, and every manifest too.
    let extra = Cid::from_sha256(codec::ROOT, [5; 32]);
    std::fs::write(dir.path().join(FILE), file_text("running", &[extra]))?;
    let node = start(dir.path(), Vec::new()).await?;
    let all: HashSet<Cid> = keys.iter().copied().chain([extra]).collect();
    wait_provided(&node, &all).await?;
    node.shutdown().await?;
    assert_eq!(saved(dir.path())?.1, all);

    // No file at all: the manifests, as before.
    std::fs::remove_file(dir.path().join(FILE))?;
    let node = start(dir.path(), Vec::new()).await?;
    wait_provided(&node, &keys).await?;
    node.shutdown().await?;
    assert_eq!(saved(dir.path())?.1, keys);
    Ok(())
}
