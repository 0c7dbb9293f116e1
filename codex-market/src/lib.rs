#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod bindings;
pub mod chain;
pub mod client;
pub mod deploy;
pub mod error;
pub mod market;
pub mod memory;
pub mod metered;
pub mod txman;
pub mod types;

pub use alloy;
pub use chain::LocalChain;
pub use client::{LoggedEvent, MarketEvent, MarketplaceClient, TxReceipt};
pub use deploy::{Deployment, TokenSource, VerifierSource, deploy};
pub use error::{Error, MarketplaceError, Result, Revert, Target, TokenError};
pub use market::{Events, Marketplace};
pub use memory::MemoryMarketplace;
pub use metered::{CallCounts, Metered};
pub use txman::{REVERTS_KEPT, RevertedTx, TxConfig, TxManager, TxStats};
pub use types::{
    Ask, BlockTimer, CollateralConfig, Content, MarketplaceConfig, ProofConfig, RequestId,
    RequestState, SlotId, SlotState, StorageRequest, challenge_from_block_hash, challenge_to_field,
    echo_proof, pointer, public_inputs, root_to_field,
};
