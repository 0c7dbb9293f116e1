//! Which of a sale's accepted proofs a reorganisation may still take away: a record
//! with no I/O of its own, the chain read through the function the driver passes.
//!
//! A proof counts in the sale's book (`proofPeriods`) once its receipt came. A
//! reorganisation can replace its block later, in its period (the host proves again)
//! or after it (the period is missed). So each proof is looked for at every read of the
//! slot until [`PROOF_WATCH_BLOCKS`] blocks lie on top of it, not only until its period
//! ends: a slow prover may still be proving the next period when the reorganisation
//! comes. A look reads the newest proof's block, and older ones only when it is gone.

use std::collections::VecDeque;
use std::future::Future;

use codex_market::alloy::primitives::B256;

/// Blocks on top of a proof's block after which it is no longer looked for (on top
/// of the seller's confirmations).
pub(crate) const PROOF_WATCH_BLOCKS: u64 = 64;

/// At most this many proofs are watched; the oldest goes first (a period shorter than
/// its blocks' watch only happens on a test chain).
pub(crate) const PROOF_WATCH_MAX: usize = 16;

/// An accepted proof: the period it counted for, and the number and hash of its block.
#[derive(Clone, Copy, Debug)]
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

    /// Looks for the watched proofs on the chain, `head` the latest block and
    /// `hash_at` reading the hash of a block (`Some(None)`: no block of that number,
    /// `None`: not readable now). Returns the proofs that are gone, oldest first.
    ///
    /// Newest first, and only until one is found standing: a block's hash commits to
    /// every block below it, so a proof that stands vouches for the older ones, and a
    /// look costs one read unless a reorganisation took something. Once a proof is
    /// found standing, those with the full depth on top are let go. An unreadable block
    /// ends the look with nothing let go (looked for at the next one).
    pub(crate) async fn look<F, Fut>(&mut self, head: u64, mut hash_at: F) -> Vec<Watched>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = Option<Option<B256>>>,
    {
        let mut gone = Vec::new();
        let mut stands = false;
        while let Some(p) = self.proofs.back().copied() {
            match hash_at(p.block).await {
                None => break,
                Some(now) if now == Some(p.hash) => {
                    stands = true;
                    break;
                }
                Some(_) => {
                    self.proofs.pop_back();
                    gone.push(p);
                }
            }
        }
        if stands {
            let depth = self.depth;
            self.proofs.retain(|p| head < p.block.saturating_add(depth));
        }
        gone.reverse();
        gone
    }

    /// The blocks of the watched proofs, oldest first.
    #[cfg(test)]
    fn blocks(&self) -> Vec<u64> {
        self.proofs.iter().map(|p| p.block).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use futures::executor::block_on;

    use super::*;

    fn hash(n: u8) -> B256 {
        B256::repeat_byte(n)
    }

    /// A chain as `look` reads it: block number to hash (a missing number has no
    /// block, `None` is unreadable), and the blocks read, in order.
    struct Chain {
        blocks: HashMap<u64, Option<B256>>,
        reads: RefCell<Vec<u64>>,
    }

    impl Chain {
        fn new(blocks: &[(u64, Option<B256>)]) -> Self {
            Chain {
                blocks: blocks.iter().copied().collect(),
                reads: RefCell::new(Vec::new()),
            }
        }

        fn look(&self, w: &mut ProofWatch, head: u64) -> Vec<u64> {
            self.reads.borrow_mut().clear();
            let gone = block_on(w.look(head, |block| {
                self.reads.borrow_mut().push(block);
                let hash = match self.blocks.get(&block) {
                    Some(None) => None,
                    Some(Some(h)) => Some(Some(*h)),
                    None => Some(None),
                };
                async move { hash }
            }));
            gone.iter().map(|p| p.period).collect()
        }
    }

    #[test]
    fn a_proof_is_watched_past_its_period_until_buried() {
        let mut w = ProofWatch::new(2);
        w.accepted(7, 100, hash(1));
        // Read in later periods, still on chain: watched until 2 + 64 blocks on top.
        let chain = Chain::new(&[(100, Some(hash(1)))]);
        for head in [101, 130, 165] {
            assert!(chain.look(&mut w, head).is_empty());
            assert_eq!(w.blocks(), vec![100]);
        }
        // A reorganisation of depth 70 now still takes it away.
        let reorged = Chain::new(&[(100, Some(hash(9)))]);
        assert_eq!(reorged.look(&mut w, 165), vec![7]);
        assert!(w.blocks().is_empty());
        // Buried: let go once seen with the full depth on top.
        w.accepted(8, 200, hash(2));
        let chain = Chain::new(&[(200, Some(hash(2)))]);
        assert!(chain.look(&mut w, 266).is_empty());
        assert!(w.blocks().is_empty());
    }

    #[test]
    fn the_newest_proof_standing_vouches_for_the_older_ones() {
        let mut w = ProofWatch::new(0);
        w.accepted(1, 10, hash(1));
        w.accepted(2, 20, hash(2));
        w.accepted(3, 30, hash(3));
        // Nothing changed: one read, of the newest proof's block.
        let chain = Chain::new(&[
            (10, Some(hash(1))),
            (20, Some(hash(2))),
            (30, Some(hash(3))),
        ]);
        assert!(chain.look(&mut w, 31).is_empty());
        assert_eq!(*chain.reads.borrow(), vec![30]);
        // Block 30 no longer exists (the chain is shorter after a reorganisation),
        // block 20 stands: the proof of period 3 is gone, 20 vouches for 10.
        let chain = Chain::new(&[(10, Some(hash(1))), (20, Some(hash(2)))]);
        assert_eq!(chain.look(&mut w, 31), vec![3]);
        assert_eq!(*chain.reads.borrow(), vec![30, 20]);
        assert_eq!(w.blocks(), vec![10, 20]);
        // Block 20 unreadable: the look ends there, nothing let go, even buried.
        let chain = Chain::new(&[(20, None)]);
        assert!(chain.look(&mut w, 500).is_empty());
        assert_eq!(w.blocks(), vec![10, 20]);
        // Both replaced: both reported, oldest first.
        let chain = Chain::new(&[(10, Some(hash(7))), (20, Some(hash(8)))]);
        assert_eq!(chain.look(&mut w, 32), vec![1, 2]);
        assert!(w.blocks().is_empty());
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
