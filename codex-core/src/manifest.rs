//! Codex's manifest (reference §2): what a dataset is, encoded exactly as the Nim node
//! encodes it.

use crate::cid::{Cid, codec};
use crate::error::{Error, Result};
use crate::pb;

/// Largest encoded manifest accepted by [`Manifest::decode`].
pub const MAX_MANIFEST_SIZE: usize = 16 << 20;

/// How a dataset's blocks are grouped (Codex's `StrategyType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StrategyType {
    /// Contiguous ranges (`LinearStrategy`, 0).
    Linear,
    /// Interleaved columns (`SteppedStrategy`, 1).
    Stepped,
}

impl StrategyType {
    fn code(self) -> u64 {
        match self {
            StrategyType::Linear => 0,
            StrategyType::Stepped => 1,
        }
    }

    fn from_code(code: u64) -> Result<Self> {
        match code {
            0 => Ok(StrategyType::Linear),
            1 => Ok(StrategyType::Stepped),
            other => Err(Error::InvalidManifest(format!(
                "unknown strategy type {other}"
            ))),
        }
    }
}

/// Erasure-coding parameters of a protected dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protection {
    /// Data rows (K).
    pub ec_k: u32,
    /// Parity rows (M).
    pub ec_m: u32,
    /// Tree root of the original, unprotected dataset.
    pub original_tree_cid: Cid,
    /// Size in bytes of the original dataset.
    pub original_dataset_size: u64,
    /// How data blocks form codewords (Codex: stepped).
    pub strategy: StrategyType,
    /// Slot roots, present once the dataset is verifiable.
    pub verification: Option<Verification>,
}

/// Slot roots and the verify root of a verifiable dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// Poseidon2 root over the slot roots (`codex-proving-root`).
    pub verify_root: Cid,
    /// One Poseidon2 root per slot (`codex-slot-root`).
    pub slot_roots: Vec<Cid>,
    /// Cell size in bytes (2048).
    pub cell_size: u32,
    /// How blocks are grouped into slots (Codex: linear).
    pub strategy: StrategyType,
}

/// The public parameters of an encrypted dataset (an extension of Codex's manifest,
/// header field 20, absent for plain datasets so that their encoding stays Codex's):
/// which scheme, the dataset's nonce, a check value that tells a wrong key apart, and
/// how a passphrase becomes the key. No secret is here; the crate `codex-crypto`
/// implements the scheme.
///
/// ```text
/// Encryption { 1: uint32 scheme  2: bytes nonce (16)  3: bytes keyCheck (16)
///              4: Kdf (only if the key comes from a passphrase) }
/// Kdf        { 1: uint32 algorithm (1 = Argon2id v1.3)  2: bytes salt (16)
///              3: uint32 memoryKiB  4: uint32 iterations  5: uint32 parallelism }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encryption {
    /// The scheme (1: XChaCha20-Poly1305, one sealed segment per block).
    pub scheme: u32,
    /// Random per dataset; with the block index it forms each block's nonce.
    pub nonce: [u8; 16],
    /// An authentication tag made with the key over nothing: checks a key before any
    /// block is read.
    pub key_check: [u8; 16],
    /// How the key is derived from a passphrase, when it is.
    pub kdf: Option<Kdf>,
}

/// Key derivation parameters of a passphrase-encrypted dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kdf {
    /// The algorithm (1: Argon2id, version 0x13).
    pub algorithm: u32,
    /// Random salt.
    pub salt: [u8; 16],
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

/// Header field of [`Encryption`]: far from Codex's fields 1-9.
const ENCRYPTION_FIELD: u32 = 20;

/// A dataset's description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Root of the SHA-256 tree over the dataset's blocks.
    pub tree_cid: Cid,
    /// Block size in bytes.
    pub block_size: u32,
    /// Dataset size in bytes (for a protected dataset: `block_size * blocks`).
    pub dataset_size: u64,
    /// Codec of the blocks (`codex-block`).
    pub codec: u64,
    /// Multihash of the blocks (`sha2-256`).
    pub hcodec: u64,
    /// CID version (1).
    pub version: u32,
    /// File name given at upload.
    pub filename: Option<String>,
    /// MIME type given at upload.
    pub mimetype: Option<String>,
    /// Erasure coding, for a protected dataset.
    pub protection: Option<Protection>,
    /// Encryption parameters, for an encrypted dataset (not in Codex's format; plain
    /// manifests encode exactly as Codex's).
    pub encryption: Option<Encryption>,
}

impl Manifest {
    /// A plain manifest for an upload of `dataset_size` bytes whose tree root is `tree_cid`.
    pub fn new(tree_cid: Cid, block_size: u32, dataset_size: u64) -> Self {
        Manifest {
            tree_cid,
            block_size,
            dataset_size,
            codec: codec::BLOCK,
            hcodec: codec::SHA2_256,
            version: 1,
            filename: None,
            mimetype: None,
            protection: None,
            encryption: None,
        }
    }

    /// Whether the dataset's blocks are ciphertext.
    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// Whether the dataset is erasure-coded.
    pub fn is_protected(&self) -> bool {
        self.protection.is_some()
    }

    /// Whether the dataset has slot roots.
    pub fn is_verifiable(&self) -> bool {
        self.protection
            .as_ref()
            .is_some_and(|p| p.verification.is_some())
    }

    /// `ceil(datasetSize / blockSize)`.
    pub fn blocks_count(&self) -> u64 {
        self.dataset_size
            .div_ceil(u64::from(self.block_size.max(1)))
    }

    /// The size of the file a reader gets back: the original size when protected.
    pub fn original_size(&self) -> u64 {
        match &self.protection {
            Some(p) => p.original_dataset_size,
            None => self.dataset_size,
        }
    }

    /// `ceil(originalDatasetSize / blockSize)`; the blocks count when not protected.
    pub fn original_blocks_count(&self) -> u64 {
        self.original_size()
            .div_ceil(u64::from(self.block_size.max(1)))
    }

    /// Tree root of the original data: `originalTreeCid` when protected, else `treeCid`.
    pub fn original_tree_cid(&self) -> Cid {
        match &self.protection {
            Some(p) => p.original_tree_cid,
            None => self.tree_cid,
        }
    }

    /// Columns of the erasure-coding matrix: `roundUp(originalBlocks, K) / K`.
    pub fn steps(&self) -> Option<u64> {
        let p = self.protection.as_ref()?;
        let k = u64::from(p.ec_k.max(1));
        Some(self.original_blocks_count().div_ceil(k))
    }

    /// The number of slots, `K + M`, when protected.
    pub fn num_slots(&self) -> Option<u64> {
        self.protection
            .as_ref()
            .map(|p| u64::from(p.ec_k) + u64::from(p.ec_m))
    }

    /// The protobuf encoding of reference §2.1, byte for byte as the Nim encoder writes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut h = pb::Writer::new();
        h.bytes(1, &self.tree_cid.to_bytes())
            .uint(2, u64::from(self.block_size))
            .uint(3, self.dataset_size)
            .uint(4, self.codec)
            .uint(5, self.hcodec)
            .uint(6, u64::from(self.version));
        if let Some(p) = &self.protection {
            let mut e = pb::Writer::new();
            e.uint(1, u64::from(p.ec_k))
                .uint(2, u64::from(p.ec_m))
                .bytes(3, &p.original_tree_cid.to_bytes())
                .uint(4, p.original_dataset_size)
                .uint(5, p.strategy.code());
            if let Some(v) = &p.verification {
                let mut vi = pb::Writer::new();
                vi.bytes(1, &v.verify_root.to_bytes());
                for root in &v.slot_roots {
                    vi.bytes(2, &root.to_bytes());
                }
                vi.uint(3, u64::from(v.cell_size))
                    .uint(4, v.strategy.code());
                e.message(6, &vi);
            }
            h.message(7, &e);
        }
        if let Some(name) = &self.filename {
            h.bytes(8, name.as_bytes());
        }
        if let Some(mime) = &self.mimetype {
            h.bytes(9, mime.as_bytes());
        }
        if let Some(enc) = &self.encryption {
            let mut e = pb::Writer::new();
            e.uint(1, u64::from(enc.scheme))
                .bytes(2, &enc.nonce)
                .bytes(3, &enc.key_check);
            if let Some(k) = &enc.kdf {
                let mut kw = pb::Writer::new();
                kw.uint(1, u64::from(k.algorithm))
                    .bytes(2, &k.salt)
                    .uint(3, u64::from(k.memory_kib))
                    .uint(4, u64::from(k.iterations))
                    .uint(5, u64::from(k.parallelism));
                e.message(4, &kw);
            }
            h.message(ENCRYPTION_FIELD, &e);
        }
        let mut outer = pb::Writer::new();
        outer.message(1, &h);
        outer.finish()
    }

    /// The manifest's CID: `CIDv1(codex-manifest, sha2-256(encode()))`.
    pub fn cid(&self) -> Cid {
        Cid::for_manifest(&self.encode())
    }

    /// Decodes and validates a manifest.
    ///
    /// # Errors
    /// [`Error::Decode`] for malformed protobuf, [`Error::InvalidManifest`] when the
    /// fields break Codex's rules (for a protected manifest: `blocks == steps * (K+M)`).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "manifest";
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(Error::decode(
                WHAT,
                format!("{} bytes exceed the limit", bytes.len()),
            ));
        }
        let mut outer = pb::Reader::new(bytes, WHAT);
        let mut header = None;
        while let Some((field, value)) = outer.next_field()? {
            if field == 1 {
                header = Some(value.bytes(WHAT)?);
            }
        }
        let header = header.ok_or_else(|| Error::decode(WHAT, "no header"))?;

        let mut tree_cid = None;
        let (mut block_size, mut dataset_size, mut codec_, mut hcodec, mut version) =
            (None, None, None, None, None);
        let (mut filename, mut mimetype, mut erasure, mut encryption) = (None, None, None, None);
        let mut r = pb::Reader::new(header, WHAT);
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => tree_cid = Some(Cid::from_bytes(value.bytes(WHAT)?)?),
                2 => block_size = Some(value.uint32(WHAT)?),
                3 => dataset_size = Some(value.uint(WHAT)?),
                4 => codec_ = Some(value.uint(WHAT)?),
                5 => hcodec = Some(value.uint(WHAT)?),
                6 => version = Some(value.uint32(WHAT)?),
                7 => erasure = Some(value.bytes(WHAT)?),
                8 => filename = Some(utf8(value.bytes(WHAT)?)?),
                9 => mimetype = Some(utf8(value.bytes(WHAT)?)?),
                ENCRYPTION_FIELD => encryption = Some(decode_encryption(value.bytes(WHAT)?)?),
                _ => {}
            }
        }
        let missing = |name: &str| Error::InvalidManifest(format!("missing {name}"));
        let manifest = Manifest {
            tree_cid: tree_cid.ok_or_else(|| missing("treeCid"))?,
            block_size: block_size.ok_or_else(|| missing("blockSize"))?,
            dataset_size: dataset_size.ok_or_else(|| missing("datasetSize"))?,
            codec: codec_.ok_or_else(|| missing("codec"))?,
            hcodec: hcodec.ok_or_else(|| missing("hcodec"))?,
            version: version.ok_or_else(|| missing("version"))?,
            filename: filename.filter(|s: &String| !s.is_empty()),
            mimetype: mimetype.filter(|s: &String| !s.is_empty()),
            protection: match erasure.filter(|e| !e.is_empty()) {
                Some(e) => Some(decode_protection(e)?),
                None => None,
            },
            encryption,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks Codex's rules on the fields.
    ///
    /// # Errors
    /// [`Error::InvalidManifest`] naming the rule that fails.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::InvalidManifest(s));
        if self.block_size == 0 {
            return bad("blockSize is 0".into());
        }
        if self.tree_cid.codec() != codec::ROOT {
            return bad(format!(
                "treeCid has codec {:#x}, expected codex-root",
                self.tree_cid.codec()
            ));
        }
        if self.version != 1 {
            return bad(format!("CID version {} is not 1", self.version));
        }
        if let Some(p) = &self.protection {
            if p.ec_k == 0 || p.ec_m == 0 {
                return bad(format!(
                    "ecK = {} and ecM = {} must both be positive",
                    p.ec_k, p.ec_m
                ));
            }
            if p.original_dataset_size > self.dataset_size {
                return bad("originalDatasetSize exceeds datasetSize".into());
            }
            let steps = self.steps().unwrap_or(0);
            let slots = u64::from(p.ec_k) + u64::from(p.ec_m);
            if steps.checked_mul(slots) != Some(self.blocks_count()) {
                return bad(format!(
                    "protected dataset has {} blocks, steps * (K+M) = {steps} * {slots}",
                    self.blocks_count()
                ));
            }
            if let Some(v) = &p.verification {
                if v.slot_roots.len() as u64 != slots {
                    return bad(format!(
                        "{} slot roots for {slots} slots",
                        v.slot_roots.len()
                    ));
                }
                if v.cell_size == 0 || !self.block_size.is_multiple_of(v.cell_size) {
                    return bad(format!(
                        "cell size {} does not divide the block size",
                        v.cell_size
                    ));
                }
            }
        }
        Ok(())
    }
}

fn utf8(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::decode("manifest", "string field is not UTF-8"))
}

fn array16(bytes: &[u8], what: &str) -> Result<[u8; 16]> {
    bytes.try_into().map_err(|_| {
        Error::InvalidManifest(format!("{what} has {} bytes, expected 16", bytes.len()))
    })
}

fn decode_encryption(bytes: &[u8]) -> Result<Encryption> {
    const WHAT: &str = "manifest encryption info";
    let (mut scheme, mut nonce, mut check, mut kdf) = (None, None, None, None);
    let mut r = pb::Reader::new(bytes, WHAT);
    while let Some((field, value)) = r.next_field()? {
        match field {
            1 => scheme = Some(value.uint32(WHAT)?),
            2 => nonce = Some(array16(value.bytes(WHAT)?, "encryption nonce")?),
            3 => check = Some(array16(value.bytes(WHAT)?, "encryption key check")?),
            4 => {
                const WHAT: &str = "manifest key derivation";
                let (mut alg, mut salt, mut mem, mut it, mut par) = (None, None, None, None, None);
                let mut k = pb::Reader::new(value.bytes(WHAT)?, WHAT);
                while let Some((field, value)) = k.next_field()? {
                    match field {
                        1 => alg = Some(value.uint32(WHAT)?),
                        2 => salt = Some(array16(value.bytes(WHAT)?, "key derivation salt")?),
                        3 => mem = Some(value.uint32(WHAT)?),
                        4 => it = Some(value.uint32(WHAT)?),
                        5 => par = Some(value.uint32(WHAT)?),
                        _ => {}
                    }
                }
                let missing = |name: &str| Error::InvalidManifest(format!("missing kdf {name}"));
                kdf = Some(Kdf {
                    algorithm: alg.ok_or_else(|| missing("algorithm"))?,
                    salt: salt.ok_or_else(|| missing("salt"))?,
                    memory_kib: mem.ok_or_else(|| missing("memory"))?,
                    iterations: it.ok_or_else(|| missing("iterations"))?,
                    parallelism: par.ok_or_else(|| missing("parallelism"))?,
                });
            }
            _ => {}
        }
    }
    let missing = |name: &str| Error::InvalidManifest(format!("missing encryption {name}"));
    Ok(Encryption {
        scheme: scheme.ok_or_else(|| missing("scheme"))?,
        nonce: nonce.ok_or_else(|| missing("nonce"))?,
        key_check: check.ok_or_else(|| missing("key check"))?,
        kdf,
    })
}

fn decode_protection(bytes: &[u8]) -> Result<Protection> {
    const WHAT: &str = "manifest erasure info";
    let (mut k, mut m, mut orig_tree, mut orig_size, mut strategy, mut verification) =
        (0, 0, None, 0, StrategyType::Stepped, None);
    let mut r = pb::Reader::new(bytes, WHAT);
    while let Some((field, value)) = r.next_field()? {
        match field {
            1 => k = value.uint32(WHAT)?,
            2 => m = value.uint32(WHAT)?,
            3 => orig_tree = Some(Cid::from_bytes(value.bytes(WHAT)?)?),
            4 => orig_size = value.uint(WHAT)?,
            5 => strategy = StrategyType::from_code(value.uint(WHAT)?)?,
            6 => verification = Some(value.bytes(WHAT)?),
            _ => {}
        }
    }
    let verification = match verification.filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => {
            const WHAT: &str = "manifest verification info";
            let (mut root, mut slots, mut cell, mut vstrategy) =
                (None, Vec::new(), 0, StrategyType::Linear);
            let mut r = pb::Reader::new(v, WHAT);
            while let Some((field, value)) = r.next_field()? {
                match field {
                    1 => root = Some(Cid::from_bytes(value.bytes(WHAT)?)?),
                    2 => slots.push(Cid::from_bytes(value.bytes(WHAT)?)?),
                    3 => cell = value.uint32(WHAT)?,
                    4 => vstrategy = StrategyType::from_code(value.uint(WHAT)?)?,
                    _ => {}
                }
            }
            Some(Verification {
                verify_root: root
                    .ok_or_else(|| Error::InvalidManifest("missing verifyRoot".into()))?,
                slot_roots: slots,
                cell_size: cell,
                strategy: vstrategy,
            })
        }
    };
    Ok(Protection {
        ec_k: k,
        ec_m: m,
        original_tree_cid: orig_tree
            .ok_or_else(|| Error::InvalidManifest("missing originalTreeCid".into()))?,
        original_dataset_size: orig_size,
        strategy,
        verification,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::Block;
    use crate::chunker::{Chunker, DEFAULT_BLOCK_SIZE};
    use crate::merkle::MerkleTree;

    /// Reference §2.2 / §9: uploading the 5 bytes `hello`.
    #[test]
    fn hello_upload_matches_reference() {
        let blocks: Vec<Block> = Chunker::new(&b"hello"[..], DEFAULT_BLOCK_SIZE)
            .map(|b| Block::new(b.expect("read")))
            .collect();
        assert_eq!(blocks.len(), 1);
        assert_eq!(
            blocks[0].cid().to_string(),
            "zDxWB8ED37B8eQGgsNvyBaSvEeYReJ1nK9mwmRKrfavh4tkcC2bW"
        );
        let tree = MerkleTree::from_cids(blocks.iter().map(Block::cid)).expect("tree");
        assert_eq!(
            tree.root_cid().to_string(),
            "zDzSvJTfBe4Dz6htuLuji1Ts5sCKE8PyEHDrB61e6N1W4kcCi5zN"
        );
        let manifest = Manifest::new(tree.root_cid(), DEFAULT_BLOCK_SIZE as u32, 5);
        let bytes = manifest.encode();
        assert_eq!(
            hex::encode(&bytes),
            "0a360a2601839a031220a6ee947bbe4d4ef4dcc4cd401ee09879f9287aaa89942a9340492fe10d0f8bc710808004180520829a0328123001"
        );
        assert_eq!(
            manifest.cid().to_string(),
            "zDvZRwzkwbhyRWn7A5uoSvU4qe2ERHkv7pgtchsgqwm356Q6DAVe"
        );
        assert_eq!(Manifest::decode(&bytes).expect("decode"), manifest);
    }

    fn protected() -> Manifest {
        let tree = Cid::from_sha256(codec::ROOT, [1; 32]);
        let orig = Cid::from_sha256(codec::ROOT, [2; 32]);
        // 10 original blocks, K=3 M=2: rounded 12, steps 4, 20 blocks.
        let mut m = Manifest::new(tree, 65536, 20 * 65536);
        m.filename = Some("a.bin".into());
        m.mimetype = Some("application/octet-stream".into());
        m.protection = Some(Protection {
            ec_k: 3,
            ec_m: 2,
            original_tree_cid: orig,
            original_dataset_size: 10 * 65536 - 17,
            strategy: StrategyType::Stepped,
            verification: None,
        });
        m
    }

    #[test]
    fn encryption_parameters_round_trip_and_only_extend_the_header() {
        let mut m = protected();
        let plain = m.encode();
        m.encryption = Some(Encryption {
            scheme: 1,
            nonce: [7; 16],
            key_check: [9; 16],
            kdf: Some(Kdf {
                algorithm: 1,
                salt: [3; 16],
                memory_kib: 19456,
                iterations: 2,
                parallelism: 1,
            }),
        });
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).expect("decode"), m);
        assert!(m.is_encrypted());
        // The header is Codex's fields followed by field 20: a decoder that skips
        // unknown fields (Codex's) reads the same dataset.
        let header = |b: &[u8]| {
            let mut outer = pb::Reader::new(b, "t");
            let (_, h) = outer.next_field().expect("ok").expect("header");
            h.bytes("t").expect("bytes").to_vec()
        };
        let (h_plain, h_enc) = (header(&plain), header(&bytes));
        assert!(h_enc.starts_with(&h_plain));
        let mut rest = pb::Reader::new(&h_enc[h_plain.len()..], "t");
        let (field, _) = rest.next_field().expect("ok").expect("field");
        assert_eq!(field, 20);
        assert!(rest.next_field().expect("ok").is_none());

        // A nonce of the wrong length is refused by name.
        let mut e = pb::Writer::new();
        e.uint(1, 1).bytes(2, &[1; 15]).bytes(3, &[2; 16]);
        let mut h = pb::Writer::new();
        h.bytes(1, &m.tree_cid.to_bytes())
            .uint(2, 65536)
            .uint(3, 5)
            .uint(4, codec::BLOCK)
            .uint(5, codec::SHA2_256)
            .uint(6, 1)
            .message(20, &e);
        let mut outer = pb::Writer::new();
        outer.message(1, &h);
        let err = Manifest::decode(&outer.finish()).expect_err("short nonce");
        assert!(err.to_string().contains("nonce"), "{err}");
    }

    #[test]
    fn protected_and_verifiable_round_trip() {
        let mut m = protected();
        assert_eq!(m.steps(), Some(4));
        assert_eq!(Manifest::decode(&m.encode()).expect("decode"), m);
        if let Some(p) = m.protection.as_mut() {
            p.verification = Some(Verification {
                verify_root: Cid::from_identity(codec::PROVING_ROOT, [3; 32]),
                slot_roots: (0..5u8)
                    .map(|i| Cid::from_identity(codec::SLOT_ROOT, [i; 32]))
                    .collect(),
                cell_size: 2048,
                strategy: StrategyType::Linear,
            });
        }
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).expect("decode"), m);
        assert!(m.is_verifiable());
    }

    #[test]
    fn field_numbers_follow_the_encoder_not_the_comment() {
        let mut m = protected();
        if let Some(p) = m.protection.as_mut() {
            p.verification = Some(Verification {
                verify_root: Cid::from_identity(codec::PROVING_ROOT, [3; 32]),
                slot_roots: (0..5u8)
                    .map(|i| Cid::from_identity(codec::SLOT_ROOT, [i; 32]))
                    .collect(),
                cell_size: 2048,
                strategy: StrategyType::Linear,
            });
        }
        let bytes = m.encode();
        // Find ErasureInfo (header field 7) and check that field 5 is the strategy (varint)
        // and field 6 the verification message.
        let mut outer = pb::Reader::new(&bytes, "t");
        let (_, header) = outer.next_field().expect("ok").expect("header");
        let mut r = pb::Reader::new(header.bytes("t").expect("bytes"), "t");
        let mut seen = Vec::new();
        while let Some((f, v)) = r.next_field().expect("ok") {
            seen.push(f);
            if f == 7 {
                let mut e = pb::Reader::new(v.bytes("t").expect("bytes"), "t");
                let mut fields = Vec::new();
                while let Some((f, v)) = e.next_field().expect("ok") {
                    fields.push((f, matches!(v, pb::Value::Varint(_))));
                }
                assert_eq!(
                    fields,
                    vec![
                        (1, true),
                        (2, true),
                        (3, false),
                        (4, true),
                        (5, true),
                        (6, false)
                    ]
                );
            }
        }
        assert_eq!(seen, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn invalid_manifests_are_rejected() {
        let mut m = protected();
        m.dataset_size = 19 * 65536;
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(Error::InvalidManifest(_))
        ));
        let mut m = protected();
        m.block_size = 0;
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut m = protected();
        m.tree_cid = Cid::for_block(b"x");
        assert!(Manifest::decode(&m.encode()).is_err());
        assert!(Manifest::decode(&[]).is_err());
        assert!(Manifest::decode(&[0x0a, 0x02, 0x0a]).is_err());
        assert!(Manifest::decode(b"\x0a\x05hello").is_err());
    }
}
