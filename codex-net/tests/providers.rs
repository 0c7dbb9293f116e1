//! Provider records at scale, on real swarms on loopback: a node announces thousands of
//! keys, a node that knows only a bootstrap node finds them; records held for other
//! peers are bounded and expire unless announced again.

use std::time::{Duration, Instant};

use codex_core::{Cid, codec};
use codex_net::{Network, ProviderConfig, ProviderStats};
use futures::StreamExt;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

mod common;
use common::dht_node as node;

/// `n` distinct manifest CIDs from `seed`.
fn keys(n: usize, seed: u64) -> Vec<Cid> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| Cid::from_sha256(codec::MANIFEST, rng.random()))
        .collect()
}

/// Polls `net`'s provider stats until `done` holds, at most `limit`.
async fn wait_stats(
    net: &Network,
    limit: Duration,
    done: impl Fn(&ProviderStats) -> bool,
) -> anyhow::Result<ProviderStats> {
    let deadline = Instant::now() + limit;
    loop {
        let s = net.provider_stats().await?;
        if done(&s) {
            return Ok(s);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out at {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `net` has a peer in its routing table.
async fn wait_routing(net: &Network) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while net.info().await?.routing_table.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "no peer in the routing table");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The process's memory (`VmRSS`, `VmHWM`) in MiB, where /proc tells it.
fn memory_mib() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A announces 5 000 keys (a node with 2 500 datasets; the default store refused past
/// 1 024); C, bootstrapped from B only, finds A as a provider of each of 200 keys
/// sampled at random. B holds all 5 000 of A's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_keys_are_announced_and_found_through_a_bootstrap_node() -> anyhow::Result<()>
{
    const KEYS: usize = 5_000;
    const SAMPLE: usize = 200;
    let fast = ProviderConfig {
        announce_rate: 2_000,
        announce_burst: 100,
        ..ProviderConfig::default()
    };
    let mem_before = memory_mib();
    let (b, b_addr) = node(vec![], ProviderConfig::default()).await?;
    let (a, _) = node(vec![b_addr.clone()], fast).await?;
    wait_routing(&a).await?;

    let cids = keys(KEYS, 7);
    let started = Instant::now();
    a.provide_many(cids.clone()).await?;
    let stats = wait_stats(&a, Duration::from_secs(40), |s| {
        s.never_announced == 0 && s.announcing == 0
    })
    .await?;
    let announce = started.elapsed();
    assert_eq!(stats.provided, KEYS);
    assert!(stats.announcements >= KEYS as u64, "{stats:?}");
    let mut provided = a.provided().await?;
    provided.sort();
    let mut expected = cids.clone();
    expected.sort();
    assert_eq!(provided, expected, "the set A owns");
    let held = b.provider_stats().await?.records;
    assert_eq!(held, KEYS, "B holds every record of A");

    // C knows only B.
    let (c, _) = node(vec![b_addr], ProviderConfig::default()).await?;
    wait_routing(&c).await?;
    let mut sample = cids.clone();
    sample.shuffle(&mut StdRng::seed_from_u64(8));
    sample.truncate(SAMPLE);
    let lookups_started = Instant::now();
    let results: Vec<(Cid, anyhow::Result<Vec<_>>, Duration)> =
        futures::stream::iter(sample.iter().copied())
            .map(|cid| {
                let c = c.clone();
                async move {
                    let t = Instant::now();
                    let found = c.find_providers(cid).await.map_err(anyhow::Error::from);
                    (cid, found, t.elapsed())
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
    let lookups = lookups_started.elapsed();
    let mut times = Vec::new();
    for (cid, found, took) in results {
        let found = found?;
        assert!(found.contains(&a.peer_id()), "{cid}: {found:?}");
        times.push(took);
    }
    assert_eq!(times.len(), SAMPLE);
    times.sort();
    let mem_after = memory_mib();
    println!(
        "{KEYS} keys announced in {announce:.2?} ({:.0}/s); {SAMPLE} of {SAMPLE} found in \
         {lookups:.2?}, p50 {:.2?}, p95 {:.2?}; the test process (three nodes) RSS \
         {mem_before:?} -> {mem_after:?} MiB (rss, peak)",
        KEYS as f64 / announce.as_secs_f64(),
        times[SAMPLE / 2],
        times[SAMPLE * 95 / 100],
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
    Ok(())
}

/// B keeps at most its `max_records` of other peers' records; A's announcements go on
/// (B refuses quietly) and A's keys can still be found at A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_held_for_other_peers_are_bounded() -> anyhow::Result<()> {
    let small = ProviderConfig {
        max_records: 100,
        ..ProviderConfig::default()
    };
    let (b, b_addr) = node(vec![], small).await?;
    let fast = ProviderConfig {
        announce_rate: 1_000,
        announce_burst: 100,
        ..ProviderConfig::default()
    };
    let (a, _) = node(vec![b_addr.clone()], fast).await?;
    wait_routing(&a).await?;
    let cids = keys(300, 9);
    a.provide_many(cids.clone()).await?;
    wait_stats(&a, Duration::from_secs(20), |s| {
        s.never_announced == 0 && s.announcing == 0
    })
    .await?;
    assert_eq!(b.provider_stats().await?.records, 100);
    let (c, _) = node(vec![b_addr], ProviderConfig::default()).await?;
    wait_routing(&c).await?;
    // The last key announced is not at B; C finds it at A, which B points to.
    let last = cids[299];
    let found = c.find_providers(last).await?;
    assert_eq!(found, vec![a.peer_id()]);
    Ok(())
}

/// Records at B live `record_ttl` (2 s) after they were last announced: keys A keeps
/// providing are announced again (every 500 ms) and stay, keys A stopped providing
/// expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_expire_unless_announced_again() -> anyhow::Result<()> {
    let short = ProviderConfig {
        reprovide_interval: Duration::from_millis(500),
        record_ttl: Duration::from_secs(2),
        announce_rate: 1_000,
        announce_burst: 100,
        ..ProviderConfig::default()
    };
    let (b, b_addr) = node(vec![], short).await?;
    let (a, _) = node(vec![b_addr], short).await?;
    wait_routing(&a).await?;
    let kept = keys(20, 10);
    let dropped = keys(20, 11);
    a.provide_many(kept.iter().chain(&dropped).copied().collect())
        .await?;
    wait_stats(&b, Duration::from_secs(10), |s| s.records == 40).await?;
    for cid in &dropped {
        a.unprovide(*cid).await?;
    }
    let unprovided = Instant::now();
    // The dropped ones go within 2 s of their last announcement; the kept ones stay.
    let s = wait_stats(&b, Duration::from_secs(5), |s| s.records == 20).await?;
    assert!(unprovided.elapsed() < Duration::from_millis(2_500), "{s:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        b.provider_stats().await?.records,
        20,
        "kept alive by reprovides"
    );
    let a_stats = a.provider_stats().await?;
    assert_eq!(a_stats.provided, 20);
    assert!(
        a_stats.announcements >= 40 + 20 * 6,
        "every 500 ms for over 3 s: {a_stats:?}"
    );
    Ok(())
}
