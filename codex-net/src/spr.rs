//! The node's signed peer record (SPR): libp2p's signed envelope (RFC 0002) holding a
//! peer record (RFC 0003), as Codex hands it to other nodes (`GET /spr`,
//! `--bootstrap-node spr:...`).
//!
//! The envelope is signed by the node's identity key over the domain
//! `libp2p-peer-record` with payload type `0x0301` (the `libp2p-peer-record`
//! multicodec); its text form is `spr:` followed by the envelope's protobuf encoding in
//! URL-safe base64 without padding (nim-codex's `toURI`; padded text is taken too).

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use libp2p::core::peer_record::FromEnvelopeError;
use libp2p::core::signed_envelope::ReadPayloadError;
use libp2p::core::{PeerRecord, SignedEnvelope};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::error::{Error, Result};

/// The text form's prefix.
pub const SPR_PREFIX: &str = "spr:";
/// The domain a peer record's envelope is signed over.
pub const PEER_RECORD_DOMAIN: &str = "libp2p-peer-record";
/// The payload type of a peer record: the `libp2p-peer-record` multicodec, 0x0301.
pub const PEER_RECORD_PAYLOAD_TYPE: [u8; 2] = [0x03, 0x01];

/// URL-safe base64: written without padding, read with or without it.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A signed peer record: a peer id, a sequence number and the addresses the peer is
/// reached at, signed by the peer's key. Made by [`SignedPeerRecord::new`] or
/// [`Network::spr`](crate::Network::spr), read from text with [`str::parse`] (the
/// signature checked) and written with `to_string()` (`spr:...`).
///
/// ```
/// use codex_net::{Keypair, SignedPeerRecord};
///
/// let key = Keypair::generate_ed25519();
/// let addr = "/ip4/127.0.0.1/tcp/8070".parse().expect("a multiaddr");
/// let spr = SignedPeerRecord::new(&key, 1, vec![addr])?;
/// let text = spr.to_string();
/// assert!(text.starts_with("spr:"));
/// let back: SignedPeerRecord = text.parse()?;
/// assert_eq!(back.peer_id(), key.public().to_peer_id());
/// assert_eq!(back, spr);
/// # Ok::<(), codex_net::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPeerRecord {
    record: PeerRecord,
}

/// libp2p's `PeerRecord` message (`peer_record.proto`).
#[derive(Clone, PartialEq, prost::Message)]
struct PeerRecordMessage {
    #[prost(bytes = "vec", tag = "1")]
    peer_id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    seq: u64,
    #[prost(message, repeated, tag = "3")]
    addresses: Vec<AddressInfo>,
}

/// One address of a `PeerRecord`.
#[derive(Clone, PartialEq, prost::Message)]
struct AddressInfo {
    #[prost(bytes = "vec", tag = "1")]
    multiaddr: Vec<u8>,
}

impl SignedPeerRecord {
    /// A record of `key`'s peer at `addresses` with sequence number `seq`, signed by
    /// `key`. A peer's later record must have a higher `seq` (nim-libp2p takes the Unix
    /// time in seconds; [`Network::spr`](crate::Network::spr) takes it too, and one more
    /// than the last record's when that is higher).
    ///
    /// # Errors
    /// [`Error::SprEnvelope`] when the key cannot sign.
    pub fn new(key: &Keypair, seq: u64, addresses: Vec<Multiaddr>) -> Result<Self> {
        let message = PeerRecordMessage {
            peer_id: key.public().to_peer_id().to_bytes(),
            seq,
            addresses: addresses
                .iter()
                .map(|a| AddressInfo {
                    multiaddr: a.to_vec(),
                })
                .collect(),
        };
        let envelope = SignedEnvelope::new(
            key,
            PEER_RECORD_DOMAIN.into(),
            PEER_RECORD_PAYLOAD_TYPE.to_vec(),
            prost::Message::encode_to_vec(&message),
        )
        .map_err(|e| Error::SprEnvelope(format!("cannot sign: {e}")))?;
        let record = PeerRecord::from_signed_envelope_interop(envelope).map_err(envelope_error)?;
        Ok(SignedPeerRecord { record })
    }

    /// Reads a record from its envelope's protobuf encoding and checks its signature.
    ///
    /// # Errors
    /// [`Error::SprEnvelope`] for bytes that are no signed envelope of a peer record,
    /// [`Error::SprPayloadType`] for an envelope of another payload,
    /// [`Error::SprSignature`] when the signature does not verify or the signer is not
    /// the record's peer.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let envelope = SignedEnvelope::from_protobuf_encoding(bytes)
            .map_err(|e| Error::SprEnvelope(error_chain(&e)))?;
        let record = PeerRecord::from_signed_envelope_interop(envelope).map_err(envelope_error)?;
        Ok(SignedPeerRecord { record })
    }

    /// The envelope's protobuf encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.record.to_signed_envelope().into_protobuf_encoding()
    }

    /// The peer the record is of (its signer).
    pub fn peer_id(&self) -> PeerId {
        self.record.peer_id()
    }

    /// The record's sequence number: a later record of the peer has a higher one.
    pub fn seq(&self) -> u64 {
        self.record.seq()
    }

    /// The addresses the record holds, as signed (without `/p2p/<peer id>`).
    pub fn addresses(&self) -> &[Multiaddr] {
        self.record.addresses()
    }

    /// The addresses to dial the peer at, each ending in `/p2p/<peer id>` as
    /// [`NetConfig::bootstrap`](crate::NetConfig::bootstrap) takes them.
    pub fn dial_addresses(&self) -> Vec<Multiaddr> {
        let peer = self.peer_id();
        self.addresses()
            .iter()
            .map(|a| with_peer(a.clone(), peer))
            .collect()
    }
}

/// `addr` ending in `/p2p/<peer>`, added when it does not.
fn with_peer(addr: Multiaddr, peer: PeerId) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr
    } else {
        addr.with(Protocol::P2p(peer))
    }
}

impl fmt::Display for SignedPeerRecord {
    /// `spr:` and the envelope in URL-safe base64 without padding.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SPR_PREFIX}{}", BASE64URL.encode(self.to_bytes()))
    }
}

impl FromStr for SignedPeerRecord {
    type Err = Error;

    /// Reads `spr:` and a signed envelope in URL-safe base64 (padded or not), and checks
    /// the signature.
    ///
    /// # Errors
    /// [`Error::SprEncoding`] for text that is not `spr:` and base64url, else as
    /// [`SignedPeerRecord::from_bytes`].
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let encoded = s
            .strip_prefix(SPR_PREFIX)
            .ok_or_else(|| Error::SprEncoding(format!("does not start with {SPR_PREFIX:?}")))?;
        let bytes = BASE64URL
            .decode(encoded)
            .map_err(|e| Error::SprEncoding(format!("not URL-safe base64: {e}")))?;
        Self::from_bytes(&bytes)
    }
}

/// A node to bootstrap from, as `--bootstrap-node` takes it: a multiaddr ending in
/// `/p2p/<peer id>`, or a signed peer record (`spr:...`, as Codex's `GET /spr` answers)
/// whose addresses are dialed.
///
/// ```
/// use codex_net::BootstrapNode;
///
/// let node: BootstrapNode =
///     "/ip4/127.0.0.1/tcp/8070/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
///         .parse()?;
/// assert_eq!(node.addresses().len(), 1);
/// # Ok::<(), codex_net::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootstrapNode {
    /// A multiaddr ending in `/p2p/<peer id>`.
    Addr(Multiaddr),
    /// A signed peer record: its peer at each of its addresses (boxed: a record with a
    /// secp256k1 key is large).
    Record(Box<SignedPeerRecord>),
}

impl BootstrapNode {
    /// The addresses to dial, each ending in `/p2p/<peer id>`, as
    /// [`NetConfig::bootstrap`](crate::NetConfig::bootstrap) takes them.
    pub fn addresses(&self) -> Vec<Multiaddr> {
        match self {
            BootstrapNode::Addr(a) => vec![a.clone()],
            BootstrapNode::Record(r) => r.dial_addresses(),
        }
    }
}

impl FromStr for BootstrapNode {
    type Err = Error;

    /// `spr:...` is read as a signed peer record, anything else as a multiaddr.
    ///
    /// # Errors
    /// As [`SignedPeerRecord`]'s `from_str` for a record, and
    /// [`Error::InvalidOption`] (`"bootstrap"`) for a record without addresses, a text
    /// that is no multiaddr, or one that does not end in `/p2p/<peer id>`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let invalid = |reason: String| Error::InvalidOption {
            option: "bootstrap",
            reason,
        };
        if s.starts_with(SPR_PREFIX) {
            let record: SignedPeerRecord = s.parse()?;
            if record.addresses().is_empty() {
                return Err(invalid(format!(
                    "the record of {} holds no address",
                    record.peer_id()
                )));
            }
            return Ok(BootstrapNode::Record(Box::new(record)));
        }
        let addr: Multiaddr = s
            .parse()
            .map_err(|e| invalid(format!("{s:?} is neither a multiaddr nor spr:...: {e}")))?;
        if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
            return Err(invalid(format!("{addr} does not end in /p2p/<peer id>")));
        }
        Ok(BootstrapNode::Addr(addr))
    }
}

impl fmt::Display for BootstrapNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootstrapNode::Addr(a) => a.fmt(f),
            BootstrapNode::Record(r) => r.fmt(f),
        }
    }
}

/// The next sequence number after `last`: the Unix time in seconds, or `last + 1` when
/// that is higher (two changes within a second, a clock set back).
pub(crate) fn next_seq(last: Option<u64>) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match last {
        Some(last) => now.max(last.saturating_add(1)),
        None => now,
    }
}

/// Our typed error for an envelope libp2p refuses.
fn envelope_error(e: FromEnvelopeError) -> Error {
    match e {
        FromEnvelopeError::BadPayload(ReadPayloadError::InvalidSignature)
        | FromEnvelopeError::MismatchedSignature => Error::SprSignature,
        FromEnvelopeError::BadPayload(ReadPayloadError::UnexpectedPayloadType { got, .. }) => {
            Error::SprPayloadType { payload_type: got }
        }
        other => Error::SprEnvelope(error_chain(&other)),
    }
}

/// An error and its sources, joined by `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Vec<Multiaddr> {
        vec![
            "/ip4/127.0.0.1/tcp/8070".parse().expect("addr"),
            "/ip6/::1/udp/8071/quic-v1".parse().expect("addr"),
        ]
    }

    #[test]
    fn a_record_round_trips_through_its_text() -> Result<()> {
        for key in [Keypair::generate_ed25519(), Keypair::generate_secp256k1()] {
            let spr = SignedPeerRecord::new(&key, 42, addrs())?;
            let text = spr.to_string();
            let encoded = text.strip_prefix("spr:").expect("the prefix");
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "URL-safe base64 without padding: {text}"
            );
            let back: SignedPeerRecord = text.parse()?;
            assert_eq!(back, spr);
            assert_eq!(back.peer_id(), key.public().to_peer_id());
            assert_eq!(back.seq(), 42);
            assert_eq!(back.addresses(), addrs().as_slice());
            let peer = Protocol::P2p(key.public().to_peer_id());
            assert_eq!(
                back.dial_addresses(),
                addrs()
                    .into_iter()
                    .map(|a| a.with(peer.clone()))
                    .collect::<Vec<_>>()
            );
            // Padded text is read too.
            let padding = "=".repeat((4 - encoded.len() % 4) % 4);
            assert_eq!(format!("{text}{padding}").parse::<SignedPeerRecord>()?, spr);
            // The envelope as libp2p reads a standard peer record.
            let envelope =
                SignedEnvelope::from_protobuf_encoding(&spr.to_bytes()).expect("an envelope");
            let record = PeerRecord::from_signed_envelope_interop(envelope).expect("a record");
            assert_eq!(record.seq(), 42);
        }
        Ok(())
    }

    #[test]
    fn a_flipped_byte_is_refused() -> Result<()> {
        let spr = SignedPeerRecord::new(&Keypair::generate_ed25519(), 7, addrs())?;
        let bytes = spr.to_bytes();
        // The payload (and with it the signed addresses) and the signature.
        let payload = spr.record.to_signed_envelope();
        let (signed, _) = payload
            .payload_and_signing_key(PEER_RECORD_DOMAIN.into(), &PEER_RECORD_PAYLOAD_TYPE)
            .expect("our own envelope");
        let at = bytes
            .windows(signed.len())
            .position(|w| w == signed)
            .expect("the payload in the envelope");
        for i in [at + signed.len() - 1, bytes.len() - 1] {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            assert!(
                matches!(
                    SignedPeerRecord::from_bytes(&flipped),
                    Err(Error::SprSignature)
                ),
                "byte {i} flipped"
            );
            let text = format!("spr:{}", BASE64URL.encode(&flipped));
            assert!(matches!(
                text.parse::<SignedPeerRecord>(),
                Err(Error::SprSignature)
            ));
        }
        Ok(())
    }

    #[test]
    fn bad_texts_and_envelopes_give_typed_errors() -> Result<()> {
        let key = Keypair::generate_ed25519();
        assert!(matches!(
            "spr:not base64!".parse::<SignedPeerRecord>(),
            Err(Error::SprEncoding(_))
        ));
        assert!(matches!(
            "CiUIAhIh".parse::<SignedPeerRecord>(),
            Err(Error::SprEncoding(_))
        ));
        assert!(matches!(
            "spr:AAAA".parse::<SignedPeerRecord>(),
            Err(Error::SprEnvelope(_))
        ));
        // rust-libp2p's legacy routing-state record: another payload type.
        let legacy = PeerRecord::new(&key, addrs()).expect("a legacy record");
        let text = format!(
            "spr:{}",
            BASE64URL.encode(legacy.into_signed_envelope().into_protobuf_encoding())
        );
        match text.parse::<SignedPeerRecord>() {
            Err(Error::SprPayloadType { payload_type }) => {
                assert_eq!(payload_type, b"/libp2p/routing-state-record")
            }
            other => panic!("not a payload type error: {other:?}"),
        }
        // The right payload type signed over another domain.
        let envelope = SignedEnvelope::new(
            &key,
            "another-domain".into(),
            PEER_RECORD_PAYLOAD_TYPE.to_vec(),
            Vec::new(),
        )
        .expect("signed");
        assert!(matches!(
            SignedPeerRecord::from_bytes(&envelope.into_protobuf_encoding()),
            Err(Error::SprSignature)
        ));
        // A record of another peer, signed by `key`.
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let message = PeerRecordMessage {
            peer_id: other.to_bytes(),
            seq: 1,
            addresses: Vec::new(),
        };
        let envelope = SignedEnvelope::new(
            &key,
            PEER_RECORD_DOMAIN.into(),
            PEER_RECORD_PAYLOAD_TYPE.to_vec(),
            prost::Message::encode_to_vec(&message),
        )
        .expect("signed");
        assert!(matches!(
            SignedPeerRecord::from_bytes(&envelope.into_protobuf_encoding()),
            Err(Error::SprSignature)
        ));
        Ok(())
    }

    /// The SPR a Codex node printed in nim-codex's `docs/TwoClientTest.md` (commit
    /// 081a6a3, "2. Sign of life"): node 1, run with `--listen-addrs=/ip4/127.0.0.1/tcp/8070
    /// --disc-port=8090`, whose `/debug/info` answered `"id":
    /// "16Uiu2HAmJ3TSfPnrJNedHy2DMsjTqwBiVAQQqPo579DuMgGxmG99"`. Its record is the
    /// discovery (DHT) record: the address is the discovery port's, over UDP.
    const CODEX_SPR: &str = "spr:CiUIAhIhA1AL2J7EWfg7x77iOrR9YYBisY6CDtU2nEhuwDaQyjpkEgIDARo8CicAJQgCEiEDUAvYnsRZ-DvHvuI6tH1hgGKxjoIO1TacSG7ANpDKOmQQ2MWasAYaCwoJBH8AAAGRAh-aKkYwRAIgB2ooPfAyzWEJDe8hD2OXKOBnyTOPakc4GzqKqjM2OGoCICraQLPWf0oSEuvmSroFebVQx-3SDtMqDoIyWhjq1XFF";

    #[test]
    fn a_record_codex_made_is_read() -> Result<()> {
        let spr: SignedPeerRecord = CODEX_SPR.parse()?;
        assert_eq!(
            spr.peer_id().to_string(),
            "16Uiu2HAmJ3TSfPnrJNedHy2DMsjTqwBiVAQQqPo579DuMgGxmG99"
        );
        assert_eq!(
            spr.addresses(),
            &["/ip4/127.0.0.1/udp/8090"
                .parse::<Multiaddr>()
                .expect("addr")]
        );
        // Written back as Codex wrote it: unpadded base64url of the same envelope.
        assert_eq!(spr.to_string(), CODEX_SPR);
        // One bit of it changed: refused.
        let mut bytes = spr.to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x80;
        assert!(matches!(
            SignedPeerRecord::from_bytes(&bytes),
            Err(Error::SprSignature | Error::SprEnvelope(_))
        ));
        // As a bootstrap node: the peer at its address.
        let node: BootstrapNode = CODEX_SPR.parse()?;
        assert_eq!(
            node.addresses(),
            vec![
                "/ip4/127.0.0.1/udp/8090/p2p/16Uiu2HAmJ3TSfPnrJNedHy2DMsjTqwBiVAQQqPo579DuMgGxmG99"
                    .parse::<Multiaddr>()
                    .expect("addr")
            ]
        );
        Ok(())
    }

    #[test]
    fn bootstrap_nodes_are_multiaddrs_or_records() -> Result<()> {
        let key = Keypair::generate_ed25519();
        let spr = SignedPeerRecord::new(&key, 1, addrs())?;
        let node: BootstrapNode = spr.to_string().parse()?;
        assert_eq!(node, BootstrapNode::Record(Box::new(spr.clone())));
        assert_eq!(node.addresses(), spr.dial_addresses());
        assert_eq!(node.to_string(), spr.to_string());
        let empty = SignedPeerRecord::new(&key, 1, Vec::new())?;
        assert!(matches!(
            empty.to_string().parse::<BootstrapNode>(),
            Err(Error::InvalidOption {
                option: "bootstrap",
                ..
            })
        ));
        for bad in ["/ip4/127.0.0.1/tcp/1", "nonsense", ""] {
            assert!(
                matches!(
                    bad.parse::<BootstrapNode>(),
                    Err(Error::InvalidOption {
                        option: "bootstrap",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            "spr:%%".parse::<BootstrapNode>(),
            Err(Error::SprEncoding(_))
        ));
        Ok(())
    }

    #[test]
    fn sequence_numbers_go_up() {
        let first = next_seq(None);
        assert!(first > 1_700_000_000, "the Unix time in seconds");
        assert!(next_seq(Some(first)) > first);
        assert_eq!(next_seq(Some(u64::MAX - 1)), u64::MAX);
    }
}
