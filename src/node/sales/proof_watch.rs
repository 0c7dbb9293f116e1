//! Which of a sale's accepted proofs a reorganisation may still take away: a pure
//! record, the chain read by the driver.
//!
//! A proof counts in the sale's book (`proofPeriods`) once its receipt came. A
//! reorganisation can replace its block later, in its period (the host proves again)
//! or after it (the period is missed). So each proof is looked for at every read of the
//! slot until [`PROOF_WATCH_BLOCKS`] blocks lie on top of it, not only until its period
//! ends: a slow prover may still be proving the next period when the reorganisation
//! comes.

use std::collections::VecDeque;

use codex_market::alloy::primitives::B256;

/// Blocks on top of a proof's block after which it is no longer looked for (on top
/// of the seller's confirmations).
pub(crate) const PROOF_WATCH_BLOCKS: u64 = 64;

/// At most this many proofs are watched; the oldest goes first (a period shorter than
/// its blocks' watch only happens on a test chain).
pub(crate) const PROOF_WATCH_MAX: usize = 16;

/// An accepted proof: the period it counted for, and the number and hash of its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Watched {
    pub period: u64,
    pub block: u64,
    pub hash: B256,
}

/// The accepted proofs still watched, oldest first.
#[derive(Debug, Default)]
pub(crate) struct ProofWatch {
    proofs: VecDeque<Watched>,
    /// Blocks on top of a proof's block before it is let go.
    depth: u64,
}

impl ProofWatch {
    /// Watches each proof until `confirmations` + [`PROOF_WATCH_BLOCKS`] blocks lie on
    /// top of its block.
    pub(crate) fn new(confirmations: u64) -> Self {
        ProofWatch {
            proofs: VecDeque::new(),
            depth: confirmations.saturating_add(PROOF_WATCH_BLOCKS),
        }
    }

    /// A proof was accepted in `block` (hash `hash`) for `period`.
    pub(crate) fn accepted(&mut self, period: u64, block: u64, hash: B256) {
        if self.proofs.len() >= PROOF_WATCH_MAX {
            self.proofs.pop_front();
        }
        self.proofs.push_back(Watched {
            period,
            block,
            hash,
        });
    }

    /// The blocks to read now, one per watched proof.
    pub(crate) fn blocks(&self) -> Vec<u64> {
        self.proofs.iter().map(|p| p.block).collect()
    }

    /// Applies what the chain showed with `head` the latest block: `seen` holds, per
    /// block read, the hash found there (`Some(None)`: no block of that number, `None`:
    /// not readable now). A proof whose block has another hash, or none, is gone and
    /// returned; one still there with the full depth on top is let go; the rest (and
    /// those not read) stay watched.
    pub(crate) fn settle(
        &mut self,
        head: u64,
        seen: &[(u64, Option<Option<B256>>)],
    ) -> Vec<Watched> {
        let mut gone = Vec::new();
        let depth = self.depth;
        self.proofs.retain(|p| {
            let Some((_, Some(now))) = seen.iter().find(|(b, _)| *b == p.block) else {
                return true;
            };
            if *now != Some(p.hash) {
                gone.push(*p);
                return false;
            }
            head < p.block.saturating_add(depth)
        });
        gone
    }

    /// Whether no proof is watched.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.proofs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> B256 {
        B256::repeat_byte(n)
    }

    #[test]
    fn a_proof_is_watched_past_its_period_until_buried() {
        let mut w = ProofWatch::new(2);
        w.accepted(7, 100, hash(1));
        // Read in later periods, still on chain: watched until 2 + 64 blocks on top.
        for head in [101, 130, 165] {
            assert!(w.settle(head, &[(100, Some(Some(hash(1))))]).is_empty());
            assert_eq!(w.blocks(), vec![100]);
        }
        // A reorganisation of depth 70 now still takes it away.
        let gone = w.settle(165, &[(100, Some(Some(hash(9))))]);
        assert_eq!(
            gone,
            vec![Watched {
                period: 7,
                block: 100,
                hash: hash(1)
            }]
        );
        assert!(w.is_empty());
        // Buried: let go once seen with the full depth on top.
        w.accepted(8, 200, hash(2));
        assert!(w.settle(266, &[(200, Some(Some(hash(2))))]).is_empty());
        assert!(w.is_empty());
    }

    #[test]
    fn unreadable_blocks_stay_watched_and_missing_ones_are_gone() {
        let mut w = ProofWatch::new(0);
        w.accepted(1, 10, hash(1));
        w.accepted(2, 20, hash(2));
        w.accepted(3, 30, hash(3));
        // Block 10 unreadable, block 20 not read at all, block 30 no longer exists
        // (the chain is shorter after the reorganisation).
        let gone = w.settle(31, &[(10, None), (30, Some(None))]);
        assert_eq!(gone.iter().map(|p| p.period).collect::<Vec<_>>(), vec![3]);
        assert_eq!(w.blocks(), vec![10, 20]);
        // Both dropped at once: both reported, oldest first.
        let gone = w.settle(32, &[(10, Some(Some(hash(7)))), (20, Some(Some(hash(8))))]);
        assert_eq!(
            gone.iter().map(|p| p.period).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(w.is_empty());
    }

    #[test]
    fn the_watch_is_bounded() {
        let mut w = ProofWatch::new(0);
        for i in 0..(PROOF_WATCH_MAX as u64 + 5) {
            w.accepted(i, i, hash(1));
        }
        let blocks = w.blocks();
        assert_eq!(blocks.len(), PROOF_WATCH_MAX);
        assert_eq!(blocks[0], 5, "the oldest went first");
    }
}
