//! Many nodes on loopback (issue 18): `CODEX_NODES` nodes (12 in the suite;
//! `scripts/many-nodes.sh` runs 50) on real TCP sockets in this process, joined through
//! the first one, each announcing `CODEX_DATASETS` datasets (100 in the suite; the
//! script 1 000). Then every node looks up `CODEX_LOOKUPS` keys (10) of other nodes,
//! picked at random, through the DHT: each lookup must name the node that announced
//! the key. Prints the announce time, p50/p95/max lookup times and the process's
//! memory per node.

use std::time::{Duration, Instant};

use codex_core::{Cid, codec};
use codex_net::{Multiaddr, Network, PeerId, ProviderConfig};
use futures::StreamExt;
use rand::{Rng, SeedableRng, rngs::StdRng};

mod common;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's resident memory (`VmRSS`) in MiB, where /proc tells it.
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn node(bootstrap: Vec<Multiaddr>) -> anyhow::Result<(Network, Multiaddr)> {
    // Announcing as fast as the peers take it: the rate limit is for a node's
    // background work, not for a test that waits for it.
    let providers = ProviderConfig {
        announce_rate: 5_000,
        announce_burst: 500,
        ..ProviderConfig::default()
    };
    common::dht_node(bootstrap, providers).await
}

/// Polls until `f` holds for every node, at most `limit`.
async fn wait_all<F, Fut>(
    nodes: &[Network],
    what: &str,
    limit: Duration,
    f: F,
) -> anyhow::Result<()>
where
    F: Fn(Network) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    for net in nodes {
        while !f(net.clone()).await? {
            anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_finds_the_providers_of_other_nodes_datasets() -> anyhow::Result<()> {
    let n = env_or("CODEX_NODES", 12).max(3);
    let datasets = env_or("CODEX_DATASETS", 100).max(1);
    let lookups = env_or("CODEX_LOOKUPS", 10).max(1);
    let rss_before = rss_mib();

    let started = Instant::now();
    let (first, first_addr) = node(vec![]).await?;
    let mut nodes = vec![first];
    for _ in 1..n {
        nodes.push(node(vec![first_addr.clone()]).await?.0);
    }
    wait_all(
        &nodes,
        "routing tables",
        Duration::from_secs(60),
        |net| async move { Ok(net.info().await?.routing_table.len() >= 2) },
    )
    .await?;
    let joined = started.elapsed();

    // Each node's datasets: manifest CIDs of its own seed.
    let keys: Vec<Vec<Cid>> = (0..n)
        .map(|i| {
            let mut rng = StdRng::seed_from_u64(i as u64);
            (0..datasets)
                .map(|_| Cid::from_sha256(codec::MANIFEST, rng.random()))
                .collect()
        })
        .collect();
    let announce_started = Instant::now();
    for (net, keys) in nodes.iter().zip(&keys) {
        net.provide_many(keys.clone()).await?;
    }
    // In one process on two cores an announcement costs about 30 ms of CPU (a walk
    // and 20 ADD_PROVIDER requests, both ends): 50 x 1 000 take about 20 minutes.
    let limit = Duration::from_secs(60 + (n * datasets / 10) as u64);
    wait_all(&nodes, "every announcement", limit, |net| async move {
        let s = net.provider_stats().await?;
        Ok(s.never_announced == 0 && s.announcing == 0)
    })
    .await?;
    let announce = announce_started.elapsed();
    for (net, keys) in nodes.iter().zip(&keys) {
        let s = net.provider_stats().await?;
        assert_eq!(s.provided, keys.len(), "{s:?}");
        assert!(s.announcements >= keys.len() as u64, "{s:?}");
    }
    let rss_announced = rss_mib();

    // Every node looks up keys of other nodes.
    let mut rng = StdRng::seed_from_u64(99);
    let ids: Vec<PeerId> = nodes.iter().map(Network::peer_id).collect();
    let mut asks = Vec::with_capacity(n * lookups);
    for i in 0..n {
        for _ in 0..lookups {
            let j = (i + rng.random_range(1..n)) % n;
            let key = keys[j][rng.random_range(0..datasets)];
            asks.push((i, j, key));
        }
    }
    let lookups_started = Instant::now();
    let results: Vec<_> = futures::stream::iter(asks)
        .map(|(i, j, key)| {
            let net = nodes[i].clone();
            async move {
                let t = Instant::now();
                let found = net.find_providers(key).await;
                (i, j, key, found, t.elapsed())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let all_lookups = lookups_started.elapsed();
    let mut times = Vec::with_capacity(results.len());
    let mut missed = Vec::new();
    for (i, j, key, found, took) in results {
        match found {
            Ok(found) if found.contains(&ids[j]) => times.push(took),
            other => missed.push(format!("node {i} looking for {key} of node {j}: {other:?}")),
        }
    }
    let rss_after = rss_mib();
    let asked = n * lookups;
    times.sort();
    let at = |q: usize| {
        times
            .get((times.len() * q / 100).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let per_node = |rss: Option<f64>| {
        rss.zip(rss_before)
            .map(|(r, b)| format!("{:.1}", (r - b) / n as f64))
            .unwrap_or_else(|| "?".into())
    };
    println!(
        "{n} nodes joined in {joined:.2?}; {} datasets ({datasets} a node) announced in \
         {announce:.2?}; {} of {asked} lookups found the provider in {all_lookups:.2?}: \
         p50 {:.2?}, p95 {:.2?}, max {:.2?}; memory per node {} MiB after announcing, {} \
         MiB after the lookups (process RSS {rss_before:?} -> {rss_after:?} MiB)",
        n * datasets,
        times.len(),
        at(50),
        at(95),
        at(100),
        per_node(rss_announced),
        per_node(rss_after),
    );
    assert!(
        missed.is_empty(),
        "{} missed:\n{}",
        missed.len(),
        missed.join("\n")
    );
    for net in nodes {
        net.shutdown().await;
    }
    Ok(())
}
