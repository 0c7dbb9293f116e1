//! Swarming across sources of different bandwidth, in Linux network namespaces the test
//! makes: a downloader D and three sources S1, S2, S3, each on a veth pair of its own
//! to D, each source's egress limited by a token bucket (`tc qdisc ... tbf rate
//! 160mbit`, 20 MB/s). The sources hold the same dataset; each download is a fresh
//! process in D that dials the sources it is given and fetches the whole dataset from
//! them ([`codex_net::Download`], every block verified), then reports its time and
//! what each source did ([`codex_net::FetchReport::peers`]).
//!
//! Four downloads: from all three sources; from S1 and S2 alone; and twice from all
//! three with S3 slowed to 2 MB/s (`tc qdisc change`), once a quarter of the blocks
//! arrived and once 85% did. Three sources at 20 MB/s give at least 50 MB/s; the
//! slowed source delivers fewer blocks and gets fewer requests than each other, and
//! the download with it takes at most 1.3 times what S1 and S2 alone took.
//!
//! `CODEX_SWARM_HEDGE=0` and `CODEX_SWARM_PEER_QUEUE_MS=N` set the downloads'
//! [`codex_net::FetchOptions`] `hedge` and `peer_queue`, for comparison.
//!
//! Every node is its own process (`ip netns exec NS <this test binary> swarm_node`, its
//! role in `CODEX_SWARM_ROLE`). The test needs root, `ip` and `tc`; without them it
//! prints why and passes without running. Namespaces and processes are removed however
//! the test ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::netns::{MARK, Namespaces, NodeProcess, field, num, probe_namespaces, run, sh};

const ROLE: &str = "CODEX_SWARM_ROLE";
/// TCP port of every source, in its namespace.
const PORT: u16 = 4001;
/// Dataset size: 128 MiB, 2048 blocks of 64 KiB.
const DATASET: usize = 128 << 20;
const SEED: u64 = 1818;
/// Each source's rate: 20 MB/s.
const RATE: &str = "160mbit";
/// The slowed source's rate: 2 MB/s.
const SLOW_RATE: &str = "16mbit";
/// The token bucket: a burst of 64 KiB, and a queue of at most 20 ms at the rate.
const TBF: &str = "burst 64kb latency 20ms";

fn tbf(action: &str, ns: &str, rate: &str) -> String {
    format!("tc -n {ns} qdisc {action} dev eth0 root tbf rate {rate} {TBF}")
}

/// Why the namespaces and rate limits cannot be made here, if they cannot.
fn cannot_run() -> Option<String> {
    let probe = match probe_namespaces() {
        Ok(ns) => ns,
        Err(why) => return Some(why),
    };
    if let Err(e) = run(&["tc", "-V"]) {
        return Some(format!("no `tc` command (iproute2): {e}"));
    }
    let ns = &probe.0[0];
    let rate = format!("tc -n {ns} qdisc add dev lo root tbf rate {RATE} {TBF}");
    sh(&rate)
        .err()
        .map(|e| format!("tc cannot add a tbf qdisc in a namespace: {e}"))
}

/// The downloader's namespace `d`, and sources `s[i]` at 10.77.i.2 on a veth pair to
/// D (10.77.i.1), each limited to [`RATE`] on its way out.
struct Topology {
    _ns: Namespaces,
    d: String,
    s: Vec<String>,
}

fn topology(sources: usize) -> anyhow::Result<Topology> {
    let name = |n: &str| format!("cxs{}{n}", std::process::id());
    let d = name("d");
    let s: Vec<String> = (1..=sources).map(|i| name(&format!("s{i}"))).collect();
    let mut ns = Namespaces::default();
    ns.add(&d)?;
    for (i, src) in s.iter().enumerate() {
        let i = i + 1;
        ns.add(src)?;
        sh(&format!(
            "ip link add s{i} netns {d} type veth peer name eth0 netns {src}"
        ))?;
        sh(&format!("ip -n {d} addr add 10.77.{i}.1/24 dev s{i}"))?;
        sh(&format!("ip -n {d} link set s{i} up"))?;
        sh(&format!("ip -n {src} addr add 10.77.{i}.2/24 dev eth0"))?;
        sh(&format!("ip -n {src} link set eth0 up"))?;
        sh(&tbf("add", src, RATE))?;
    }
    Ok(Topology { _ns: ns, d, s })
}

fn start_node(
    name: &str,
    ns: &str,
    env: &[(&str, String)],
    dir: &std::path::Path,
) -> anyhow::Result<NodeProcess> {
    let mut env = env.to_vec();
    let role = if name.starts_with('S') {
        "source"
    } else {
        "fetcher"
    };
    env.push((ROLE, role.to_string()));
    NodeProcess::start(name, ns, "swarm_node", &env, dir)
}

/// One download's report: its time, its rate, and what each source did.
#[derive(Debug)]
struct Run {
    secs: f64,
    mbps: f64,
    /// Per source (by name): requests, blocks delivered first, duplicates, hedges.
    sources: Vec<(String, Source)>,
    slowed_at_ms: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Source {
    requested: u64,
    delivered: u64,
    duplicates: u64,
    hedged: u64,
    /// Its window at the end.
    window: u64,
}

impl Run {
    fn source(&self, name: &str) -> Source {
        self.sources
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(Source::default, |(_, s)| *s)
    }

    fn print(&self, what: &str) {
        let per: Vec<String> = self
            .sources
            .iter()
            .map(|(n, s)| {
                format!(
                    "{n}: {} blocks ({} requests, {} hedges, {} duplicates, window {})",
                    s.delivered, s.requested, s.hedged, s.duplicates, s.window
                )
            })
            .collect();
        println!(
            "{what}: {} MiB in {:.2} s, {:.1} MB/s{}; {}",
            DATASET >> 20,
            self.secs,
            self.mbps,
            self.slowed_at_ms
                .map_or(String::new(), |ms| format!(" (slowed after {ms} ms)")),
            per.join("; ")
        );
    }
}

/// Downloads the dataset in a fresh process in D from the sources `from` (indices into
/// `addrs`), slowing source `slow.0` down once the share `slow.1` of the blocks arrived.
fn download(
    topo: &Topology,
    addrs: &[String],
    cid: &str,
    from: &[usize],
    slow: Option<(usize, f64)>,
    dir: &std::path::Path,
    procs: &mut Vec<NodeProcess>,
) -> anyhow::Result<Run> {
    let peers: Vec<String> = from.iter().map(|i| addrs[*i].clone()).collect();
    let mut env = vec![
        ("CODEX_SWARM_PEERS", peers.join(" ")),
        ("CODEX_SWARM_CID", cid.to_string()),
    ];
    if let Some((s, at)) = slow {
        env.push(("CODEX_SWARM_SLOW", tbf("change", &topo.s[s], SLOW_RATE)));
        env.push(("CODEX_SWARM_SLOW_AT", at.to_string()));
        // Back to full rate at the end, for the next download.
        let restore = tbf("change", &topo.s[s], RATE);
        let run = download_with(topo, env, from, dir, procs);
        sh(&restore)?;
        return run;
    }
    download_with(topo, env, from, dir, procs)
}

fn download_with(
    topo: &Topology,
    env: Vec<(&str, String)>,
    from: &[usize],
    dir: &std::path::Path,
    procs: &mut Vec<NodeProcess>,
) -> anyhow::Result<Run> {
    let slowed = env.iter().any(|(k, _)| *k == "CODEX_SWARM_SLOW");
    let name = format!("D{}", procs.len());
    procs.push(start_node(&name, &topo.d, &env, dir)?);
    let Some(proc) = procs.last_mut() else {
        anyhow::bail!("no process");
    };
    let line = proc.line(Duration::from_secs(120))?;
    anyhow::ensure!(field(&line, "ok")? == "1", "the download failed: {line:?}");
    anyhow::ensure!(num::<usize>(&line, "bytes")? == DATASET);
    let secs = num::<f64>(&line, "ms")? / 1000.0;
    let mut sources = Vec::new();
    for (k, i) in from.iter().enumerate() {
        sources.push((
            format!("S{}", i + 1),
            Source {
                requested: num(&line, &format!("requested{k}"))?,
                delivered: num(&line, &format!("delivered{k}"))?,
                duplicates: num(&line, &format!("duplicates{k}"))?,
                hedged: num(&line, &format!("hedged{k}"))?,
                window: num(&line, &format!("window{k}"))?,
            },
        ));
    }
    let slowed_at_ms = match slowed {
        true => Some(num(&line, "slowed_ms")?),
        false => None,
    };
    Ok(Run {
        secs,
        mbps: DATASET as f64 / secs / 1e6,
        sources,
        slowed_at_ms,
    })
}

/// Checks a download with S3 slowed down against S1 and S2 alone: S3 delivered fewer
/// blocks and got fewer requests than each other, and the download took at most 1.3
/// times as long.
fn check_slowed(what: &str, slowed: &Run, two: &Run) {
    println!(
        "{what}: {:.2} s, {:.2}x the time of S1 and S2 alone ({:.2} s, {:.1} MB/s)",
        slowed.secs,
        slowed.secs / two.secs,
        two.secs,
        two.mbps
    );
    let slowed_at = slowed.slowed_at_ms.unwrap_or(u64::MAX);
    assert!(
        (slowed_at as f64) < slowed.secs * 1000.0,
        "{what}: S3 slowed down during the download: after {slowed_at} ms of {:.2} s",
        slowed.secs
    );
    let (s1, s2, s3) = (
        slowed.source("S1"),
        slowed.source("S2"),
        slowed.source("S3"),
    );
    assert!(
        s3.delivered < s1.delivered && s3.delivered < s2.delivered,
        "{what}: the slowed source delivered fewer blocks: {s1:?} {s2:?} {s3:?}"
    );
    assert!(
        s3.requested < s1.requested && s3.requested < s2.requested,
        "{what}: the slowed source got fewer requests: {s1:?} {s2:?} {s3:?}"
    );
    assert!(
        slowed.secs <= 1.3 * two.secs,
        "{what}: the download took {:.2} s, more than 1.3 x {:.2} s (S1 and S2 alone)",
        slowed.secs,
        two.secs
    );
}

#[test]
fn swarming_adds_up_bandwidth_and_a_slowed_source_does_not_hold_the_tail() -> anyhow::Result<()> {
    if let Some(why) = cannot_run() {
        println!("SKIPPED: swarming test not run: {why}");
        return Ok(());
    }
    let topo = topology(3)?;
    let dir = tempfile::tempdir()?;
    // Declared after the namespaces: dropped (killed) before they are deleted.
    let mut procs: Vec<NodeProcess> = Vec::new();
    let result = (|| -> anyhow::Result<[Run; 4]> {
        let mut addrs = Vec::new();
        let mut cid = None;
        for (i, ns) in topo.s.iter().enumerate() {
            procs.push(start_node(&format!("S{}", i + 1), ns, &[], dir.path())?);
        }
        for (i, p) in procs.iter_mut().enumerate() {
            let ready = p.line(Duration::from_secs(60))?;
            let this = field(&ready, "cid")?.to_string();
            anyhow::ensure!(cid.get_or_insert(this.clone()) == &this, "same dataset");
            addrs.push(format!(
                "/ip4/10.77.{}.2/tcp/{PORT}/p2p/{}",
                i + 1,
                field(&ready, "peer")?
            ));
        }
        let cid = cid.ok_or_else(|| anyhow::anyhow!("no source"))?;
        let mut fetch = |from: &[usize], slow: Option<(usize, f64)>, what: &str| {
            let run = download(&topo, &addrs, &cid, from, slow, dir.path(), &mut procs)?;
            run.print(what);
            anyhow::Ok(run)
        };
        Ok([
            fetch(&[0, 1, 2], None, "three sources at 20 MB/s")?,
            fetch(&[0, 1], None, "S1 and S2 alone")?,
            fetch(
                &[0, 1, 2],
                Some((2, 0.25)),
                "three sources, S3 slowed to 2 MB/s after a quarter",
            )?,
            fetch(
                &[0, 1, 2],
                Some((2, 0.85)),
                "three sources, S3 slowed to 2 MB/s near the end",
            )?,
        ])
    })();
    let [all, two, slowed, late] = match result {
        Ok(r) => r,
        Err(e) => {
            for p in &procs {
                eprintln!("--- {} log (last lines) ---\n{}", p.name, p.log_tail());
            }
            return Err(e);
        }
    };
    assert!(
        all.mbps >= 50.0,
        "three sources at 20 MB/s gave {:.1} MB/s",
        all.mbps
    );
    check_slowed("slowed after a quarter", &slowed, &two);
    // Near the end, what S3 holds when it slows down is the tail: hedged.
    check_slowed("slowed near the end", &late, &two);
    Ok(())
}

// ---------------------------------------------------------------------------------
// The node processes.

/// A node process's body (nothing when the test binary runs as a test).
#[test]
fn swarm_node() -> anyhow::Result<()> {
    let Ok(role) = std::env::var(ROLE) else {
        return Ok(());
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("CODEX_SWARM_LOG").unwrap_or_else(|_| "codex_net=info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(node(&role))
}

fn env(k: &str) -> anyhow::Result<String> {
    std::env::var(k).map_err(|_| anyhow::anyhow!("{k} not set"))
}

async fn node(role: &str) -> anyhow::Result<()> {
    use codex_net::{Download, Multiaddr, Network, PeerId, Protocol, Transports};
    let store = common::mem();
    match role {
        "source" => {
            let data = common::random(DATASET, SEED);
            let (cid, _) = common::put_dataset(&*store, &data).await?;
            drop(data);
            let net = Network::builder(Arc::clone(&store))
                .transports(Transports::TCP)
                .listen([format!("/ip4/0.0.0.0/tcp/{PORT}").parse()?])
                .start()
                .await?;
            common::listen_addr(&net).await?;
            println!("{MARK}cid={cid} peer={}", net.peer_id());
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
        "fetcher" => {
            let cid: codex_core::Cid = env("CODEX_SWARM_CID")?.parse()?;
            let mut peers: Vec<(PeerId, Multiaddr)> = Vec::new();
            for a in env("CODEX_SWARM_PEERS")?.split_whitespace() {
                let addr: Multiaddr = a.parse()?;
                let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                    anyhow::bail!("no /p2p/ in {addr}");
                };
                peers.push((peer, addr));
            }
            let net = Network::builder(Arc::clone(&store))
                .transports(Transports::TCP)
                .listen(["/ip4/0.0.0.0/tcp/0".parse()?])
                .start()
                .await?;
            for (peer, addr) in &peers {
                net.dial(*peer, vec![addr.clone()]).await?;
            }
            let ids: Vec<PeerId> = peers.iter().map(|p| p.0).collect();
            let exchange = Arc::clone(net.exchange());
            let manifest = exchange.fetch_manifest(&ids, cid).await?;
            let blocks = manifest.blocks_count();

            // The slowdown, once the share CODEX_SWARM_SLOW_AT of the blocks arrived.
            let done = Arc::new(AtomicBool::new(false));
            let slowdown = match std::env::var("CODEX_SWARM_SLOW") {
                Ok(cmd) => {
                    let at: f64 = env("CODEX_SWARM_SLOW_AT")?.parse()?;
                    let threshold = (blocks as f64 * at) as u64;
                    let (exchange, done) = (Arc::clone(&exchange), Arc::clone(&done));
                    Some(tokio::spawn(async move {
                        let started = Instant::now();
                        loop {
                            if done.load(Ordering::Relaxed) {
                                anyhow::bail!("finished before the slowdown");
                            }
                            if exchange.stats.received.load(Ordering::Relaxed) >= threshold {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        let at = started.elapsed();
                        tokio::task::spawn_blocking(move || common::netns::sh(&cmd)).await??;
                        Ok(at)
                    }))
                }
                Err(_) => None,
            };
            let started = Instant::now();
            // For comparison runs: `CODEX_SWARM_HEDGE=0`, `CODEX_SWARM_PEER_QUEUE_MS=N`.
            let mut options = codex_net::FetchOptions::default();
            if let Ok(v) = std::env::var("CODEX_SWARM_HEDGE") {
                options.hedge = v != "0";
            }
            if let Ok(v) = std::env::var("CODEX_SWARM_PEER_QUEUE_MS") {
                options.peer_queue = Duration::from_millis(v.parse()?);
            }
            let report = Download::with_exchange(&exchange, Arc::clone(&store), &manifest)
                .peers(ids.iter().copied())
                .options(options)
                .run()
                .await?;
            let took = started.elapsed();
            done.store(true, Ordering::Relaxed);
            let slowed_ms = match slowdown {
                Some(task) => Some(task.await??.as_millis()),
                None => None,
            };

            // Every byte, against the data the sources made.
            let got = {
                let mut got = Vec::with_capacity(DATASET);
                for i in 0..blocks {
                    let (block, _) = store.get_leaf(&manifest.tree_cid, i).await?;
                    got.extend_from_slice(block.data());
                }
                got.truncate(manifest.original_size() as usize);
                got
            };
            let ok = report.missing.is_empty() && got == common::random(DATASET, SEED);
            let mut line = format!(
                "{MARK}ok={} bytes={} ms={} fetched={}",
                u8::from(ok),
                got.len(),
                took.as_secs_f64() * 1000.0,
                report.fetched
            );
            if let Some(ms) = slowed_ms {
                line.push_str(&format!(" slowed_ms={ms}"));
            }
            for (k, id) in ids.iter().enumerate() {
                let p = report.peers.iter().find(|p| p.peer == *id);
                let get = |f: fn(&codex_net::PeerReport) -> u64| p.map_or(0, f);
                line.push_str(&format!(
                    " requested{k}={} delivered{k}={} duplicates{k}={} hedged{k}={} window{k}={}",
                    get(|p| p.requested),
                    get(|p| p.delivered),
                    get(|p| p.duplicates),
                    get(|p| p.hedged),
                    p.map_or(0, |p| p.window),
                ));
            }
            println!("{line}");
            tracing::info!(peers = ?report.peers, "done");
            net.shutdown().await;
            Ok(())
        }
        other => anyhow::bail!("unknown role {other}"),
    }
}
