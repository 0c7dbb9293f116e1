//! The scheme: XChaCha20-Poly1305 over each block, the nonce made of the dataset's
//! random nonce and the block's index, the last block marked in the associated data.

use bytes::{BufMut, BytesMut};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use codex_core::Encryption;

use crate::error::{Error, Result};
use crate::key::Key;

/// The scheme this crate implements (the manifest's `scheme`).
pub const SCHEME: u32 = 1;
/// Bytes each block loses to its authentication tag.
pub const TAG_LEN: usize = 16;
/// The smallest block size that can be encrypted (the first block holds the metadata).
pub const MIN_BLOCK_SIZE: usize = 4096;
/// Longest file name or MIME type kept in the encrypted metadata, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

const AD_BLOCK: &[u8] = b"codex-crypto/v1/block";
const AD_CHECK: &[u8] = b"codex-crypto/v1/key-check";
/// Index reserved for the key check: no block has it.
const CHECK_INDEX: u64 = u64::MAX;
/// How far from a block's place [`Cipher::open`] looks for the place it belongs to
/// when it fails, to tell reordered blocks from altered ones.
const SEARCH_RADIUS: u64 = 512;

fn nonce(prefix: &[u8; 16], index: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..16].copy_from_slice(prefix);
    n[16..].copy_from_slice(&index.to_le_bytes());
    XNonce::from(n)
}

fn ad(last: bool) -> [u8; AD_BLOCK.len() + 1] {
    let mut a = [0u8; AD_BLOCK.len() + 1];
    a[..AD_BLOCK.len()].copy_from_slice(AD_BLOCK);
    a[AD_BLOCK.len()] = u8::from(last);
    a
}

/// The key check of a key with a dataset's nonce: the tag of nothing, sealed at an
/// index no block uses.
pub(crate) fn key_check(key: &Key, prefix: &[u8; 16]) -> [u8; 16] {
    let aead = XChaCha20Poly1305::new(key.as_bytes().into());
    let tag = aead
        .encrypt_in_place_detached(&nonce(prefix, CHECK_INDEX), AD_CHECK, &mut [])
        .unwrap_or_default();
    tag.into()
}

/// A dataset's cipher: its key, checked, with its nonce. Cheap to share (`Arc`).
pub struct Cipher {
    aead: XChaCha20Poly1305,
    prefix: [u8; 16],
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    /// The cipher of a dataset with these parameters.
    ///
    /// # Errors
    /// [`Error::UnknownScheme`], and [`Error::WrongKey`] when the key does not match the
    /// manifest's key check.
    pub fn new(key: &Key, encryption: &Encryption) -> Result<Cipher> {
        if encryption.scheme != SCHEME {
            return Err(Error::UnknownScheme(encryption.scheme));
        }
        let aead = XChaCha20Poly1305::new(key.as_bytes().into());
        let tag = Tag::from(encryption.key_check);
        aead.decrypt_in_place_detached(
            &nonce(&encryption.nonce, CHECK_INDEX),
            AD_CHECK,
            &mut [],
            &tag,
        )
        .map_err(|_| Error::WrongKey)?;
        Ok(Cipher {
            aead,
            prefix: encryption.nonce,
        })
    }

    /// Appends block `index`'s ciphertext (`plaintext` then its tag) to `out`.
    pub fn seal_into(&self, index: u64, last: bool, plaintext: &[u8], out: &mut BytesMut) {
        let start = out.len();
        out.put_slice(plaintext);
        out.put_bytes(0, TAG_LEN);
        self.seal_in_place(index, last, &mut out[start..]);
    }

    /// Seals block `index` where it lies: `block` is the plaintext followed by
    /// [`TAG_LEN`] bytes of room, which receive the tag.
    ///
    /// # Panics
    /// If `block` is shorter than [`TAG_LEN`].
    pub fn seal_in_place(&self, index: u64, last: bool, block: &mut [u8]) {
        let (plaintext, room) = block.split_at_mut(block.len() - TAG_LEN);
        // Encryption fails only past 256 GiB per block, far beyond any block size.
        if let Ok(tag) =
            self.aead
                .encrypt_in_place_detached(&nonce(&self.prefix, index), &ad(last), plaintext)
        {
            room.copy_from_slice(&tag);
        }
    }

    /// Appends block `index`'s plaintext to `out`; `out` is unchanged on error.
    ///
    /// # Errors
    /// [`Error::Tampered`], or, when the block opens at another place,
    /// [`Error::Misplaced`], or when a block that is not the last ends the dataset,
    /// [`Error::Truncated`]. `count` is the dataset's number of blocks.
    pub fn open_into(
        &self,
        index: u64,
        count: u64,
        ciphertext: &[u8],
        out: &mut BytesMut,
    ) -> Result<()> {
        let last = index + 1 == count;
        if ciphertext.len() < TAG_LEN {
            return Err(Error::Tampered { index });
        }
        let start = out.len();
        if self.try_open(index, last, ciphertext, out) {
            return Ok(());
        }
        out.truncate(start);
        Err(self.diagnose(index, count, ciphertext))
    }

    fn try_open(&self, index: u64, last: bool, ciphertext: &[u8], out: &mut BytesMut) -> bool {
        let (body, tag) = ciphertext.split_at(ciphertext.len() - TAG_LEN);
        let start = out.len();
        out.put_slice(body);
        let ok = self
            .aead
            .decrypt_in_place_detached(
                &nonce(&self.prefix, index),
                &ad(last),
                &mut out[start..],
                Tag::from_slice(tag),
            )
            .is_ok();
        if !ok {
            out.truncate(start);
        }
        ok
    }

    /// Why block `index` does not open: it belongs elsewhere, or the dataset was cut
    /// short, or it was altered (or is not of this dataset). Runs only on failure.
    fn diagnose(&self, index: u64, count: u64, ciphertext: &[u8]) -> Error {
        let mut scratch = BytesMut::with_capacity(ciphertext.len());
        let last = index + 1 == count;
        if last && self.try_open(index, false, ciphertext, &mut scratch) {
            return Error::Truncated { got: count };
        }
        let lo = index.saturating_sub(SEARCH_RADIUS);
        let hi = index.saturating_add(SEARCH_RADIUS).min(u64::MAX - 1);
        for j in (lo..=hi).filter(|&j| j != index) {
            for final_ in [false, true] {
                scratch.clear();
                if self.try_open(j, final_, ciphertext, &mut scratch) {
                    return Error::Misplaced {
                        index,
                        belongs_at: j,
                    };
                }
            }
        }
        Error::Tampered { index }
    }
}

/// What the encrypted metadata holds besides the bytes: the file name and MIME type,
/// kept out of the manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The file name given at upload.
    pub filename: Option<String>,
    /// The MIME type given at upload.
    pub mimetype: Option<String>,
}

const METADATA_VERSION: u8 = 1;

impl Metadata {
    /// The bytes that open the plaintext: a version byte, then the name and the MIME
    /// type, each as a little-endian `u16` length and UTF-8 (length 0: none).
    ///
    /// # Errors
    /// [`Error::NameTooLong`].
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![METADATA_VERSION];
        for (what, field) in [("file name", &self.filename), ("MIME type", &self.mimetype)] {
            let s = field.as_deref().unwrap_or("").as_bytes();
            if s.len() > MAX_NAME_LEN {
                return Err(Error::NameTooLong(what));
            }
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s);
        }
        Ok(out)
    }

    /// Reads the metadata at the start of `plaintext`; returns it and its length.
    ///
    /// # Errors
    /// [`Error::Format`] when it is cut short, of an unknown version, or not UTF-8.
    pub fn decode(plaintext: &[u8]) -> Result<(Metadata, usize)> {
        let bad = |why: &str| Error::Format(format!("metadata {why}"));
        if plaintext.first() != Some(&METADATA_VERSION) {
            return Err(bad("of an unknown version"));
        }
        let mut at = 1;
        let mut field = || -> Result<Option<String>> {
            let len = plaintext.get(at..at + 2).ok_or_else(|| bad("cut short"))?;
            let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
            let s = plaintext
                .get(at + 2..at + 2 + len)
                .ok_or_else(|| bad("cut short"))?;
            at += 2 + len;
            let s = std::str::from_utf8(s).map_err(|_| bad("not UTF-8"))?;
            Ok((!s.is_empty()).then(|| s.to_owned()))
        };
        let filename = field()?;
        let mimetype = field()?;
        Ok((Metadata { filename, mimetype }, at))
    }
}
