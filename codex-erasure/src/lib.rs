#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod coder;
mod dataset;
mod error;
pub mod layout;

pub use crate::dataset::{
    Options, Progress, Recovery, decode, decode_with, encode, encode_with, recover_block, repair,
    repair_with,
};
pub use crate::error::{Error, Result};
pub use crate::layout::{Layout, check_params};
