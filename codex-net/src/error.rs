/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong on the network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A peer's message breaks the protocol.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A framed message longer than allowed.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A delivered block failed verification.
    #[error("peer {peer} sent a bad block for {address}: {reason}")]
    BadBlock {
        /// The peer.
        peer: String,
        /// What was asked for.
        address: String,
        /// Why it is rejected.
        reason: String,
    },
    /// No peer could provide a block.
    #[error("no peer provided {0} in time")]
    Unavailable(String),
    /// A setting of the network or the block exchange that cannot work (see
    /// [`NetConfig::validate`](crate::NetConfig::validate)); nothing was started.
    #[error("invalid network option {option}: {reason}")]
    InvalidOption {
        /// The setting, as its field in [`NetConfig`](crate::NetConfig) is named
        /// (`"kad_protocol"`, `"listen_addrs"`, `"limits.max_connections"`, ...).
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--nat` value that is none of `any`, `none`, `upnp`, `extip:<IP>`.
    #[error("invalid NAT setting {value:?}: {reason}")]
    InvalidNat {
        /// The text given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A signed peer record's text is not `spr:` followed by URL-safe base64.
    #[error("malformed SPR: {0}")]
    SprEncoding(String),
    /// A signed peer record's bytes are no signed envelope holding a peer record (a
    /// malformed protobuf, public key, peer id or address).
    #[error("bad SPR envelope: {0}")]
    SprEnvelope(String),
    /// A signed peer record's signature does not verify over the domain
    /// `libp2p-peer-record`, or its signer is not the peer it names.
    #[error("bad SPR signature: the record is not signed by the peer it names")]
    SprSignature,
    /// A signed envelope that holds something other than a peer record (payload type
    /// `0x0301`).
    #[error("not a peer record: the envelope's payload type is {payload_type:02x?}, not [03, 01]")]
    SprPayloadType {
        /// The envelope's payload type.
        payload_type: Vec<u8>,
    },
    /// The network task is gone.
    #[error("the network task has stopped")]
    Stopped,
    /// libp2p failed (dial, listen, transport).
    #[error("libp2p: {0}")]
    Libp2p(String),
    /// Decoding or storage.
    #[error(transparent)]
    Core(#[from] codex_core::Error),
    /// I/O on a stream.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The node key file cannot be read or written (it does not exist, permissions).
    #[error("node key file {}: {source}", .path.display())]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The node key file holds no libp2p private key (not its protobuf encoding, or
    /// key bytes that are no key of their type).
    #[error("node key file {} is malformed: {reason}", .path.display())]
    KeyMalformed {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The node key file holds a key of a type the node does not take: only Ed25519
    /// and secp256k1 are (Codex nodes take secp256k1 only).
    #[error(
        "node key file {} holds a key of type {key_type} ({name}): only Ed25519 and secp256k1 keys are taken",
        .path.display()
    )]
    KeyUnsupported {
        /// The file.
        path: std::path::PathBuf,
        /// Field 1 of libp2p's `PrivateKey` protobuf (0 RSA, 1 Ed25519, 2 secp256k1,
        /// 3 ECDSA).
        key_type: i32,
        /// Its name.
        name: &'static str,
    },
}
