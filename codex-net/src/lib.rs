#![doc = include_str!("../README.md")]

pub mod download;
mod error;
pub mod exchange;
pub mod message;
mod network;

pub use crate::download::{FetchOptions, FetchReport, fetch, fetch_manifest, fetch_manifest_block};
pub use crate::error::{Error, Result};
pub use crate::exchange::{Exchange, ExchangeConfig};
pub use crate::network::{NetConfig, NetInfo, Network, load_or_create_key, provider_key};
pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId};
