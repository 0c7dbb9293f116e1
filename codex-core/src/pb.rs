//! The small part of protobuf that Codex's encoders use: varints and length-delimited
//! fields, written in the order asked, zero values included (nim-libp2p's `minprotobuf`).
//! Shared by the manifest, proof and block-exchange encoders.

use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};

use crate::error::{Error, Result};

/// Writes fields in the order asked.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// A varint field.
    pub fn uint(&mut self, field: u32, value: u64) -> &mut Self {
        encode_key(field, WireType::Varint, &mut self.buf);
        encode_varint(value, &mut self.buf);
        self
    }

    /// A length-delimited field.
    pub fn bytes(&mut self, field: u32, value: &[u8]) -> &mut Self {
        encode_key(field, WireType::LengthDelimited, &mut self.buf);
        encode_varint(value.len() as u64, &mut self.buf);
        self.buf.extend_from_slice(value);
        self
    }

    /// A nested message.
    pub fn message(&mut self, field: u32, msg: &Writer) -> &mut Self {
        self.bytes(field, &msg.buf)
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// A decoded field value.
#[derive(Debug)]
pub enum Value<'a> {
    /// A varint.
    Varint(u64),
    /// Length-delimited bytes (empty for skipped fixed-width fields).
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    /// The varint, or an error naming `what`.
    pub fn uint(&self, what: &'static str) -> Result<u64> {
        match self {
            Value::Varint(v) => Ok(*v),
            Value::Bytes(_) => Err(Error::decode(what, "expected a varint field")),
        }
    }

    /// The varint as 32 bits, or an error naming `what`.
    pub fn uint32(&self, what: &'static str) -> Result<u32> {
        u32::try_from(self.uint(what)?).map_err(|_| Error::decode(what, "value exceeds 32 bits"))
    }

    /// The bytes, or an error naming `what`.
    pub fn bytes(&self, what: &'static str) -> Result<&'a [u8]> {
        match self {
            Value::Bytes(b) => Ok(b),
            Value::Varint(_) => Err(Error::decode(what, "expected a length-delimited field")),
        }
    }
}

/// Iterates over the fields of one message. Unknown field numbers are returned too;
/// callers skip what they do not know, as protobuf requires.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `buf`; errors name `what`.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    /// The next field, or `None` at the end.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let (field, wire) = decode_key(&mut self.buf).map_err(|e| Error::decode(self.what, e))?;
        let value = match wire {
            WireType::Varint => Value::Varint(
                decode_varint(&mut self.buf).map_err(|e| Error::decode(self.what, e))?,
            ),
            WireType::LengthDelimited => {
                let len = decode_varint(&mut self.buf).map_err(|e| Error::decode(self.what, e))?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|len| *len <= self.buf.len())
                    .ok_or_else(|| {
                        Error::decode(self.what, "length-delimited field runs past the end")
                    })?;
                let (value, rest) = self.buf.split_at(len);
                self.buf = rest;
                Value::Bytes(value)
            }
            WireType::SixtyFourBit if self.buf.len() >= 8 => {
                self.buf = &self.buf[8..];
                Value::Bytes(&[])
            }
            WireType::ThirtyTwoBit if self.buf.len() >= 4 => {
                self.buf = &self.buf[4..];
                Value::Bytes(&[])
            }
            other => {
                return Err(Error::decode(
                    self.what,
                    format!("unsupported wire type {other:?}"),
                ));
            }
        };
        Ok(Some((field, value)))
    }
}
