//! Provider records at full scale, on loopback: an announcer process (A) provides
//! `--keys` keys (default 100 000); a bootstrap node (B) and a searcher (C) that knows
//! only B run in this process; C looks up `--sample` keys (default 1 000) drawn at
//! random and must find A for each.
//!
//! ```text
//! flock /tmp/cargo.lock cargo run -p codex-net --example provider_scale -- \
//!     [--keys 100000] [--sample 1000] [--rate 5000] [--at-once 64] [--parallel 16]
//! ```
//!
//! Prints the announce time and rate, the lookups' success rate and p50 / p95 / max
//! times, A's memory (its own process: RSS before and after, peak) and B's records.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use codex_core::{BlockRead, Cid, codec};
use codex_net::{Multiaddr, Network, ProviderConfig, Transports};
use codex_store::{MemoryStore, StoreConfig};
use futures::StreamExt;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

const SEED: u64 = 2026;

struct Args {
    keys: usize,
    sample: usize,
    rate: u32,
    at_once: usize,
    parallel: usize,
    /// Set in the announcer process: B's address.
    announcer_of: Option<Multiaddr>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        keys: 100_000,
        sample: 1_000,
        rate: 5_000,
        at_once: 64,
        parallel: 16,
        announcer_of: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--keys" => a.keys = value.parse()?,
            "--sample" => a.sample = value.parse()?,
            "--rate" => a.rate = value.parse()?,
            "--at-once" => a.at_once = value.parse()?,
            "--parallel" => a.parallel = value.parse()?,
            "--announcer-of" => a.announcer_of = Some(value.parse()?),
            _ => bail!("unknown flag {flag}"),
        }
    }
    ensure!(a.sample <= a.keys, "--sample is more than --keys");
    Ok(a)
}

fn keys(n: usize) -> Vec<Cid> {
    let mut rng = StdRng::seed_from_u64(SEED);
    (0..n)
        .map(|_| Cid::from_sha256(codec::MANIFEST, rng.random()))
        .collect()
}

/// `VmRSS` and `VmHWM` of process `pid` ("self" for this one), in MiB.
fn memory_mib(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn node(
    bootstrap: Vec<Multiaddr>,
    providers: ProviderConfig,
) -> anyhow::Result<(Network, Multiaddr)> {
    let store: Arc<dyn BlockRead> = Arc::new(MemoryStore::new(StoreConfig::default()));
    let net = Network::builder(store)
        .transports(Transports::TCP)
        .listen(["/ip4/127.0.0.1/tcp/0".parse()?])
        .bootstrap(bootstrap)
        .providers(providers)
        .start()
        .await?;
    let addr = net
        .addresses()
        .await?
        .into_iter()
        .next()
        .context("no listen address")?;
    Ok((net, addr))
}

async fn wait_routing(net: &Network) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while net.info().await?.routing_table.is_empty() {
        ensure!(Instant::now() < deadline, "no peer in the routing table");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The announcer: provides the keys, reports on stdout, stays up until stdin closes.
async fn announcer(a: &Args, bootstrap: Multiaddr) -> anyhow::Result<()> {
    let config = ProviderConfig {
        announce_rate: a.rate,
        announce_burst: a.rate.min(1_000),
        max_announcing: a.at_once,
        ..ProviderConfig::default()
    };
    let (net, _) = node(vec![bootstrap], config).await?;
    wait_routing(&net).await?;
    let cids = keys(a.keys);
    let (rss_before, _) = memory_mib("self");
    let started = Instant::now();
    net.provide_many(cids).await?;
    let stats = loop {
        let s = net.provider_stats().await?;
        if s.never_announced == 0 && s.announcing == 0 {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed().as_secs_f64();
    let (rss, peak) = memory_mib("self");
    println!(
        "ANNOUNCED {} {took:.3} {} {} {rss_before:.1} {rss:.1} {peak:.1}",
        net.peer_id(),
        stats.announcements,
        stats.failures
    );
    std::io::stdout().flush()?;
    // Until the parent is done (it closes our stdin).
    tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await?;
    net.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    if let Some(b) = a.announcer_of.clone() {
        return announcer(&a, b).await;
    }
    let (b, b_addr) = node(vec![], ProviderConfig::default()).await?;
    println!("B {b_addr}; starting the announcer of {} keys", a.keys);
    let (b_rss_before, _) = memory_mib("self");
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--keys",
            &a.keys.to_string(),
            "--rate",
            &a.rate.to_string(),
            "--at-once",
            &a.at_once.to_string(),
            "--sample",
            "0",
            "--announcer-of",
            &b_addr.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("the announcer's stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .find(|l| l.as_ref().map_or(true, |l| l.starts_with("ANNOUNCED")))
    })
    .await?
    .context("the announcer ended without announcing")??;
    let f: Vec<&str> = line.split_whitespace().collect();
    ensure!(f.len() == 8, "unexpected: {line}");
    let a_peer: codex_net::PeerId = f[1].parse()?;
    let took: f64 = f[2].parse()?;
    println!(
        "A announced {} keys in {took:.1} s ({:.0}/s; {} announcements, {} failed); A's RSS \
         {} MiB before, {} MiB after, peak {} MiB",
        a.keys,
        a.keys as f64 / took,
        f[3],
        f[4],
        f[5],
        f[6],
        f[7]
    );
    let (b_rss, _) = memory_mib("self");
    println!(
        "B holds {} records; this process (B) RSS {b_rss_before:.1} MiB before, \
         {b_rss:.1} MiB after",
        b.provider_stats().await?.records
    );

    let (c, _) = node(vec![b_addr], ProviderConfig::default()).await?;
    wait_routing(&c).await?;
    let mut sample = keys(a.keys);
    sample.shuffle(&mut StdRng::seed_from_u64(SEED + 1));
    sample.truncate(a.sample);
    let started = Instant::now();
    let results: Vec<(bool, Duration)> = futures::stream::iter(sample)
        .map(|cid| {
            let c = c.clone();
            async move {
                let t = Instant::now();
                let found = c
                    .find_providers(cid)
                    .await
                    .is_ok_and(|p| p.contains(&a_peer));
                (found, t.elapsed())
            }
        })
        .buffer_unordered(a.parallel)
        .collect()
        .await;
    let total = started.elapsed();
    let found = results.iter().filter(|(ok, _)| *ok).count();
    let mut times: Vec<Duration> = results.iter().map(|(_, t)| *t).collect();
    times.sort();
    let pct = |p: usize| {
        times
            .get(times.len() * p / 100)
            .copied()
            .unwrap_or_default()
    };
    let (rss_bc, peak_bc) = memory_mib("self");
    println!(
        "C found A for {found} of {} keys ({:.1} %) in {total:.2?}, {} at once: p50 {:.2?}, \
         p95 {:.2?}, max {:.2?}; this process (B and C) RSS {rss_bc:.1} MiB, peak {peak_bc:.1} MiB",
        a.sample,
        100.0 * found as f64 / a.sample.max(1) as f64,
        a.parallel,
        pct(50),
        pct(95),
        times.last().copied().unwrap_or_default(),
    );
    drop(child.stdin.take());
    child.wait()?;
    ensure!(found == a.sample, "{} keys not found", a.sample - found);
    Ok(())
}
