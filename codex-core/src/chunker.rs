//! Cutting a byte stream into fixed-size blocks, the last one zero-padded.

use std::io::{self, Read};

use bytes::Bytes;

/// Codex's default block size: 64 KiB.
pub const DEFAULT_BLOCK_SIZE: usize = 64 * 1024;

/// A push-driven chunker for async sources: feed it bytes as they arrive, take out
/// whole blocks. Holds at most one partial block.
#[derive(Debug)]
pub struct ChunkBuffer {
    block_size: usize,
    /// A recycled buffer ([`crate::buffers`]): blocks are freed and taken again at the
    /// rate data arrives.
    partial: Vec<u8>,
    total: u64,
}

impl ChunkBuffer {
    /// A chunker cutting `block_size`-byte blocks.
    ///
    /// # Panics
    /// If `block_size` is 0.
    pub fn new(block_size: usize) -> Self {
        assert!(block_size > 0, "block size must be positive");
        ChunkBuffer {
            block_size,
            partial: crate::buffers::take(block_size),
            total: 0,
        }
    }

    /// Adds `data`, appending every block it completes to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Bytes>) {
        self.total += data.len() as u64;
        while !data.is_empty() {
            let take = (self.block_size - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() == self.block_size {
                let block =
                    std::mem::replace(&mut self.partial, crate::buffers::take(self.block_size));
                out.push(crate::buffers::freeze(block));
            }
        }
    }

    /// Adds `data` like [`ChunkBuffer::push`], without copying the whole blocks it
    /// holds when no partial block is pending: they are slices of `data`.
    pub fn push_bytes(&mut self, mut data: Bytes, out: &mut Vec<Bytes>) {
        if self.partial.is_empty() {
            while data.len() >= self.block_size {
                self.total += self.block_size as u64;
                out.push(data.split_to(self.block_size));
            }
        }
        self.push(&data, out);
    }

    /// The bytes pushed so far: the manifest's `datasetSize`.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Ends the stream: the last partial block, zero-padded to the block size, if any.
    pub fn finish(&mut self) -> Option<Bytes> {
        if self.partial.is_empty() {
            return None;
        }
        self.partial.resize(self.block_size, 0);
        Some(crate::buffers::freeze(std::mem::take(&mut self.partial)))
    }
}

/// A pull-driven chunker over any [`Read`]: an iterator of padded blocks.
///
/// Memory is one block whatever the input size.
#[derive(Debug)]
pub struct Chunker<R> {
    reader: R,
    block_size: usize,
    offset: u64,
    done: bool,
}

impl<R: Read> Chunker<R> {
    /// Chunks `reader` into `block_size`-byte blocks.
    ///
    /// # Panics
    /// If `block_size` is 0.
    pub fn new(reader: R, block_size: usize) -> Self {
        assert!(block_size > 0, "block size must be positive");
        Chunker {
            reader,
            block_size,
            offset: 0,
            done: false,
        }
    }

    /// Bytes read so far; after the last block, the dataset size.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut block = vec![0u8; self.block_size];
        let mut filled = 0;
        while filled < self.block_size {
            match self.reader.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.offset += filled as u64;
        if filled < self.block_size {
            self.done = true;
            if filled == 0 {
                return None;
            }
        }
        // The unread tail of `block` is already zero: that is the padding.
        Some(Ok(Bytes::from(block)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_all(data: &[u8], bs: usize) -> (Vec<Bytes>, u64) {
        let mut c = Chunker::new(data, bs);
        let blocks = c.by_ref().collect::<io::Result<Vec<_>>>().expect("read");
        (blocks, c.offset())
    }

    #[test]
    fn pads_the_last_block_and_counts_real_bytes() {
        for len in [0usize, 1, 99, 100, 101, 250] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            let (blocks, size) = chunk_all(&data, 100);
            assert_eq!(size, len as u64);
            assert_eq!(blocks.len(), len.div_ceil(100));
            assert!(blocks.iter().all(|b| b.len() == 100));
            let joined: Vec<u8> = blocks.concat();
            assert_eq!(&joined[..len], &data[..]);
            assert!(joined[len..].iter().all(|b| *b == 0));

            let mut push = ChunkBuffer::new(100);
            let mut out = Vec::new();
            for piece in data.chunks(7) {
                push.push(piece, &mut out);
            }
            out.extend(push.finish());
            assert_eq!(out, blocks, "push and pull chunkers agree for {len}");
            assert_eq!(push.total(), len as u64);

            // Pieces of every size, some holding whole blocks: the same blocks, and
            // whole blocks taken as slices of their piece.
            let mut sliced = ChunkBuffer::new(100);
            let mut out = Vec::new();
            let mut rest = Bytes::from(data.clone());
            for size in [230usize, 7, 100, 93, 301].iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let piece = rest.split_to((*size).min(rest.len()));
                sliced.push_bytes(piece, &mut out);
            }
            out.extend(sliced.finish());
            assert_eq!(out, blocks, "push_bytes agrees for {len}");
            assert_eq!(sliced.total(), len as u64);
        }
        let whole = Bytes::from(vec![5u8; 300]);
        let mut c = ChunkBuffer::new(100);
        let mut out = Vec::new();
        c.push_bytes(whole.clone(), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[1].as_ptr(),
            whole[100..].as_ptr(),
            "a slice, not a copy"
        );
    }
}
