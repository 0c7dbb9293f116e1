//! CIDv1 with Codex's multicodecs, printed in base58btc.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The multicodec and multihash codes Codex uses.
pub mod codec {
    /// `codex-manifest`: the CID codec of a manifest block.
    pub const MANIFEST: u64 = 0xCD01;
    /// `codex-block`: the CID codec of a data or parity block.
    pub const BLOCK: u64 = 0xCD02;
    /// `codex-root`: the CID codec of a dataset's SHA-256 tree root (`treeCid`).
    pub const ROOT: u64 = 0xCD03;
    /// `codex-slot-root`: a slot's Poseidon2 root.
    pub const SLOT_ROOT: u64 = 0xCD04;
    /// `codex-proving-root`: the Poseidon2 root over all slot roots (`verifyRoot`).
    pub const PROVING_ROOT: u64 = 0xCD05;
    /// `codex-slot-cell`: a leaf of a slot tree (a block's Poseidon2 digest).
    pub const SLOT_CELL: u64 = 0xCD06;
    /// Multihash `poseidon2-alt_bn_128-sponge-r2`.
    pub const POSEIDON2_SPONGE: u64 = 0xCD10;
    /// Multihash `poseidon2-alt_bn_128-merkle-2kb`.
    pub const POSEIDON2_MERKLE_2KB: u64 = 0xCD11;
    /// Multihash `sha2-256`.
    pub const SHA2_256: u64 = 0x12;
    /// Multihash `identity`.
    pub const IDENTITY: u64 = 0x00;
}

type Multihash = multihash::Multihash<64>;

/// A CIDv1. Printed as base58btc (`z...`), as Codex prints it; parsed from any multibase.
///
/// ```
/// use codex_core::{Cid, codec};
///
/// let cid = Cid::for_block(b"hello");
/// assert_eq!(cid.codec(), codec::BLOCK);
/// assert!(cid.matches(b"hello"));
/// assert_eq!(cid.to_string().parse::<Cid>()?, cid);
/// assert_eq!(Cid::from_bytes(&cid.to_bytes())?, cid);
/// # Ok::<(), codex_core::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid(cid::Cid);

impl Cid {
    /// A CID over a SHA-256 digest.
    pub fn from_sha256(codec: u64, digest: [u8; 32]) -> Self {
        Self::from_multihash(codec, codec::SHA2_256, &digest)
    }

    /// A CID whose identity multihash wraps `bytes` (Codex's Poseidon2 roots: 32 bytes,
    /// little-endian field element).
    pub fn from_identity(codec: u64, bytes: [u8; 32]) -> Self {
        Self::from_multihash(codec, codec::IDENTITY, &bytes)
    }

    fn from_multihash(codec: u64, hash_code: u64, digest: &[u8; 32]) -> Self {
        // A 32-byte digest always fits the 64-byte multihash.
        let mh = match Multihash::wrap(hash_code, digest) {
            Ok(mh) => mh,
            Err(_) => unreachable!("32-byte digest fits a 64-byte multihash"),
        };
        Cid(cid::Cid::new_v1(codec, mh))
    }

    /// The `codex-block` CID of `data`: `CIDv1(0xCD02, sha2-256(data))`.
    pub fn for_block(data: &[u8]) -> Self {
        Self::from_sha256(codec::BLOCK, sha256(data))
    }

    /// The CID of a manifest's encoded bytes: `CIDv1(0xCD01, sha2-256(bytes))`.
    pub fn for_manifest(bytes: &[u8]) -> Self {
        Self::from_sha256(codec::MANIFEST, sha256(bytes))
    }

    /// Codex's `emptyCid`: the block CID of the *empty* byte string. Padding blocks carry
    /// it; readers treat it as a block of zeros.
    pub fn empty_block() -> Self {
        Self::for_block(&[])
    }

    /// The content codec (`0xCD01`, `0xCD02`, ...).
    pub fn codec(&self) -> u64 {
        self.0.codec()
    }

    /// The multihash code (`0x12` for sha2-256, `0x00` for identity).
    pub fn hash_code(&self) -> u64 {
        self.0.hash().code()
    }

    /// The digest inside the multihash.
    pub fn digest(&self) -> &[u8] {
        self.0.hash().digest()
    }

    /// The digest as 32 bytes, when it is 32 bytes long (sha2-256 and Codex's identity roots).
    pub fn digest32(&self) -> Option<[u8; 32]> {
        self.digest().try_into().ok()
    }

    /// The whole multihash (code, length, digest) as bytes: the key libp2p Kademlia uses.
    pub fn multihash_bytes(&self) -> Vec<u8> {
        self.0.hash().to_bytes()
    }

    /// Binary form: `0x01 || varint(codec) || multihash`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    /// Parses the binary form. Only CIDv1 is accepted; trailing bytes are an error.
    ///
    /// # Errors
    /// [`Error::InvalidCid`] for malformed or non-canonical bytes, a CIDv0, or trailing
    /// bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut rest = bytes;
        let cid = cid::Cid::read_bytes(&mut rest).map_err(|e| Error::InvalidCid(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Error::InvalidCid(format!("{} trailing bytes", rest.len())));
        }
        // The cid crate's varint reader drops the bits of a 10-byte varint beyond 64
        // instead of failing, so distinct byte strings would parse to one CID.
        if cid.to_bytes() != bytes {
            return Err(Error::InvalidCid("non-canonical encoding".into()));
        }
        Self::from_inner(cid)
    }

    fn from_inner(cid: cid::Cid) -> Result<Self> {
        if cid.version() != cid::Version::V1 {
            return Err(Error::InvalidCid("only CIDv1 is used by Codex".into()));
        }
        Ok(Cid(cid))
    }

    /// Whether the bytes hash to this CID (sha2-256 or identity multihash).
    pub fn matches(&self, data: &[u8]) -> bool {
        match self.hash_code() {
            codec::SHA2_256 => self.digest() == sha256(data),
            codec::IDENTITY => self.digest() == data,
            _ => false,
        }
    }

    /// The underlying `cid` crate value.
    pub fn as_inner(&self) -> &cid::Cid {
        &self.0
    }
}

/// SHA-256 of `data` (uses SHA-NI where the CPU has it).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = multibase::encode(multibase::Base::Base58Btc, self.0.to_bytes());
        f.write_str(&text)
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl FromStr for Cid {
    type Err = Error;

    /// Parses a CIDv1 in any multibase (`z...` base58btc, `b...` base32, ...).
    fn from_str(s: &str) -> Result<Self> {
        let (_, bytes) =
            multibase::decode(s).map_err(|e| Error::InvalidCid(format!("{s:?}: {e}")))?;
        Self::from_bytes(&bytes).map_err(|e| Error::InvalidCid(format!("{s:?}: {e}")))
    }
}

impl From<Cid> for cid::Cid {
    fn from(c: Cid) -> Self {
        c.0
    }
}

impl TryFrom<cid::Cid> for Cid {
    type Error = Error;

    fn try_from(c: cid::Cid) -> Result<Self> {
        Self::from_inner(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_varints_match_reference() {
        // reference §1.1: 0xCD01 is `81 9a 03`, 0xCD02 `82 9a 03`, ...
        let expected: [(u64, [u8; 3]); 6] = [
            (codec::MANIFEST, [0x81, 0x9a, 0x03]),
            (codec::BLOCK, [0x82, 0x9a, 0x03]),
            (codec::ROOT, [0x83, 0x9a, 0x03]),
            (codec::SLOT_ROOT, [0x84, 0x9a, 0x03]),
            (codec::PROVING_ROOT, [0x85, 0x9a, 0x03]),
            (codec::SLOT_CELL, [0x86, 0x9a, 0x03]),
        ];
        for (code, varint) in expected {
            let cid = Cid::from_sha256(code, [7; 32]);
            let bytes = cid.to_bytes();
            assert_eq!(bytes[0], 1, "CIDv1");
            assert_eq!(&bytes[1..4], &varint);
            assert_eq!(&bytes[4..6], &[0x12, 0x20]);
        }
    }

    #[test]
    fn empty_block_cid_matches_reference() {
        assert_eq!(
            Cid::empty_block().to_string(),
            "zDxWB8EDDsokSpiTXNRpv1jS2LXjEdLgTiDfxFd7Eo8CSPKVj93r"
        );
    }

    #[test]
    fn printed_prefixes_match_reference() {
        assert!(
            Cid::from_sha256(codec::MANIFEST, [0; 32])
                .to_string()
                .starts_with("zDvZRwz")
        );
        assert!(
            Cid::from_sha256(codec::BLOCK, [0; 32])
                .to_string()
                .starts_with("zDxWB8E")
        );
        assert!(
            Cid::from_sha256(codec::ROOT, [0; 32])
                .to_string()
                .starts_with("zDzSvJT")
        );
        assert!(
            Cid::from_identity(codec::SLOT_ROOT, [0; 32])
                .to_string()
                .starts_with("zE2PfUH")
        );
    }

    #[test]
    fn parses_any_multibase() {
        let cid = Cid::for_block(b"hello");
        let text = cid.to_string();
        assert_eq!(text.parse::<Cid>().expect("base58"), cid);
        let b32 = multibase::encode(multibase::Base::Base32Lower, cid.to_bytes());
        assert_eq!(b32.parse::<Cid>().expect("base32"), cid);
        let hex = multibase::encode(multibase::Base::Base16Lower, cid.to_bytes());
        assert_eq!(hex.parse::<Cid>().expect("base16"), cid);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "z", "zzzz", "hello", "Qmfoo", "z1111111111"] {
            assert!(bad.parse::<Cid>().is_err(), "{bad:?} parsed");
        }
        let mut bytes = Cid::for_block(b"x").to_bytes();
        bytes.push(0);
        assert!(Cid::from_bytes(&bytes).is_err(), "trailing byte accepted");
        assert!(Cid::from_bytes(&bytes[..10]).is_err(), "truncated accepted");
    }

    #[test]
    fn matches_checks_the_digest() {
        let cid = Cid::for_block(b"abc");
        assert!(cid.matches(b"abc"));
        assert!(!cid.matches(b"abd"));
    }
}
