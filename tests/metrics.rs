//! `GET /metrics` on real nodes over loopback: after B downloads a dataset from A, the
//! counters of both say so (blocks and bytes served and received, downloads, the
//! store), in the OpenMetrics text format Prometheus scrapes.

#[path = "common/dashboard.rs"]
mod dashboard;
#[path = "common/loopback.rs"]
mod loopback;

use std::collections::BTreeMap;

use bytes::Bytes;
use codex::{Node, NodeConfig};
use futures::TryStreamExt;
use rand::{RngCore, SeedableRng, rngs::StdRng};

async fn start(
    dir: &std::path::Path,
    bootstrap: Vec<codex_net::Multiaddr>,
) -> anyhow::Result<Node> {
    Ok(Node::start(NodeConfig {
        metrics_addr: Some("127.0.0.1:0".parse()?),
        ..loopback::loopback(dir, bootstrap)?
    })
    .await?)
}

/// Scrapes `node` and reads every sample as `name{labels}` → value.
async fn scrape(node: &Node) -> anyhow::Result<BTreeMap<String, f64>> {
    let addr = node
        .metrics_addr()
        .ok_or_else(|| anyhow::anyhow!("no metrics served"))?;
    let res = reqwest::get(format!("http://{addr}/metrics")).await?;
    anyhow::ensure!(res.status().is_success(), "{}", res.status());
    let kind = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    anyhow::ensure!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = res.text().await?;
    anyhow::ensure!(text.trim_end().ends_with("# EOF"), "{text}");
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| anyhow::anyhow!("bad sample line {line:?}"))?;
        samples.insert(name.to_string(), value.parse::<f64>()?);
    }
    Ok(samples)
}

fn get(samples: &BTreeMap<String, f64>, name: &str) -> anyhow::Result<f64> {
    samples
        .get(name)
        .copied()
        .ok_or_else(|| anyhow::anyhow!("no {name} in {samples:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_nodes_did() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let a = start(&dir.path().join("a"), vec![]).await?;
    let net = a.network().ok_or_else(|| anyhow::anyhow!("no network"))?;
    let addr = net.info().await?.listen_addrs[0]
        .clone()
        .with(codex_net::Protocol::P2p(net.peer_id()));
    let b = start(&dir.path().join("b"), vec![addr]).await?;

    let before = scrape(&a).await?;
    assert_eq!(get(&before, "codex_blocks_served_total")?, 0.0);
    assert_eq!(get(&before, "codex_store_blocks")?, 0.0);

    let mut bytes = vec![0u8; 20 * 65536 + 77];
    StdRng::seed_from_u64(7).fill_bytes(&mut bytes);
    let added = a
        .add(
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes.clone()))]),
            Default::default(),
        )
        .await?;
    let fetched = b.fetch_stream(added.cid).await?;
    let got: Vec<Bytes> = fetched.stream.try_collect().await?;
    assert_eq!(got.concat(), bytes);

    let (sa, sb) = (scrape(&a).await?, scrape(&b).await?);
    let len = bytes.len() as f64;
    // A served the 21 data blocks (the tree and manifest are sent too).
    assert!(get(&sa, "codex_blocks_served_total")? >= 21.0, "{sa:?}");
    assert!(get(&sa, "codex_bytes_sent_total")? >= len, "{sa:?}");
    assert!(get(&sb, "codex_blocks_received_total")? >= 21.0, "{sb:?}");
    assert!(get(&sb, "codex_bytes_received_total")? >= len, "{sb:?}");
    assert_eq!(get(&sb, "codex_blocks_rejected_total")?, 0.0);
    assert_eq!(get(&sb, "codex_downloads_total")?, 1.0, "{sb:?}");
    assert_eq!(get(&sb, "codex_downloads_failed_total")?, 0.0);
    assert!(get(&sb, "codex_net_peers")? >= 1.0, "{sb:?}");
    for (node, s) in [(&a, &sa), (&b, &sb)] {
        let space = node.space().await?;
        assert_eq!(get(s, "codex_store_blocks")?, space.total_blocks as f64);
        assert_eq!(
            get(s, "codex_store_quota_used_bytes")?,
            space.quota_used_bytes as f64
        );
        assert_eq!(
            get(s, "codex_store_quota_max_bytes")?,
            space.quota_max_bytes as f64
        );
    }
    // Without a marketplace there are no chain metrics.
    assert!(!sa.keys().any(|k| k.starts_with("codex_chain_")), "{sa:?}");
    // libp2p's own: B dialed A, so each saw a connection established.
    let established = |s: &BTreeMap<String, f64>| -> f64 {
        s.iter()
            .filter(|(k, _)| k.starts_with("libp2p_swarm_connections_established_total"))
            .map(|(_, v)| v)
            .sum()
    };
    assert!(established(&sa) >= 1.0 && established(&sb) >= 1.0, "{sb:?}");
    assert!(
        sb.keys().any(|k| k.starts_with("libp2p_identify_")),
        "identify's metrics: {sb:?}"
    );

    // The Grafana dashboard (docs/) shows only metrics a node serves, as A serves
    // them once B is gone.
    // B goes away, so that A has closed a connection too.
    b.shutdown().await?;
    let url = format!(
        "http://{}/metrics",
        a.metrics_addr()
            .ok_or_else(|| anyhow::anyhow!("no metrics served"))?
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let families = loop {
        let text = reqwest::get(&url).await?.text().await?;
        if text.contains("libp2p_swarm_connections_duration_seconds_count")
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // The marketplace's (sales, proofs, purchases, chain calls) are served only by a
    // node with one: tests/marketplace.rs checks those on a host.
    let names = dashboard::metric_names()?;
    assert!(
        names.len() >= 20,
        "the dashboard shows {} metrics",
        names.len()
    );
    let market_only = [
        "codex_sales",
        "codex_slots",
        "codex_proofs",
        "codex_purchases",
        "codex_chain",
    ];
    for name in &names {
        if market_only.iter().any(|m| name.starts_with(m)) {
            continue;
        }
        assert!(
            dashboard::served(&families, name),
            "the dashboard's {name} is not served:\n{families}"
        );
    }
    a.shutdown().await?;
    Ok(())
}
