//! Typed values of the marketplace: ids, requests, states and configuration,
//! with the conversions to the contract's ABI types and the amounts of Codex's
//! formulas.

use std::fmt;

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::sol_types::SolValue;

use crate::bindings::Marketplace as abi;

/// Id of a storage request: `keccak256(abi.encode(request))`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RequestId(pub B256);

/// Id of a slot: `keccak256(abi.encode(requestId, uint64 slotIndex))`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SlotId(pub B256);

impl SlotId {
    /// The id of slot `index` of request `request`.
    pub fn new(request: RequestId, index: u64) -> Self {
        SlotId(keccak256((request.0, index).abi_encode()))
    }
}

macro_rules! id_fmt {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), self.0)
            }
        }
        impl From<B256> for $t {
            fn from(b: B256) -> Self {
                $t(b)
            }
        }
        impl From<$t> for B256 {
            fn from(id: $t) -> Self {
                id.0
            }
        }
    };
}
id_fmt!(RequestId);
id_fmt!(SlotId);

/// What a client asks of the hosts (Codex's `Ask`). Amounts are token base units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    /// A proof is due about once every `proof_probability` periods.
    pub proof_probability: U256,
    /// Payment per byte of a slot per second.
    pub price_per_byte_per_second: U256,
    /// Collateral per byte of a slot.
    pub collateral_per_byte: U256,
    /// Number of slots.
    pub slots: u64,
    /// Bytes per slot.
    pub slot_size: u64,
    /// Seconds of storage, from the request.
    pub duration: u64,
    /// Slots that may be lost before the request fails.
    pub max_slot_loss: u64,
}

impl Ask {
    /// `collateralPerByte * slotSize`: what a host posts to fill a slot.
    pub fn collateral_per_slot(&self) -> U256 {
        self.collateral_per_byte * U256::from(self.slot_size)
    }

    /// `pricePerBytePerSecond * slotSize`: what a host earns per second.
    pub fn price_per_slot_per_second(&self) -> U256 {
        self.price_per_byte_per_second * U256::from(self.slot_size)
    }

    /// `slots * duration * pricePerSlotPerSecond`: what the client pays up front.
    pub fn max_price(&self) -> U256 {
        U256::from(self.slots) * U256::from(self.duration) * self.price_per_slot_per_second()
    }
}

/// What is stored (Codex's `Content`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    /// The manifest CID, as bytes.
    pub cid: Vec<u8>,
    /// The dataset ("verify") root: the field element's 32 little-endian bytes.
    pub merkle_root: [u8; 32],
}

/// A storage request (Codex's `Request`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRequest {
    /// The paying account; must be the sender of `requestStorage`.
    pub client: Address,
    /// Terms.
    pub ask: Ask,
    /// Data.
    pub content: Content,
    /// Seconds after the request at which it is cancelled unless all slots are filled.
    pub expiry: u64,
    /// Makes otherwise equal requests distinct.
    pub nonce: [u8; 32],
}

impl StorageRequest {
    /// The request id, as the contract computes it.
    pub fn id(&self) -> RequestId {
        RequestId(keccak256(self.to_abi().abi_encode()))
    }

    /// The id of slot `index` of this request.
    pub fn slot_id(&self, index: u64) -> SlotId {
        SlotId::new(self.id(), index)
    }

    /// The request as the contract's ABI type.
    pub fn to_abi(&self) -> abi::Request {
        abi::Request {
            client: self.client,
            ask: self.ask.to_abi(),
            content: abi::Content {
                cid: Bytes::from(self.content.cid.clone()),
                merkleRoot: B256::from(self.content.merkle_root),
            },
            expiry: self.expiry,
            nonce: B256::from(self.nonce),
        }
    }

    /// The request from the contract's ABI type.
    pub fn from_abi(r: &abi::Request) -> Self {
        StorageRequest {
            client: r.client,
            ask: Ask::from_abi(&r.ask),
            content: Content {
                cid: r.content.cid.to_vec(),
                merkle_root: r.content.merkleRoot.0,
            },
            expiry: r.expiry,
            nonce: r.nonce.0,
        }
    }
}

impl Ask {
    /// The ask as the contract's ABI type.
    pub fn to_abi(&self) -> abi::Ask {
        abi::Ask {
            proofProbability: self.proof_probability,
            pricePerBytePerSecond: self.price_per_byte_per_second,
            collateralPerByte: self.collateral_per_byte,
            slots: self.slots,
            slotSize: self.slot_size,
            duration: self.duration,
            maxSlotLoss: self.max_slot_loss,
        }
    }

    /// The ask from the contract's ABI type.
    pub fn from_abi(a: &abi::Ask) -> Self {
        Ask {
            proof_probability: a.proofProbability,
            price_per_byte_per_second: a.pricePerBytePerSecond,
            collateral_per_byte: a.collateralPerByte,
            slots: a.slots,
            slot_size: a.slotSize,
            duration: a.duration,
            max_slot_loss: a.maxSlotLoss,
        }
    }
}

/// State of a request, with expiry and end applied (Codex's `RequestState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestState {
    /// Waiting for its slots to be filled.
    New,
    /// All slots were filled; storage is running.
    Started,
    /// Not filled before expiry.
    Cancelled,
    /// Ran to its end.
    Finished,
    /// Lost more than `maxSlotLoss` slots.
    Failed,
}

impl RequestState {
    /// From the ABI value (`uint8`); `None` for an unknown value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => RequestState::New,
            1 => RequestState::Started,
            2 => RequestState::Cancelled,
            3 => RequestState::Finished,
            4 => RequestState::Failed,
            _ => return None,
        })
    }
}

/// State of a slot, with its request's state applied (Codex's `SlotState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// Never filled.
    Free,
    /// Held by a host that proves it.
    Filled,
    /// The request finished; the host can collect its payout.
    Finished,
    /// The request failed; the host's collateral is lost.
    Failed,
    /// The host has been paid.
    Paid,
    /// The request was cancelled; the host can collect its partial payout.
    Cancelled,
    /// Freed by force; another host may refill it with the repair reward.
    Repair,
}

impl SlotState {
    /// From the ABI value (`uint8`); `None` for an unknown value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => SlotState::Free,
            1 => SlotState::Filled,
            2 => SlotState::Finished,
            3 => SlotState::Failed,
            4 => SlotState::Paid,
            5 => SlotState::Cancelled,
            6 => SlotState::Repair,
            _ => return None,
        })
    }
}

/// Collateral, slashing and rewards, in percent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollateralConfig {
    /// Share of the collateral a host refilling a slot in Repair does not post.
    pub repair_reward_percentage: u8,
    /// Missed proofs after which a slot is freed by force.
    pub max_number_of_slashes: u8,
    /// Share of the collateral taken per missed proof.
    pub slash_percentage: u8,
    /// Share of each slashed amount paid to the validator that marked it.
    pub validator_reward_percentage: u8,
}

/// The proof clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofConfig {
    /// Seconds per period.
    pub period: u64,
    /// Seconds after a period's end during which a missing proof can be marked.
    pub timeout: u64,
    /// Pointer values (of 256) during which no proof is required.
    pub downtime: u8,
    /// Prime that moves the pointer each period.
    pub downtime_product: u8,
    /// Identifies the verifying key.
    pub zkey_hash: String,
}

/// Everything a marketplace is deployed with (Codex's `MarketplaceConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketplaceConfig {
    /// Collateral rules.
    pub collateral: CollateralConfig,
    /// Proof rules.
    pub proofs: ProofConfig,
    /// Hosts that may reserve a slot at once.
    pub max_reservations: u8,
    /// Longest duration a request may ask for, in seconds.
    pub request_duration_limit: u64,
}

impl Default for MarketplaceConfig {
    /// Codex's `DEFAULT_CONFIGURATION`: repair reward 10 %, 2 slashes of 20 %,
    /// validator reward 20 %, periods of 120 s with a 30 s timeout, downtime 64,
    /// downtime product 67, 3 reservations per slot, requests up to 30 days.
    fn default() -> Self {
        MarketplaceConfig {
            collateral: CollateralConfig {
                repair_reward_percentage: 10,
                max_number_of_slashes: 2,
                slash_percentage: 20,
                validator_reward_percentage: 20,
            },
            proofs: ProofConfig {
                period: 120,
                timeout: 30,
                downtime: 64,
                downtime_product: 67,
                zkey_hash: String::new(),
            },
            max_reservations: 3,
            request_duration_limit: 30 * 24 * 60 * 60,
        }
    }
}

impl MarketplaceConfig {
    /// The configuration as the contract's ABI type.
    pub fn to_abi(&self) -> abi::MarketplaceConfig {
        abi::MarketplaceConfig {
            collateral: abi::CollateralConfig {
                repairRewardPercentage: self.collateral.repair_reward_percentage,
                maxNumberOfSlashes: self.collateral.max_number_of_slashes,
                slashPercentage: self.collateral.slash_percentage,
                validatorRewardPercentage: self.collateral.validator_reward_percentage,
            },
            proofs: abi::ProofConfig {
                period: self.proofs.period,
                timeout: self.proofs.timeout,
                downtime: self.proofs.downtime,
                downtimeProduct: self.proofs.downtime_product,
                zkeyHash: self.proofs.zkey_hash.clone(),
            },
            reservations: abi::SlotReservationsConfig {
                maxReservations: self.max_reservations,
            },
            requestDurationLimit: self.request_duration_limit,
        }
    }

    /// The configuration from the contract's ABI type.
    pub fn from_abi(c: &abi::MarketplaceConfig) -> Self {
        MarketplaceConfig {
            collateral: CollateralConfig {
                repair_reward_percentage: c.collateral.repairRewardPercentage,
                max_number_of_slashes: c.collateral.maxNumberOfSlashes,
                slash_percentage: c.collateral.slashPercentage,
                validator_reward_percentage: c.collateral.validatorRewardPercentage,
            },
            proofs: ProofConfig {
                period: c.proofs.period,
                timeout: c.proofs.timeout,
                downtime: c.proofs.downtime,
                downtime_product: c.proofs.downtimeProduct,
                zkey_hash: c.proofs.zkeyHash.clone(),
            },
            max_reservations: c.reservations.maxReservations,
            request_duration_limit: c.requestDurationLimit,
        }
    }

    /// `collateralPerSlot * slashPercentage / 100`: taken per missed proof.
    pub fn slash_amount(&self, ask: &Ask) -> U256 {
        ask.collateral_per_slot() * U256::from(self.collateral.slash_percentage) / U256::from(100)
    }

    /// `slashed * validatorRewardPercentage / 100`: paid to the validator per missed proof.
    pub fn validator_reward(&self, ask: &Ask) -> U256 {
        self.slash_amount(ask) * U256::from(self.collateral.validator_reward_percentage)
            / U256::from(100)
    }

    /// Collateral a host posts to refill a slot in Repair:
    /// `collateralPerSlot - collateralPerSlot * repairRewardPercentage / 100`.
    pub fn repair_collateral(&self, ask: &Ask) -> U256 {
        let full = ask.collateral_per_slot();
        full - full * U256::from(self.collateral.repair_reward_percentage) / U256::from(100)
    }

    /// `proofProbability * (256 - downtime) / 256`; 0 means a proof every period.
    pub fn slot_probability(&self, ask: &Ask) -> U256 {
        ask.proof_probability * U256::from(256 - u64::from(self.proofs.downtime)) / U256::from(256)
    }

    /// The period a timestamp falls in.
    pub fn period_of(&self, timestamp: u64) -> u64 {
        timestamp / self.proofs.period.max(1)
    }

    /// The first second after `period`.
    pub fn period_end(&self, period: u64) -> u64 {
        (period + 1) * self.proofs.period
    }
}

/// The slot's pointer, as `getPointer` computes it:
/// `(blockNumber % 256 + (period * downtimeProduct) % 256 + slotId % 256) % 256`.
pub fn pointer(block_number: u64, period: u64, downtime_product: u8, slot: SlotId) -> u8 {
    let block_term = block_number % 256;
    let period_term = (u128::from(period) * u128::from(downtime_product) % 256) as u64;
    let slot_term = u64::from(slot.0.0[31]);
    ((block_term + period_term + slot_term) % 256) as u8
}

/// The challenge from the hash of the block the pointer refers to:
/// `keccak256(abi.encode(blockhash))`.
pub fn challenge_from_block_hash(block_hash: B256) -> [u8; 32] {
    keccak256(block_hash.abi_encode()).0
}

/// The first public input: the first 31 bytes of the challenge read as a
/// little-endian integer (`challengeToField`), which is the entropy the prover
/// samples with.
pub fn challenge_to_field(challenge: &[u8; 32]) -> U256 {
    let mut le = [0u8; 32];
    le[..31].copy_from_slice(&challenge[..31]);
    U256::from_le_bytes(le)
}

/// The second public input: the dataset root's 32 bytes read as a little-endian
/// integer (`rootToField`).
pub fn root_to_field(root: &[u8; 32]) -> U256 {
    U256::from_le_bytes(*root)
}

/// The public inputs `fillSlot` and `submitProof` check the proof against:
/// `[challengeToField(challenge), rootToField(merkleRoot), slotIndex]`.
pub fn public_inputs(challenge: &[u8; 32], merkle_root: &[u8; 32], slot_index: u64) -> [U256; 3] {
    [
        challenge_to_field(challenge),
        root_to_field(merkle_root),
        U256::from(slot_index),
    ]
}

/// The only proof `EchoProofCheck` accepts (behind the `Halo2Verifier` adapter):
/// the public inputs as 32-byte big-endian words, the same bytes the adapter puts
/// in front of the proof. For tests of the public inputs without a prover.
pub fn echo_proof(public_inputs: &[U256; 3]) -> Vec<u8> {
    public_inputs
        .iter()
        .flat_map(|x| x.to_be_bytes::<32>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_fields() {
        let mut c = [0u8; 32];
        c[0] = 1;
        c[30] = 2;
        c[31] = 0xff; // dropped: only 31 bytes count
        assert_eq!(
            challenge_to_field(&c),
            U256::from(1) + (U256::from(2) << 240)
        );
        let mut r = [0u8; 32];
        r[31] = 1;
        assert_eq!(root_to_field(&r), U256::from(1) << 248);
    }

    #[test]
    fn slot_id_matches_abi_encode_params() {
        let request = RequestId(B256::repeat_byte(7));
        let params = (request.0, 3u64).abi_encode_params();
        assert_eq!(SlotId::new(request, 3).0, keccak256(params));
    }

    #[test]
    fn pointer_wraps() {
        let slot = SlotId(B256::with_last_byte(200));
        assert_eq!(pointer(100, 0, 67, slot), 44);
        assert_eq!(pointer(256, 1, 67, slot), 11);
    }
}

/// The chain's block time, measured from the blocks seen: over the last
/// [`BlockTimer::KEPT`] block numbers observed, the seconds between the oldest and the
/// newest over the blocks between them. Pure: feed it `(number, timestamp)` pairs.
#[derive(Clone, Debug, Default)]
pub struct BlockTimer {
    /// `(number, timestamp)`, oldest first, numbers increasing.
    seen: std::collections::VecDeque<(u64, u64)>,
}

impl BlockTimer {
    /// Block numbers kept.
    pub const KEPT: usize = 32;

    /// Block `number` has time `timestamp`. A number seen before is ignored; a number
    /// below the newest (a reorganisation, another node behind a balancer) starts the
    /// measurement again.
    pub fn observe(&mut self, number: u64, timestamp: u64) {
        match self.seen.back() {
            Some(&(n, _)) if n == number => return,
            Some(&(n, t)) if n > number || t > timestamp => self.seen.clear(),
            _ => {}
        }
        self.seen.push_back((number, timestamp));
        while self.seen.len() > Self::KEPT {
            self.seen.pop_front();
        }
    }

    /// Seconds per block, `None` before two blocks were seen.
    pub fn block_time(&self) -> Option<f64> {
        let (&(n0, t0), &(n1, t1)) = (self.seen.front()?, self.seen.back()?);
        (n1 > n0).then(|| (t1 - t0) as f64 / (n1 - n0) as f64)
    }

    /// Whole seconds per block, rounded up, at least 1 (1 before it is measured).
    pub fn block_secs(&self) -> u64 {
        self.block_time().map_or(1, |s| s.ceil() as u64).max(1)
    }
}

#[cfg(test)]
mod block_timer_tests {
    use super::BlockTimer;

    #[test]
    fn block_time_is_measured_over_the_blocks_seen() {
        let mut t = BlockTimer::default();
        assert_eq!(t.block_time(), None);
        assert_eq!(t.block_secs(), 1);
        t.observe(100, 1_000);
        t.observe(100, 1_005); // seen: ignored
        assert_eq!(t.block_time(), None);
        t.observe(101, 1_012);
        t.observe(103, 1_036);
        assert_eq!(t.block_time(), Some(12.0));
        assert_eq!(t.block_secs(), 12);
        // Sub-second blocks (an L2): 2 blocks a second still rounds up to 1.
        let mut fast = BlockTimer::default();
        for n in 0..10 {
            fast.observe(n, 500 + n / 2);
        }
        assert!(fast.block_time().is_some_and(|s| s < 1.0));
        assert_eq!(fast.block_secs(), 1);
        // Only the last KEPT numbers count: the chain slowed from 2 s to 6 s blocks.
        let mut slowed = BlockTimer::default();
        for n in 0..100 {
            slowed.observe(n, n * 2);
        }
        for n in 100..200 {
            slowed.observe(n, 200 + (n - 100) * 6);
        }
        assert_eq!(slowed.block_time(), Some(6.0));
        // Going back (a reorganisation) starts again.
        slowed.observe(150, 10_000);
        assert_eq!(slowed.block_time(), None);
    }
}
