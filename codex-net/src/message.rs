//! Codex's block-exchange messages (reference §5.2, the Nim encoder's field numbers) and
//! their framing: an unsigned-varint length, then the protobuf.

use bytes::Bytes;
use codex_core::pb::{Reader, Value, Writer};
use codex_core::{BlockAddress, Cid, CodexProof};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};

/// The protocol id.
pub const PROTOCOL: &str = "/codex/blockexc/1.0.0";

/// What a want-list entry asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WantType {
    /// Send the block.
    WantBlock,
    /// Say whether you have it.
    WantHave,
}

/// One want-list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The block wanted.
    pub address: BlockAddress,
    /// Higher first.
    pub priority: u64,
    /// Withdraws an earlier entry for the address.
    pub cancel: bool,
    /// Block or presence.
    pub want_type: WantType,
    /// Answer `DontHave` too.
    pub send_dont_have: bool,
}

/// A want-list: entries, and whether it replaces the previous one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WantList {
    /// The entries.
    pub entries: Vec<Entry>,
    /// Whether this is the full list rather than a delta.
    pub full: bool,
}

/// A block sent in answer to a want, with its proof for a leaf address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The block's CID.
    pub cid: Cid,
    /// The block's bytes.
    pub data: Bytes,
    /// The address it was asked for.
    pub address: BlockAddress,
    /// Its proof against the tree, for a leaf address.
    pub proof: Option<CodexProof>,
}

/// Whether a peer has a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceType {
    /// It has it.
    Have,
    /// It does not.
    DontHave,
}

/// A presence answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    /// The block.
    pub address: BlockAddress,
    /// Have or not.
    pub kind: PresenceType,
    /// Price (UInt256 big-endian); empty: free.
    pub price: Vec<u8>,
}

/// One block-exchange message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Wants.
    pub wantlist: WantList,
    /// Blocks.
    pub payload: Vec<Delivery>,
    /// Presences.
    pub presences: Vec<Presence>,
    /// Bytes the sender still has queued for us.
    pub pending_bytes: u64,
    /// The sender's account (Ethereum address), unused while blocks are free.
    pub account: Option<Vec<u8>>,
    /// A payment (Nitro state), unused while blocks are free.
    pub payment: Option<Vec<u8>>,
}

const WHAT: &str = "block-exchange message";

fn write_address(a: &BlockAddress) -> Writer {
    let mut w = Writer::new();
    match a {
        BlockAddress::Leaf { tree, index } => {
            w.uint(1, 1).bytes(2, &tree.to_bytes()).uint(3, *index);
        }
        BlockAddress::Cid(cid) => {
            w.uint(1, 0).bytes(4, &cid.to_bytes());
        }
    }
    w
}

fn read_address(b: &[u8]) -> Result<BlockAddress> {
    let (mut leaf, mut tree, mut index, mut cid) = (false, None, 0, None);
    let mut r = Reader::new(b, WHAT);
    while let Some((f, v)) = r.next_field()? {
        match f {
            1 => leaf = v.uint(WHAT)? != 0,
            2 => tree = Some(Cid::from_bytes(v.bytes(WHAT)?)?),
            3 => index = v.uint(WHAT)?,
            4 => cid = Some(Cid::from_bytes(v.bytes(WHAT)?)?),
            _ => {}
        }
    }
    if leaf {
        let tree = tree.ok_or(Error::Malformed("leaf address without a tree CID"))?;
        Ok(BlockAddress::Leaf { tree, index })
    } else {
        Ok(BlockAddress::Cid(
            cid.ok_or(Error::Malformed("address without a CID"))?,
        ))
    }
}

fn flag(v: &Value<'_>) -> Result<bool> {
    Ok(v.uint(WHAT)? != 0)
}

impl Message {
    /// Protobuf, fields in the Nim encoder's order, every field written.
    pub fn encode(&self) -> Vec<u8> {
        let mut wl = Writer::new();
        for e in &self.wantlist.entries {
            let mut ew = Writer::new();
            ew.message(1, &write_address(&e.address))
                .uint(2, e.priority)
                .uint(3, u64::from(e.cancel))
                .uint(
                    4,
                    match e.want_type {
                        WantType::WantBlock => 0,
                        WantType::WantHave => 1,
                    },
                )
                .uint(5, u64::from(e.send_dont_have));
            wl.message(1, &ew);
        }
        wl.uint(2, u64::from(self.wantlist.full));
        let mut w = Writer::new();
        w.message(1, &wl);
        let mut out = w.finish();
        for d in &self.payload {
            // The block's bytes are copied once, straight into the output.
            let mut head = Writer::new();
            head.bytes(1, &d.cid.to_bytes());
            let head = head.finish();
            let mut tail = Writer::new();
            tail.message(3, &write_address(&d.address));
            if let (BlockAddress::Leaf { .. }, Some(p)) = (&d.address, &d.proof) {
                tail.bytes(4, &p.encode());
            }
            let tail = tail.finish();
            let mut data_key = vec![(2 << 3) | 2];
            prost::encoding::encode_varint(d.data.len() as u64, &mut data_key);
            let inner = head.len() + data_key.len() + d.data.len() + tail.len();
            out.reserve(inner + 11);
            out.push((3 << 3) | 2);
            prost::encoding::encode_varint(inner as u64, &mut out);
            out.extend_from_slice(&head);
            out.extend_from_slice(&data_key);
            out.extend_from_slice(&d.data);
            out.extend_from_slice(&tail);
        }
        let mut w = Writer::new();
        for p in &self.presences {
            let mut pw = Writer::new();
            pw.message(1, &write_address(&p.address))
                .uint(
                    2,
                    match p.kind {
                        PresenceType::Have => 0,
                        PresenceType::DontHave => 1,
                    },
                )
                .bytes(3, &p.price);
            w.message(4, &pw);
        }
        w.uint(5, self.pending_bytes);
        let mut account = Writer::new();
        account.bytes(1, self.account.as_deref().unwrap_or(&[]));
        w.message(6, &account);
        let mut payment = Writer::new();
        payment.bytes(1, self.payment.as_deref().unwrap_or(&[]));
        w.message(7, &payment);
        out.extend_from_slice(&w.finish());
        out
    }

    /// Decodes a message.
    ///
    /// # Errors
    /// [`Error::Malformed`], or [`Error::Core`] for bytes that are no protobuf, for anything
    /// that is not a valid message.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_bytes(Bytes::copy_from_slice(bytes))
    }

    /// Decodes a message; block data are slices of `bytes`, not copies.
    pub fn decode_bytes(bytes: Bytes) -> Result<Self> {
        let mut m = Message::default();
        let mut r = Reader::new(&bytes, WHAT);
        while let Some((f, v)) = r.next_field()? {
            match f {
                1 => {
                    let mut wr = Reader::new(v.bytes(WHAT)?, WHAT);
                    while let Some((f, v)) = wr.next_field()? {
                        match f {
                            1 => m.wantlist.entries.push(read_entry(v.bytes(WHAT)?)?),
                            2 => m.wantlist.full = flag(&v)?,
                            _ => {}
                        }
                    }
                }
                3 => m.payload.push(read_delivery(&bytes, v.bytes(WHAT)?)?),
                4 => m.presences.push(read_presence(v.bytes(WHAT)?)?),
                5 => m.pending_bytes = v.uint(WHAT)?,
                6 | 7 => {
                    let mut ir = Reader::new(v.bytes(WHAT)?, WHAT);
                    let mut inner = Vec::new();
                    while let Some((f, v)) = ir.next_field()? {
                        if f == 1 {
                            inner = v.bytes(WHAT)?.to_vec();
                        }
                    }
                    let slot = if f == 6 {
                        &mut m.account
                    } else {
                        &mut m.payment
                    };
                    *slot = (!inner.is_empty()).then_some(inner);
                }
                _ => {}
            }
        }
        Ok(m)
    }
}

fn read_entry(b: &[u8]) -> Result<Entry> {
    let (mut address, mut priority, mut cancel, mut want_type, mut send_dont_have) =
        (None, 0, false, WantType::WantBlock, false);
    let mut r = Reader::new(b, WHAT);
    while let Some((f, v)) = r.next_field()? {
        match f {
            1 => address = Some(read_address(v.bytes(WHAT)?)?),
            2 => priority = v.uint(WHAT)?,
            3 => cancel = flag(&v)?,
            4 => {
                want_type = match v.uint(WHAT)? {
                    0 => WantType::WantBlock,
                    1 => WantType::WantHave,
                    _ => return Err(Error::Malformed("unknown want type")),
                }
            }
            5 => send_dont_have = flag(&v)?,
            _ => {}
        }
    }
    Ok(Entry {
        address: address.ok_or(Error::Malformed("want-list entry without an address"))?,
        priority,
        cancel,
        want_type,
        send_dont_have,
    })
}

fn read_delivery(whole: &Bytes, b: &[u8]) -> Result<Delivery> {
    let (mut cid, mut data, mut address, mut proof) = (None, Bytes::new(), None, None);
    let mut r = Reader::new(b, WHAT);
    while let Some((f, v)) = r.next_field()? {
        match f {
            1 => cid = Some(Cid::from_bytes(v.bytes(WHAT)?)?),
            2 => data = whole.slice_ref(v.bytes(WHAT)?),
            3 => address = Some(read_address(v.bytes(WHAT)?)?),
            4 => proof = Some(CodexProof::decode(v.bytes(WHAT)?)?),
            _ => {}
        }
    }
    let cid = cid.ok_or(Error::Malformed("delivery without a CID"))?;
    Ok(Delivery {
        cid,
        data,
        address: address.unwrap_or(BlockAddress::Cid(cid)),
        proof,
    })
}

fn read_presence(b: &[u8]) -> Result<Presence> {
    let (mut address, mut kind, mut price) = (None, PresenceType::Have, Vec::new());
    let mut r = Reader::new(b, WHAT);
    while let Some((f, v)) = r.next_field()? {
        match f {
            1 => address = Some(read_address(v.bytes(WHAT)?)?),
            2 => {
                kind = match v.uint(WHAT)? {
                    0 => PresenceType::Have,
                    1 => PresenceType::DontHave,
                    _ => return Err(Error::Malformed("unknown presence type")),
                }
            }
            3 => price = v.bytes(WHAT)?.to_vec(),
            _ => {}
        }
    }
    Ok(Presence {
        address: address.ok_or(Error::Malformed("presence without an address"))?,
        kind,
        price,
    })
}

/// Writes one framed message: varint length, then the bytes; flushes when `flush`.
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &Message,
    flush: bool,
) -> Result<()> {
    let body = msg.encode();
    let mut prefix = Vec::with_capacity(10);
    prost::encoding::encode_varint(body.len() as u64, &mut prefix);
    w.write_all(&prefix).await?;
    w.write_all(&body).await?;
    if flush {
        w.flush().await?;
    }
    Ok(())
}

/// Reads one framed message of at most `max` bytes. `Ok(None)` at a clean end of stream.
///
/// # Errors
/// [`Error::TooLarge`] for a length over `max` (nothing more is read), decoding errors
/// for a malformed body, I/O errors.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Option<Message>> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8; 1];
        match r.read(&mut byte).await? {
            0 if i == 0 => return Ok(None),
            0 => return Err(Error::Malformed("stream ended inside a length prefix")),
            _ => {}
        }
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            if len > max as u64 {
                return Err(Error::TooLarge { len, max });
            }
            let mut body = vec![0u8; len as usize];
            r.read_exact(&mut body).await?;
            return Message::decode_bytes(Bytes::from(body)).map(Some);
        }
    }
    Err(Error::Malformed("length prefix longer than 10 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use codex_core::{Block, MerkleTree};

    fn sample() -> Message {
        let blocks: Vec<Block> = (0..3u8).map(|i| Block::new(vec![i; 100])).collect();
        let tree = MerkleTree::from_cids(blocks.iter().map(Block::cid)).expect("tree");
        let root = tree.root_cid();
        Message {
            wantlist: WantList {
                entries: vec![
                    Entry {
                        address: BlockAddress::Leaf {
                            tree: root,
                            index: 2,
                        },
                        priority: 7,
                        cancel: false,
                        want_type: WantType::WantBlock,
                        send_dont_have: true,
                    },
                    Entry {
                        address: BlockAddress::Cid(*blocks[0].cid()),
                        priority: 0,
                        cancel: true,
                        want_type: WantType::WantHave,
                        send_dont_have: false,
                    },
                ],
                full: true,
            },
            payload: vec![Delivery {
                cid: *blocks[1].cid(),
                data: blocks[1].data().clone(),
                address: BlockAddress::Leaf {
                    tree: root,
                    index: 1,
                },
                proof: Some(tree.proof(1).expect("proof")),
            }],
            presences: vec![Presence {
                address: BlockAddress::Cid(*blocks[2].cid()),
                kind: PresenceType::DontHave,
                price: vec![],
            }],
            pending_bytes: 12345,
            account: None,
            payment: None,
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Message::decode(&m.encode()).expect("decode"), m);
        assert_eq!(
            Message::decode(&Message::default().encode()).expect("empty"),
            Message::default()
        );
    }

    #[test]
    fn field_numbers_follow_the_nim_encoder() {
        let bytes = sample().encode();
        let mut r = Reader::new(&bytes, "t");
        let mut fields = Vec::new();
        while let Some((f, _)) = r.next_field().expect("field") {
            fields.push(f);
        }
        assert_eq!(fields, vec![1, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &[0x0a, 0x05, 0x0a][..],
            &[0x1a, 0x02, 0x08, 0x01],
            &[0xff; 12],
            &[0x22, 0x01, 0x10],
        ] {
            assert!(Message::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn framing_limits_are_enforced() {
        let m = sample();
        let mut buf = Vec::new();
        write_message(&mut futures::io::Cursor::new(&mut buf), &m, true)
            .await
            .expect("write");
        let got = read_message(&mut futures::io::Cursor::new(&buf), 1 << 20)
            .await
            .expect("read");
        assert_eq!(got, Some(m));
        match read_message(&mut futures::io::Cursor::new(&buf), 10).await {
            Err(Error::TooLarge { max: 10, .. }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let empty: &[u8] = &[];
        assert!(
            read_message(&mut futures::io::Cursor::new(empty), 10)
                .await
                .expect("eof")
                .is_none()
        );
    }
}
