//! Relaying on loopback (no namespaces needed): a node told to reserve on a relay holds
//! a slot there and is reached through its `/p2p-circuit` address; `--nat extip:`
//! announces the listen port at the given IP. (Hole punching behind real NATs:
//! tests/nat.rs.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use codex_net::{
    AutonatConfig, Nat, NatConfig, NetConfig, NetInfo, Network, Protocol, Reachability, RelayMode,
    RelayServerConfig, Transports,
};

mod common;
use common::{listen_addr, mem, put_dataset, random};

fn config(nat: NatConfig) -> NetConfig {
    NetConfig {
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        transports: Transports::TCP,
        nat: NatConfig {
            autonat: AutonatConfig {
                only_global_ips: false,
                ..AutonatConfig::default()
            },
            ..nat
        },
        ..NetConfig::default()
    }
}

async fn wait_for(
    net: &Network,
    what: &str,
    ok: impl Fn(&NetInfo) -> bool,
) -> anyhow::Result<NetInfo> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = net.info().await?;
        if ok(&info) {
            return Ok(info);
        }
        anyhow::ensure!(Instant::now() < deadline, "{what} within 20 s: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reserves_on_a_relay_and_is_reached_through_it() -> anyhow::Result<()> {
    let relay = Network::builder(mem())
        .config(config(NatConfig {
            nat: Nat::ExtIp([192, 0, 2, 7].into()),
            relay_mode: RelayMode::Never,
            relay_server: Some(RelayServerConfig::default()),
            ..NatConfig::default()
        }))
        .start()
        .await?;
    let relay_addr = listen_addr(&relay).await?;
    // extip: the listen port at the given IP.
    let port = relay_addr
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("no port in {relay_addr}"))?;
    let ext: codex_net::Multiaddr = format!("/ip4/192.0.2.7/tcp/{port}").parse()?;
    wait_for(&relay, "the extip address", |i| {
        i.external_addrs.contains(&ext)
    })
    .await?;

    let store = mem();
    let data = random(300_000, 5);
    let (cid, _) = put_dataset(&*store, &data).await?;
    let started = Instant::now();
    let a = Network::builder(Arc::clone(&store))
        .config(config(NatConfig {
            nat: Nat::None,
            relays: vec![relay_addr.clone()],
            relay_mode: RelayMode::Always,
            ..NatConfig::default()
        }))
        .start()
        .await?;
    let info = wait_for(&a, "a reservation accepted", |i| {
        i.reservations.iter().any(|r| r.accepted)
            && i.external_addrs
                .iter()
                .any(|a| a.iter().any(|p| p == Protocol::P2pCircuit))
    })
    .await?;
    println!("reserved after {:?}", started.elapsed());
    assert_eq!(info.reservations[0].relay, relay.peer_id());
    let circuit = info
        .external_addrs
        .iter()
        .find(|a| a.iter().any(|p| p == Protocol::P2pCircuit))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no circuit address"))?;
    let r = wait_for(&relay, "the relay counts the reservation", |i| {
        i.relay_server.is_some_and(|s| s.reservations == 1)
    })
    .await?;
    assert_eq!(r.reachability, Reachability::Unknown, "no probe yet (15 s)");

    // B reaches A through the relay only (the circuit address), and fetches from it.
    let b_store = mem();
    let b = Network::builder(Arc::clone(&b_store))
        .config(config(NatConfig::default()))
        .nat(NatConfig {
            nat: Nat::None,
            relay_mode: RelayMode::Never,
            ..NatConfig::default()
        })
        .start()
        .await?;
    b.dial(a.peer_id(), vec![circuit]).await?;
    let info = b.info().await?;
    let to_a: Vec<_> = info
        .connections
        .iter()
        .filter(|c| c.peer == a.peer_id())
        .collect();
    assert!(
        to_a.first().is_some_and(|c| c.relayed && c.outbound),
        "B's first connection to A is relayed: {to_a:?}"
    );
    wait_for(&relay, "a circuit relayed", |i| {
        i.relay_server.is_some_and(|s| s.circuits_accepted >= 1)
    })
    .await?;
    let manifest = codex_net::fetch_manifest(&b, &b_store, cid).await?;
    let report = codex_net::Download::new(&b, Arc::clone(&b_store), &manifest)
        .cid(cid)
        .run()
        .await?;
    assert_eq!(report.fetched, manifest.blocks_count());
    // On loopback A is reachable directly too: DCUtR may have replaced the relayed
    // connection, and then no relayed one is left.
    let info = b.info().await?;
    let to_a: Vec<_> = info
        .connections
        .iter()
        .filter(|c| c.peer == a.peer_id())
        .collect();
    println!("B's connections to A: {to_a:?}, {:?}", info.hole_punches);
    if info.hole_punches.succeeded > 0 {
        wait_for(&b, "the relayed connection closed", |i| {
            i.connections
                .iter()
                .all(|c| c.peer != a.peer_id() || !c.relayed)
        })
        .await?;
    }
    Ok(())
}
