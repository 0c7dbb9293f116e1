//! BLAKE2b-512 (RFC 7693) whose running state can be saved and resumed in the
//! 216-byte "partial hash" layout snarkjs keeps in a `.ptau` contribution.
//!
//! snarkjs saves the response hasher after the points and before the public key, so
//! that anyone can finish the response hash from the file alone. The layout (from
//! snarkjs's `misc.toPartialHash`, the state of `@noble/hashes`' BLAKE2b, compatible
//! with the `blake2b-wasm` context older snarkjs wrote):
//!
//! | bytes     | content                                                        |
//! |-----------|----------------------------------------------------------------|
//! | 0..128    | the block buffer (only the first `pos` bytes are meaningful)   |
//! | 128..192  | the chaining value `h[0..8]`, little-endian `u64`s             |
//! | 192..200  | bytes already compressed, little-endian `u64`                  |
//! | 200..208  | `pos`, bytes waiting in the buffer, little-endian `u64`        |
//! | 208..216  | zero                                                           |
//!
//! Like every BLAKE2 implementation, a full buffer is compressed only once more input
//! arrives (the last block must be compressed with the final flag), so after `len > 0`
//! bytes `pos` is in `1..=128`.

/// Size of the saved state.
pub(crate) const PARTIAL_LEN: usize = 216;

const BLOCK: usize = 128;

const IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

const SIGMA: [[usize; 16]; 12] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
];

/// An incremental BLAKE2b with a 64-byte digest and no key.
#[derive(Clone)]
pub(crate) struct Blake2b {
    h: [u64; 8],
    /// Bytes compressed so far.
    compressed: u64,
    buf: [u8; BLOCK],
    pos: usize,
}

impl std::fmt::Debug for Blake2b {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blake2b")
            .field("compressed", &self.compressed)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl Default for Blake2b {
    fn default() -> Self {
        Self::new()
    }
}

impl Blake2b {
    /// A fresh hasher (64-byte output, no key, no salt, no personalization).
    pub(crate) fn new() -> Self {
        let mut h = IV;
        h[0] ^= 0x0101_0000 ^ 64;
        Blake2b {
            h,
            compressed: 0,
            buf: [0; BLOCK],
            pos: 0,
        }
    }

    /// The digest of `data`.
    pub(crate) fn digest(data: &[u8]) -> [u8; 64] {
        let mut h = Self::new();
        h.update(data);
        h.finalize()
    }

    /// Absorbs `data`.
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.pos == BLOCK {
                self.compressed += BLOCK as u64;
                let block = self.buf;
                self.compress(&block, false);
                self.pos = 0;
            }
            if self.pos == 0 {
                // Whole blocks straight from the input, keeping at least one byte back
                // (it may be the last).
                while data.len() > BLOCK {
                    let (block, rest) = data.split_at(BLOCK);
                    self.compressed += BLOCK as u64;
                    let mut b = [0u8; BLOCK];
                    b.copy_from_slice(block);
                    self.compress(&b, false);
                    data = rest;
                }
            }
            let take = (BLOCK - self.pos).min(data.len());
            self.buf[self.pos..self.pos + take].copy_from_slice(&data[..take]);
            self.pos += take;
            data = &data[take..];
        }
    }

    /// The 64-byte digest.
    pub(crate) fn finalize(mut self) -> [u8; 64] {
        self.compressed += self.pos as u64;
        self.buf[self.pos..].fill(0);
        let block = self.buf;
        self.compress(&block, true);
        let mut out = [0u8; 64];
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.h) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// The state in snarkjs's partial-hash layout.
    pub(crate) fn to_partial(&self) -> [u8; PARTIAL_LEN] {
        let mut out = [0u8; PARTIAL_LEN];
        out[..self.pos].copy_from_slice(&self.buf[..self.pos]);
        for (i, word) in self.h.iter().enumerate() {
            out[BLOCK + 8 * i..BLOCK + 8 * i + 8].copy_from_slice(&word.to_le_bytes());
        }
        out[192..200].copy_from_slice(&self.compressed.to_le_bytes());
        out[200..208].copy_from_slice(&(self.pos as u64).to_le_bytes());
        out
    }

    /// Resumes a state saved in snarkjs's partial-hash layout; `None` when its counters
    /// are impossible (a buffer position above 128, a compressed length that is not a
    /// multiple of the block).
    pub(crate) fn from_partial(partial: &[u8; PARTIAL_LEN]) -> Option<Self> {
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&partial[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let compressed = word(192);
        let pos = word(200);
        if pos > BLOCK as u64 || compressed % BLOCK as u64 != 0 {
            return None;
        }
        let mut h = [0u64; 8];
        for (i, w) in h.iter_mut().enumerate() {
            *w = word(BLOCK + 8 * i);
        }
        let mut buf = [0u8; BLOCK];
        buf.copy_from_slice(&partial[..BLOCK]);
        Some(Blake2b {
            h,
            compressed,
            buf,
            pos: pos as usize,
        })
    }

    /// Whether this hasher is in the state `partial` records (the chaining value, the
    /// counters and the meaningful part of the buffer).
    pub(crate) fn same_state(&self, partial: &[u8; PARTIAL_LEN]) -> bool {
        match Self::from_partial(partial) {
            Some(other) => {
                other.h == self.h
                    && other.compressed == self.compressed
                    && other.pos == self.pos
                    && other.buf[..other.pos] == self.buf[..self.pos]
            }
            None => false,
        }
    }

    fn compress(&mut self, block: &[u8; BLOCK], last: bool) {
        let mut m = [0u64; 16];
        for (w, chunk) in m.iter_mut().zip(block.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        let mut v = [0u64; 16];
        v[..8].copy_from_slice(&self.h);
        v[8..].copy_from_slice(&IV);
        // The counter is 128 bits; ours never leaves the low word.
        v[12] ^= self.compressed;
        if last {
            v[14] = !v[14];
        }
        #[inline(always)]
        fn g(v: &mut [u64; 16], a: usize, b: usize, c: usize, d: usize, x: u64, y: u64) {
            v[a] = v[a].wrapping_add(v[b]).wrapping_add(x);
            v[d] = (v[d] ^ v[a]).rotate_right(32);
            v[c] = v[c].wrapping_add(v[d]);
            v[b] = (v[b] ^ v[c]).rotate_right(24);
            v[a] = v[a].wrapping_add(v[b]).wrapping_add(y);
            v[d] = (v[d] ^ v[a]).rotate_right(16);
            v[c] = v[c].wrapping_add(v[d]);
            v[b] = (v[b] ^ v[c]).rotate_right(63);
        }
        for s in &SIGMA {
            g(&mut v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
            g(&mut v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
            g(&mut v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
            g(&mut v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
            g(&mut v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
            g(&mut v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
            g(&mut v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
            g(&mut v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
        }
        for i in 0..8 {
            self.h[i] ^= v[i] ^ v[i + 8];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_vectors() {
        // RFC 7693 appendix A ("abc") and the empty string.
        assert_eq!(
            hex::encode(Blake2b::digest(b"abc")),
            "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1\
             7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923"
        );
        assert_eq!(
            hex::encode(Blake2b::digest(b"")),
            "786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419\
             d25e1031afee585313896444934eb04b903a685b1448b755d56f701afe9be2ce"
        );
    }

    #[test]
    fn split_updates_and_partial_round_trip() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = Blake2b::digest(&data);
        for cut in [0, 1, 127, 128, 129, 255, 256, 257, 640, 999, 1000] {
            let mut h = Blake2b::new();
            h.update(&data[..cut]);
            let partial = h.to_partial();
            assert!(h.same_state(&partial));
            let mut resumed = Blake2b::from_partial(&partial).expect("valid state");
            resumed.update(&data[cut..]);
            assert_eq!(resumed.finalize(), whole, "cut at {cut}");
            // Byte-by-byte feeding reaches the same state.
            let mut b = Blake2b::new();
            for byte in &data[..cut] {
                b.update(std::slice::from_ref(byte));
            }
            assert!(b.same_state(&partial), "cut at {cut}");
        }
    }

    #[test]
    fn impossible_partial_states_are_refused() {
        let mut p = Blake2b::new().to_partial();
        p[200] = 129;
        assert!(Blake2b::from_partial(&p).is_none());
        let mut p = Blake2b::new().to_partial();
        p[192] = 5;
        assert!(Blake2b::from_partial(&p).is_none());
    }
}
