//! A node's settings on loopback, shared by the tests that start nodes.

use codex::NodeConfig;

/// A node in `dir`: its REST API on a free port, libp2p on 127.0.0.1 (a free TCP
/// port), bootstrapped from `bootstrap`; everything else as [`NodeConfig::default`].
pub fn loopback(
    dir: &std::path::Path,
    bootstrap: Vec<codex::net::Multiaddr>,
) -> anyhow::Result<NodeConfig> {
    Ok(NodeConfig {
        data_dir: dir.to_path_buf(),
        api_port: 0,
        network: Some(codex::net::NetConfig {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            bootstrap,
            ..codex::net::NetConfig::default()
        }),
        ..NodeConfig::default()
    })
}
