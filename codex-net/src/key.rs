//! The node's key in a file, as Codex keeps it (`--net-privkey`): the libp2p
//! `PrivateKey` protobuf (field 1 the key type, field 2 the key's bytes; for secp256k1
//! the 32-byte secret, for Ed25519 the 64-byte secret and public key), mode 0600.
//!
//! Codex nodes (nim-libp2p built with `libp2p_pki_schemes=secp256k1`) take secp256k1
//! keys only; Ed25519 stays our default for new keys.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

use crate::error::{Error, Result};

/// A key file is a few dozen bytes; anything beyond this is not one.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The type of a node key the node creates. A key loaded from a file keeps the type it
/// has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// Ed25519: our default.
    #[default]
    Ed25519,
    /// secp256k1: the only type Codex nodes (nim-libp2p) accept.
    Secp256k1,
}

impl KeyType {
    /// A new random key of this type.
    pub fn generate(self) -> Keypair {
        match self {
            KeyType::Ed25519 => Keypair::generate_ed25519(),
            KeyType::Secp256k1 => Keypair::generate_secp256k1(),
        }
    }

    /// The name the command line takes: `ed25519`, `secp256k1`.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::Secp256k1 => "secp256k1",
        }
    }

    /// The value of field 1 of libp2p's `PrivateKey` protobuf.
    fn protobuf(self) -> i32 {
        match self {
            KeyType::Ed25519 => 1,
            KeyType::Secp256k1 => 2,
        }
    }
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KeyType {
    type Err = Error;

    /// `ed25519` or `secp256k1`, in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(KeyType::Ed25519),
            "secp256k1" => Ok(KeyType::Secp256k1),
            _ => Err(Error::InvalidOption {
                option: "key_type",
                reason: format!("{s:?} is not a key type: ed25519 or secp256k1"),
            }),
        }
    }
}

/// libp2p's `PrivateKey` message (`keys.proto`).
#[derive(Clone, PartialEq, prost::Message)]
struct PrivateKeyMessage {
    #[prost(int32, tag = "1")]
    key_type: i32,
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

/// The name of a key type of libp2p's protobuf.
fn protobuf_type_name(key_type: i32) -> &'static str {
    match key_type {
        0 => "RSA",
        1 => "Ed25519",
        2 => "secp256k1",
        3 => "ECDSA",
        _ => "unknown",
    }
}

/// Decodes a key file's bytes: an Ed25519 or secp256k1 key in libp2p's `PrivateKey`
/// protobuf. `path` only names the file in errors.
///
/// # Errors
/// [`Error::KeyUnsupported`] for a key of another type (RSA, ECDSA),
/// [`Error::KeyMalformed`] for bytes that are no such key.
pub fn decode_key(bytes: &[u8], path: &Path) -> Result<Keypair> {
    let malformed = |reason: String| Error::KeyMalformed {
        path: path.to_path_buf(),
        reason,
    };
    let message = <PrivateKeyMessage as prost::Message>::decode(bytes)
        .map_err(|e| malformed(format!("not a libp2p private key protobuf: {e}")))?;
    if message.data.is_empty() {
        return Err(malformed(format!(
            "no key in its {} bytes (an empty file, or a protobuf without the key's bytes)",
            bytes.len()
        )));
    }
    let key_type = message.key_type;
    if key_type != KeyType::Ed25519.protobuf() && key_type != KeyType::Secp256k1.protobuf() {
        return Err(Error::KeyUnsupported {
            path: path.to_path_buf(),
            key_type,
            name: protobuf_type_name(key_type),
        });
    }
    // Codex's secp256k1 keys are the 32-byte secret exactly (libp2p would also take
    // 24 to 31 bytes, zero-padded).
    if key_type == KeyType::Secp256k1.protobuf() && message.data.len() != 32 {
        return Err(malformed(format!(
            "a secp256k1 key of {} bytes; it has 32",
            message.data.len()
        )));
    }
    // The protobuf decoded with a type we take: what can still fail is the key itself
    // (a wrong length, a secp256k1 scalar out of range).
    Keypair::from_protobuf_encoding(bytes).map_err(|e| {
        malformed(format!(
            "a {} key of {} bytes that is no valid key: {e}",
            protobuf_type_name(key_type),
            message.data.len()
        ))
    })
}

/// Loads the node key from the file at `path`: an Ed25519 or secp256k1 key in libp2p's
/// protobuf encoding, as Codex writes it. Warns when others may read the file.
///
/// # Errors
/// [`Error::KeyFile`] when the file cannot be read (it does not exist, permissions),
/// [`Error::KeyMalformed`] when it holds no key, [`Error::KeyUnsupported`] when it holds
/// a key of another type (RSA, ECDSA).
pub fn load_key(path: &Path) -> Result<Keypair> {
    let key_file = |source| Error::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(key_file)?;
    if meta.len() > MAX_KEY_FILE {
        return Err(Error::KeyMalformed {
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes; a key file is at most {MAX_KEY_FILE} bytes",
                meta.len()
            ),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:o}"),
                "others may read the node key file; chmod 600 it"
            );
        }
    }
    let bytes = std::fs::read(path).map_err(key_file)?;
    decode_key(&bytes, path)
}

/// Loads the node key from `path`, or creates a new Ed25519 key there (mode 0600):
/// [`load_or_create_key_with`] with [`KeyType::Ed25519`].
///
/// # Errors
/// As [`load_or_create_key_with`].
pub fn load_or_create_key(path: &Path) -> Result<Keypair> {
    load_or_create_key_with(path, KeyType::Ed25519)
}

/// Loads the node key from `path` ([`load_key`]), or, when there is no file, creates a
/// new key of `key_type` there: written whole to a temporary file (mode 0600), then
/// linked into place, so that the file is never seen half written and a key another
/// process wrote meanwhile wins. A file that exists keeps its key, whatever its type.
///
/// # Errors
/// As [`load_key`]; [`Error::KeyFile`] when the new file cannot be written.
pub fn load_or_create_key_with(path: &Path, key_type: KeyType) -> Result<Keypair> {
    match load_key(path) {
        Err(Error::KeyFile { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        loaded => return loaded,
    }
    let key = key_type.generate();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| Error::Libp2p(format!("cannot encode the node key: {e}")))?;
    match write_new(path, &bytes) {
        Ok(()) => {
            tracing::info!(file = %path.display(), key_type = %key_type, "created a node key");
            Ok(key)
        }
        // Another process wrote one first: take it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_key(path),
        Err(source) => Err(Error::KeyFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `bytes` to a new file at `path` (mode 0600) atomically: a temporary file
/// beside it, synced, then hard-linked to `path` (which fails when `path` exists).
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "a key file needs a name")
    })?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    written?;
    // The new name lasts a crash once the directory is synced.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_parse_and_print() -> Result<()> {
        assert_eq!("secp256k1".parse::<KeyType>()?, KeyType::Secp256k1);
        assert_eq!("Ed25519".parse::<KeyType>()?, KeyType::Ed25519);
        assert!(matches!(
            "rsa".parse::<KeyType>(),
            Err(Error::InvalidOption { .. })
        ));
        assert_eq!(KeyType::Secp256k1.to_string(), "secp256k1");
        assert_eq!(KeyType::default(), KeyType::Ed25519);
        Ok(())
    }

    #[test]
    fn a_key_of_each_type_round_trips() -> Result<()> {
        for t in [KeyType::Ed25519, KeyType::Secp256k1] {
            let key = t.generate();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| Error::Libp2p(e.to_string()))?;
            let back = decode_key(&bytes, Path::new("k"))?;
            assert_eq!(back.public(), key.public());
            assert_eq!(bytes[..2], [0x08, t.protobuf() as u8]);
        }
        Ok(())
    }

    #[test]
    fn unsupported_and_malformed_keys_are_told_apart() {
        // Type 0 (RSA), a byte of data.
        assert!(matches!(
            decode_key(&[0x08, 0x00, 0x12, 0x01, 7], Path::new("k")),
            Err(Error::KeyUnsupported {
                key_type: 0,
                name: "RSA",
                ..
            })
        ));
        // secp256k1 with 3 bytes of secret.
        assert!(matches!(
            decode_key(&[0x08, 0x02, 0x12, 0x03, 1, 2, 3], Path::new("k")),
            Err(Error::KeyMalformed { .. })
        ));
        // Empty.
        assert!(matches!(
            decode_key(&[], Path::new("k")),
            Err(Error::KeyMalformed { .. })
        ));
        // Not a protobuf: a length running past the end.
        assert!(matches!(
            decode_key(&[0x12, 0x40, 1], Path::new("k")),
            Err(Error::KeyMalformed { .. })
        ));
    }
}
