//! Blocks and their addresses.

use std::fmt;

use bytes::Bytes;

use crate::cid::{Cid, codec};
use crate::error::{Error, Result};

/// A block: bytes and the CID they hash to.
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    cid: Cid,
    data: Bytes,
}

impl Block {
    /// A `codex-block` block over `data` (hashes it: ~40 µs for 64 KiB).
    pub fn new(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Block {
            cid: Cid::for_block(&data),
            data,
        }
    }

    /// A manifest block over encoded manifest bytes.
    pub fn manifest(encoded: impl Into<Bytes>) -> Self {
        let data = encoded.into();
        Block {
            cid: Cid::for_manifest(&data),
            data,
        }
    }

    /// A block whose bytes are checked against `cid`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the bytes hash to something else.
    pub fn verified(cid: Cid, data: impl Into<Bytes>) -> Result<Self> {
        let data = data.into();
        if !cid.matches(&data) {
            let actual = match cid.hash_code() {
                codec::SHA2_256 => Cid::from_sha256(cid.codec(), crate::cid::sha256(&data)),
                _ => Cid::for_block(&data),
            };
            return Err(Error::Corrupt {
                cid: Box::new(cid),
                actual: Box::new(actual),
            });
        }
        Ok(Block { cid, data })
    }

    /// A block taken on trust, for data that was checked already.
    pub fn new_unchecked(cid: Cid, data: Bytes) -> Self {
        Block { cid, data }
    }

    /// The block's CID.
    pub fn cid(&self) -> &Cid {
        &self.cid
    }

    /// The block's bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Takes the bytes out.
    pub fn into_data(self) -> Bytes {
        self.data
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the block has no bytes.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("cid", &self.cid)
            .field("len", &self.data.len())
            .finish()
    }
}

/// Where a block is found: by its own CID, or as leaf `index` of the dataset tree `tree`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockAddress {
    /// A block addressed by its CID.
    Cid(Cid),
    /// Leaf `index` of the tree whose root CID is `tree`.
    Leaf {
        /// The tree root CID (`treeCid`).
        tree: Cid,
        /// The leaf index.
        index: u64,
    },
}

impl fmt::Display for BlockAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockAddress::Cid(cid) => write!(f, "{cid}"),
            BlockAddress::Leaf { tree, index } => write!(f, "{tree}[{index}]"),
        }
    }
}

impl From<(Cid, u64)> for BlockAddress {
    fn from((tree, index): (Cid, u64)) -> Self {
        BlockAddress::Leaf { tree, index }
    }
}

impl From<Cid> for BlockAddress {
    fn from(cid: Cid) -> Self {
        BlockAddress::Cid(cid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_rejects_wrong_bytes() {
        let block = Block::new(&b"good bytes"[..]);
        assert!(Block::verified(*block.cid(), &b"good bytes"[..]).is_ok());
        match Block::verified(*block.cid(), &b"evil bytes"[..]) {
            Err(Error::Corrupt { cid, actual }) => {
                assert_eq!(*cid, *block.cid());
                assert_eq!(*actual, Cid::for_block(b"evil bytes"));
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }
}
