#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[cfg(feature = "test-utils")]
pub mod conformance;
pub mod dataset;
mod error;
mod keys;
pub mod kv;
mod repo;

pub use crate::error::Error;
pub use crate::kv::{Body, Kv, MemKv, SledKv};
pub use crate::repo::{MemoryStore, Repo, SledStore, StoreConfig};
