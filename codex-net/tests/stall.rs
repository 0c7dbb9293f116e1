//! Peers that stall (issue 9): they speak the block exchange and take want-lists, but
//! stop delivering while keeping the connection open.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use codex_core::{Block, BlockRead, BlockStore, Cid, CodexProof, LeafMeta, Manifest};
use codex_net::{Download, Error, ExchangeConfig, FetchOptions, FetchReport, Network};
use codex_store::{MemoryStore, StoreConfig};
use futures::StreamExt;
use tokio::time::Instant;

mod common;
use common::{listen_addr, mem, node, put_dataset, random};

/// Fetches the whole of `manifest` through `net` into `store`, collecting the streamed
/// bytes; the first error on the output ends the collection.
async fn download(
    net: &Network,
    store: &Arc<dyn BlockStore>,
    cid: Cid,
    manifest: &Manifest,
    options: FetchOptions,
) -> (Vec<u8>, Option<Error>, codex_net::Result<FetchReport>) {
    let mut stream = Download::new(net, Arc::clone(store), manifest)
        .cid(cid)
        .options(options)
        .stream();
    let mut out = Vec::new();
    let mut error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => out.extend_from_slice(&c),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    // The stream ends with the download's error, or has its report.
    let report = match &error {
        Some(Error::Unavailable(what)) => Err(Error::Unavailable(what.clone())),
        Some(e) => Err(Error::Libp2p(e.to_string())),
        None => stream
            .report()
            .cloned()
            .ok_or_else(|| Error::Libp2p("the stream ended without a report".into())),
    };
    (out, error, report)
}

/// A store that serves its first `deliver` leaves and then never answers a leaf again
/// (the want is taken, the connection stays open, nothing comes back). Presences and
/// the manifest are still answered.
#[derive(Debug)]
struct Stalling {
    inner: MemoryStore,
    deliver: u64,
    asked: AtomicU64,
}

impl Stalling {
    fn new(deliver: u64) -> Self {
        Stalling {
            inner: MemoryStore::new(StoreConfig::default()),
            deliver,
            asked: AtomicU64::new(0),
        }
    }
    fn delivered(&self) -> u64 {
        self.asked.load(Ordering::Relaxed).min(self.deliver)
    }
    fn swallowed(&self) -> u64 {
        self.asked
            .load(Ordering::Relaxed)
            .saturating_sub(self.deliver)
    }
}

#[async_trait]
impl BlockRead for Stalling {
    async fn get_block(&self, c: &Cid) -> codex_core::Result<Block> {
        self.inner.get_block(c).await
    }
    async fn get_leaf(&self, t: &Cid, i: u64) -> codex_core::Result<(Block, CodexProof)> {
        if self.asked.fetch_add(1, Ordering::Relaxed) < self.deliver {
            return self.inner.get_leaf(t, i).await;
        }
        std::future::pending().await
    }
    async fn get_leaf_meta(&self, t: &Cid, i: u64) -> codex_core::Result<LeafMeta> {
        self.inner.get_leaf_meta(t, i).await
    }
    async fn has_block(&self, c: &Cid) -> codex_core::Result<bool> {
        self.inner.has_block(c).await
    }
    async fn has_leaf(&self, t: &Cid, i: u64) -> codex_core::Result<bool> {
        self.inner.has_leaf(t, i).await
    }
}

/// What [`stalled_mid_transfer`] saw.
struct Stalled {
    elapsed: Duration,
    request_timeout: Duration,
    blocks: u64,
    stalling: Arc<Stalling>,
    a_served: u64,
    report: FetchReport,
    a: Network,
}

/// S delivers 4 blocks and then goes silent with the connection open; A is honest. E
/// downloads from both, hedging as `hedge` says. The download completes byte-identical,
/// and every block S swallowed is asked of A.
async fn stalled_mid_transfer(hedge: bool) -> anyhow::Result<Stalled> {
    let data = random(3 << 20, 11);
    let request_timeout = Duration::from_millis(1500);
    let a_store = mem();
    let (cid, manifest) = put_dataset(&*a_store, &data).await?;
    let a = node(a_store, ExchangeConfig::default()).await?;
    let stalling = Arc::new(Stalling::new(4));
    put_dataset(&stalling.inner, &data).await?;
    let s = node(Arc::clone(&stalling), ExchangeConfig::default()).await?;
    let e_store = mem();
    let e = node(
        Arc::clone(&e_store),
        ExchangeConfig {
            request_timeout,
            ..ExchangeConfig::default()
        },
    )
    .await?;
    e.dial(a.peer_id(), vec![listen_addr(&a).await?]).await?;
    e.dial(s.peer_id(), vec![listen_addr(&s).await?]).await?;

    let options = FetchOptions {
        stall_timeout: Duration::from_secs(8),
        hedge,
        ..FetchOptions::default()
    };
    let started = Instant::now();
    let run = download(&e, &e_store, cid, &manifest, options);
    let (got, error, report) = tokio::time::timeout(Duration::from_secs(20), run).await?;
    let elapsed = started.elapsed();
    assert!(error.is_none(), "the output failed: {error:?}");
    let report = report?;
    assert!(got == data, "downloaded bytes differ");
    assert_eq!(report.fetched, manifest.blocks_count());
    assert!(report.missing.is_empty(), "missing {:?}", report.missing);

    let blocks = manifest.blocks_count();
    let a_served = a.exchange().stats.served.load(Ordering::Relaxed);
    eprintln!(
        "{blocks} blocks in {elapsed:?}: S delivered {}, swallowed {}; A served {a_served}; {:?}",
        stalling.delivered(),
        stalling.swallowed(),
        report.peers
    );
    assert_eq!(stalling.delivered(), 4, "S served its first blocks");
    assert!(
        stalling.swallowed() > 0,
        "the test did not make S stall (asked {} times)",
        stalling.swallowed() + stalling.delivered()
    );
    assert!(
        a_served >= blocks - stalling.delivered(),
        "A served {a_served} of the {blocks} blocks, S {}: the stalled ones were not re-requested",
        stalling.delivered()
    );
    // Penalised: S was not asked for every block.
    assert!(
        stalling.swallowed() + stalling.delivered() < blocks,
        "S was asked {} times for {blocks} blocks",
        stalling.swallowed() + stalling.delivered()
    );
    // A timeout is not misbehaviour: S is slow, not banned.
    assert!(!e.exchange().is_banned(&s.peer_id()));
    Ok(Stalled {
        elapsed,
        request_timeout,
        blocks,
        stalling,
        a_served,
        report,
        a,
    })
}

/// Without hedging, the blocks S swallowed are asked of A once their requests time
/// out, and no later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stalls_mid_transfer_is_bypassed_after_the_timeout() -> anyhow::Result<()> {
    let out = stalled_mid_transfer(false).await?;
    let (elapsed, request_timeout) = (out.elapsed, out.request_timeout);
    // The stalled requests waited out their timeout, and no more: they were asked of A
    // right after it, not after the stall timeout.
    assert!(elapsed >= request_timeout, "done in {elapsed:?}");
    assert!(
        elapsed < request_timeout * 4,
        "took {elapsed:?} with a request timeout of {request_timeout:?}"
    );
    let hedged: u64 = out.report.peers.iter().map(|p| p.hedged).sum();
    assert_eq!(hedged, 0);
    Ok(())
}

/// With hedging (the default), the blocks S swallowed are asked of A as well once A
/// has nothing else to do and S is late: the download ends before the requests to S
/// time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stalls_mid_transfer_is_hedged_before_the_timeout() -> anyhow::Result<()> {
    let out = stalled_mid_transfer(true).await?;
    assert!(
        out.elapsed < out.request_timeout,
        "took {:?}: the requests to S timed out ({:?}) instead of being hedged",
        out.elapsed,
        out.request_timeout
    );
    let a = out
        .report
        .peers
        .iter()
        .find(|p| p.peer == out.a.peer_id())
        .ok_or_else(|| anyhow::anyhow!("no report of A"))?;
    assert!(a.hedged > 0, "A took S's late requests: {a:?}");
    let from_s: u64 = out
        .report
        .peers
        .iter()
        .filter(|p| p.peer != out.a.peer_id())
        .map(|p| p.delivered)
        .sum();
    assert!(from_s <= out.stalling.delivered());
    assert_eq!(
        a.delivered + from_s,
        out.blocks,
        "A delivered all S did not ({} served)",
        out.a_served
    );
    Ok(())
}

/// S is the only source and never delivers a block. With a request timeout longer than
/// the stall timeout the download ends, within the stall timeout, with a typed error on
/// the output (and, without an output, a report naming every block as missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_whose_only_source_stalls_ends_within_the_stall_timeout() -> anyhow::Result<()> {
    let data = random(1 << 20, 12);
    let stalling = Arc::new(Stalling::new(0));
    let (cid, manifest) = put_dataset(&stalling.inner, &data).await?;
    let s = node(Arc::clone(&stalling), ExchangeConfig::default()).await?;
    let e_store = mem();
    let e = node(
        Arc::clone(&e_store),
        ExchangeConfig {
            request_timeout: Duration::from_secs(30),
            ..ExchangeConfig::default()
        },
    )
    .await?;
    e.dial(s.peer_id(), vec![listen_addr(&s).await?]).await?;
    // The manifest itself is served.
    let fetched = codex_net::fetch_manifest(&e, &e_store, cid).await?;
    assert_eq!(fetched, manifest);

    let stall_timeout = Duration::from_secs(2);
    let options = FetchOptions {
        stall_timeout,
        ..FetchOptions::default()
    };
    let started = Instant::now();
    let run = download(&e, &e_store, cid, &manifest, options.clone());
    let (got, error, report) = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| anyhow::anyhow!("the download hung past the stall timeout"))?;
    let elapsed = started.elapsed();
    assert!(
        got.is_empty(),
        "{} bytes from a peer that sends none",
        got.len()
    );
    assert!(
        matches!(error, Some(Error::Unavailable(_))),
        "output ended with {error:?}"
    );
    assert!(matches!(report, Err(Error::Unavailable(_))), "{report:?}");
    assert!(stalling.swallowed() > 0);
    assert!(
        elapsed < stall_timeout + Duration::from_secs(2),
        "gave up after {elapsed:?}, stall timeout {stall_timeout:?}"
    );

    // Without an output: a report of the missing blocks.
    let started = Instant::now();
    let run = Download::new(&e, Arc::clone(&e_store), &manifest)
        .cid(cid)
        .options(options)
        .run();
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| anyhow::anyhow!("the download hung past the stall timeout"))??;
    let elapsed = started.elapsed();
    assert_eq!(report.fetched, 0);
    assert_eq!(
        report.missing,
        (0..manifest.blocks_count()).collect::<Vec<_>>()
    );
    assert!(
        elapsed < stall_timeout + Duration::from_secs(2),
        "{elapsed:?}"
    );
    Ok(())
}
