#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod cipher;
mod error;
mod key;
mod stream;

pub use crate::cipher::{Cipher, MAX_NAME_LEN, MIN_BLOCK_SIZE, Metadata, SCHEME, TAG_LEN};
pub use crate::error::{Error, Result};
pub use crate::key::{
    KDF_ARGON2ID, KdfParams, Key, MAX_KDF_ITERATIONS, MAX_KDF_MEMORY_KIB, MAX_KDF_PARALLELISM,
    NewKey, Secret, derive_key, new_dataset,
};
pub use crate::stream::{Decrypted, decrypt, encrypt};
