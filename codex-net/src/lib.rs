#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod ban;
mod builder;
mod config;
pub mod download;
mod error;
pub mod exchange;
mod key;
pub mod message;
mod nat;
mod network;
mod providers;
mod spr;

pub use crate::builder::NetworkBuilder;
pub use crate::config::{
    DEFAULT_KAD_PROTOCOL, Limits, NetConfig, ProviderConfig, Timeouts, Transports,
};
pub use crate::download::{
    Download, DownloadStream, FetchOptions, FetchReport, PeerReport, fetch_manifest,
    fetch_manifest_block,
};
pub use crate::error::{Error, Result};
pub use crate::exchange::{Exchange, ExchangeConfig};
pub use crate::key::{KeyType, decode_key, load_key, load_or_create_key, load_or_create_key_with};
pub use crate::nat::{
    AutonatConfig, ConnectionInfo, HolePunchStats, Nat, NatConfig, Reachability, RelayMode,
    RelayReservation, RelayServerConfig, RelayServerStats,
};
pub use crate::network::{NetInfo, Network, provider_key};
pub use crate::providers::ProviderStats;
pub use crate::spr::{
    BootstrapNode, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, SPR_PREFIX, SignedPeerRecord,
};
pub use libp2p::identity::Keypair;
pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId};
/// The stream behaviour the block exchange runs on: an app that mounts the exchange on
/// its own swarm puts a `libp2p_stream::Behaviour` in its `#[derive(NetworkBehaviour)]`
/// and hands its `Control` to [`Exchange::mount`].
pub use libp2p_stream;
