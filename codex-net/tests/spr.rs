//! The node's signed peer record: what `Network::spr` gives reads back to the node's
//! peer id and addresses, changes (with a higher sequence number) only when the
//! addresses do, and bootstraps another node as its multiaddrs would.

mod common;

use std::time::Duration;

use codex_net::{BootstrapNode, Multiaddr, Network, SignedPeerRecord, Transports};

use common::{mem, node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_s_record_reads_back_and_bootstraps_another() -> anyhow::Result<()> {
    let a = node(mem(), Default::default()).await?;
    let spr = a.spr().await?;
    assert_eq!(spr.peer_id(), a.peer_id());
    let listening = a.info().await?.listen_addrs;
    assert!(!listening.is_empty());
    assert_eq!(spr.addresses(), listening.as_slice());
    assert_eq!(spr.dial_addresses(), a.addresses().await?);

    let text = spr.to_string();
    let back: SignedPeerRecord = text.parse()?;
    assert_eq!(back, spr);
    // The same addresses: the same record.
    assert_eq!(a.spr().await?, spr);

    // A new address: a new record, with a higher sequence number.
    let public: Multiaddr = "/ip4/203.0.113.7/tcp/8070".parse()?;
    a.add_external_address(public.clone()).await?;
    let newer = a.spr().await?;
    assert!(
        newer.seq() > spr.seq(),
        "{} after {}",
        newer.seq(),
        spr.seq()
    );
    assert!(newer.addresses().contains(&public));
    assert_eq!(newer.to_string().parse::<SignedPeerRecord>()?, newer);

    // Another node bootstraps from the record's text.
    let boot: BootstrapNode = text.parse()?;
    let b = Network::builder(mem())
        .transports(Transports::TCP)
        .listen(["/ip4/127.0.0.1/tcp/0".parse()?])
        .bootstrap(boot.addresses())
        .start()
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = b.info().await?;
        if info.connected.contains(&a.peer_id()) && info.routing_table.contains(&a.peer_id()) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the node bootstrapped from the SPR is not connected to its peer: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.shutdown().await;
    a.shutdown().await;
    Ok(())
}
