//! Codex's stepped layout (reference §3.3): the protected dataset as a matrix of K+M rows
//! by `steps` columns, stored row-major. Pure arithmetic: no store, no coding.

use crate::error::{Error, Result};

/// Where every block of a protected dataset sits.
///
/// Block index = `row * steps + column`. Rows `0..K` hold the data (original block `i`
/// keeps index `i`; indices `blocks..rounded` are zero padding), rows `K..K+M` the parity:
/// parity row `j` of column `s` is at `rounded + j*steps + s`. Column `s` is one
/// Reed-Solomon codeword; slot `i` is row `i`.
///
/// ```
/// use codex_erasure::Layout;
///
/// // 10 blocks with K = 3, M = 2: 4 columns, parity from index 12, 20 blocks in all.
/// let layout = Layout::new(10, 3, 2)?;
/// assert_eq!((layout.steps, layout.rounded(), layout.encoded_blocks()), (4, 12, 20));
/// // Column 1 holds data blocks 1, 5, 9 and parity blocks 13, 17.
/// let column: Vec<u64> = (0..5).map(|row| layout.index(row, 1)).collect();
/// assert_eq!(column, [1, 5, 9, 13, 17]);
/// // Blocks 10 and 11 are padding; slot 4 (the second parity row) is blocks 16..20.
/// assert!(layout.is_padding(10) && layout.is_padding(11));
/// assert_eq!(layout.slot(4), 16..20);
/// # Ok::<(), codex_erasure::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Data rows (K).
    pub k: usize,
    /// Parity rows (M).
    pub m: usize,
    /// Blocks of the original dataset.
    pub blocks: u64,
    /// Columns: `roundUp(blocks, K) / K`.
    pub steps: u64,
}

impl Layout {
    /// The layout of `blocks` original blocks coded with K data and M parity rows.
    ///
    /// # Errors
    /// [`Error::InvalidParams`] when K or M is 0 or K+M exceeds what Reed-Solomon over
    /// GF(2^16) supports; [`Error::TooFewBlocks`] when the dataset has fewer than K blocks.
    pub fn new(blocks: u64, k: usize, m: usize) -> Result<Self> {
        check_params(k, m)?;
        if blocks < k as u64 {
            return Err(Error::TooFewBlocks { blocks, k });
        }
        Ok(Layout {
            k,
            m,
            blocks,
            steps: blocks.div_ceil(k as u64),
        })
    }

    /// `roundUp(blocks, K)`: where parity starts.
    pub fn rounded(&self) -> u64 {
        self.steps * self.k as u64
    }

    /// Blocks of the protected dataset: `(K+M) * steps`.
    pub fn encoded_blocks(&self) -> u64 {
        self.steps * (self.k + self.m) as u64
    }

    /// The index of row `row` (0..K+M) of column `column`.
    pub fn index(&self, row: usize, column: u64) -> u64 {
        row as u64 * self.steps + column
    }

    /// Whether `index` is a padding block (zero data, the empty-block CID, not stored).
    pub fn is_padding(&self, index: u64) -> bool {
        index >= self.blocks && index < self.rounded()
    }

    /// The block indices of slot (row) `slot`.
    pub fn slot(&self, slot: usize) -> std::ops::Range<u64> {
        self.index(slot, 0)..self.index(slot, 0) + self.steps
    }
}

/// Checks K and M against Codex's rules as we relax them (K = 1 and M > K allowed) and
/// the Reed-Solomon library's limits.
///
/// # Errors
/// [`Error::InvalidParams`] when K or M is 0, or K + M is beyond what Reed-Solomon over
/// GF(2^16) supports.
pub fn check_params(k: usize, m: usize) -> Result<()> {
    if k == 0 || m == 0 {
        return Err(Error::InvalidParams {
            k,
            m,
            reason: "K and M must both be at least 1",
        });
    }
    if !reed_solomon_simd::ReedSolomonEncoder::supports(k, m) {
        return Err(Error::InvalidParams {
            k,
            m,
            reason: "K + M is beyond what Reed-Solomon over GF(2^16) supports (at most 65536 shards)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codex_example() {
        // 10 blocks, K=3, M=2: rounded 12, steps 4, 20 blocks; column 1 holds data
        // 1, 5, 9 and parity 13, 17.
        let l = Layout::new(10, 3, 2).expect("layout");
        assert_eq!((l.rounded(), l.steps, l.encoded_blocks()), (12, 4, 20));
        let column: Vec<u64> = (0..5).map(|r| l.index(r, 1)).collect();
        assert_eq!(column, vec![1, 5, 9, 13, 17]);
        assert!(l.is_padding(10) && l.is_padding(11) && !l.is_padding(12) && !l.is_padding(9));
        assert_eq!(l.slot(4), 16..20);
        // Parity row j of column s sits at rounded + j*steps + s.
        assert_eq!(l.index(3 + 1, 2), l.rounded() + 4 + 2);
    }

    #[test]
    fn parameters_are_checked() {
        assert!(matches!(
            Layout::new(10, 0, 1),
            Err(Error::InvalidParams { .. })
        ));
        assert!(matches!(
            Layout::new(10, 1, 0),
            Err(Error::InvalidParams { .. })
        ));
        assert!(matches!(
            Layout::new(2, 3, 1),
            Err(Error::TooFewBlocks { blocks: 2, k: 3 })
        ));
        assert!(Layout::new(10, 1, 5).is_ok(), "K = 1 and M > K are allowed");
        assert!(matches!(
            Layout::new(1 << 20, 40000, 30000),
            Err(Error::InvalidParams { .. })
        ));
    }
}
