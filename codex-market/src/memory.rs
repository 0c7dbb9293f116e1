//! An in-memory marketplace with the contracts' rules, for fast tests of what runs
//! over the [`Marketplace`] trait (a node's purchasing, sales and validator).
//!
//! [`MemoryMarketplace`] is a handle acting as one account on a shared in-memory
//! "chain": the marketplace's state, the token's balances and allowances, the blocks
//! and the events live behind one `Arc<Mutex<_>>`, and [`MemoryMarketplace::connect`]
//! gives another account's handle on the same chain, so a client, hosts and a
//! validator interact as they do on chain.
//!
//! The rules are those of `contracts/Marketplace.sol`, `Proofs.sol`,
//! `SlotReservations.sol` and `Periods.sol`, written as the same functions in the same
//! order: request and slot states with expiry and end applied, reservations,
//! collateral, the pointer and downtime challenge with `isProofRequired` and
//! `willProofBeRequired`, proofs checked by a pluggable [`ProofVerifier`], missed
//! proofs with the validator's reward, slashing and freeing into Repair with the repair
//! reward, payouts, cancellation, failure and withdrawals. A call that reverts changes
//! nothing and gives [`Error::Reverted`] with the custom error the contract reverts
//! with; ERC-20 errors are OpenZeppelin's.
//!
//! Time is not the wall clock. Every successful transaction mines one block at the
//! chain's clock; the test moves the clock ([`MemoryMarketplace::advance`],
//! [`MemoryMarketplace::set_time`], or [`MemoryMarketplace::set_next_block_timestamp`]
//! as anvil's `evm_setNextBlockTimestamp`) and mines empty blocks
//! ([`MemoryMarketplace::mine`]). As on chain, views read the latest block and a
//! transaction lands in the next one, whose number moves the pointer. Block hashes
//! are derived from the block number.
//!
//! ```
//! use codex_market::alloy::primitives::{Address, U256};
//! use codex_market::memory::{MemoryMarketplace, TestVerifier};
//! use codex_market::{Ask, Content, Marketplace, MarketplaceConfig, SlotState, StorageRequest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> codex_market::Result<()> {
//! let chain = MemoryMarketplace::deploy(MarketplaceConfig::default(), TestVerifier)?;
//! let client = chain.connect(Address::repeat_byte(1));
//! let host = chain.connect(Address::repeat_byte(2));
//! chain.mint(client.account(), U256::from(10u64.pow(12)));
//! chain.mint(host.account(), U256::from(10u64.pow(12)));
//! let request = StorageRequest {
//!     client: client.account(),
//!     ask: Ask {
//!         proof_probability: U256::from(1),
//!         price_per_byte_per_second: U256::from(1),
//!         collateral_per_byte: U256::from(1),
//!         slots: 1,
//!         slot_size: 1024,
//!         duration: 3600,
//!         max_slot_loss: 0,
//!     },
//!     content: Content { cid: b"cid".to_vec(), merkle_root: [0; 32] },
//!     expiry: 600,
//!     nonce: [1; 32],
//! };
//! let (id, _) = client.request_storage(&request).await?;
//! host.reserve_slot(id, 0).await?;
//! host.fill_slot(id, 0, &[1]).await?; // TestVerifier: any proof not starting with 0
//! assert_eq!(host.slot_state(request.slot_id(0)).await?, SlotState::Filled);
//! chain.advance(3601); // the request ends
//! host.free_slot(request.slot_id(0)).await?; // payout and collateral
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use alloy::primitives::{Address, B256, U256, keccak256};

use crate::client::{LoggedEvent, MarketEvent, TxReceipt};
use crate::error::{Error, MarketplaceError, Result, Revert, Target, TokenError};
use crate::market::Marketplace;
use crate::types::{
    Ask, MarketplaceConfig, RequestId, RequestState, SlotId, SlotState, StorageRequest,
    challenge_from_block_hash, challenge_to_field, echo_proof, pointer, root_to_field,
};

/// The block the marketplace is deployed in by default: after 300 empty blocks, as on
/// a [`crate::LocalChain`].
pub const DEPLOY_BLOCK: u64 = 301;

/// The time of the deployment block by default (seconds since the epoch).
pub const DEPLOY_TIME: u64 = 1_700_000_000;

/// The marketplace's address on the in-memory chain.
pub const MARKETPLACE_ADDRESS: Address = Address::new([0x4d; 20]);

/// Checks a storage proof against its public inputs
/// `[challengeToField(challenge), rootToField(merkleRoot), slotIndex]`, as the
/// contract's `IStorageProofVerifier` does. Closures `Fn(&[u8], &[U256; 3]) -> bool`
/// are verifiers.
pub trait ProofVerifier: Send + Sync {
    /// Whether `proof` proves the statement with `public_inputs`.
    fn verify(&self, proof: &[u8], public_inputs: &[U256; 3]) -> bool;
}

impl<F> ProofVerifier for F
where
    F: Fn(&[u8], &[U256; 3]) -> bool + Send + Sync,
{
    fn verify(&self, proof: &[u8], public_inputs: &[U256; 3]) -> bool {
        self(proof, public_inputs)
    }
}

/// The rule of the contracts' `TestVerifier` ([`crate::VerifierSource::Test`]): any
/// proof that is not empty and does not start with a zero byte.
#[derive(Clone, Copy, Debug, Default)]
pub struct TestVerifier;

impl ProofVerifier for TestVerifier {
    fn verify(&self, proof: &[u8], _: &[U256; 3]) -> bool {
        proof.first().is_some_and(|b| *b != 0)
    }
}

/// The rule of `EchoProofCheck` behind `Halo2Verifier` ([`crate::VerifierSource::Echo`]):
/// only the proof [`echo_proof`] of the public inputs.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoVerifier;

impl ProofVerifier for EchoVerifier {
    fn verify(&self, proof: &[u8], public_inputs: &[U256; 3]) -> bool {
        proof == echo_proof(public_inputs).as_slice()
    }
}

/// Accepts every proof, even an empty one.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAll;

impl ProofVerifier for AcceptAll {
    fn verify(&self, _: &[u8], _: &[U256; 3]) -> bool {
        true
    }
}

/// Accepts only the proofs in the set, whatever the public inputs.
#[derive(Clone, Debug, Default)]
pub struct AcceptOnly(pub HashSet<Vec<u8>>);

impl ProofVerifier for AcceptOnly {
    fn verify(&self, proof: &[u8], _: &[U256; 3]) -> bool {
        self.0.contains(proof)
    }
}

/// The hash of block `number` on the in-memory chain.
pub fn block_hash(number: u64) -> B256 {
    keccak256(
        [
            b"codex memory chain block ".as_slice(),
            &number.to_be_bytes(),
        ]
        .concat(),
    )
}

// ---------------------------------------------------------------- state

/// `Marketplace.RequestContext`.
#[derive(Clone, Debug)]
struct RequestContext {
    state: RequestState,
    funds_to_return_to_client: U256,
    slots_filled: u64,
    started_at: u64,
    ends_at: u64,
    expires_at: u64,
}

/// `Marketplace.Slot`; a slot that was never filled has no entry (`requestId == 0`).
#[derive(Clone, Debug)]
struct Slot {
    state: SlotState,
    request: RequestId,
    filled_at: u64,
    slot_index: u64,
    current_collateral: U256,
    host: Address,
}

/// OpenZeppelin's `EnumerableSet`: insertion order, removal moves the last element
/// into the gap.
#[derive(Clone, Debug)]
struct Set<T>(Vec<T>);

impl<T> Default for Set<T> {
    fn default() -> Self {
        Set(Vec::new())
    }
}

impl<T: PartialEq + Clone> Set<T> {
    fn add(&mut self, v: T) {
        if !self.0.contains(&v) {
            self.0.push(v);
        }
    }

    fn remove(&mut self, v: &T) {
        if let Some(i) = self.0.iter().position(|x| x == v) {
            self.0.swap_remove(i);
        }
    }
}

/// Everything a transaction can change: the token's and the marketplace's storage.
/// A transaction runs on a copy that replaces it only when the transaction succeeds.
#[derive(Clone, Debug, Default)]
struct World {
    // TestToken / RefusingToken
    balances: HashMap<Address, U256>,
    /// What the marketplace may take from each owner.
    allowances: HashMap<Address, U256>,
    refusing: bool,
    // Marketplace
    requests: HashMap<RequestId, StorageRequest>,
    contexts: HashMap<RequestId, RequestContext>,
    slots: HashMap<SlotId, Slot>,
    requests_of: HashMap<Address, Set<RequestId>>,
    slots_of: HashMap<Address, Set<SlotId>>,
    // SlotReservations
    reservations: HashMap<SlotId, Vec<Address>>,
    // Proofs
    slot_starts: HashMap<SlotId, u64>,
    missed: HashMap<SlotId, u64>,
    received: HashSet<(SlotId, u64)>,
    marked_missing: HashSet<(SlotId, u64)>,
}

/// The block a call executes in, and what it emits.
struct Env {
    config: Arc<MarketplaceConfig>,
    verifier: Arc<dyn ProofVerifier>,
    sender: Address,
    number: u64,
    timestamp: u64,
    events: Vec<MarketEvent>,
}

/// Results inside the machine: a revert is the contract's error, the caller adds the
/// call and its target.
type Rv<T> = std::result::Result<T, Revert>;

fn fail<T>(e: MarketplaceError) -> Rv<T> {
    Err(Revert::Marketplace(e))
}

/// Solidity's checked arithmetic: `Panic(0x11)` on overflow.
fn overflow() -> Revert {
    Revert::Panic(U256::from(0x11))
}

fn sub(a: U256, b: U256) -> Rv<U256> {
    a.checked_sub(b).ok_or_else(overflow)
}

fn add(a: U256, b: U256) -> Rv<U256> {
    a.checked_add(b).ok_or_else(overflow)
}

fn mul(a: U256, b: U256) -> Rv<U256> {
    a.checked_mul(b).ok_or_else(overflow)
}

fn add64(a: u64, b: u64) -> Rv<u64> {
    a.checked_add(b).ok_or_else(overflow)
}

fn price_per_slot_per_second(ask: &Ask) -> Rv<U256> {
    mul(ask.price_per_byte_per_second, U256::from(ask.slot_size))
}

fn collateral_per_slot(ask: &Ask) -> Rv<U256> {
    mul(ask.collateral_per_byte, U256::from(ask.slot_size))
}

fn max_price(ask: &Ask) -> Rv<U256> {
    let slot_seconds = mul(U256::from(ask.slots), U256::from(ask.duration))?;
    mul(
        mul(slot_seconds, ask.price_per_byte_per_second)?,
        U256::from(ask.slot_size),
    )
}

/// `_payout`: `(until - from) * pricePerSlotPerSecond`.
fn payout(ask: &Ask, until: u64, from: u64) -> Rv<U256> {
    let seconds = until.checked_sub(from).ok_or_else(overflow)?;
    mul(U256::from(seconds), price_per_slot_per_second(ask)?)
}

impl Env {
    fn period(&self) -> u64 {
        self.config.period_of(self.timestamp)
    }

    fn emit(&mut self, event: MarketEvent) {
        self.events.push(event);
    }
}

// ---------------------------------------------------------------- views

impl World {
    fn known_request(&self, id: RequestId) -> Rv<&StorageRequest> {
        self.requests
            .get(&id)
            .ok_or(Revert::Marketplace(MarketplaceError::UnknownRequest))
    }

    fn context(&self, id: RequestId) -> Rv<&RequestContext> {
        self.contexts
            .get(&id)
            .ok_or(Revert::Marketplace(MarketplaceError::UnknownRequest))
    }

    fn non_free_slot(&self, slot: SlotId) -> Rv<&Slot> {
        self.slots
            .get(&slot)
            .ok_or(Revert::Marketplace(MarketplaceError::SlotIsFree))
    }

    fn request_state(&self, env: &Env, id: RequestId) -> Rv<RequestState> {
        self.known_request(id)?;
        let context = self.context(id)?;
        let state = context.state;
        if state == RequestState::New && env.timestamp > context.expires_at {
            return Ok(RequestState::Cancelled);
        }
        if matches!(state, RequestState::New | RequestState::Started)
            && env.timestamp > context.ends_at
        {
            return Ok(RequestState::Finished);
        }
        Ok(state)
    }

    fn slot_state(&self, env: &Env, slot: SlotId) -> Rv<SlotState> {
        let Some(s) = self.slots.get(&slot) else {
            return Ok(SlotState::Free);
        };
        if s.state == SlotState::Paid {
            return Ok(SlotState::Paid);
        }
        Ok(match self.request_state(env, s.request)? {
            RequestState::Cancelled => SlotState::Cancelled,
            RequestState::Finished => SlotState::Finished,
            RequestState::Failed => SlotState::Failed,
            RequestState::New | RequestState::Started => s.state,
        })
    }

    fn request_end(&self, env: &Env, id: RequestId) -> Rv<u64> {
        self.known_request(id)?;
        let context = self.context(id)?;
        if self.request_state(env, id)? == RequestState::Cancelled {
            return Ok(context.expires_at);
        }
        Ok(context.ends_at)
    }

    fn slot_probability(&self, env: &Env, slot: SlotId) -> U256 {
        self.slots
            .get(&slot)
            .and_then(|s| self.requests.get(&s.request))
            .map_or(U256::ZERO, |r| env.config.slot_probability(&r.ask))
    }

    fn pointer(&self, env: &Env, slot: SlotId, period: u64) -> u8 {
        pointer(env.number, period, env.config.proofs.downtime_product, slot)
    }

    /// `_challenge`: the hash of the block the pointer refers to.
    fn challenge(&self, env: &Env, pointer: u8) -> [u8; 32] {
        let referenced = env.number.saturating_sub(1 + u64::from(pointer));
        challenge_from_block_hash(block_hash(referenced))
    }

    /// `getChallenge`.
    fn current_challenge(&self, env: &Env, slot: SlotId) -> [u8; 32] {
        self.challenge(env, self.pointer(env, slot, env.period()))
    }

    /// `_requirement`: whether the challenge asks for a proof, and the pointer.
    fn requirement(&self, env: &Env, slot: SlotId, period: u64) -> Rv<(bool, u8)> {
        let start = self.slot_starts.get(&slot).copied().unwrap_or(0);
        if self.slot_state(env, slot)? != SlotState::Filled || period <= env.config.period_of(start)
        {
            return Ok((false, 0));
        }
        let pointer = self.pointer(env, slot, period);
        let probability = self.slot_probability(env, slot);
        let required = probability.is_zero()
            || U256::from_be_bytes(self.challenge(env, pointer)) % probability == U256::ZERO;
        Ok((required, pointer))
    }

    fn is_proof_required_in(&self, env: &Env, slot: SlotId, period: u64) -> Rv<bool> {
        let (required, pointer) = self.requirement(env, slot, period)?;
        Ok(required && pointer >= env.config.proofs.downtime)
    }

    fn will_proof_be_required(&self, env: &Env, slot: SlotId) -> Rv<bool> {
        let (required, pointer) = self.requirement(env, slot, env.period())?;
        Ok(required && pointer < env.config.proofs.downtime)
    }

    /// `_checkProofMissing`.
    fn check_proof_missing(&self, env: &Env, slot: SlotId, period: u64) -> Rv<()> {
        let end = u128::from(period + 1) * u128::from(env.config.proofs.period);
        let now = u128::from(env.timestamp);
        if end >= now {
            return fail(MarketplaceError::PeriodNotEnded);
        }
        if now >= end + u128::from(env.config.proofs.timeout) {
            return fail(MarketplaceError::ValidationTimedOut);
        }
        if self.received.contains(&(slot, period)) {
            return fail(MarketplaceError::ProofNotMissing);
        }
        if !self.is_proof_required_in(env, slot, period)? {
            return fail(MarketplaceError::ProofNotRequired);
        }
        if self.marked_missing.contains(&(slot, period)) {
            return fail(MarketplaceError::ProofAlreadyMarkedMissing);
        }
        Ok(())
    }

    fn can_mark_proof_as_missing(&self, env: &Env, slot: SlotId, period: u64) -> Rv<()> {
        if self.slot_state(env, slot)? != SlotState::Filled {
            return fail(MarketplaceError::SlotNotAcceptingProofs);
        }
        self.check_proof_missing(env, slot, period)
    }

    /// `_slotReservable`.
    fn slot_reservable(&self, env: &Env, id: RequestId, index: u64) -> Rv<bool> {
        let Some(request) = self.requests.get(&id) else {
            return Ok(false);
        };
        if index >= request.ask.slots {
            return Ok(false);
        }
        if !matches!(
            self.request_state(env, id)?,
            RequestState::New | RequestState::Started
        ) {
            return Ok(false);
        }
        Ok(matches!(
            self.slot_state(env, SlotId::new(id, index))?,
            SlotState::Free | SlotState::Repair
        ))
    }

    fn can_reserve_slot(&self, env: &Env, id: RequestId, index: u64) -> Rv<bool> {
        let reservations = self.reservations.get(&SlotId::new(id, index));
        let held = reservations.map_or(0, Vec::len);
        let mine = reservations.is_some_and(|r| r.contains(&env.sender));
        Ok(self.slot_reservable(env, id, index)?
            && held < usize::from(env.config.max_reservations)
            && !mine)
    }

    fn has_reservation(&self, slot: SlotId, host: Address) -> bool {
        self.reservations
            .get(&slot)
            .is_some_and(|r| r.contains(&host))
    }

    fn collateral_to_fill(&self, env: &Env, id: RequestId, index: u64) -> Rv<U256> {
        let ask = self.known_request(id)?.ask.clone();
        Ok(match self.slot_state(env, SlotId::new(id, index))? {
            SlotState::Repair => env.config.repair_collateral(&ask),
            _ => ask.collateral_per_slot(),
        })
    }

    fn balance(&self, holder: Address) -> U256 {
        self.balances.get(&holder).copied().unwrap_or_default()
    }

    fn allowance(&self, owner: Address) -> U256 {
        self.allowances.get(&owner).copied().unwrap_or_default()
    }
}

// ---------------------------------------------------------------- transactions

impl World {
    fn request_storage(&mut self, env: &mut Env, request: &StorageRequest) -> Rv<RequestId> {
        if request.client != env.sender {
            return fail(MarketplaceError::InvalidClientAddress);
        }
        let id = request.id();
        if self.requests.contains_key(&id) {
            return fail(MarketplaceError::RequestAlreadyExists);
        }
        check_ask(env, request)?;
        let price = max_price(&request.ask)?;
        let context = RequestContext {
            state: RequestState::New,
            funds_to_return_to_client: price,
            slots_filled: 0,
            started_at: 0,
            ends_at: add64(env.timestamp, request.ask.duration)?,
            expires_at: add64(env.timestamp, request.expiry)?,
        };
        let expiry = context.expires_at;
        self.requests.insert(id, request.clone());
        self.contexts.insert(id, context);
        self.requests_of.entry(env.sender).or_default().add(id);
        env.emit(MarketEvent::StorageRequested {
            request: id,
            ask: request.ask.clone(),
            expiry,
        });
        self.pull(env.sender, price)?;
        Ok(id)
    }

    fn withdraw_funds(&mut self, env: &mut Env, id: RequestId, recipient: Address) -> Rv<()> {
        let request = self.known_request(id)?.clone();
        if request.client != env.sender {
            return fail(MarketplaceError::InvalidClientAddress);
        }
        let state = self.request_state(env, id)?;
        if !matches!(
            state,
            RequestState::Cancelled | RequestState::Failed | RequestState::Finished
        ) {
            return fail(MarketplaceError::InvalidState);
        }
        let context = self.context(id)?.clone();
        if context.funds_to_return_to_client.is_zero() {
            return fail(MarketplaceError::NothingToWithdraw);
        }
        let (next_state, amount) = match state {
            RequestState::Cancelled => {
                env.emit(MarketEvent::RequestCancelled { request: id });
                let seconds = context
                    .ends_at
                    .checked_sub(context.expires_at)
                    .ok_or_else(overflow)?;
                let per_slot = mul(
                    U256::from(seconds),
                    price_per_slot_per_second(&request.ask)?,
                )?;
                let earned_back = mul(U256::from(context.slots_filled), per_slot)?;
                (
                    RequestState::Cancelled,
                    add(context.funds_to_return_to_client, earned_back)?,
                )
            }
            RequestState::Failed => (context.state, max_price(&request.ask)?),
            _ => (RequestState::Finished, context.funds_to_return_to_client),
        };
        if let Some(c) = self.contexts.get_mut(&id) {
            c.state = next_state;
            c.funds_to_return_to_client = U256::ZERO;
        }
        self.requests_of.entry(env.sender).or_default().remove(&id);
        self.push(recipient, amount)
    }

    fn reserve_slot(&mut self, env: &mut Env, id: RequestId, index: u64) -> Rv<()> {
        if !self.can_reserve_slot(env, id, index)? {
            return Err(Revert::Marketplace(MarketplaceError::ReservationNotAllowed));
        }
        let reservations = self.reservations.entry(SlotId::new(id, index)).or_default();
        reservations.push(env.sender);
        if reservations.len() == usize::from(env.config.max_reservations) {
            env.emit(MarketEvent::SlotReservationsFull {
                request: id,
                slot_index: index,
            });
        }
        Ok(())
    }

    fn fill_slot(&mut self, env: &mut Env, id: RequestId, index: u64, proof: &[u8]) -> Rv<()> {
        let request = self.known_request(id)?.clone();
        if index >= request.ask.slots {
            return fail(MarketplaceError::InvalidSlot);
        }
        let slot_id = SlotId::new(id, index);
        if !self.has_reservation(slot_id, env.sender) {
            return fail(MarketplaceError::ReservationRequired);
        }
        let context = self.context(id)?.clone();
        if context.state == RequestState::New && env.timestamp > context.expires_at {
            return fail(MarketplaceError::StartNotBeforeExpiry);
        }
        let slot = self.slots.entry(slot_id).or_insert_with(|| Slot {
            state: SlotState::Free,
            request: id,
            filled_at: 0,
            slot_index: index,
            current_collateral: U256::ZERO,
            host: Address::ZERO,
        });
        slot.request = id;
        slot.slot_index = index;
        let state = self.slot_state(env, slot_id)?;
        if !matches!(state, SlotState::Free | SlotState::Repair) {
            return fail(MarketplaceError::SlotNotFree);
        }

        let mut collateral = collateral_per_slot(&request.ask)?;
        if let Some(slot) = self.slots.get_mut(&slot_id) {
            slot.host = env.sender;
            slot.filled_at = env.timestamp;
            slot.state = SlotState::Filled;
            slot.current_collateral = collateral;
        }
        self.slot_starts.insert(slot_id, env.timestamp);
        self.verify_proof(env, slot_id, &request, index, proof)?;

        let paid = payout(&request.ask, context.ends_at, env.timestamp)?;
        if state == SlotState::Repair {
            let reward = collateral * U256::from(env.config.collateral.repair_reward_percentage)
                / U256::from(100);
            collateral = sub(collateral, reward)?;
        }
        let mut started = false;
        if let Some(c) = self.contexts.get_mut(&id) {
            c.funds_to_return_to_client = sub(c.funds_to_return_to_client, paid)?;
            c.slots_filled += 1;
            if c.slots_filled == request.ask.slots && c.state == RequestState::New {
                c.state = RequestState::Started;
                c.started_at = env.timestamp;
                started = true;
            }
        }
        self.slots_of.entry(env.sender).or_default().add(slot_id);
        env.emit(MarketEvent::SlotFilled {
            request: id,
            slot_index: index,
        });
        if started {
            env.emit(MarketEvent::RequestFulfilled { request: id });
        }
        self.pull(env.sender, collateral)
    }

    fn submit_proof(&mut self, env: &mut Env, slot_id: SlotId, proof: &[u8]) -> Rv<()> {
        let host = self.slots.get(&slot_id).map_or(Address::ZERO, |s| s.host);
        if host != env.sender {
            return fail(MarketplaceError::ProofNotSubmittedByHost);
        }
        if self.slot_state(env, slot_id)? != SlotState::Filled {
            return fail(MarketplaceError::SlotNotAcceptingProofs);
        }
        let slot = self.non_free_slot(slot_id)?.clone();
        let request = self.known_request(slot.request)?.clone();
        self.verify_proof(env, slot_id, &request, slot.slot_index, proof)
    }

    /// `_verifyProof` and `_proofReceived`.
    fn verify_proof(
        &mut self,
        env: &mut Env,
        slot: SlotId,
        request: &StorageRequest,
        index: u64,
        proof: &[u8],
    ) -> Rv<()> {
        let public_inputs = [
            challenge_to_field(&self.current_challenge(env, slot)),
            root_to_field(&request.content.merkle_root),
            U256::from(index),
        ];
        let period = env.period();
        if self.received.contains(&(slot, period)) {
            return fail(MarketplaceError::ProofAlreadySubmitted);
        }
        if !env.verifier.verify(proof, &public_inputs) {
            return fail(MarketplaceError::InvalidProof);
        }
        self.received.insert((slot, period));
        env.emit(MarketEvent::ProofSubmitted { slot });
        Ok(())
    }

    fn free_slot(&mut self, env: &mut Env, slot_id: SlotId) -> Rv<()> {
        let slot = self.non_free_slot(slot_id)?.clone();
        if slot.host != env.sender {
            return fail(MarketplaceError::InvalidSlotHost);
        }
        let context = self.context(slot.request)?.clone();
        match self.slot_state(env, slot_id)? {
            SlotState::Paid => fail(MarketplaceError::AlreadyPaid),
            SlotState::Finished => self.pay_out(env, slot_id, context.ends_at),
            SlotState::Cancelled => self.pay_out(env, slot_id, context.expires_at),
            SlotState::Failed => {
                self.slots_of
                    .entry(env.sender)
                    .or_default()
                    .remove(&slot_id);
                Ok(())
            }
            _ => self.forcibly_free_slot(env, slot_id),
        }
    }

    fn mark_proof_as_missing(&mut self, env: &mut Env, slot_id: SlotId, period: u64) -> Rv<()> {
        if self.slot_state(env, slot_id)? != SlotState::Filled {
            return fail(MarketplaceError::SlotNotAcceptingProofs);
        }
        self.check_proof_missing(env, slot_id, period)?;
        self.marked_missing.insert((slot_id, period));
        *self.missed.entry(slot_id).or_default() += 1;

        let slot = self.non_free_slot(slot_id)?.clone();
        let ask = self.known_request(slot.request)?.ask.clone();
        let slashed = env.config.slash_amount(&ask);
        let reward = env.config.validator_reward(&ask);
        if let Some(s) = self.slots.get_mut(&slot_id) {
            s.current_collateral = sub(s.current_collateral, slashed)?;
        }
        let missed = self.missed.get(&slot_id).copied().unwrap_or(0);
        if missed >= u64::from(env.config.collateral.max_number_of_slashes) {
            self.forcibly_free_slot(env, slot_id)?;
        }
        self.push(env.sender, reward)
    }

    /// `_forciblyFreeSlot`: the host's payout returns to the client, its collateral
    /// stays, the slot goes to Repair; the request fails when it lost too many slots.
    fn forcibly_free_slot(&mut self, env: &mut Env, slot_id: SlotId) -> Rv<()> {
        let slot = self.non_free_slot(slot_id)?.clone();
        let id = slot.request;
        let request = self.known_request(id)?.clone();
        let context = self.context(id)?.clone();

        let returned = payout(&request.ask, context.ends_at, slot.filled_at)?;
        self.slots_of.entry(slot.host).or_default().remove(&slot_id);
        self.reservations.remove(&slot_id);
        self.missed.remove(&slot_id);
        if let Some(s) = self.slots.get_mut(&slot_id) {
            s.state = SlotState::Repair;
            s.filled_at = 0;
            s.current_collateral = U256::ZERO;
            s.host = Address::ZERO;
        }
        env.emit(MarketEvent::SlotFreed {
            request: id,
            slot_index: slot.slot_index,
        });
        let mut failed = false;
        if let Some(c) = self.contexts.get_mut(&id) {
            c.funds_to_return_to_client = add(c.funds_to_return_to_client, returned)?;
            c.slots_filled = c.slots_filled.checked_sub(1).ok_or_else(overflow)?;
            let lost = request.ask.slots.saturating_sub(c.slots_filled);
            if lost > request.ask.max_slot_loss && c.state == RequestState::Started {
                c.state = RequestState::Failed;
                c.ends_at = env.timestamp.checked_sub(1).ok_or_else(overflow)?;
                failed = true;
            }
        }
        if failed {
            env.emit(MarketEvent::RequestFailed { request: id });
        }
        Ok(())
    }

    /// `_payOut`: the reward until `paid_until` and the collateral, to the host.
    fn pay_out(&mut self, env: &mut Env, slot_id: SlotId, paid_until: u64) -> Rv<()> {
        let slot = self.non_free_slot(slot_id)?.clone();
        let ask = self.known_request(slot.request)?.ask.clone();
        let reward = payout(&ask, paid_until, slot.filled_at)?;
        self.slots_of
            .entry(env.sender)
            .or_default()
            .remove(&slot_id);
        if let Some(s) = self.slots.get_mut(&slot_id) {
            s.state = SlotState::Paid;
            s.current_collateral = U256::ZERO;
        }
        self.push(env.sender, reward)?;
        self.push(env.sender, slot.current_collateral)
    }

    // ------------------------------------------------------------ token

    /// `_pull`: `transferFrom(from, marketplace, amount)`.
    fn pull(&mut self, from: Address, amount: U256) -> Rv<()> {
        if self.refusing {
            return fail(MarketplaceError::TransferFailed);
        }
        let allowance = self.allowance(from);
        if allowance != U256::MAX {
            if allowance < amount {
                return Err(Revert::Token(TokenError::InsufficientAllowance {
                    spender: MARKETPLACE_ADDRESS,
                    allowance,
                    needed: amount,
                }));
            }
            self.allowances.insert(from, allowance - amount);
        }
        self.transfer(from, MARKETPLACE_ADDRESS, amount)
    }

    /// `_push`: `transfer(to, amount)` from the marketplace.
    fn push(&mut self, to: Address, amount: U256) -> Rv<()> {
        if self.refusing {
            return fail(MarketplaceError::TransferFailed);
        }
        self.transfer(MARKETPLACE_ADDRESS, to, amount)
    }

    /// ERC-20 `_transfer`.
    fn transfer(&mut self, from: Address, to: Address, amount: U256) -> Rv<()> {
        if to == Address::ZERO {
            return Err(Revert::Token(TokenError::Other("ERC20InvalidReceiver")));
        }
        let balance = self.balance(from);
        if balance < amount {
            return Err(Revert::Token(TokenError::InsufficientBalance {
                sender: from,
                balance,
                needed: amount,
            }));
        }
        self.balances.insert(from, balance - amount);
        let to_balance = add(self.balance(to), amount)?;
        self.balances.insert(to, to_balance);
        Ok(())
    }
}

/// `_checkAsk`.
fn check_ask(env: &Env, request: &StorageRequest) -> Rv<()> {
    let ask = &request.ask;
    if ask.duration == 0 {
        return fail(MarketplaceError::InsufficientDuration);
    }
    if ask.duration > env.config.request_duration_limit {
        return fail(MarketplaceError::DurationExceedsLimit);
    }
    if request.expiry == 0 || request.expiry >= ask.duration {
        return fail(MarketplaceError::InvalidExpiry);
    }
    if ask.slots == 0 {
        return fail(MarketplaceError::InsufficientSlots);
    }
    if ask.max_slot_loss > ask.slots {
        return fail(MarketplaceError::InvalidMaxSlotLoss);
    }
    if ask.proof_probability.is_zero() {
        return fail(MarketplaceError::InsufficientProofProbability);
    }
    if ask.collateral_per_byte.is_zero() {
        return fail(MarketplaceError::InsufficientCollateral);
    }
    if ask.price_per_byte_per_second.is_zero() {
        return fail(MarketplaceError::InsufficientReward);
    }
    if request.content.cid.is_empty() {
        return fail(MarketplaceError::InvalidCid);
    }
    Ok(())
}

/// The constructors' checks (`Marketplace`, `Proofs`, `Periods`).
fn check_config(config: &MarketplaceConfig, deploy_block: u64) -> Rv<()> {
    let c = &config.collateral;
    if config.proofs.period == 0 {
        return fail(MarketplaceError::InvalidSecondsPerPeriod);
    }
    if deploy_block <= 256 {
        return fail(MarketplaceError::InsufficientBlockHeight);
    }
    if c.repair_reward_percentage > 100 {
        return fail(MarketplaceError::RepairRewardPercentageTooHigh);
    }
    if c.slash_percentage > 100 {
        return fail(MarketplaceError::SlashPercentageTooHigh);
    }
    if u32::from(c.max_number_of_slashes) * u32::from(c.slash_percentage) > 100 {
        return fail(MarketplaceError::MaximumSlashingTooHigh);
    }
    if c.validator_reward_percentage > 100 {
        return fail(MarketplaceError::ValidatorRewardPercentageTooHigh);
    }
    Ok(())
}

// ---------------------------------------------------------------- the chain

/// The shared chain: blocks, clock, events and the world.
struct Chain {
    config: Arc<MarketplaceConfig>,
    verifier: Arc<dyn ProofVerifier>,
    /// The latest block.
    height: u64,
    /// The time the next block gets.
    clock: u64,
    /// Timestamps of the blocks mined since the deployment (the deployment's included).
    block_times: BTreeMap<u64, u64>,
    deploy_block: u64,
    deploy_time: u64,
    events: Vec<LoggedEvent>,
    world: World,
}

impl Chain {
    fn latest_time(&self) -> u64 {
        self.block_time(self.height)
    }

    fn block_time(&self, number: u64) -> u64 {
        match self.block_times.get(&number) {
            Some(t) => *t,
            // Before the deployment: a block a second.
            None => self
                .deploy_time
                .saturating_sub(self.deploy_block.saturating_sub(number)),
        }
    }

    /// The environment of a view (the latest block) or a transaction (the next one).
    fn env(&self, sender: Address, next: bool) -> Env {
        let (number, timestamp) = if next {
            (self.height + 1, self.clock)
        } else {
            (self.height, self.latest_time())
        };
        Env {
            config: Arc::clone(&self.config),
            verifier: Arc::clone(&self.verifier),
            sender,
            number,
            timestamp,
            events: Vec::new(),
        }
    }

    /// Mines the next block with `events`; its receipt.
    fn mine_block(&mut self, events: Vec<MarketEvent>) -> TxReceipt {
        self.height += 1;
        let number = self.height;
        self.block_times.insert(number, self.clock);
        let tx = keccak256([b"codex memory chain tx ".as_slice(), &number.to_be_bytes()].concat());
        self.events
            .extend(events.into_iter().map(|event| LoggedEvent {
                block_number: number,
                tx,
                event,
            }));
        TxReceipt {
            hash: tx,
            block_number: number,
            block_hash: block_hash(number),
            gas_used: 0,
        }
    }
}

/// Deploys a [`MemoryMarketplace`] with knobs: the deployment's block and time, the
/// deployer's account.
#[derive(Clone)]
pub struct Builder {
    config: MarketplaceConfig,
    verifier: Arc<dyn ProofVerifier>,
    deploy_block: u64,
    deploy_time: u64,
    account: Address,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("deploy_block", &self.deploy_block)
            .field("deploy_time", &self.deploy_time)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// The marketplace's configuration (default: [`MarketplaceConfig::default`]).
    pub fn config(mut self, config: MarketplaceConfig) -> Self {
        self.config = config;
        self
    }

    /// The proof verifier (default: [`TestVerifier`]).
    pub fn verifier(mut self, verifier: impl ProofVerifier + 'static) -> Self {
        self.verifier = Arc::new(verifier);
        self
    }

    /// The block the marketplace is deployed in (default [`DEPLOY_BLOCK`]); the
    /// contract refuses a block of 256 or lower.
    pub fn deploy_block(mut self, number: u64) -> Self {
        self.deploy_block = number;
        self
    }

    /// The time of the deployment block (default [`DEPLOY_TIME`]).
    pub fn deploy_time(mut self, timestamp: u64) -> Self {
        self.deploy_time = timestamp;
        self
    }

    /// The account of the handle `deploy` returns (default: `0x00…00ff`).
    pub fn account(mut self, account: Address) -> Self {
        self.account = account;
        self
    }

    /// Deploys: checks the configuration as the constructors do.
    ///
    /// # Errors
    /// [`Error::Reverted`] (`deploy`, `Marketplace`) with the constructor's custom error.
    pub fn deploy(self) -> Result<MemoryMarketplace> {
        check_config(&self.config, self.deploy_block).map_err(|revert| Error::Reverted {
            call: "deploy",
            target: Target::Contract("Marketplace"),
            revert: Box::new(revert),
        })?;
        let config = Arc::new(self.config);
        let mut block_times = BTreeMap::new();
        block_times.insert(self.deploy_block, self.deploy_time);
        let chain = Chain {
            config: Arc::clone(&config),
            verifier: self.verifier,
            height: self.deploy_block,
            clock: self.deploy_time,
            block_times,
            deploy_block: self.deploy_block,
            deploy_time: self.deploy_time,
            events: Vec::new(),
            world: World::default(),
        };
        Ok(MemoryMarketplace {
            chain: Arc::new(Mutex::new(chain)),
            config,
            account: self.account,
        })
    }
}

/// The marketplace in memory, as one account: see the [module docs](self). Cheap to
/// clone; every clone and every [`MemoryMarketplace::connect`]ed handle shares the chain.
#[derive(Clone)]
pub struct MemoryMarketplace {
    chain: Arc<Mutex<Chain>>,
    config: Arc<MarketplaceConfig>,
    account: Address,
}

impl fmt::Debug for MemoryMarketplace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryMarketplace")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl MemoryMarketplace {
    /// A builder with the default configuration, [`TestVerifier`], deployment at
    /// block [`DEPLOY_BLOCK`] and time [`DEPLOY_TIME`].
    pub fn builder() -> Builder {
        Builder {
            config: MarketplaceConfig::default(),
            verifier: Arc::new(TestVerifier),
            deploy_block: DEPLOY_BLOCK,
            deploy_time: DEPLOY_TIME,
            account: Address::with_last_byte(0xff),
        }
    }

    /// Deploys a marketplace with `config` whose proofs `verifier` checks.
    ///
    /// # Errors
    /// As [`Builder::deploy`].
    pub fn deploy(
        config: MarketplaceConfig,
        verifier: impl ProofVerifier + 'static,
    ) -> Result<MemoryMarketplace> {
        Self::builder().config(config).verifier(verifier).deploy()
    }

    /// A handle acting as `account` on the same chain.
    pub fn connect(&self, account: Address) -> MemoryMarketplace {
        MemoryMarketplace {
            chain: Arc::clone(&self.chain),
            config: Arc::clone(&self.config),
            account,
        }
    }

    /// The marketplace's address (where its tokens are held).
    pub fn address(&self) -> Address {
        MARKETPLACE_ADDRESS
    }

    fn lock(&self) -> MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a transaction from this account in the next block: on success its
    /// changes and events are kept and the block is mined; a revert changes nothing.
    fn transact<T>(
        &self,
        call: &'static str,
        target: Target,
        f: impl FnOnce(&mut World, &mut Env) -> Rv<T>,
    ) -> Result<(T, TxReceipt)> {
        let mut chain = self.lock();
        let mut world = chain.world.clone();
        let mut env = chain.env(self.account, true);
        match f(&mut world, &mut env) {
            Ok(v) => {
                chain.world = world;
                Ok((v, chain.mine_block(env.events)))
            }
            Err(revert) => Err(Error::Reverted {
                call,
                target,
                revert: Box::new(revert),
            }),
        }
    }

    /// Reads at the latest block, as this account.
    fn view<T>(
        &self,
        call: &'static str,
        target: Target,
        f: impl FnOnce(&World, &Env) -> Rv<T>,
    ) -> Result<T> {
        let chain = self.lock();
        let env = chain.env(self.account, false);
        f(&chain.world, &env).map_err(|revert| Error::Reverted {
            call,
            target,
            revert: Box::new(revert),
        })
    }

    fn ensure_allowance(&self, amount: U256) -> Result<Option<TxReceipt>> {
        let allowance = self.lock().world.allowance(self.account);
        if allowance >= amount {
            return Ok(None);
        }
        self.approve_now(amount).map(Some)
    }

    fn approve_now(&self, amount: U256) -> Result<TxReceipt> {
        let owner = self.account;
        self.transact("approve", Target::Contract("token"), |w, _| {
            w.allowances.insert(owner, amount);
            Ok(())
        })
        .map(|(_, r)| r)
    }

    // ------------------------------------------------------------ chain control

    /// Mints `amount` tokens to `holder` (one block).
    pub fn mint(&self, holder: Address, amount: U256) {
        let _ = self.transact("mint", Target::Contract("TestToken"), |w, _| {
            let balance = add(w.balance(holder), amount)?;
            w.balances.insert(holder, balance);
            Ok(())
        });
    }

    /// Makes the token's transfers fail (`true`), as `RefusingToken` does, or work again.
    pub fn set_refusing(&self, refusing: bool) {
        let _ = self.transact("setRefusing", Target::Contract("RefusingToken"), |w, _| {
            w.refusing = refusing;
            Ok(())
        });
    }

    /// The clock: the time the next block gets.
    pub fn now(&self) -> u64 {
        self.lock().clock
    }

    /// The timestamp of block `number`, if it was mined.
    pub fn block_timestamp(&self, number: u64) -> Option<u64> {
        let chain = self.lock();
        (number <= chain.height).then(|| chain.block_time(number))
    }

    /// The next block (and the ones after it until the clock moves again) gets
    /// `timestamp`, as anvil's `evm_setNextBlockTimestamp`. Mines nothing.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a time before the latest block's.
    pub fn set_next_block_timestamp(&self, timestamp: u64) -> Result<()> {
        let mut chain = self.lock();
        if timestamp < chain.latest_time() {
            return Err(Error::InvalidInput {
                what: "timestamp",
                message: format!(
                    "{timestamp} is before the latest block's {}",
                    chain.latest_time()
                ),
            });
        }
        chain.clock = timestamp;
        Ok(())
    }

    /// Moves the clock to `timestamp` and mines a block there (views see the new time).
    ///
    /// # Errors
    /// As [`MemoryMarketplace::set_next_block_timestamp`].
    pub fn set_time(&self, timestamp: u64) -> Result<()> {
        self.set_next_block_timestamp(timestamp)?;
        self.mine(1);
        Ok(())
    }

    /// Moves the clock `seconds` on and mines a block there (views see the new time).
    pub fn advance(&self, seconds: u64) {
        let mut chain = self.lock();
        chain.clock = chain.clock.saturating_add(seconds);
        chain.mine_block(Vec::new());
    }

    /// Mines `blocks` empty blocks at the clock's time (the pointer moves one per block).
    pub fn mine(&self, blocks: u64) {
        let mut chain = self.lock();
        for _ in 0..blocks {
            chain.mine_block(Vec::new());
        }
    }

    /// The challenge of `slot` for a transaction in block `block_number` of `period`
    /// (as [`crate::MarketplaceClient::challenge_at`]).
    pub fn challenge_at(&self, slot: SlotId, block_number: u64, period: u64) -> [u8; 32] {
        let chain = self.lock();
        let mut env = chain.env(self.account, false);
        env.number = block_number;
        chain
            .world
            .challenge(&env, chain.world.pointer(&env, slot, period))
    }

    /// `proofProbability * (256 - downtime) / 256` for the slot's request.
    pub fn slot_probability(&self, slot: SlotId) -> U256 {
        let chain = self.lock();
        let env = chain.env(self.account, false);
        chain.world.slot_probability(&env, slot)
    }

    /// What the marketplace may still take from this account.
    pub fn allowance(&self) -> U256 {
        self.lock().world.allowance(self.account)
    }
}

fn slot_target(slot: SlotId) -> Target {
    Target::Slot { slot, index: None }
}

fn indexed_target(request: RequestId, index: u64) -> Target {
    Target::Slot {
        slot: SlotId::new(request, index),
        index: Some(index),
    }
}

#[async_trait::async_trait]
impl Marketplace for MemoryMarketplace {
    fn account(&self) -> Address {
        self.account
    }

    fn config(&self) -> &MarketplaceConfig {
        &self.config
    }

    async fn balance_of(&self, holder: Address) -> Result<U256> {
        Ok(self.lock().world.balance(holder))
    }

    async fn approve(&self, amount: U256) -> Result<TxReceipt> {
        self.approve_now(amount)
    }

    async fn approve_collateral(
        &self,
        request: RequestId,
        index: u64,
    ) -> Result<Option<TxReceipt>> {
        let amount = self.collateral_to_fill(request, index).await?;
        self.ensure_allowance(amount)
    }

    async fn request_storage(&self, request: &StorageRequest) -> Result<(RequestId, TxReceipt)> {
        let id = request.id();
        let price = request.ask.max_price();
        self.ensure_allowance(price)?;
        self.transact("requestStorage", Target::Request(id), |w, env| {
            w.request_storage(env, request)
        })
    }

    async fn withdraw_funds(&self, request: RequestId) -> Result<TxReceipt> {
        self.withdraw_funds_to(request, self.account).await
    }

    async fn withdraw_funds_to(&self, request: RequestId, recipient: Address) -> Result<TxReceipt> {
        self.transact("withdrawFunds", Target::Request(request), |w, env| {
            w.withdraw_funds(env, request, recipient)
        })
        .map(|(_, r)| r)
    }

    async fn can_reserve_slot(&self, request: RequestId, index: u64) -> Result<bool> {
        self.view(
            "canReserveSlot",
            indexed_target(request, index),
            |w, env| w.can_reserve_slot(env, request, index),
        )
    }

    async fn reserve_slot(&self, request: RequestId, index: u64) -> Result<TxReceipt> {
        self.transact("reserveSlot", indexed_target(request, index), |w, env| {
            w.reserve_slot(env, request, index)
        })
        .map(|(_, r)| r)
    }

    async fn collateral_to_fill(&self, request: RequestId, index: u64) -> Result<U256> {
        self.view("getRequest", Target::Request(request), |w, env| {
            w.collateral_to_fill(env, request, index)
        })
    }

    async fn fill_slot(&self, request: RequestId, index: u64, proof: &[u8]) -> Result<TxReceipt> {
        let collateral = self.collateral_to_fill(request, index).await?;
        self.ensure_allowance(collateral)?;
        self.transact("fillSlot", indexed_target(request, index), |w, env| {
            w.fill_slot(env, request, index, proof)
        })
        .map(|(_, r)| r)
    }

    async fn submit_proof(&self, slot: SlotId, proof: &[u8]) -> Result<TxReceipt> {
        self.transact("submitProof", slot_target(slot), |w, env| {
            w.submit_proof(env, slot, proof)
        })
        .map(|(_, r)| r)
    }

    async fn free_slot(&self, slot: SlotId) -> Result<TxReceipt> {
        self.transact("freeSlot", slot_target(slot), |w, env| {
            w.free_slot(env, slot)
        })
        .map(|(_, r)| r)
    }

    async fn can_mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<()> {
        self.view("canMarkProofAsMissing", slot_target(slot), |w, env| {
            w.can_mark_proof_as_missing(env, slot, period)
        })
    }

    async fn mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<TxReceipt> {
        self.transact("markProofAsMissing", slot_target(slot), |w, env| {
            w.mark_proof_as_missing(env, slot, period)
        })
        .map(|(_, r)| r)
    }

    async fn get_request(&self, request: RequestId) -> Result<StorageRequest> {
        self.view("getRequest", Target::Request(request), |w, _| {
            w.known_request(request).cloned()
        })
    }

    async fn get_active_slot(&self, slot: SlotId) -> Result<(StorageRequest, u64)> {
        self.view("getActiveSlot", slot_target(slot), |w, _| {
            let s = w.non_free_slot(slot)?;
            Ok((w.known_request(s.request)?.clone(), s.slot_index))
        })
    }

    async fn request_state(&self, request: RequestId) -> Result<RequestState> {
        self.view("requestState", Target::Request(request), |w, env| {
            w.request_state(env, request)
        })
    }

    async fn slot_state(&self, slot: SlotId) -> Result<SlotState> {
        self.view("slotState", slot_target(slot), |w, env| {
            w.slot_state(env, slot)
        })
    }

    async fn request_end(&self, request: RequestId) -> Result<u64> {
        self.view("requestEnd", Target::Request(request), |w, env| {
            w.request_end(env, request)
        })
    }

    async fn request_expiry(&self, request: RequestId) -> Result<u64> {
        self.view("requestExpiry", Target::Request(request), |w, _| {
            w.known_request(request)?;
            Ok(w.context(request)?.expires_at)
        })
    }

    async fn get_host(&self, slot: SlotId) -> Result<Option<Address>> {
        self.view("getHost", slot_target(slot), |w, _| {
            Ok(w.slots
                .get(&slot)
                .map(|s| s.host)
                .filter(|h| *h != Address::ZERO))
        })
    }

    async fn current_collateral(&self, slot: SlotId) -> Result<U256> {
        self.view("currentCollateral", slot_target(slot), |w, _| {
            Ok(w.non_free_slot(slot)?.current_collateral)
        })
    }

    async fn missing_proofs(&self, slot: SlotId) -> Result<u64> {
        self.view("missingProofs", slot_target(slot), |w, _| {
            Ok(w.missed.get(&slot).copied().unwrap_or(0))
        })
    }

    async fn my_slots(&self) -> Result<Vec<SlotId>> {
        self.view("mySlots", Target::Contract("Marketplace"), |w, env| {
            Ok(w.slots_of
                .get(&env.sender)
                .map(|s| s.0.clone())
                .unwrap_or_default())
        })
    }

    async fn my_requests(&self) -> Result<Vec<RequestId>> {
        self.view("myRequests", Target::Contract("Marketplace"), |w, env| {
            Ok(w.requests_of
                .get(&env.sender)
                .map(|s| s.0.clone())
                .unwrap_or_default())
        })
    }

    async fn pointer(&self, slot: SlotId) -> Result<u8> {
        self.view("getPointer", slot_target(slot), |w, env| {
            Ok(w.pointer(env, slot, env.period()))
        })
    }

    async fn next_block_challenge(&self, slot: SlotId) -> Result<[u8; 32]> {
        let chain = self.lock();
        let env = chain.env(self.account, true);
        Ok(chain.world.current_challenge(&env, slot))
    }

    async fn is_proof_required(&self, slot: SlotId) -> Result<bool> {
        self.view("isProofRequired", slot_target(slot), |w, env| {
            w.is_proof_required_in(env, slot, env.period())
        })
    }

    async fn will_proof_be_required(&self, slot: SlotId) -> Result<bool> {
        self.view("willProofBeRequired", slot_target(slot), |w, env| {
            w.will_proof_be_required(env, slot)
        })
    }

    async fn block_number(&self) -> Result<u64> {
        Ok(self.lock().height)
    }

    async fn timestamp(&self) -> Result<u64> {
        Ok(self.lock().latest_time())
    }

    async fn next_block(&self) -> Result<(u64, u64)> {
        let chain = self.lock();
        Ok((chain.height + 1, chain.clock))
    }

    async fn events(&self, from: u64, to: u64) -> Result<Vec<LoggedEvent>> {
        Ok(self
            .lock()
            .events
            .iter()
            .filter(|e| (from..=to).contains(&e.block_number))
            .cloned()
            .collect())
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>> {
        Ok((number <= self.lock().height).then(|| block_hash(number)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Content;

    fn request(client: Address) -> StorageRequest {
        StorageRequest {
            client,
            ask: Ask {
                proof_probability: U256::from(1),
                price_per_byte_per_second: U256::from(1),
                collateral_per_byte: U256::from(10),
                slots: 2,
                slot_size: 1024,
                duration: 3600,
                max_slot_loss: 1,
            },
            content: Content {
                cid: b"cid".to_vec(),
                merkle_root: [7; 32],
            },
            expiry: 600,
            nonce: [1; 32],
        }
    }

    #[tokio::test]
    async fn a_revert_changes_nothing_and_mines_no_block() -> Result<()> {
        let chain = MemoryMarketplace::deploy(MarketplaceConfig::default(), TestVerifier)?;
        let client = chain.connect(Address::repeat_byte(1));
        // no tokens: the pull fails after the request was written
        let before = client.block_number().await?;
        let e = client.request_storage(&request(client.account())).await;
        assert!(matches!(
            e.as_ref().err().and_then(Error::revert),
            Some(Revert::Token(TokenError::InsufficientBalance { .. }))
        ));
        // the approval went through (its own transaction), the request did not
        assert_eq!(client.block_number().await?, before + 1);
        assert_eq!(client.my_requests().await?, vec![]);
        assert!(client.events(0, u64::MAX).await?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn views_read_the_latest_block_and_transactions_the_next() -> Result<()> {
        let chain = MemoryMarketplace::deploy(MarketplaceConfig::default(), TestVerifier)?;
        let t0 = chain.timestamp().await?;
        chain.set_next_block_timestamp(t0 + 500)?;
        assert_eq!(chain.timestamp().await?, t0);
        assert_eq!(chain.next_block().await?, (DEPLOY_BLOCK + 1, t0 + 500));
        chain.mine(2);
        assert_eq!(chain.timestamp().await?, t0 + 500);
        assert_eq!(chain.block_number().await?, DEPLOY_BLOCK + 2);
        assert!(chain.set_time(t0).is_err(), "the clock does not go back");
        chain.advance(10);
        assert_eq!(chain.timestamp().await?, t0 + 510);
        Ok(())
    }

    #[test]
    fn verifiers() {
        let inputs = [U256::from(1), U256::from(2), U256::from(3)];
        assert!(TestVerifier.verify(&[1], &inputs));
        assert!(!TestVerifier.verify(&[0, 1], &inputs));
        assert!(!TestVerifier.verify(&[], &inputs));
        assert!(EchoVerifier.verify(&echo_proof(&inputs), &inputs));
        assert!(!EchoVerifier.verify(&[1], &inputs));
        assert!(AcceptAll.verify(&[], &inputs));
        let only = AcceptOnly([vec![9u8]].into_iter().collect());
        assert!(only.verify(&[9], &inputs) && !only.verify(&[8], &inputs));
        let closure = |p: &[u8], _: &[U256; 3]| p.len() == 2;
        assert!(closure.verify(&[1, 2], &inputs));
    }
}
