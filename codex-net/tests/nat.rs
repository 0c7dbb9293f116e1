//! NAT traversal in Linux network namespaces the test makes: a public network with a
//! relay and bootstrap node (R, 10.0.0.1), and two private networks (192.168.1.0/24
//! and 192.168.2.0/24) behind NAT routers (iptables MASQUERADE on their WAN side,
//! 10.1.0.2 and 10.2.0.2). Node A behind the first router holds a dataset; node B
//! behind the second finds A through the DHT (R is the only node either knows) and
//! downloads it.
//!
//! - With port-preserving MASQUERADE, DCUtR punches a hole: the relayed connection is
//!   upgraded to a direct one, and every block flows over the direct connection.
//! - With `MASQUERADE --random-fully` (the mapping depends on the destination, so the
//!   port a peer saw is not the port another peer can reach), punching fails and the
//!   blocks flow over the relay.
//!
//! Each node is its own process (`ip netns exec NS <this test binary> nat_node`, its
//! role in `CODEX_NAT_ROLE`). The test needs root, `ip` and `iptables` (nft or legacy
//! backend); without them it prints why and passes without running. Namespaces and
//! processes are removed however the test ends (a guard's `Drop`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::netns::{MARK, Namespaces, NodeProcess, field, probe_namespaces, run};

const ROLE: &str = "CODEX_NAT_ROLE";
/// TCP and QUIC port of every node, in its namespace.
const PORT: u16 = 4001;
/// Dataset size: 4 MiB, 64 blocks.
const DATASET: usize = 4 << 20;
const SEED: u64 = 18;

/// One case at a time: each starts five namespaces and three nodes on two cores.
static SERIAL: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------
// The parent: namespaces, routers, processes.

/// The iptables command that works in a fresh namespace here, or why there is none.
fn usable_iptables(ns: &str) -> Result<&'static str, String> {
    let mut why = Vec::new();
    for cmd in ["iptables", "iptables-legacy"] {
        match run(&["ip", "netns", "exec", ns, cmd, "-t", "nat", "-L", "-n"]) {
            Ok(_) => return Ok(cmd),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(why.join("; "))
}

/// Why namespaces or NAT rules cannot be made here, if they cannot.
fn cannot_run() -> Option<String> {
    let probe = match probe_namespaces() {
        Ok(ns) => ns,
        Err(why) => return Some(why),
    };
    usable_iptables(&probe.0[0])
        .err()
        .map(|e| format!("iptables does not work in a namespace: {e}"))
}

/// How the routers map ports.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mapping {
    /// MASQUERADE keeping the source port when it can: the same public port whatever
    /// the destination (endpoint-independent), so punching works.
    PortPreserving,
    /// MASQUERADE --random-fully: a new random port for each destination.
    Random,
}

struct Topology {
    _ns: Namespaces,
    public: String,
    a: String,
    b: String,
}

/// The five namespaces: `public` (R at 10.0.0.1, routing between the routers),
/// routers `ra` and `rb`, and the hosts `a` (192.168.1.2) and `b` (192.168.2.2).
fn topology(tag: &str, mapping: Mapping) -> anyhow::Result<Topology> {
    let name = |n: &str| format!("cxn{}{tag}{n}", std::process::id());
    let (public, ra, rb, a, b) = (name("p"), name("ra"), name("rb"), name("a"), name("b"));
    let mut ns = Namespaces::default();
    for n in [&public, &ra, &rb, &a, &b] {
        ns.add(n)?;
    }
    let iptables = usable_iptables(&ra).map_err(anyhow::Error::msg)?;
    let ip = |args: &str| -> anyhow::Result<()> {
        let args: Vec<&str> = args.split_whitespace().collect();
        let mut cmd = vec!["ip"];
        cmd.extend(args);
        run(&cmd).map(drop)
    };
    let exec = |ns: &str, args: &str| -> anyhow::Result<()> {
        let mut cmd = vec!["ip", "netns", "exec", ns];
        cmd.extend(args.split_whitespace());
        run(&cmd).map(drop)
    };
    ip(&format!(
        "link add ra netns {public} type veth peer name wan netns {ra}"
    ))?;
    ip(&format!(
        "link add rb netns {public} type veth peer name wan netns {rb}"
    ))?;
    ip(&format!(
        "link add lan netns {ra} type veth peer name eth0 netns {a}"
    ))?;
    ip(&format!(
        "link add lan netns {rb} type veth peer name eth0 netns {b}"
    ))?;
    ip(&format!("-n {public} addr add 10.0.0.1/32 dev lo"))?;
    for (i, router, host) in [(1, &ra, &a), (2, &rb, &b)] {
        let side = if i == 1 { "ra" } else { "rb" };
        ip(&format!("-n {public} addr add 10.{i}.0.1/24 dev {side}"))?;
        ip(&format!("-n {public} link set {side} up"))?;
        ip(&format!("-n {router} addr add 10.{i}.0.2/24 dev wan"))?;
        ip(&format!("-n {router} link set wan up"))?;
        ip(&format!("-n {router} addr add 192.168.{i}.1/24 dev lan"))?;
        ip(&format!("-n {router} link set lan up"))?;
        ip(&format!("-n {router} route add default via 10.{i}.0.1"))?;
        exec(router, "sysctl -qw net.ipv4.ip_forward=1")?;
        let random = match mapping {
            Mapping::PortPreserving => "",
            Mapping::Random => "--random-fully",
        };
        exec(
            router,
            &format!("{iptables} -t nat -A POSTROUTING -o wan -j MASQUERADE {random}"),
        )?;
        // Nothing from outside reaches the private network but answers, and what is
        // unsolicited is dropped without a word (no RST, no ICMP), as home routers do.
        exec(
            router,
            &format!("{iptables} -A FORWARD -i wan -m conntrack --ctstate NEW,INVALID -j DROP"),
        )?;
        exec(
            router,
            &format!("{iptables} -A INPUT -i wan -m conntrack --ctstate NEW,INVALID -j DROP"),
        )?;
        ip(&format!("-n {host} addr add 192.168.{i}.2/24 dev eth0"))?;
        ip(&format!("-n {host} link set eth0 up"))?;
        ip(&format!("-n {host} route add default via 192.168.{i}.1"))?;
    }
    exec(&public, "sysctl -qw net.ipv4.ip_forward=1")?;
    Ok(Topology {
        _ns: ns,
        public,
        a,
        b,
    })
}

/// Node `name` (its role) in namespace `ns`, with `env`.
fn start_node(
    name: &str,
    ns: &str,
    env: &[(&str, String)],
    dir: &std::path::Path,
) -> anyhow::Result<NodeProcess> {
    let mut env = env.to_vec();
    env.push((ROLE, name.to_string()));
    NodeProcess::start(name, ns, "nat_node", &env, dir)
}

/// What B reports of its download.
#[derive(Debug)]
struct Outcome {
    /// B's report of its download.
    line: HashMap<String, String>,
    /// A's last report of hole punching, after B's.
    a: HashMap<String, String>,
}

impl Outcome {
    fn get(&self, k: &str) -> anyhow::Result<u64> {
        Ok(field(&self.line, k)?.parse()?)
    }

    fn get_a(&self, k: &str) -> anyhow::Result<u64> {
        Ok(field(&self.a, k)?.parse()?)
    }
}

/// Runs R, A and B in a fresh topology with `mapping`; B downloads A's dataset.
/// `None` when namespaces cannot be made here.
fn download_behind_nat(mapping: Mapping) -> anyhow::Result<Option<Outcome>> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = cannot_run() {
        println!("SKIPPED: NAT traversal test not run: {why}");
        return Ok(None);
    }
    let tag = match mapping {
        Mapping::PortPreserving => "d",
        Mapping::Random => "r",
    };
    let topo = topology(tag, mapping)?;
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    // Declared after the namespaces: dropped (killed) before they are deleted.
    let mut procs: Vec<NodeProcess> = Vec::new();
    let result = (|| -> anyhow::Result<Outcome> {
        procs.push(start_node(
            "relay",
            &topo.public,
            &[("CODEX_NAT_EXTIP", "10.0.0.1".into())],
            dir.path(),
        )?);
        let ready = procs[0].line(Duration::from_secs(30))?;
        let relay_peer = field(&ready, "peer")?.to_string();
        let relay_addrs = format!(
            "/ip4/10.0.0.1/tcp/{PORT}/p2p/{relay_peer} /ip4/10.0.0.1/udp/{PORT}/quic-v1/p2p/{relay_peer}"
        );
        let relay_env = ("CODEX_NAT_RELAY", relay_addrs);
        procs.push(start_node(
            "provider",
            &topo.a,
            std::slice::from_ref(&relay_env),
            dir.path(),
        )?);
        let a = procs[1].line(Duration::from_secs(60))?;
        let cid = field(&a, "cid")?.to_string();
        let a_peer = field(&a, "peer")?.to_string();
        println!("A ready after {:?}: {a:?}", started.elapsed());
        procs.push(start_node(
            "fetcher",
            &topo.b,
            &[
                relay_env.clone(),
                ("CODEX_NAT_CID", cid),
                ("CODEX_NAT_PEER", a_peer),
                (
                    "CODEX_NAT_EXPECT",
                    match mapping {
                        Mapping::PortPreserving => "direct".into(),
                        Mapping::Random => "relayed".into(),
                    },
                ),
            ],
            dir.path(),
        )?);
        let line = procs[2].line(Duration::from_secs(120))?;
        println!("B after {:?}: {line:?}", started.elapsed());
        // A's latest status line, written after B's report.
        std::thread::sleep(Duration::from_millis(300));
        let mut a = procs[1].line(Duration::from_secs(5))?;
        while let Ok(next) = procs[1].lines.try_recv() {
            a = next;
        }
        println!("A's hole punching: {a:?}");
        Ok(Outcome { line, a })
    })();
    if std::env::var_os("CODEX_NAT_SHOW_LOGS").is_some() {
        for p in &procs {
            eprintln!(
                "--- {} log ---\n{}",
                p.name,
                std::fs::read_to_string(&p.log).unwrap_or_default()
            );
        }
    }
    match result {
        Ok(o) => Ok(Some(o)),
        Err(e) => {
            for p in &procs {
                eprintln!("--- {} log (last lines) ---\n{}", p.name, p.log_tail());
            }
            Err(e)
        }
    }
}

#[test]
fn behind_two_nats_hole_punching_gives_a_direct_connection() -> anyhow::Result<()> {
    let Some(out) = download_behind_nat(Mapping::PortPreserving)? else {
        return Ok(());
    };
    assert_eq!(
        out.get("ok")?,
        1,
        "B got A's dataset intact: {:?}",
        out.line
    );
    assert_eq!(out.get("bytes")?, DATASET as u64);
    assert_eq!(
        out.get("reachability_private")?,
        1,
        "B found itself private"
    );
    assert!(
        out.get("punched")? + out.get_a("punched")? >= 1,
        "a hole punched (B: {:?}, A: {:?})",
        out.line,
        out.a
    );
    assert!(
        out.get("samples")? >= 1 && out.get("samples_direct")? == out.get("samples")?,
        "the connection to A was direct, and only direct, all through the download: {:?}",
        out.line
    );
    assert_eq!(out.get("samples_relayed")?, 0);
    assert_eq!(out.get("relayed_at_end")?, 0, "no relayed connection left");
    assert!(out.get("direct_at_end")? >= 1);
    Ok(())
}

#[test]
fn behind_nats_that_map_per_destination_the_data_flows_over_the_relay() -> anyhow::Result<()> {
    let Some(out) = download_behind_nat(Mapping::Random)? else {
        return Ok(());
    };
    assert_eq!(
        out.get("ok")?,
        1,
        "B got A's dataset intact: {:?}",
        out.line
    );
    assert_eq!(out.get("bytes")?, DATASET as u64);
    assert_eq!(
        out.get("reachability_private")?,
        1,
        "B found itself private"
    );
    assert_eq!(out.get("punched")?, 0, "no hole punched: {:?}", out.line);
    assert_eq!(out.get_a("punched")?, 0, "no hole punched: {:?}", out.a);
    assert!(
        out.get_a("punch_failed")? >= 1,
        "A tried and gave up: {:?}",
        out.a
    );
    assert!(
        out.get("samples")? >= 1 && out.get("samples_relayed")? == out.get("samples")?,
        "the connection to A was relayed all through the download: {:?}",
        out.line
    );
    assert_eq!(out.get("samples_direct")?, 0);
    assert_eq!(out.get("direct_at_end")?, 0);
    Ok(())
}

// ---------------------------------------------------------------------------------
// The node processes.

/// A node process's body (nothing when the test binary runs as a test).
#[test]
fn nat_node() -> anyhow::Result<()> {
    let Ok(role) = std::env::var(ROLE) else {
        return Ok(());
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("CODEX_NAT_LOG")
                .unwrap_or_else(|_| "codex_net=debug,libp2p_dcutr=debug,libp2p_relay=info".into()),
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

fn addrs(s: &str) -> anyhow::Result<Vec<codex_net::Multiaddr>> {
    s.split_whitespace()
        .map(|a| a.parse().map_err(anyhow::Error::from))
        .collect()
}

fn nat_config() -> codex_net::NetConfig {
    use codex_net::{AutonatConfig, Nat, NatConfig, NetConfig};
    NetConfig {
        listen_addrs: vec![
            format!("/ip4/0.0.0.0/tcp/{PORT}").parse().expect("addr"),
            format!("/ip4/0.0.0.0/udp/{PORT}/quic-v1")
                .parse()
                .expect("addr"),
        ],
        nat: NatConfig {
            nat: Nat::None,
            autonat: AutonatConfig {
                boot_delay: Duration::from_secs(1),
                retry_interval: Duration::from_secs(2),
                // 10.0.0.0/8 is the "public" network here.
                only_global_ips: false,
                ..AutonatConfig::default()
            },
            ..NatConfig::default()
        },
        timeouts: codex_net::Timeouts {
            // An AutoNAT dial-back that the NAT drops fails after this long.
            dial: Duration::from_secs(3),
            ..codex_net::Timeouts::default()
        },
        ..NetConfig::default()
    }
}

async fn node(role: &str) -> anyhow::Result<()> {
    use codex_net::{Download, Nat, Network, Reachability, RelayMode, RelayServerConfig};
    let started = Instant::now();
    let store = common::mem();
    let mut config = nat_config();
    match role {
        "relay" => {
            config.nat.nat = Nat::ExtIp(env("CODEX_NAT_EXTIP")?.parse()?);
            config.nat.relay_mode = RelayMode::Never;
            config.nat.relay_server = Some(RelayServerConfig::default());
            let net = Network::builder(Arc::clone(&store))
                .config(config)
                .start()
                .await?;
            println!("{MARK}peer={}", net.peer_id());
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
        "provider" => {
            let relay = addrs(&env("CODEX_NAT_RELAY")?)?;
            config.bootstrap = relay.clone();
            config.nat.relays = relay.into_iter().take(1).collect();
            let net = Network::builder(Arc::clone(&store))
                .config(config)
                .start()
                .await?;
            let data = common::random(DATASET, SEED);
            let (cid, manifest) = common::put_dataset(&*store, &data).await?;
            net.provide(cid).await?;
            net.provide(manifest.tree_cid).await?;
            // Ready once reachable through the relay and the records are announced.
            let mut private_at = None;
            let reserved_at = loop {
                let info = net.info().await?;
                if private_at.is_none() && info.reachability == Reachability::Private {
                    private_at = Some(started.elapsed());
                }
                let announced = net.provider_stats().await?.announcements >= 2;
                if info.reservations.iter().any(|r| r.accepted)
                    && info
                        .external_addrs
                        .iter()
                        .any(|a| a.iter().any(|p| p == codex_net::Protocol::P2pCircuit))
                    && announced
                {
                    break started.elapsed();
                }
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(50),
                    "A not reachable through the relay: {info:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            println!(
                "{MARK}cid={cid} peer={} private_ms={} reserved_ms={}",
                net.peer_id(),
                private_at.map_or(0, |d| d.as_millis()),
                reserved_at.as_millis()
            );
            // Then what A sees of hole punching, every 100 ms: the punch is started (and
            // its failure counted) by A, the node reached through the relay.
            loop {
                let info = net.info().await?;
                println!(
                    "{MARK}punched={} punch_failed={} last_upgrade_ms={}",
                    info.hole_punches.succeeded,
                    info.hole_punches.failed,
                    info.hole_punches.last_upgrade.map_or(0, |d| d.as_millis())
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        "fetcher" => {
            let relay = addrs(&env("CODEX_NAT_RELAY")?)?;
            let cid: codex_core::Cid = env("CODEX_NAT_CID")?.parse()?;
            let a: codex_net::PeerId = env("CODEX_NAT_PEER")?.parse()?;
            let expect_direct = env("CODEX_NAT_EXPECT")? == "direct";
            config.bootstrap = relay.clone();
            config.nat.relays = relay.into_iter().take(1).collect();
            let net = Network::builder(Arc::clone(&store))
                .config(config)
                .start()
                .await?;
            // Private first (B's own probe), so that it is a node behind NAT like A.
            let private = loop {
                let info = net.info().await?;
                if info.reachability == Reachability::Private {
                    break true;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let private_ms = started.elapsed().as_millis();
            // A through the DHT, then dialed: A has no address B can reach but its
            // relayed one.
            let found = loop {
                let found = net.find_providers(cid).await?;
                if found.contains(&a) || started.elapsed() > Duration::from_secs(60) {
                    break found;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            anyhow::ensure!(found.contains(&a), "A not found through the DHT: {found:?}");
            let dial_at = Instant::now();
            net.dial(a, Vec::new()).await?;
            let connected_ms = dial_at.elapsed().as_millis();
            // Hole punching (or its failure) follows the relayed connection at once.
            let settle = Instant::now();
            let mut upgraded_ms = 0;
            loop {
                let info = net.info().await?;
                let to_a: Vec<_> = info.connections.iter().filter(|c| c.peer == a).collect();
                let direct = to_a.iter().any(|c| !c.relayed);
                let relayed = to_a.iter().any(|c| c.relayed);
                if direct && !relayed {
                    upgraded_ms = dial_at.elapsed().as_millis();
                    break;
                }
                if info.hole_punches.failed > 0 && !direct {
                    break;
                }
                if settle.elapsed() > Duration::from_secs(if expect_direct { 30 } else { 15 }) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The download, with B's connections to A sampled all along.
            let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
            let sampler = {
                let net = net.clone();
                let sampling = Arc::clone(&sampling);
                tokio::spawn(async move {
                    let (mut n, mut direct, mut relayed) = (0u64, 0u64, 0u64);
                    while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Ok(info) = net.info().await {
                            let to_a: Vec<_> =
                                info.connections.iter().filter(|c| c.peer == a).collect();
                            n += 1;
                            if !to_a.is_empty() && to_a.iter().all(|c| !c.relayed) {
                                direct += 1;
                            }
                            if !to_a.is_empty() && to_a.iter().all(|c| c.relayed) {
                                relayed += 1;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    (n, direct, relayed)
                })
            };
            let download_at = Instant::now();
            let manifest = codex_net::fetch_manifest(&net, &store, cid).await?;
            let mut stream = Download::new(&net, Arc::clone(&store), &manifest)
                .cid(cid)
                .stream();
            let mut got = Vec::new();
            use futures::StreamExt;
            while let Some(chunk) = stream.next().await {
                got.extend_from_slice(&chunk?);
            }
            let download_ms = download_at.elapsed().as_millis();
            sampling.store(false, std::sync::atomic::Ordering::Relaxed);
            let (samples, samples_direct, samples_relayed) = sampler.await?;
            let info = net.info().await?;
            let to_a: Vec<_> = info.connections.iter().filter(|c| c.peer == a).collect();
            let ok = got == common::random(DATASET, SEED);
            println!(
                "{MARK}ok={} bytes={} reachability_private={} private_ms={private_ms} connected_ms={connected_ms} upgraded_ms={upgraded_ms} last_upgrade_ms={} punched={} punch_failed={} download_ms={download_ms} samples={samples} samples_direct={samples_direct} samples_relayed={samples_relayed} direct_at_end={} relayed_at_end={} received_bytes={}",
                u8::from(ok),
                got.len(),
                u8::from(private),
                info.hole_punches.last_upgrade.map_or(0, |d| d.as_millis()),
                info.hole_punches.succeeded,
                info.hole_punches.failed,
                to_a.iter().filter(|c| !c.relayed).count(),
                to_a.iter().filter(|c| c.relayed).count(),
                net.exchange()
                    .stats
                    .received_bytes
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
            tracing::info!(connections = ?to_a, "done");
            net.shutdown().await;
            Ok(())
        }
        other => anyhow::bail!("unknown role {other}"),
    }
}
