#![doc = include_str!("../README.md")]

mod error;
pub mod message;

pub use crate::error::{Error, Result};
