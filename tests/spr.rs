//! The signed peer record over REST: `GET /spr` as text and as JSON give the same
//! record, which reads back to the node's peer id (`GET /peerid`, text and JSON) and
//! shows in `/debug/info`; a node bootstrapped from it connects to the node.

#[path = "common/loopback.rs"]
mod loopback;

use std::time::{Duration, Instant};

use codex::Node;
use codex::net::{BootstrapNode, SignedPeerRecord};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;

async fn start(
    dir: &std::path::Path,
    bootstrap: Vec<codex::net::Multiaddr>,
) -> anyhow::Result<Node> {
    Ok(Node::start(loopback::loopback(dir, bootstrap)?).await?)
}

/// `GET path` with `Accept: accept` (none if empty): the content type and the body.
async fn get(
    http: &reqwest::Client,
    node: &Node,
    path: &str,
    accept: &str,
) -> anyhow::Result<(String, String)> {
    let mut req = http.get(format!("{}{path}", node.api_url()));
    if !accept.is_empty() {
        req = req.header(ACCEPT, accept);
    }
    let res = req.send().await?;
    anyhow::ensure!(res.status().is_success(), "GET {path}: {}", res.status());
    let ctype = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((ctype, res.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spr_reads_back_to_the_node_and_bootstraps_another() -> anyhow::Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = start(dir_a.path(), Vec::new()).await?;
    let http = reqwest::Client::new();
    let peer = a
        .network()
        .ok_or_else(|| anyhow::anyhow!("no network"))?
        .peer_id();

    let (ctype, text) = get(&http, &a, "/spr", "").await?;
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    assert!(text.starts_with("spr:"), "{text}");
    let (ctype, json) = get(&http, &a, "/spr", "application/json").await?;
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let json: Value = serde_json::from_str(&json)?;
    assert_eq!(json["spr"].as_str(), Some(text.as_str()), "{json}");
    let (_, plain) = get(&http, &a, "/spr", "text/plain").await?;
    assert_eq!(plain, text);

    let spr: SignedPeerRecord = text.parse()?;
    assert_eq!(spr.peer_id(), peer);
    assert!(!spr.addresses().is_empty());

    let (ctype, id) = get(&http, &a, "/peerid", "").await?;
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    assert_eq!(id, peer.to_string());
    let (ctype, id) = get(&http, &a, "/peerid", "application/json").await?;
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let id: Value = serde_json::from_str(&id)?;
    assert_eq!(id["id"].as_str(), Some(peer.to_string().as_str()));

    let (_, info) = get(&http, &a, "/debug/info", "").await?;
    let info: Value = serde_json::from_str(&info)?;
    assert_eq!(info["spr"].as_str(), Some(text.as_str()));

    // A node given the record as its bootstrap node connects to the first.
    let boot: BootstrapNode = text.parse()?;
    let b = start(dir_b.path(), boot.addresses()).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, info) = get(&http, &b, "/debug/info", "").await?;
        let info: Value = serde_json::from_str(&info)?;
        let peer = peer.to_string();
        let connected = info["connectedPeers"]
            .as_array()
            .is_some_and(|c| c.iter().any(|p| p.as_str() == Some(&peer)));
        let in_table = info["table"]["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|p| p["peerId"].as_str() == Some(&peer)));
        if connected && in_table {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the node bootstrapped from the SPR does not know its peer: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.shutdown().await?;
    a.shutdown().await?;
    Ok(())
}
