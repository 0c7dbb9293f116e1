//! The crate's error type, and the marketplace's custom errors decoded from
//! revert data.

use std::fmt;
use std::path::PathBuf;

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::{Panic, Revert as RevertString, SolError, SolInterface};

use crate::bindings::Marketplace::MarketplaceErrors as M;
use crate::bindings::TestToken::TestTokenErrors as T;
use crate::types::{RequestId, SlotId};

/// A boxed third-party error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of codex-market.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A call reverted: the custom error, and the request or slot it was about.
    #[error("{call} reverted with {revert} ({target})")]
    Reverted {
        /// The contract function, e.g. `fillSlot`.
        call: &'static str,
        /// The request or slot the call was about.
        target: Target,
        /// Why it reverted.
        revert: Box<Revert>,
    },
    /// A transaction was mined but failed (status 0) without revert data.
    #[error("{call} transaction {tx} failed on chain ({target})")]
    Failed {
        /// The contract function.
        call: &'static str,
        /// The request or slot it was about.
        target: Target,
        /// The transaction hash.
        tx: alloy::primitives::B256,
    },
    /// A transaction was not mined in time, replacements with higher fees included
    /// (see [`crate::TxConfig::give_up_after`]). It may still be mined.
    #[error("{call} transaction {tx} (nonce {nonce}) not mined in time ({target})")]
    Stuck {
        /// The contract function.
        call: &'static str,
        /// The request or slot it was about.
        target: Target,
        /// Its nonce.
        nonce: u64,
        /// The hash of the last attempt.
        tx: alloy::primitives::B256,
    },
    /// A transaction of another sender took the nonce given to this one (the account
    /// is used by another program too); the call was not made.
    #[error("{call}: nonce {nonce} was used by a transaction not sent here ({target})")]
    NonceTaken {
        /// The contract function.
        call: &'static str,
        /// The request or slot it was about.
        target: Target,
        /// The nonce.
        nonce: u64,
    },
    /// The node could not be reached or answered with an error.
    #[error("rpc error during {context}")]
    Rpc {
        /// What was being done.
        context: String,
        /// The transport or node error.
        #[source]
        source: BoxError,
    },
    /// The chain returned a value this crate does not know (e.g. an enum out of range).
    #[error("unexpected value from the chain for {what}: {value}")]
    UnexpectedValue {
        /// Which value.
        what: &'static str,
        /// What it was.
        value: String,
    },
    /// The prover passed to `fill_slot_with` or `submit_proof_with` failed.
    #[error("the prover failed")]
    Prover {
        /// Its error.
        #[source]
        source: BoxError,
    },
    /// The anvil binary is not where it was looked for.
    #[error("anvil not found at {path} (run scripts/setup.sh, or set CODEX_ANVIL)")]
    AnvilNotFound {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// anvil could not be started or did not answer in time.
    #[error("local chain: {message}")]
    LocalChain {
        /// What went wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// Invalid input from the caller (e.g. an RPC URL or a private key).
    #[error("invalid {what}: {message}")]
    InvalidInput {
        /// Which input.
        what: &'static str,
        /// Why it is invalid.
        message: String,
    },
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Why the call reverted, if this is a revert.
    pub fn revert(&self) -> Option<&Revert> {
        match self {
            Error::Reverted { revert, .. } => Some(revert),
            _ => None,
        }
    }

    /// The marketplace custom error, if this is a revert with one.
    pub fn marketplace_error(&self) -> Option<MarketplaceError> {
        self.revert().and_then(Revert::marketplace)
    }

    /// The request or slot a revert was about.
    pub fn target(&self) -> Option<Target> {
        match self {
            Error::Reverted { target, .. }
            | Error::Failed { target, .. }
            | Error::Stuck { target, .. }
            | Error::NonceTaken { target, .. } => Some(*target),
            _ => None,
        }
    }

    pub(crate) fn rpc(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Rpc {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Turns an alloy contract error into ours: reverts are decoded, the rest boxed.
    pub(crate) fn from_contract(
        call: &'static str,
        target: Target,
        error: alloy::contract::Error,
    ) -> Self {
        match error.as_revert_data() {
            Some(data) => Error::Reverted {
                call,
                target,
                revert: Box::new(Revert::decode(&data)),
            },
            None => Error::rpc(format!("{call} ({target})"), error),
        }
    }
}

/// What a call was about, for error messages and matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// A storage request.
    Request(RequestId),
    /// A slot of a request, with its index when the call named it.
    Slot {
        /// The slot id.
        slot: SlotId,
        /// The slot index, when known.
        index: Option<u64>,
    },
    /// A contract deployment or a call about no request in particular.
    Contract(&'static str),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Request(id) => write!(f, "request {id}"),
            Target::Slot {
                slot,
                index: Some(i),
            } => write!(f, "slot {i} ({slot})"),
            Target::Slot { slot, index: None } => write!(f, "slot {slot}"),
            Target::Contract(name) => write!(f, "{name}"),
        }
    }
}

macro_rules! custom_errors {
    ($($variant:ident => $sol:ident, $doc:literal;)*) => {
        /// A custom error of the marketplace contract, by name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum MarketplaceError {
            $(#[doc = $doc] $variant,)*
        }

        impl MarketplaceError {
            /// Every custom error, in declaration order.
            pub const ALL: &'static [MarketplaceError] = &[$(MarketplaceError::$variant,)*];

            /// The error's name in Solidity, e.g. `Marketplace_SlotNotFree`.
            pub fn solidity_name(self) -> &'static str {
                match self {
                    $(MarketplaceError::$variant => stringify!($sol),)*
                }
            }

            /// The 4-byte selector of the error.
            pub fn selector(self) -> [u8; 4] {
                match self {
                    $(MarketplaceError::$variant => crate::bindings::Marketplace::$sol::SELECTOR,)*
                }
            }

            fn from_abi(e: &M) -> Self {
                match e {
                    $(M::$sol(_) => MarketplaceError::$variant,)*
                }
            }
        }
    };
}

custom_errors! {
    RepairRewardPercentageTooHigh => Marketplace_RepairRewardPercentageTooHigh, "Configuration: repair reward above 100 %.";
    SlashPercentageTooHigh => Marketplace_SlashPercentageTooHigh, "Configuration: slash percentage above 100 %.";
    MaximumSlashingTooHigh => Marketplace_MaximumSlashingTooHigh, "Configuration: `maxNumberOfSlashes * slashPercentage` above 100.";
    ValidatorRewardPercentageTooHigh => Marketplace_ValidatorRewardPercentageTooHigh, "Configuration: validator reward above 100 % (our addition).";
    InvalidExpiry => Marketplace_InvalidExpiry, "Request: expiry is 0 or not below the duration.";
    InvalidMaxSlotLoss => Marketplace_InvalidMaxSlotLoss, "Request: `maxSlotLoss` above `slots`.";
    InsufficientSlots => Marketplace_InsufficientSlots, "Request: no slots.";
    InsufficientDuration => Marketplace_InsufficientDuration, "Request: duration 0.";
    InsufficientProofProbability => Marketplace_InsufficientProofProbability, "Request: proof probability 0.";
    InsufficientCollateral => Marketplace_InsufficientCollateral, "Request: collateral per byte 0.";
    InsufficientReward => Marketplace_InsufficientReward, "Request: price per byte per second 0.";
    InvalidClientAddress => Marketplace_InvalidClientAddress, "The sender is not the request's client.";
    RequestAlreadyExists => Marketplace_RequestAlreadyExists, "A request with the same id exists.";
    InvalidSlot => Marketplace_InvalidSlot, "Slot index not below the request's slots.";
    InvalidCid => Marketplace_InvalidCid, "Request: empty CID.";
    SlotNotFree => Marketplace_SlotNotFree, "The slot is neither Free nor in Repair.";
    InvalidSlotHost => Marketplace_InvalidSlotHost, "The sender is not the slot's host.";
    AlreadyPaid => Marketplace_AlreadyPaid, "The slot was already paid.";
    TransferFailed => Marketplace_TransferFailed, "The token refused a transfer.";
    UnknownRequest => Marketplace_UnknownRequest, "No request with that id.";
    InvalidState => Marketplace_InvalidState, "The request is not Cancelled, Failed or Finished.";
    StartNotBeforeExpiry => Marketplace_StartNotBeforeExpiry, "The request expired before the slot was filled.";
    SlotNotAcceptingProofs => Marketplace_SlotNotAcceptingProofs, "The slot is not Filled.";
    ProofNotSubmittedByHost => Marketplace_ProofNotSubmittedByHost, "The sender is not the slot's host.";
    SlotIsFree => Marketplace_SlotIsFree, "The slot was never filled.";
    ReservationRequired => Marketplace_ReservationRequired, "The sender has not reserved the slot.";
    NothingToWithdraw => Marketplace_NothingToWithdraw, "The client's funds were already withdrawn.";
    DurationExceedsLimit => Marketplace_DurationExceedsLimit, "Request: duration above `requestDurationLimit`.";
    InsufficientBlockHeight => Proofs_InsufficientBlockHeight, "Deployment at block 256 or lower.";
    InvalidProof => Proofs_InvalidProof, "The verifier rejected the proof.";
    ProofAlreadySubmitted => Proofs_ProofAlreadySubmitted, "A proof was already submitted this period.";
    PeriodNotEnded => Proofs_PeriodNotEnded, "The period has not ended.";
    ValidationTimedOut => Proofs_ValidationTimedOut, "The period ended more than `timeout` seconds ago.";
    ProofNotMissing => Proofs_ProofNotMissing, "A proof was received for the period.";
    ProofNotRequired => Proofs_ProofNotRequired, "No proof was required in the period.";
    ProofAlreadyMarkedMissing => Proofs_ProofAlreadyMarkedMissing, "The proof was already marked missing.";
    InvalidSecondsPerPeriod => Periods_InvalidSecondsPerPeriod, "Configuration: period of 0 seconds.";
    ReservationNotAllowed => SlotReservations_ReservationNotAllowed, "The slot cannot be reserved by the sender now.";
}

impl fmt::Display for MarketplaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.solidity_name())
    }
}

/// An ERC-20 error (OpenZeppelin's, EIP-6093) from the token the marketplace called.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// `ERC20InsufficientBalance(sender, balance, needed)`.
    InsufficientBalance {
        /// The account short of tokens.
        sender: Address,
        /// Its balance.
        balance: U256,
        /// What was needed.
        needed: U256,
    },
    /// `ERC20InsufficientAllowance(spender, allowance, needed)`: approve first.
    InsufficientAllowance {
        /// The marketplace.
        spender: Address,
        /// The allowance it had.
        allowance: U256,
        /// What it needed.
        needed: U256,
    },
    /// Another ERC-20 error, by name.
    Other(&'static str),
}

/// Why a call reverted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revert {
    /// One of the marketplace's custom errors.
    Marketplace(MarketplaceError),
    /// An error of the token.
    Token(TokenError),
    /// `Panic(uint256)`, e.g. 0x01 for a failed assert, 0x11 for an overflow.
    Panic(U256),
    /// `Error(string)`.
    Message(String),
    /// Revert data no known interface decodes (empty when there was none).
    Unknown(Bytes),
}

impl Revert {
    /// Decodes revert data.
    pub fn decode(data: &[u8]) -> Self {
        if let Ok(e) = M::abi_decode(data) {
            return Revert::Marketplace(MarketplaceError::from_abi(&e));
        }
        if let Ok(e) = T::abi_decode(data) {
            return Revert::Token(match e {
                T::ERC20InsufficientBalance(e) => TokenError::InsufficientBalance {
                    sender: e.sender,
                    balance: e.balance,
                    needed: e.needed,
                },
                T::ERC20InsufficientAllowance(e) => TokenError::InsufficientAllowance {
                    spender: e.spender,
                    allowance: e.allowance,
                    needed: e.needed,
                },
                T::ERC20InvalidApprover(_) => TokenError::Other("ERC20InvalidApprover"),
                T::ERC20InvalidReceiver(_) => TokenError::Other("ERC20InvalidReceiver"),
                T::ERC20InvalidSender(_) => TokenError::Other("ERC20InvalidSender"),
                T::ERC20InvalidSpender(_) => TokenError::Other("ERC20InvalidSpender"),
            });
        }
        if let Ok(p) = Panic::abi_decode(data) {
            return Revert::Panic(p.code);
        }
        if let Ok(r) = RevertString::abi_decode(data) {
            return Revert::Message(r.reason);
        }
        Revert::Unknown(Bytes::copy_from_slice(data))
    }

    /// The marketplace custom error, if it is one.
    pub fn marketplace(&self) -> Option<MarketplaceError> {
        match self {
            Revert::Marketplace(e) => Some(*e),
            _ => None,
        }
    }
}

impl fmt::Display for Revert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Revert::Marketplace(e) => write!(f, "{e}"),
            Revert::Token(e) => write!(f, "token error {e:?}"),
            Revert::Panic(code) => write!(f, "Panic({code:#x})"),
            Revert::Message(m) => write!(f, "Error({m:?})"),
            Revert::Unknown(data) if data.is_empty() => write!(f, "no revert data"),
            Revert::Unknown(data) => write!(f, "unknown revert data {data}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_custom_error_of_the_abi_is_named() {
        assert_eq!(MarketplaceError::ALL.len(), M::SELECTORS.len());
        for e in MarketplaceError::ALL {
            assert_eq!(
                Revert::decode(&e.selector()),
                Revert::Marketplace(*e),
                "{e}"
            );
        }
    }
}
