//! Bounded resources in the block exchange (issue 18): a peer that asks for blocks and
//! never reads its stream costs the serving node at most its byte budget and is dropped
//! after the write timeout, while an honest peer downloads from the same node.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codex_core::{Cid, Manifest};
use codex_net::message::{PROTOCOL, write_message};
use codex_net::{Download, ExchangeConfig, Multiaddr, Network, PeerId, libp2p_stream};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, noise, tcp, yamux};
use tokio::sync::oneshot;
use tokio::time::Instant;

mod common;
use common::{listen_addr, mem, node, put_dataset, random, want_blocks};

/// A raw libp2p client that speaks the block exchange's framing, accepts the node's
/// streams and never reads them.
struct Hog {
    peer: PeerId,
    control: libp2p_stream::Control,
    /// The node's streams to us, kept open and unread.
    unread: Arc<Mutex<Vec<libp2p::Stream>>>,
    /// When our last connection to the node closed.
    disconnected: Arc<Mutex<Option<Instant>>>,
}

impl Hog {
    async fn connect(node: Multiaddr) -> anyhow::Result<Hog> {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| libp2p_stream::Behaviour::new())?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let peer = *swarm.local_peer_id();
        let mut control = swarm.behaviour().new_control();
        let mut incoming = control.accept(StreamProtocol::new(PROTOCOL))?;
        let unread = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&unread);
        tokio::spawn(async move {
            while let Some((_, stream)) = incoming.next().await {
                keep.lock().expect("lock").push(stream);
            }
        });
        swarm.dial(node)?;
        let disconnected = Arc::new(Mutex::new(None));
        let closed = Arc::clone(&disconnected);
        let (connected, is_connected) = oneshot::channel();
        tokio::spawn(async move {
            let mut connected = Some(connected);
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        if let Some(c) = connected.take() {
                            let _ = c.send(());
                        }
                    }
                    SwarmEvent::ConnectionClosed {
                        num_established: 0, ..
                    } => {
                        *closed.lock().expect("lock") = Some(Instant::now());
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), is_connected).await??;
        Ok(Hog {
            peer,
            control,
            unread,
            disconnected,
        })
    }

    /// Sends `messages` want-lists of every block of `manifest` to `node`, then keeps
    /// the stream open.
    async fn want_everything(
        &mut self,
        node: PeerId,
        manifest: &Manifest,
        messages: usize,
    ) -> anyhow::Result<libp2p::Stream> {
        let mut s = self
            .control
            .open_stream(node, StreamProtocol::new(PROTOCOL))
            .await?;
        let msg = want_blocks(manifest.tree_cid, 0..manifest.blocks_count());
        for _ in 0..messages {
            write_message(&mut s, &msg, true).await?;
        }
        Ok(s)
    }
}

/// Samples what the node queues for `peer` every few milliseconds until stopped: the
/// most bytes and wants seen for it, and the most bytes for all peers.
struct Sampler {
    stop: Arc<AtomicBool>,
    peer_bytes: Arc<AtomicU64>,
    peer_wants: Arc<AtomicU64>,
    all_bytes: Arc<AtomicU64>,
}

impl Sampler {
    fn start(net: &Network, peer: PeerId) -> Sampler {
        let s = Sampler {
            stop: Arc::new(AtomicBool::new(false)),
            peer_bytes: Arc::new(AtomicU64::new(0)),
            peer_wants: Arc::new(AtomicU64::new(0)),
            all_bytes: Arc::new(AtomicU64::new(0)),
        };
        let ex = Arc::clone(net.exchange());
        let (stop, bytes, wants, all) = (
            Arc::clone(&s.stop),
            Arc::clone(&s.peer_bytes),
            Arc::clone(&s.peer_wants),
            Arc::clone(&s.all_bytes),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let q = ex.queued(&peer);
                bytes.fetch_max(q.bytes, Ordering::Relaxed);
                wants.fetch_max(q.wants, Ordering::Relaxed);
                all.fetch_max(
                    ex.stats.queued_bytes.load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        s
    }
}

/// Fetches `cid` from the peers `net` is connected to, into a fresh store: its bytes,
/// every block fetched, and when it was done.
async fn fetch(net: Network, cid: Cid) -> anyhow::Result<(Vec<u8>, Instant)> {
    let store = mem();
    let manifest = codex_net::fetch_manifest(&net, &store, cid).await?;
    let mut stream = Download::new(&net, Arc::clone(&store), &manifest)
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
    anyhow::ensure!(report.missing.is_empty(), "missing {:?}", report.missing);
    Ok((out, Instant::now()))
}

/// A peer wants every block of an 8 MiB dataset 20 times over (2560 wants, 160 MiB of
/// answers, under the flood limit of 4096) and never reads. The node holds at most its
/// 1 MiB budget for it, drops it (banned and disconnected) once a write has waited the
/// 3 s write timeout, and frees everything; an honest peer that starts downloading the
/// same dataset while the hog's queue is full gets it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_held_to_its_budget_and_dropped() -> anyhow::Result<()> {
    let cap: u64 = 1 << 20;
    let write_timeout = Duration::from_secs(3);
    let data = random(8 << 20, 18);
    let store = mem();
    let (cid, manifest) = put_dataset(&*store, &data).await?;
    let config = ExchangeConfig {
        max_queued_bytes_per_peer: cap as usize,
        write_timeout,
        ..ExchangeConfig::default()
    };
    let a = node(store, config.clone()).await?;
    let addr = listen_addr(&a).await?;

    let mut hog = Hog::connect(addr.clone()).await?;
    let sampler = Sampler::start(&a, hog.peer);
    let started = Instant::now();
    let _wants = hog.want_everything(a.peer_id(), &manifest, 20).await?;

    // The hog's queue fills up to its budget (a block's room short of it at most).
    let block_room = 65 << 10;
    while sampler.peer_bytes.load(Ordering::Relaxed) + block_room < cap {
        anyhow::ensure!(
            started.elapsed() < write_timeout,
            "the hog's queue never filled: at most {} bytes",
            sampler.peer_bytes.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::ensure!(
        !a.exchange().is_banned(&hog.peer),
        "the hog was dropped before its queue filled"
    );

    // Now an honest peer downloads the same dataset from the same node.
    let e = node(mem(), ExchangeConfig::default()).await?;
    e.dial(a.peer_id(), vec![addr]).await?;
    let download_started = Instant::now();
    let download = tokio::spawn(fetch(e.clone(), cid));

    // The hog is dropped once a write to it has waited the write timeout: banned,
    // disconnected on both sides.
    let dropped = loop {
        let connected = a.info().await?.connected.contains(&hog.peer);
        if a.exchange().is_banned(&hog.peer) && !connected {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < write_timeout + Duration::from_secs(10),
            "the hog was not dropped (banned {}, connected {connected})",
            a.exchange().is_banned(&hog.peer)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (got, done) = tokio::time::timeout(Duration::from_secs(30), download).await???;
    let download_took = done - download_started;
    assert!(got == data, "the honest peer got other bytes");

    // Everything held for the hog is freed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.exchange().stats.queued_bytes.load(Ordering::Relaxed) > 0
        || a.exchange().stats.queued_wants.load(Ordering::Relaxed) > 0
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "still queued after the drop: {} bytes, {} wants",
            a.exchange().stats.queued_bytes.load(Ordering::Relaxed),
            a.exchange().stats.queued_wants.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sampler.stop.store(true, Ordering::Relaxed);
    let stats = &a.exchange().stats;
    let (peer_bytes, peer_wants, all_bytes) = (
        sampler.peer_bytes.load(Ordering::Relaxed),
        sampler.peer_wants.load(Ordering::Relaxed),
        sampler.all_bytes.load(Ordering::Relaxed),
    );
    let peak = stats.peak_queued_bytes_per_peer.load(Ordering::Relaxed);
    let unread = hog.unread.lock().expect("lock").len();
    eprintln!(
        "hog dropped after {dropped:?}; at most {peer_bytes} bytes and {peer_wants} wants queued for it, \
         {all_bytes} bytes for all, peak per peer {peak}; {unread} unread streams; \
         honest download of {} bytes in {download_took:?}",
        data.len()
    );

    // (a) The memory held for the hog stayed within its budget, though it asked for
    // 160 MiB; its wants waited without blocks.
    assert!(peer_bytes <= cap, "{peer_bytes} bytes queued for the hog");
    assert!(peak <= cap, "{peak} bytes queued for one peer");
    assert!(
        all_bytes <= 2 * cap,
        "{all_bytes} bytes queued for two peers"
    );
    assert!(
        peer_wants * block_room > 4 * cap,
        "only {peer_wants} wants waited: the budget was not what held the hog back"
    );
    // Dropped for not reading, after the write timeout and not long after.
    assert_eq!(stats.write_timeouts.load(Ordering::Relaxed), 1);
    assert_eq!(stats.dropped_peers.load(Ordering::Relaxed), 1);
    assert!(dropped >= write_timeout, "dropped after {dropped:?}");
    assert!(
        dropped < write_timeout + Duration::from_secs(3),
        "dropped only after {dropped:?}"
    );
    assert!(unread > 0, "the node never opened its stream to the hog");
    let deadline = Instant::now() + Duration::from_secs(2);
    while hog.disconnected.lock().expect("lock").is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the hog's connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.exchange().queued(&hog.peer), Default::default());
    // (b) The honest peer was served alongside, while the hog held its full budget:
    // it had the whole dataset before the hog was dropped.
    assert!(!a.exchange().is_banned(&e.peer_id()));
    assert!(
        done < started + dropped,
        "the honest download took {download_took:?}, ending after the hog was dropped ({dropped:?})"
    );
    Ok(())
}
