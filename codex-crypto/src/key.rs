//! Keys: random, given, or derived from a passphrase with Argon2id.

use std::fmt;
use std::str::FromStr;

use codex_core::{Encryption, Kdf};

use crate::error::{Error, Result};

/// A dataset key: 256 bits. Its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A fresh random key (the operating system's generator).
    pub fn generate() -> Key {
        Key(rand::random())
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as 64 lowercase hex digits: the form key files and the REST API use.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads 64 hex digits; surrounding whitespace (a key file's newline) is ignored.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], without echoing the text.
    pub fn from_hex(text: &str) -> Result<Key> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(Error::InvalidKey(format!(
                "{} characters, expected 64 hex digits",
                text.len()
            )));
        }
        let mut key = [0u8; 32];
        hex::decode_to_slice(text, &mut key)
            .map_err(|_| Error::InvalidKey("not hex digits".into()))?;
        Ok(Key(key))
    }
}

impl FromStr for Key {
    type Err = Error;
    fn from_str(s: &str) -> Result<Key> {
        Key::from_hex(s)
    }
}

/// Argon2id's cost for a passphrase-encrypted dataset. The default is OWASP's
/// recommendation (19 MiB, 2 passes, 1 lane): about 50 ms on a server core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB (at most [`MAX_KDF_MEMORY_KIB`]).
    pub memory_kib: u32,
    /// Passes (1 to [`MAX_KDF_ITERATIONS`]).
    pub iterations: u32,
    /// Lanes (1 to [`MAX_KDF_PARALLELISM`]).
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Largest Argon2 memory accepted (256 MiB): the parameters come from manifests that
/// anyone can write, and deriving must not exhaust a node's memory.
pub const MAX_KDF_MEMORY_KIB: u32 = 256 * 1024;
/// Most Argon2 passes accepted.
pub const MAX_KDF_ITERATIONS: u32 = 16;
/// Most Argon2 lanes accepted.
pub const MAX_KDF_PARALLELISM: u32 = 8;
/// The manifest's code for Argon2id version 0x13.
pub const KDF_ARGON2ID: u32 = 1;

/// Derives the key from a passphrase with the manifest's parameters. Slow by design
/// (tens of milliseconds and `memory_kib` of memory): call it on a blocking thread.
///
/// # Errors
/// [`Error::Kdf`] for an unknown algorithm or parameters out of bounds.
pub fn derive_key(passphrase: &str, kdf: &Kdf) -> Result<Key> {
    if kdf.algorithm != KDF_ARGON2ID {
        return Err(Error::Kdf(format!("unknown algorithm {}", kdf.algorithm)));
    }
    if kdf.memory_kib > MAX_KDF_MEMORY_KIB
        || !(1..=MAX_KDF_ITERATIONS).contains(&kdf.iterations)
        || !(1..=MAX_KDF_PARALLELISM).contains(&kdf.parallelism)
    {
        return Err(Error::Kdf(format!(
            "parameters out of bounds (memory {} KiB, {} passes, {} lanes; at most {MAX_KDF_MEMORY_KIB} KiB, {MAX_KDF_ITERATIONS} passes, {MAX_KDF_PARALLELISM} lanes)",
            kdf.memory_kib, kdf.iterations, kdf.parallelism
        )));
    }
    let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
        .map_err(|e| Error::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon
        .hash_password_into(passphrase.as_bytes(), &kdf.salt, &mut key)
        .map_err(|e| Error::Kdf(e.to_string()))?;
    Ok(Key(key))
}

/// How a new dataset gets its key.
#[derive(Clone)]
pub enum NewKey {
    /// A fresh random key, returned to the caller once.
    Random,
    /// A key the caller chose (each dataset still gets its own random nonce).
    Given(Key),
    /// Derived from a passphrase with a fresh random salt.
    Passphrase {
        /// The passphrase.
        passphrase: String,
        /// Argon2id's cost.
        params: KdfParams,
    },
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NewKey::Random => "NewKey::Random",
            NewKey::Given(_) => "NewKey::Given(..)",
            NewKey::Passphrase { .. } => "NewKey::Passphrase(..)",
        })
    }
}

/// What opens an encrypted dataset.
#[derive(Clone)]
pub enum Secret {
    /// The dataset's key.
    Key(Key),
    /// The passphrase it was encrypted with.
    Passphrase(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Secret::Key(_) => "Secret::Key(..)",
            Secret::Passphrase(_) => "Secret::Passphrase(..)",
        })
    }
}

impl Secret {
    /// The key for a dataset with these parameters (derived for a passphrase: slow,
    /// call it on a blocking thread). The key is not checked here; [`crate::Cipher::new`]
    /// checks it.
    ///
    /// # Errors
    /// [`Error::NeedsKey`] for a passphrase when the dataset has a random key, and
    /// [`derive_key`]'s errors.
    pub fn key_for(&self, encryption: &Encryption) -> Result<Key> {
        match (self, &encryption.kdf) {
            (Secret::Key(k), _) => Ok(k.clone()),
            (Secret::Passphrase(p), Some(kdf)) => derive_key(p, kdf),
            (Secret::Passphrase(_), None) => Err(Error::NeedsKey),
        }
    }
}

/// A new dataset's key and public parameters: a random nonce, the key check and, for
/// a passphrase, Argon2id's parameters with a random salt. Slow for a passphrase.
///
/// # Errors
/// [`Error::Kdf`] for parameters out of bounds.
pub fn new_dataset(with: &NewKey) -> Result<(Key, Encryption)> {
    let nonce: [u8; 16] = rand::random();
    let (key, kdf) = match with {
        NewKey::Random => (Key::generate(), None),
        NewKey::Given(k) => (k.clone(), None),
        NewKey::Passphrase { passphrase, params } => {
            let kdf = Kdf {
                algorithm: KDF_ARGON2ID,
                salt: rand::random(),
                memory_kib: params.memory_kib,
                iterations: params.iterations,
                parallelism: params.parallelism,
            };
            (derive_key(passphrase, &kdf)?, Some(kdf))
        }
    };
    let encryption = Encryption {
        scheme: crate::SCHEME,
        nonce,
        key_check: crate::cipher::key_check(&key, &nonce),
        kdf,
    };
    Ok((key, encryption))
}
