//! Recycled block buffers. Storing, coding and serving data allocate and free one 64 KiB
//! buffer per block, which makes the allocator fault fresh pages in and hand them back
//! (glibc and mimalloc alike: 10-16% of the CPU time of erasure coding on a 2-core
//! machine). Buffers taken here go back to a small pool when the last [`Bytes`] over them
//! drops, and are handed out again.

use std::sync::Mutex;

use bytes::Bytes;

use crate::chunker::DEFAULT_BLOCK_SIZE;

/// Buffers kept for reuse: at most 16 MiB.
const POOL_BUFFERS: usize = 256;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty vector with room for at least `len` bytes: a recycled block buffer when
/// `len` is more than half a block and at most one, and one is free.
pub fn take(len: usize) -> Vec<u8> {
    if len > DEFAULT_BLOCK_SIZE || len <= DEFAULT_BLOCK_SIZE / 2 {
        return Vec::with_capacity(len);
    }
    let reused = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop();
    match reused {
        Some(mut v) => {
            v.clear();
            v
        }
        None => Vec::with_capacity(DEFAULT_BLOCK_SIZE),
    }
}

/// `data` as [`Bytes`] whose buffer returns to the pool when the last reference to it
/// drops (if it came from [`take`]; other buffers are freed as usual).
pub fn freeze(data: Vec<u8>) -> Bytes {
    if data.capacity() == DEFAULT_BLOCK_SIZE {
        Bytes::from_owner(Recycled(data))
    } else {
        Bytes::from(data)
    }
}

/// A copy of `data` in a recycled buffer.
pub fn copy(data: &[u8]) -> Bytes {
    let mut v = take(data.len());
    v.extend_from_slice(data);
    freeze(v)
}

struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_BUFFERS {
            pool.push(std::mem::take(&mut self.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_keep_their_bytes_until_then() {
        let a = copy(&[7u8; 40_000]);
        let b = a.clone();
        assert_eq!(&a[..], &[7u8; 40_000][..]);
        drop(a);
        // Still referenced: the bytes are intact whatever is taken meanwhile.
        let mut other = take(65536);
        other.extend_from_slice(&[1u8; 65536]);
        assert_eq!(&b[..], &[7u8; 40_000][..]);
        let ptr = b.as_ptr();
        drop(b);
        // Released: the same buffer is handed out again (the pool is per process, so
        // look for it among a few).
        let again: Vec<Vec<u8>> = (0..POOL_BUFFERS).map(|_| take(65536)).collect();
        assert!(again.iter().any(|v| v.as_ptr() == ptr));
        assert!(again.iter().all(|v| v.is_empty() && v.capacity() >= 65536));
    }

    #[test]
    fn large_and_small_buffers_are_not_pooled() {
        let v = take(DEFAULT_BLOCK_SIZE + 1);
        assert!(v.capacity() > DEFAULT_BLOCK_SIZE);
        assert!(take(1000).capacity() < DEFAULT_BLOCK_SIZE);
        let b = freeze(vec![1u8; 100]);
        assert_eq!(&b[..], &[1u8; 100][..]);
    }
}
