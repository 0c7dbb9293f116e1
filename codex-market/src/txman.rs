//! The transaction manager: every transaction of one account goes through it.
//!
//! A chain that is not a local anvil drops transactions, lets them sit in the pool
//! while the base fee climbs, and answers late. The manager:
//! - assigns nonces itself, in one ordered queue, so the node's concurrent tasks never
//!   take the same nonce; after a send fails it reads the account's nonce again;
//! - estimates gas before it takes a nonce, so a call that would revert costs nothing
//!   and reports the contract's custom error;
//! - waits for each receipt with a deadline: a transaction still unmined at the
//!   deadline is replaced (same nonce) with fees raised by [`TxConfig::fee_bump_percent`]
//!   (EIP-1559, never above [`TxConfig::max_fee_per_gas`]); one the node no longer knows
//!   (dropped from its pool) is sent again at once;
//! - counts a receipt after [`TxConfig::confirmations`] blocks and follows it if a
//!   reorganisation moves or removes it;
//! - decodes a failed receipt into the custom error it reverted with (the call replayed
//!   on the state after its block);
//! - tracks the allowance that calls pulling tokens still need, so that approvals made
//!   by concurrent tasks add up instead of overwriting each other
//!   ([`TxManager::approval_for`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::eips::BlockId;
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use tokio::sync::Mutex;

use crate::client::TxReceipt;
use crate::error::{Error, Result, Revert, Target};

/// Gas added to every limit beyond the margin: one storage slot set from zero.
const EXTRA_GAS: u64 = 25_000;

/// Settings of a [`TxManager`].
#[derive(Clone, Debug)]
pub struct TxConfig {
    /// How long a transaction may stay unmined before it is replaced with higher fees.
    pub receipt_timeout: Duration,
    /// How long a call waits in all, replacements included, before it gives up with
    /// [`Error::Stuck`].
    pub give_up_after: Duration,
    /// How much each replacement raises both fees, in percent (nodes want at least 10).
    pub fee_bump_percent: u64,
    /// The highest `maxFeePerGas` ever offered, in wei; `None` for no cap.
    pub max_fee_per_gas: Option<u128>,
    /// Blocks a receipt needs (1: mined) before a call returns it.
    pub confirmations: u64,
    /// How often pending transactions are looked for.
    pub poll_interval: Duration,
    /// Gas limit over the estimate, in percent: the state may change between the
    /// estimate and the block.
    pub gas_margin_percent: u64,
}

impl Default for TxConfig {
    fn default() -> Self {
        TxConfig {
            receipt_timeout: Duration::from_secs(30),
            give_up_after: Duration::from_secs(600),
            fee_bump_percent: 25,
            max_fee_per_gas: None,
            confirmations: 1,
            poll_interval: Duration::from_millis(500),
            gas_margin_percent: 20,
        }
    }
}

/// Polls after a send before a gap in the account's nonces (an earlier transaction of
/// ours gone from the node) is looked for, and between two looks while the transaction
/// waits: one `eth_getTransactionCount` every that many polls.
const GAP_CHECK_POLLS: u32 = 4;

/// Fees of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fees {
    max_fee: u128,
    priority: u128,
}

/// Sends the transactions of one account, in order. Share it (`Arc`) between every task
/// that sends from the account.
#[derive(Debug)]
pub struct TxManager {
    provider: DynProvider,
    account: Address,
    config: TxConfig,
    /// The next nonce to use; `None` until read from the chain, and after a send failed.
    /// Held while a transaction is given its nonce and sent: the queue.
    nonce: Mutex<Option<u64>>,
    /// Token amounts that calls about to pull them (fills, requests) still need from
    /// the allowance, by what they are for.
    pulls: std::sync::Mutex<HashMap<Target, U256>>,
    /// Held while an approval is decided and sent.
    approving: Mutex<()>,
    counts: Counts,
}

/// What a [`TxManager`] has done since it was made ([`TxManager::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxStats {
    /// Transactions sent (first attempts).
    pub sent: u64,
    /// Attempts sent again: replacements with higher fees, and dropped ones.
    pub resent: u64,
    /// Transactions mined with success (and confirmed).
    pub succeeded: u64,
    /// Transactions mined that reverted.
    pub reverted: u64,
    /// Sends the node refused for their nonce (the nonce read again, the send retried).
    pub nonce_refused: u64,
    /// Transactions sent again under a new nonce because earlier ones vanished.
    pub nonce_gaps: u64,
    /// Transactions whose nonce another sender's transaction took
    /// ([`Error::NonceTaken`]).
    pub nonce_taken: u64,
    /// Transactions given up unmined ([`Error::Stuck`]).
    pub stuck: u64,
    /// Reads that failed while a sent transaction was awaited (receipt, nonce): each
    /// was tried again at the next poll, since the transaction was out.
    pub read_errors: u64,
    /// The last reverted transactions (at most [`REVERTS_KEPT`]), oldest first: which
    /// call, about what, and why.
    pub reverts: Vec<RevertedTx>,
}

/// How many reverted transactions [`TxStats::reverts`] keeps.
pub const REVERTS_KEPT: usize = 32;

/// A mined transaction that reverted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevertedTx {
    /// The contract function, e.g. `fillSlot`.
    pub call: &'static str,
    /// What the call was about.
    pub target: Target,
    /// The error it reverted with, when replaying it gave one.
    pub error: Option<Revert>,
}

#[derive(Debug, Default)]
struct Counts {
    sent: AtomicU64,
    resent: AtomicU64,
    succeeded: AtomicU64,
    reverted: AtomicU64,
    nonce_refused: AtomicU64,
    nonce_gaps: AtomicU64,
    nonce_taken: AtomicU64,
    stuck: AtomicU64,
    read_errors: AtomicU64,
    reverts: std::sync::Mutex<std::collections::VecDeque<RevertedTx>>,
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What sending an attempt again did.
enum Resent {
    /// The node took it: its hash.
    Sent(B256),
    /// The node already has it, or a transaction with its nonce that pays as much.
    Pending,
    /// A mined transaction has its nonce.
    NonceUsed,
    /// Its fees are below what the node takes now.
    Underpriced,
}

/// Whether a send failed for its nonce.
fn is_nonce_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("nonce too low")
        || m.contains("nonce too high")
        || m.contains("invalid nonce")
        || m.contains("nonce has already been used")
}

/// Whether a send failed for fees below what the node takes now.
fn is_fee_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("base fee") || m.contains("basefee") || m.contains("underpriced")
}

fn is_known(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("already known") || m.contains("already imported") || m.contains("known transaction")
}

fn bump(v: u128, percent: u64) -> u128 {
    v.saturating_mul(100 + u128::from(percent)) / 100 + 1
}

impl TxManager {
    /// A manager sending from `account` through `provider` (which signs for it).
    pub fn new(provider: DynProvider, account: Address, config: TxConfig) -> Self {
        TxManager {
            provider,
            account,
            config,
            nonce: Mutex::new(None),
            pulls: std::sync::Mutex::new(HashMap::new()),
            counts: Counts::default(),
            approving: Mutex::new(()),
        }
    }

    /// The account.
    pub fn account(&self) -> Address {
        self.account
    }

    /// The settings.
    pub fn config(&self) -> &TxConfig {
        &self.config
    }

    /// What this manager has done: transactions sent, replaced, mined, refused.
    pub fn stats(&self) -> TxStats {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TxStats {
            sent: get(&c.sent),
            resent: get(&c.resent),
            succeeded: get(&c.succeeded),
            reverted: get(&c.reverted),
            nonce_refused: get(&c.nonce_refused),
            nonce_gaps: get(&c.nonce_gaps),
            nonce_taken: get(&c.nonce_taken),
            stuck: get(&c.stuck),
            read_errors: get(&c.read_errors),
            reverts: c
                .reverts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }

    /// The fees of a first attempt: the node's EIP-1559 estimate, capped.
    async fn fees(&self, call: &'static str) -> Result<Fees> {
        let est = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(|e| Error::rpc(format!("{call}: fee estimate"), e))?;
        Ok(self.capped(Fees {
            max_fee: est.max_fee_per_gas,
            priority: est.max_priority_fee_per_gas,
        }))
    }

    fn capped(&self, f: Fees) -> Fees {
        match self.config.max_fee_per_gas {
            Some(cap) => Fees {
                max_fee: f.max_fee.min(cap),
                priority: f.priority.min(cap),
            },
            None => f,
        }
    }

    /// The fees of a replacement: both raised by the bump, and at least the current
    /// estimate (a base fee that climbed), capped.
    async fn bumped(&self, call: &'static str, old: Fees) -> Fees {
        let mut next = Fees {
            max_fee: bump(old.max_fee, self.config.fee_bump_percent),
            priority: bump(old.priority, self.config.fee_bump_percent),
        };
        if let Ok(now) = self.fees(call).await {
            next.max_fee = next.max_fee.max(now.max_fee);
            next.priority = next.priority.max(now.priority);
        }
        next.priority = next.priority.min(next.max_fee);
        self.capped(next)
    }

    /// The account's nonce counting the node's pending transactions.
    async fn chain_nonce(&self, call: &'static str) -> Result<u64> {
        self.nonce_at(call, BlockId::pending()).await
    }

    /// The account's nonce after the latest block (mined transactions only).
    async fn latest_nonce(&self, call: &'static str) -> Result<u64> {
        self.nonce_at(call, BlockId::latest()).await
    }

    async fn nonce_at(&self, call: &'static str, block: BlockId) -> Result<u64> {
        self.provider
            .get_transaction_count(self.account)
            .block_id(block)
            .await
            .map_err(|e| Error::rpc(format!("{call}: eth_getTransactionCount"), e))
    }

    /// Sends `tx` (its `to`, `input` and `value`) from the account and waits for its
    /// receipt, as described in the [module docs](self). `call` and `target` name it in
    /// errors.
    ///
    /// # Errors
    /// [`Error::Reverted`] when the estimate or the mined transaction reverts,
    /// [`Error::Failed`] for a failed receipt without revert data, [`Error::Stuck`]
    /// when it is not mined within [`TxConfig::give_up_after`], [`Error::Rpc`].
    ///
    /// # Cancel safety
    /// A transaction dropped after it was sent may still be mined; its nonce is spent
    /// either way.
    pub async fn send(
        &self,
        call: &'static str,
        target: Target,
        tx: TransactionRequest,
    ) -> Result<TxReceipt> {
        self.send_within(call, target, tx, self.config.receipt_timeout)
            .await
    }

    /// As [`Txman::send`], with `receipt_timeout` for this transaction in place of
    /// [`TxConfig::receipt_timeout`] (e.g. a few of the chain's block times, so that a
    /// proof priced out is replaced while its period lasts).
    ///
    /// # Errors
    /// As [`Txman::send`].
    pub async fn send_within(
        &self,
        call: &'static str,
        target: Target,
        tx: TransactionRequest,
        receipt_timeout: Duration,
    ) -> Result<TxReceipt> {
        let tx = tx.with_from(self.account);
        let gas = self
            .provider
            .estimate_gas(tx.clone())
            .await
            .map_err(|e| Error::from_contract(call, target, alloy::contract::Error::from(e)))?;
        // A margin, and room for a storage slot that is zero by the time the
        // transaction runs (an allowance spent meanwhile costs 20 000 gas to set).
        let tx = tx.with_gas_limit(
            gas.saturating_mul(100 + self.config.gas_margin_percent) / 100 + EXTRA_GAS,
        );
        let (mut nonce, first, mut fees) = self.submit(call, &tx, self.fees(call).await?).await?;
        let started = Instant::now();
        let mut sent = vec![first];
        let mut last_send = Instant::now();
        let mut last_gap_check = Instant::now();
        loop {
            // The transaction is out: a read that fails (a dropped connection, a node
            // restarting, an endpoint's bad gateway) is tried again at the next poll,
            // until the deadline, never a reason to stop waiting for it.
            let mut failed = None;
            match self.find_receipt(call, &sent).await {
                Ok(Some(receipt)) => match self.confirmed(call, receipt).await {
                    Ok(Some(receipt)) => return self.outcome(call, target, &tx, receipt).await,
                    // Reorganised away: wait for it (or a replacement) again.
                    Ok(None) => {
                        last_send = Instant::now();
                        continue;
                    }
                    Err(e) => failed = Some(e),
                },
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
            if started.elapsed() >= self.config.give_up_after {
                count(&self.counts.stuck);
                return Err(Error::Stuck {
                    call,
                    target,
                    nonce,
                    tx: sent.last().copied().unwrap_or_default(),
                });
            }
            if let Some(e) = failed {
                count(&self.counts.read_errors);
                tracing::warn!(call, %target, nonce, error = %e, "could not read the receipt; trying again");
                tokio::time::sleep(self.config.poll_interval).await;
                continue;
            }
            let dropped = self.is_dropped(&sent).await;
            // A gap is looked for soon (a few polls), not only at the receipt deadline:
            // after a reorganisation took an earlier transaction of ours, a proof sent
            // meanwhile would wait the whole deadline and miss its challenge.
            let gap_after = receipt_timeout.min(self.config.poll_interval * GAP_CHECK_POLLS);
            let gap = if last_send.elapsed() >= gap_after && last_gap_check.elapsed() >= gap_after {
                last_gap_check = Instant::now();
                match self.chain_nonce(call).await {
                    Ok(n) => n < nonce,
                    Err(e) => {
                        count(&self.counts.read_errors);
                        tracing::warn!(call, %target, nonce, error = %e, "could not read the nonce");
                        false
                    }
                }
            } else {
                false
            };
            if gap {
                // The node knows no transaction before this one's nonce (they were
                // dropped, or a reorganisation took them): it can never land. Send
                // it again with the nonce the chain expects.
                {
                    let mut next = self.nonce.lock().await;
                    *next = None;
                }
                let (renonced, hash, f) = self.submit(call, &tx, fees).await?;
                count(&self.counts.nonce_gaps);
                tracing::warn!(call, %target, old = nonce, new = renonced, %hash, "nonce gap: sent again with a new nonce");
                nonce = renonced;
                fees = f;
                sent.push(hash);
                last_send = Instant::now();
                continue;
            }
            if dropped || last_send.elapsed() >= receipt_timeout {
                if !dropped {
                    fees = self.bumped(call, fees).await;
                }
                match self.resend(call, &tx, nonce, fees).await {
                    Ok(Resent::Sent(hash)) => {
                        // A dropped one sent again has the hash it had: still a resend.
                        if dropped || !sent.contains(&hash) {
                            count(&self.counts.resent);
                            tracing::info!(
                                call,
                                %target,
                                nonce,
                                max_fee = fees.max_fee,
                                priority = fees.priority,
                                %hash,
                                dropped,
                                "sent a transaction again"
                            );
                        }
                        if !sent.contains(&hash) {
                            sent.push(hash);
                        }
                    }
                    // The same transaction, or one the node prefers, is in its pool.
                    Ok(Resent::Pending) => {}
                    // The nonce is used: one of ours was mined (the loop's next round
                    // finds it), or another sender took it.
                    Ok(Resent::NonceUsed) => {
                        // A read that fails here tells nothing: the next round looks again.
                        let taken = matches!(self.latest_nonce(call).await, Ok(n) if n > nonce)
                            && matches!(self.find_receipt(call, &sent).await, Ok(None));
                        if taken {
                            *self.nonce.lock().await = None;
                            count(&self.counts.nonce_taken);
                            return Err(Error::NonceTaken {
                                call,
                                target,
                                nonce,
                            });
                        }
                    }
                    // Below the base fee now: more next time, soon.
                    Ok(Resent::Underpriced) => {
                        fees = self.bumped(call, fees).await;
                        last_send = Instant::now()
                            .checked_sub(receipt_timeout)
                            .unwrap_or(last_send);
                        tokio::time::sleep(self.config.poll_interval).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(call, %target, nonce, error = %e, "could not send again")
                    }
                }
                last_send = Instant::now();
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    fn request(tx: &TransactionRequest, nonce: u64, fees: Fees) -> TransactionRequest {
        tx.clone()
            .with_nonce(nonce)
            .with_max_fee_per_gas(fees.max_fee)
            .with_max_priority_fee_per_gas(fees.priority)
    }

    /// Takes the next nonce and sends the first attempt: the queue. Reads the nonce
    /// again when the node refuses it, and raises the fees when the node finds them
    /// below its base fee; three tries. Returns the nonce, the hash and the fees sent.
    async fn submit(
        &self,
        call: &'static str,
        tx: &TransactionRequest,
        mut fees: Fees,
    ) -> Result<(u64, B256, Fees)> {
        let mut next = self.nonce.lock().await;
        let mut last = None;
        for _ in 0..3 {
            let nonce = match *next {
                Some(n) => n,
                None => self.chain_nonce(call).await?,
            };
            match self
                .provider
                .send_transaction(Self::request(tx, nonce, fees))
                .await
            {
                Ok(pending) => {
                    *next = Some(nonce + 1);
                    count(&self.counts.sent);
                    return Ok((nonce, *pending.tx_hash(), fees));
                }
                Err(e) => {
                    *next = None;
                    let message = e.to_string();
                    if is_nonce_error(&message) {
                        count(&self.counts.nonce_refused);
                        tracing::info!(call, nonce, error = %e, "nonce refused; reading it again");
                    } else if is_fee_error(&message) {
                        fees = self.bumped(call, fees).await;
                        tracing::info!(call, nonce, error = %e, max_fee = fees.max_fee, "fees refused; raised");
                    } else {
                        return Err(Error::rpc(format!("{call}: send"), e));
                    }
                    last = Some(e);
                }
            }
        }
        Err(match last {
            Some(e) => Error::rpc(format!("{call}: send (3 tries)"), e),
            None => Error::rpc(format!("{call}: send"), "not sent"),
        })
    }

    /// Sends an attempt with `nonce` again.
    async fn resend(
        &self,
        call: &'static str,
        tx: &TransactionRequest,
        nonce: u64,
        fees: Fees,
    ) -> Result<Resent> {
        match self
            .provider
            .send_transaction(Self::request(tx, nonce, fees))
            .await
        {
            Ok(pending) => Ok(Resent::Sent(*pending.tx_hash())),
            Err(e) => {
                let message = e.to_string();
                let lower = message.to_ascii_lowercase();
                if is_known(&message) || lower.contains("replacement transaction underpriced") {
                    Ok(Resent::Pending)
                } else if is_fee_error(&message) {
                    Ok(Resent::Underpriced)
                } else if lower.contains("nonce too low") {
                    Ok(Resent::NonceUsed)
                } else {
                    Err(Error::rpc(format!("{call}: send again"), e))
                }
            }
        }
    }

    /// The receipt of whichever of `sent` was mined, if one was.
    async fn find_receipt(
        &self,
        call: &'static str,
        sent: &[B256],
    ) -> Result<Option<TransactionReceipt>> {
        for hash in sent.iter().rev() {
            if let Some(receipt) = self.receipt(call, *hash).await? {
                return Ok(Some(receipt));
            }
        }
        Ok(None)
    }

    async fn receipt(&self, call: &'static str, hash: B256) -> Result<Option<TransactionReceipt>> {
        self.provider
            .get_transaction_receipt(hash)
            .await
            .map_err(|e| Error::rpc(format!("{call}: eth_getTransactionReceipt"), e))
    }

    /// Whether the node knows none of `sent` any more (dropped from its pool).
    async fn is_dropped(&self, sent: &[B256]) -> bool {
        for hash in sent {
            match self.provider.get_transaction_by_hash(*hash).await {
                Ok(None) => {}
                // Known, or the node cannot tell: not dropped.
                _ => return false,
            }
        }
        true
    }

    /// Waits until `receipt` has its confirmations, reading it again each round (it
    /// moves with a reorganisation); `None` when a reorganisation removed it.
    async fn confirmed(
        &self,
        call: &'static str,
        mut receipt: TransactionReceipt,
    ) -> Result<Option<TransactionReceipt>> {
        loop {
            let block = receipt.block_number.unwrap_or_default();
            let latest = self
                .provider
                .get_block_number()
                .await
                .map_err(|e| Error::rpc(format!("{call}: eth_blockNumber"), e))?;
            if latest + 1 >= block + self.config.confirmations {
                return Ok(Some(receipt));
            }
            tokio::time::sleep(self.config.poll_interval).await;
            match self.receipt(call, receipt.transaction_hash).await? {
                Some(r) => receipt = r,
                None => return Ok(None),
            }
        }
    }

    /// The call's result from its mined receipt: the receipt, or the custom error it
    /// reverted with (replayed on the state its block left: a failed transaction
    /// changes nothing, and what made it fail is there).
    async fn outcome(
        &self,
        call: &'static str,
        target: Target,
        tx: &TransactionRequest,
        receipt: TransactionReceipt,
    ) -> Result<TxReceipt> {
        let block = receipt.block_number.unwrap_or_default();
        if receipt.status() {
            count(&self.counts.succeeded);
            return Ok(TxReceipt {
                hash: receipt.transaction_hash,
                block_number: block,
                block_hash: receipt.block_hash.unwrap_or_default(),
                gas_used: receipt.gas_used,
            });
        }
        count(&self.counts.reverted);
        let replay = self
            .provider
            .call(tx.clone())
            .block(BlockId::number(block))
            .await;
        let error = match replay {
            Err(e) => {
                let e = alloy::contract::Error::from(e);
                e.as_revert_data()
                    .is_some()
                    .then(|| Error::from_contract(call, target, e))
            }
            Ok(_) => None,
        };
        let error = error.unwrap_or(Error::Failed {
            call,
            target,
            tx: receipt.transaction_hash,
        });
        self.record_revert(RevertedTx {
            call,
            target,
            error: match &error {
                Error::Reverted { revert, .. } => Some((**revert).clone()),
                _ => None,
            },
        });
        Err(error)
    }

    fn record_revert(&self, reverted: RevertedTx) {
        let mut reverts = self
            .counts
            .reverts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if reverts.len() == REVERTS_KEPT {
            reverts.pop_front();
        }
        reverts.push_back(reverted);
    }

    // ------------------------------------------------------------ allowances

    /// The allowance to approve so that a call pulling `amount` for `target` and every
    /// other pull still pending get what they need, given the allowance `current`;
    /// `None` when `current` covers them. Registers the pull until
    /// [`TxManager::pull_done`].
    pub(crate) fn approval_for(&self, target: Target, amount: U256, current: U256) -> Option<U256> {
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        pulls.insert(target, amount);
        let needed = pulls.values().fold(U256::ZERO, |a, b| a.saturating_add(*b));
        (current < needed).then_some(needed)
    }

    /// The pull for `target` was mined (or given up): it no longer needs the allowance.
    pub(crate) fn pull_done(&self, target: Target) {
        self.pulls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&target);
    }

    /// Held while an approval is decided and sent, so approvals go out one at a time.
    pub(crate) async fn approving(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.approving.lock().await
    }
}
