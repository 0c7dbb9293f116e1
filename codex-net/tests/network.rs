//! Several real libp2p nodes on loopback, each with its own store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use codex_core::{Block, BlockRead, BlockStore, Cid, CodexProof, LeafMeta, Manifest};
use codex_net::message::{Entry, Message, PROTOCOL, WantList, WantType, write_message};
use codex_net::{Download, FetchOptions, Network, Transports};
use codex_store::{MemoryStore, StoreConfig};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{Multiaddr, StreamProtocol};

mod common;
use common::{listen_addr, mem, put_dataset, random, want_blocks};

struct TestNode {
    net: Network,
    store: Arc<dyn BlockStore>,
    addr: Multiaddr,
}

async fn node(store: Arc<dyn BlockStore>, bootstrap: Vec<Multiaddr>) -> anyhow::Result<TestNode> {
    let (net, addr) = serving(Arc::clone(&store), bootstrap).await?;
    Ok(TestNode { net, store, addr })
}

/// A network on loopback TCP that serves `store`, and its address.
async fn serving(
    store: impl BlockRead + 'static,
    bootstrap: Vec<Multiaddr>,
) -> anyhow::Result<(Network, Multiaddr)> {
    let net = Network::builder(store)
        .transports(Transports::TCP)
        .listen(["/ip4/127.0.0.1/tcp/0".parse()?])
        .bootstrap(bootstrap)
        .start()
        .await?;
    let addr = listen_addr(&net).await?;
    Ok((net, addr))
}

/// Downloads `cid` through `net` into `store`, collecting the streamed bytes.
async fn download(n: &TestNode, cid: Cid) -> anyhow::Result<(Vec<u8>, codex_net::FetchReport)> {
    let manifest = codex_net::fetch_manifest(&n.net, &n.store, cid).await?;
    let mut stream = Download::new(&n.net, Arc::clone(&n.store), &manifest)
        .cid(cid)
        .stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    let report = stream
        .report()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the stream ended without a report"))?;
    Ok((out, report))
}

async fn provide(net: &Network, cid: Cid, m: &Manifest) -> anyhow::Result<()> {
    net.provide(cid).await?;
    net.provide(m.tree_cid).await?;
    Ok(())
}

/// A store that damages every block it serves as a leaf.
#[derive(Debug)]
struct Corrupting(MemoryStore);

#[async_trait]
impl BlockRead for Corrupting {
    async fn get_block(&self, c: &Cid) -> codex_core::Result<Block> {
        self.0.get_block(c).await
    }
    async fn get_leaf(&self, t: &Cid, i: u64) -> codex_core::Result<(Block, CodexProof)> {
        let (b, p) = self.0.get_leaf(t, i).await?;
        let mut data = b.data().to_vec();
        data[0] ^= 1;
        Ok((Block::new_unchecked(*b.cid(), Bytes::from(data)), p))
    }
    async fn get_leaf_meta(&self, t: &Cid, i: u64) -> codex_core::Result<LeafMeta> {
        self.0.get_leaf_meta(t, i).await
    }
    async fn has_block(&self, c: &Cid) -> codex_core::Result<bool> {
        self.0.has_block(c).await
    }
    async fn has_leaf(&self, t: &Cid, i: u64) -> codex_core::Result<bool> {
        self.0.has_leaf(t, i).await
    }
}

/// Five nodes: A uploads, C serves corrupted blocks, D is killed mid-download, E knows
/// only the bootstrap node B, finds the providers through the DHT and downloads
/// byte-identical data; an interrupted download resumes without refetching.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_dht_discovery_bad_peers_and_resume() -> anyhow::Result<()> {
    let data = random(3 << 20, 1);
    let b = node(mem(), vec![]).await?;
    let a = node(mem(), vec![b.addr.clone()]).await?;
    let (cid, manifest) = put_dataset(&*a.store, &data).await?;
    let evil_store = Arc::new(Corrupting(MemoryStore::new(StoreConfig::default())));
    put_dataset(&evil_store.0, &data).await?;
    let (c, _) = serving(evil_store, vec![b.addr.clone()]).await?;
    let d = node(mem(), vec![b.addr.clone()]).await?;
    put_dataset(&*d.store, &data).await?;
    for n in [&a.net, &c, &d.net] {
        provide(n, cid, &manifest).await?;
    }

    // `provide` only hands the record to the swarm, and a lookup returns the first
    // answer that names providers: ask until all three are known (or give up).
    let e = node(mem(), vec![b.addr.clone()]).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let providers = loop {
        let found = e.net.find_providers(manifest.tree_cid).await?;
        if found.len() >= 3 || tokio::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        providers.len() >= 3,
        "providers found through the DHT within 20 s: {providers:?}"
    );

    // Kill D shortly after the download starts.
    let d_net = d.net.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        d_net.shutdown().await;
    });
    let (got, report) = download(&e, cid).await?;
    assert!(got == data, "downloaded bytes differ");
    assert_eq!(report.fetched, manifest.blocks_count());
    assert!(report.missing.is_empty());
    assert!(
        e.net.exchange().is_banned(&c.peer_id()),
        "the corrupting peer was dropped"
    );
    assert!(
        e.net
            .exchange()
            .stats
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    // Resume: a fresh node fetches part, is interrupted, then completes without refetching.
    let f = node(mem(), vec![b.addr.clone()]).await?;
    let m2 = codex_net::fetch_manifest(&f.net, &f.store, cid).await?;
    let opts = FetchOptions {
        window: 4,
        max_ahead: 8,
        ..FetchOptions::default()
    };
    let mut first = Download::new(&f.net, Arc::clone(&f.store), &m2)
        .cid(cid)
        .options(opts)
        .stream();
    for _ in 0..10 {
        first
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("ended early"))??;
    }
    drop(first);
    let (got, report) = download(&f, cid).await?;
    assert!(got == data);
    assert!(
        report.present >= 10,
        "resumed with {} blocks present",
        report.present
    );
    assert_eq!(report.present + report.fetched, manifest.blocks_count());
    Ok(())
}

/// Garbage, an oversized frame and a want-list flood get the sender dropped, and the
/// node keeps serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_peers_are_dropped_and_the_node_keeps_serving() -> anyhow::Result<()> {
    let data = random(1 << 20, 2);
    let a = node(mem(), vec![]).await?;
    let (cid, manifest) = put_dataset(&*a.store, &data).await?;
    let protocol = StreamProtocol::new(PROTOCOL);

    // 1. An oversized length prefix.
    let x = node(mem(), vec![a.addr.clone()]).await?;
    x.net.dial(a.net.peer_id(), vec![a.addr.clone()]).await?;
    let mut s = x
        .net
        .control()
        .open_stream(a.net.peer_id(), protocol.clone())
        .await?;
    let mut frame = Vec::new();
    prost::encoding::encode_varint(200 << 20, &mut frame);
    s.write_all(&frame).await?;
    s.flush().await?;
    // 2. A well-framed body that is not a message.
    let y = node(mem(), vec![a.addr.clone()]).await?;
    y.net.dial(a.net.peer_id(), vec![a.addr.clone()]).await?;
    let mut s = y
        .net
        .control()
        .open_stream(a.net.peer_id(), protocol.clone())
        .await?;
    s.write_all(&[4, 0x0a, 0x05, 0x0a, 0x01]).await?;
    s.flush().await?;
    // 3. A flood of want-lists.
    let z = node(mem(), vec![a.addr.clone()]).await?;
    z.net.dial(a.net.peer_id(), vec![a.addr.clone()]).await?;
    let mut s = z
        .net
        .control()
        .open_stream(a.net.peer_id(), protocol)
        .await?;
    for round in 0..6u64 {
        let msg = want_blocks(
            manifest.tree_cid,
            (0..1000u64).map(|i| (round * 1000 + i) % 16),
        );
        if write_message(&mut s, &msg, true).await.is_err() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for bad in [&x, &y, &z] {
        assert!(
            a.net.exchange().is_banned(&bad.net.peer_id()),
            "abusive peer not dropped"
        );
    }

    // An honest peer still gets the dataset.
    let e = node(mem(), vec![a.addr.clone()]).await?;
    a.net.provide(cid).await?;
    a.net.provide(manifest.tree_cid).await?;
    e.net.dial(a.net.peer_id(), vec![a.addr.clone()]).await?;
    let (got, _) = download(&e, cid).await?;
    assert!(got == data);
    Ok(())
}

/// One message with more want-list entries than the limit (1024, as Codex batches) gets
/// the sender dropped and disconnected, while a message at the limit is served, and the
/// node keeps serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_want_list_over_the_entry_limit_gets_the_sender_dropped() -> anyhow::Result<()> {
    let data = random(1 << 20, 3);
    let a = node(mem(), vec![]).await?;
    let (cid, manifest) = put_dataset(&*a.store, &data).await?;
    let limit = codex_net::ExchangeConfig::default().max_entries_per_message;
    assert_eq!(limit, 1024);
    let message = |entries: usize| Message {
        wantlist: WantList {
            entries: (0..entries as u64)
                .map(|i| Entry {
                    address: codex_core::BlockAddress::Leaf {
                        tree: manifest.tree_cid,
                        index: i % manifest.blocks_count(),
                    },
                    priority: 0,
                    cancel: false,
                    want_type: WantType::WantHave,
                    send_dont_have: false,
                })
                .collect(),
            full: false,
        },
        ..Message::default()
    };
    let protocol = StreamProtocol::new(PROTOCOL);
    let open = |n: &TestNode| {
        let (net, a_id, a_addr, protocol) = (
            n.net.clone(),
            a.net.peer_id(),
            a.addr.clone(),
            protocol.clone(),
        );
        async move {
            net.dial(a_id, vec![a_addr]).await?;
            anyhow::Ok(net.control().open_stream(a_id, protocol).await?)
        }
    };

    // At the limit: served, not dropped.
    let ok = node(mem(), vec![]).await?;
    let mut s = open(&ok).await?;
    write_message(&mut s, &message(limit), true).await?;
    // One entry over: dropped and disconnected.
    let bad = node(mem(), vec![]).await?;
    let mut s = open(&bad).await?;
    write_message(&mut s, &message(limit + 1), true).await?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let connected = a.net.info().await?.connected;
        if a.net.exchange().is_banned(&bad.net.peer_id()) && !connected.contains(&bad.net.peer_id())
        {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "a sender of {} entries was not dropped (banned: {}, connected: {})",
            limit + 1,
            a.net.exchange().is_banned(&bad.net.peer_id()),
            connected.contains(&bad.net.peer_id())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !a.net.exchange().is_banned(&ok.net.peer_id()),
        "a message at the limit got its sender dropped"
    );
    assert_eq!(
        a.net
            .exchange()
            .stats
            .dropped_peers
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // The node keeps serving: an honest peer downloads the dataset.
    let e = node(mem(), vec![a.addr.clone()]).await?;
    e.net.dial(a.net.peer_id(), vec![a.addr.clone()]).await?;
    let (got, report) = download(&e, cid).await?;
    assert!(got == data);
    assert!(report.missing.is_empty());
    Ok(())
}
