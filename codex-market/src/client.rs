//! The typed marketplace client: every contract call and event with Rust values.

use alloy::contract::CallBuilder;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEventInterface};

use crate::bindings::Marketplace::{self as abi, MarketplaceEvents, MarketplaceInstance};
use crate::bindings::TestToken::{self, TestTokenInstance};
use crate::error::{Error, Result, Target};
use crate::txman::{TxConfig, TxManager};
use crate::types::{
    Ask, MarketplaceConfig, RequestId, RequestState, SlotId, SlotState, StorageRequest,
};

/// What a mined transaction cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxReceipt {
    /// Transaction hash.
    pub hash: B256,
    /// Block it was mined in.
    pub block_number: u64,
    /// That block's hash: the transaction is on the chain while the block numbered
    /// `block_number` has this hash (a reorganisation replaces it).
    pub block_hash: B256,
    /// Gas it used.
    pub gas_used: u64,
}

/// A marketplace event, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MarketEvent {
    /// A client created a request; `expiry` is the absolute expiry time.
    StorageRequested {
        /// The request.
        request: RequestId,
        /// Its terms.
        ask: Ask,
        /// When it is cancelled unless filled (seconds since the epoch).
        expiry: u64,
    },
    /// All slots of the request were filled.
    RequestFulfilled {
        /// The request.
        request: RequestId,
    },
    /// The request lost more than `maxSlotLoss` slots.
    RequestFailed {
        /// The request.
        request: RequestId,
    },
    /// The client withdrew a cancelled request's funds.
    RequestCancelled {
        /// The request.
        request: RequestId,
    },
    /// A host filled a slot.
    SlotFilled {
        /// The request.
        request: RequestId,
        /// The slot index.
        slot_index: u64,
    },
    /// A slot was freed by force (missed proofs or the host left) and is in Repair.
    SlotFreed {
        /// The request.
        request: RequestId,
        /// The slot index.
        slot_index: u64,
    },
    /// A slot reached `maxReservations` reservations.
    SlotReservationsFull {
        /// The request.
        request: RequestId,
        /// The slot index.
        slot_index: u64,
    },
    /// A proof was accepted (also the one of `fillSlot`).
    ProofSubmitted {
        /// The slot.
        slot: SlotId,
    },
}

impl MarketEvent {
    fn from_abi(e: MarketplaceEvents) -> Self {
        use MarketplaceEvents as E;
        match e {
            E::StorageRequested(e) => MarketEvent::StorageRequested {
                request: RequestId(e.requestId),
                ask: Ask::from_abi(&e.ask),
                expiry: e.expiry,
            },
            E::RequestFulfilled(e) => MarketEvent::RequestFulfilled {
                request: RequestId(e.requestId),
            },
            E::RequestFailed(e) => MarketEvent::RequestFailed {
                request: RequestId(e.requestId),
            },
            E::RequestCancelled(e) => MarketEvent::RequestCancelled {
                request: RequestId(e.requestId),
            },
            E::SlotFilled(e) => MarketEvent::SlotFilled {
                request: RequestId(e.requestId),
                slot_index: e.slotIndex,
            },
            E::SlotFreed(e) => MarketEvent::SlotFreed {
                request: RequestId(e.requestId),
                slot_index: e.slotIndex,
            },
            E::SlotReservationsFull(e) => MarketEvent::SlotReservationsFull {
                request: RequestId(e.requestId),
                slot_index: e.slotIndex,
            },
            E::ProofSubmitted(e) => MarketEvent::ProofSubmitted { slot: SlotId(e.id) },
        }
    }
}

/// An event with the block it was emitted in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Block number.
    pub block_number: u64,
    /// Transaction hash.
    pub tx: B256,
    /// The event.
    pub event: MarketEvent,
}

/// A marketplace as seen by one account: every call is sent from it, through one
/// [`TxManager`] that its clones share (nonces in order, fee bumps, confirmations).
///
/// Cheap to clone. Calls that pull tokens (`requestStorage`, `fillSlot`) first approve
/// what they and every other pull still pending need, unless the allowance covers it,
/// in a separate transaction.
#[derive(Clone, Debug)]
pub struct MarketplaceClient {
    provider: DynProvider,
    account: Address,
    txs: std::sync::Arc<TxManager>,
    log_range: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The block time measured from the latest blocks read.
    blocks: std::sync::Arc<std::sync::Mutex<crate::types::BlockTimer>>,
    contract: MarketplaceInstance<DynProvider>,
    token: TestTokenInstance<DynProvider>,
    config: MarketplaceConfig,
}

fn target_request(id: RequestId) -> Target {
    Target::Request(id)
}

/// The block range of one `eth_getLogs` unless set: what most hosted endpoints take.
pub const DEFAULT_LOG_RANGE: u64 = 500;

/// Blocks a transaction may wait unmined before it is replaced with higher fees (see
/// [`MarketplaceClient::receipt_timeout`]): blocks mined without it mean its fees are
/// too low, or it was lost.
pub const RECEIPT_BLOCKS: u64 = 3;

/// Whether a node refused an `eth_getLogs` for its range or its result's size (the
/// wordings of hosted endpoints and of geth: "block range too large", "query returned
/// more than 10000 results", "Log response size exceeded", ...).
pub(crate) fn is_range_refusal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "range",
        "more than",
        "too many results",
        "response size",
        "too large",
    ]
    .iter()
    .any(|k| m.contains(k))
}

fn fill_target(request: RequestId, index: u64) -> Target {
    Target::Slot {
        slot: SlotId::new(request, index),
        index: Some(index),
    }
}

fn target_slot(slot: SlotId) -> Target {
    Target::Slot { slot, index: None }
}

impl MarketplaceClient {
    /// Connects to the marketplace at `marketplace` on `rpc_url`, signing with `signer`.
    /// Reads the configuration and the token address once.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad URL, [`Error::Rpc`] when the contract cannot be read.
    pub async fn connect(
        rpc_url: &str,
        signer: &PrivateKeySigner,
        marketplace: Address,
    ) -> Result<Self> {
        Self::connect_with(rpc_url, signer, marketplace, TxConfig::default()).await
    }

    /// As [`MarketplaceClient::connect`], sending with the settings `txs`.
    ///
    /// # Errors
    /// As [`MarketplaceClient::connect`].
    pub async fn connect_with(
        rpc_url: &str,
        signer: &PrivateKeySigner,
        marketplace: Address,
        txs: TxConfig,
    ) -> Result<Self> {
        Self::with_provider_and(
            crate::deploy::connect_signing_provider(rpc_url, signer).await?,
            signer.address(),
            marketplace,
            txs,
        )
        .await
    }

    /// As [`MarketplaceClient::connect`], with a provider that signs for `account`.
    ///
    /// # Errors
    /// [`Error::Rpc`] when the contract cannot be read.
    pub async fn with_provider(
        provider: DynProvider,
        account: Address,
        marketplace: Address,
    ) -> Result<Self> {
        Self::with_provider_and(provider, account, marketplace, TxConfig::default()).await
    }

    /// As [`MarketplaceClient::with_provider`], sending with the settings `txs`.
    ///
    /// # Errors
    /// [`Error::Rpc`] when the contract cannot be read.
    pub async fn with_provider_and(
        provider: DynProvider,
        account: Address,
        marketplace: Address,
        txs: TxConfig,
    ) -> Result<Self> {
        let contract = MarketplaceInstance::new(marketplace, provider.clone());
        let token = contract
            .token()
            .call()
            .await
            .map_err(|e| Error::rpc("token()", e))?;
        let config = contract
            .configuration()
            .call()
            .await
            .map_err(|e| Error::rpc("configuration()", e))?;
        Ok(MarketplaceClient {
            token: TestToken::new(token, provider.clone()),
            txs: std::sync::Arc::new(TxManager::new(provider.clone(), account, txs)),
            log_range: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(DEFAULT_LOG_RANGE)),
            blocks: std::sync::Arc::default(),
            provider,
            account,
            contract,
            config: MarketplaceConfig::from_abi(&config),
        })
    }

    /// The account calls are sent from.
    pub fn account(&self) -> Address {
        self.account
    }

    /// The marketplace's address.
    pub fn address(&self) -> Address {
        *self.contract.address()
    }

    /// The token's address.
    pub fn token_address(&self) -> Address {
        *self.token.address()
    }

    /// The configuration the marketplace was deployed with (read at connect).
    pub fn config(&self) -> &MarketplaceConfig {
        &self.config
    }

    /// The provider.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The transaction manager every call of this client (and its clones) goes through.
    pub fn transactions(&self) -> &TxManager {
        &self.txs
    }

    /// The raw bindings, for what this client does not wrap.
    pub fn contract(&self) -> &MarketplaceInstance<DynProvider> {
        &self.contract
    }

    async fn send<C: SolCall>(
        &self,
        call: &'static str,
        target: Target,
        builder: CallBuilder<&DynProvider, std::marker::PhantomData<C>>,
    ) -> Result<TxReceipt> {
        self.txs
            .send_within(
                call,
                target,
                builder.into_transaction_request(),
                self.receipt_timeout(),
            )
            .await
    }

    /// How long a transaction may wait unmined before it is sent again with higher
    /// fees: [`TxConfig::receipt_timeout`], or [`RECEIPT_BLOCKS`] of the chain's block
    /// times once they are measured (see [`MarketplaceClient::next_block`]) if that is
    /// sooner, at least 2 s. On 2-second blocks a proof priced out by a base-fee spike
    /// is replaced after 6 s, not 30, while its period lasts.
    pub fn receipt_timeout(&self) -> std::time::Duration {
        let configured = self.txs.config().receipt_timeout;
        let measured = self
            .blocks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .block_time();
        match measured {
            Some(secs) => configured.min(std::time::Duration::from_secs_f64(
                (secs * RECEIPT_BLOCKS as f64).max(2.0),
            )),
            None => configured,
        }
    }

    async fn view<C: SolCall>(
        &self,
        call: &'static str,
        target: Target,
        builder: CallBuilder<&DynProvider, std::marker::PhantomData<C>>,
    ) -> Result<C::Return> {
        builder
            .from(self.account)
            .call()
            .await
            .map_err(|e| Error::from_contract(call, target, e))
    }

    // ------------------------------------------------------------ token

    /// The token balance of `holder`.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn balance_of(&self, holder: Address) -> Result<U256> {
        self.token
            .balanceOf(holder)
            .call()
            .await
            .map_err(|e| Error::rpc("balanceOf", e))
    }

    /// The token balance of this client's account.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn balance(&self) -> Result<U256> {
        self.balance_of(self.account).await
    }

    /// Lets the marketplace take `amount` from this account (ERC-20 `approve`): sets
    /// the allowance, whatever it was. The calls that pull tokens approve by
    /// themselves; a concurrent `approve` can undo what they approved.
    ///
    /// # Errors
    /// [`Error::Reverted`], [`Error::Failed`] or [`Error::Rpc`].
    pub async fn approve(&self, amount: U256) -> Result<TxReceipt> {
        self.txs
            .send(
                "approve",
                Target::Contract("token"),
                self.token
                    .approve(self.address(), amount)
                    .into_transaction_request(),
            )
            .await
    }

    /// What the marketplace may still take from this account.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn allowance(&self) -> Result<U256> {
        self.token
            .allowance(self.account, self.address())
            .call()
            .await
            .map_err(|e| Error::rpc("allowance", e))
    }

    /// Makes the allowance cover a pull of `amount` for `target` on top of every other
    /// pull still pending from this account (approving their sum when it does not);
    /// the pull counts until [`MarketplaceClient::pull_done`]. Approvals go out one at
    /// a time, through the account's transaction queue.
    ///
    /// # Errors
    /// [`Error::Reverted`], [`Error::Failed`] or [`Error::Rpc`].
    pub async fn ensure_allowance(
        &self,
        target: Target,
        amount: U256,
    ) -> Result<Option<TxReceipt>> {
        let _one_at_a_time = self.txs.approving().await;
        let current = self.allowance().await?;
        match self.txs.approval_for(target, amount, current) {
            None => Ok(None),
            Some(needed) => match self.approve(needed).await {
                Ok(r) => Ok(Some(r)),
                Err(e) => {
                    self.txs.pull_done(target);
                    Err(e)
                }
            },
        }
    }

    /// The pull for `target` was sent and mined (or will not be): the allowance need
    /// not cover it any more.
    pub fn pull_done(&self, target: Target) {
        self.txs.pull_done(target);
    }

    /// Approves the collateral that filling slot `index` takes.
    ///
    /// # Errors
    /// [`Error::Reverted`] or [`Error::Rpc`].
    pub async fn approve_collateral(
        &self,
        request: RequestId,
        index: u64,
    ) -> Result<Option<TxReceipt>> {
        let amount = self.collateral_to_fill(request, index).await?;
        self.ensure_allowance(fill_target(request, index), amount)
            .await
    }

    // ------------------------------------------------------------ client calls

    /// Creates a storage request, after approving its `maxPrice` unless the
    /// allowance covers it. Returns the request id and the receipt of `requestStorage`.
    ///
    /// # Errors
    /// [`Error::Reverted`] with e.g. `InvalidExpiry` or `RequestAlreadyExists`.
    pub async fn request_storage(
        &self,
        request: &StorageRequest,
    ) -> Result<(RequestId, TxReceipt)> {
        let id = request.id();
        let target = target_request(id);
        self.ensure_allowance(target, request.ask.max_price())
            .await?;
        let sent = self
            .send(
                "requestStorage",
                target,
                self.contract.requestStorage(request.to_abi()),
            )
            .await;
        self.pull_done(target);
        Ok((id, sent?))
    }

    /// Withdraws the client's funds of a Cancelled, Failed or Finished request.
    ///
    /// # Errors
    /// [`Error::Reverted`] with e.g. `InvalidState` or `NothingToWithdraw`.
    pub async fn withdraw_funds(&self, request: RequestId) -> Result<TxReceipt> {
        self.send(
            "withdrawFunds",
            target_request(request),
            self.contract.withdrawFunds_0(request.0),
        )
        .await
    }

    /// Withdraws the client's funds to `recipient`.
    ///
    /// # Errors
    /// As [`MarketplaceClient::withdraw_funds`].
    pub async fn withdraw_funds_to(
        &self,
        request: RequestId,
        recipient: Address,
    ) -> Result<TxReceipt> {
        self.send(
            "withdrawFunds",
            target_request(request),
            self.contract.withdrawFunds_1(request.0, recipient),
        )
        .await
    }

    // ------------------------------------------------------------ host calls

    /// Reserves slot `index` of `request`.
    ///
    /// # Errors
    /// [`Error::Reverted`] with `ReservationNotAllowed`.
    pub async fn reserve_slot(&self, request: RequestId, index: u64) -> Result<TxReceipt> {
        let target = Target::Slot {
            slot: SlotId::new(request, index),
            index: Some(index),
        };
        self.send(
            "reserveSlot",
            target,
            self.contract.reserveSlot(request.0, index),
        )
        .await
    }

    /// Fills a reserved slot with a proof for the challenge of the block it lands
    /// in ([`MarketplaceClient::next_block_challenge`]). Approves the collateral
    /// first unless the allowance covers it (the repair discount applies to a slot
    /// in Repair; [`MarketplaceClient::approve_collateral`] does it ahead, so that
    /// this sends one transaction). Returns the receipt of `fillSlot`.
    ///
    /// # Errors
    /// [`Error::Reverted`] with e.g. `ReservationRequired`, `SlotNotFree` or `InvalidProof`.
    pub async fn fill_slot(
        &self,
        request: RequestId,
        index: u64,
        proof: &[u8],
    ) -> Result<TxReceipt> {
        let target = fill_target(request, index);
        let collateral = self.collateral_to_fill(request, index).await?;
        self.ensure_allowance(target, collateral).await?;
        let sent = self
            .send(
                "fillSlot",
                target,
                self.contract
                    .fillSlot(request.0, index, Bytes::copy_from_slice(proof)),
            )
            .await;
        self.pull_done(target);
        sent
    }

    /// Fills a reserved slot with a proof made for the right challenge: approves
    /// the collateral first (if needed), then reads the challenge of the block the
    /// fill will land in, calls `prove` with it, and sends `fillSlot`.
    ///
    /// # Errors
    /// [`Error::Prover`] when `prove` fails, otherwise as [`MarketplaceClient::fill_slot`].
    pub async fn fill_slot_with<F, Fut>(
        &self,
        request: RequestId,
        index: u64,
        prove: F,
    ) -> Result<TxReceipt>
    where
        F: FnOnce([u8; 32]) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Vec<u8>, crate::error::BoxError>>,
    {
        self.approve_collateral(request, index).await?;
        let challenge = self
            .next_block_challenge(SlotId::new(request, index))
            .await?;
        let proof = prove(challenge)
            .await
            .map_err(|source| Error::Prover { source })?;
        self.fill_slot(request, index, &proof).await
    }

    /// Submits the proof of the current period made by `prove` for the challenge
    /// of the block the submission will land in.
    ///
    /// # Errors
    /// [`Error::Prover`] when `prove` fails, otherwise as [`MarketplaceClient::submit_proof`].
    pub async fn submit_proof_with<F, Fut>(&self, slot: SlotId, prove: F) -> Result<TxReceipt>
    where
        F: FnOnce([u8; 32]) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Vec<u8>, crate::error::BoxError>>,
    {
        let challenge = self.next_block_challenge(slot).await?;
        let proof = prove(challenge)
            .await
            .map_err(|source| Error::Prover { source })?;
        self.submit_proof(slot, &proof).await
    }

    /// The collateral `fillSlot` will take for slot `index`: `collateralPerSlot`,
    /// less the repair reward when the slot is in Repair.
    ///
    /// # Errors
    /// [`Error::Reverted`] with `UnknownRequest`.
    pub async fn collateral_to_fill(&self, request: RequestId, index: u64) -> Result<U256> {
        let ask = self.get_request(request).await?.ask;
        Ok(match self.slot_state(SlotId::new(request, index)).await? {
            SlotState::Repair => self.config.repair_collateral(&ask),
            _ => ask.collateral_per_slot(),
        })
    }

    /// Submits the proof of the current period.
    ///
    /// # Errors
    /// [`Error::Reverted`] with e.g. `ProofAlreadySubmitted` or `InvalidProof`.
    pub async fn submit_proof(&self, slot: SlotId, proof: &[u8]) -> Result<TxReceipt> {
        self.send(
            "submitProof",
            target_slot(slot),
            self.contract
                .submitProof(slot.0, Bytes::copy_from_slice(proof)),
        )
        .await
    }

    /// Frees a slot: collects the payout of a Finished or Cancelled slot, or gives
    /// up a Filled one (losing its collateral).
    ///
    /// # Errors
    /// [`Error::Reverted`] with e.g. `InvalidSlotHost` or `AlreadyPaid`.
    pub async fn free_slot(&self, slot: SlotId) -> Result<TxReceipt> {
        self.send(
            "freeSlot",
            target_slot(slot),
            self.contract.freeSlot_1(slot.0),
        )
        .await
    }

    /// Frees a slot, paying the reward and the collateral to the given accounts.
    ///
    /// # Errors
    /// As [`MarketplaceClient::free_slot`].
    pub async fn free_slot_to(
        &self,
        slot: SlotId,
        reward_recipient: Address,
        collateral_recipient: Address,
    ) -> Result<TxReceipt> {
        self.send(
            "freeSlot",
            target_slot(slot),
            self.contract
                .freeSlot_0(slot.0, reward_recipient, collateral_recipient),
        )
        .await
    }

    // ------------------------------------------------------------ validator calls

    /// Marks the proof of `period` missing; the sender gets the validator reward.
    ///
    /// # Errors
    /// [`Error::Reverted`] with e.g. `PeriodNotEnded`, `ProofNotMissing`, `ProofNotRequired`.
    pub async fn mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<TxReceipt> {
        self.send(
            "markProofAsMissing",
            target_slot(slot),
            self.contract.markProofAsMissing(slot.0, period),
        )
        .await
    }

    /// Whether the proof of `period` can be marked missing now; `Err` carries the reason.
    ///
    /// # Errors
    /// [`Error::Reverted`] with the reason it cannot, [`Error::Rpc`].
    pub async fn can_mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<()> {
        self.view(
            "canMarkProofAsMissing",
            target_slot(slot),
            self.contract.canMarkProofAsMissing(slot.0, period),
        )
        .await
        .map(|_| ())
    }

    // ------------------------------------------------------------ views

    /// The request with id `request`.
    ///
    /// # Errors
    /// [`Error::Reverted`] with `UnknownRequest`.
    pub async fn get_request(&self, request: RequestId) -> Result<StorageRequest> {
        let r = self
            .view(
                "getRequest",
                target_request(request),
                self.contract.getRequest(request.0),
            )
            .await?;
        Ok(StorageRequest::from_abi(&r))
    }

    /// The request and index of a slot that was filled.
    ///
    /// # Errors
    /// [`Error::Reverted`] with `SlotIsFree`.
    pub async fn get_active_slot(&self, slot: SlotId) -> Result<(StorageRequest, u64)> {
        let a = self
            .view(
                "getActiveSlot",
                target_slot(slot),
                self.contract.getActiveSlot(slot.0),
            )
            .await?;
        Ok((StorageRequest::from_abi(&a.request), a.slotIndex))
    }

    /// The state of a request.
    ///
    /// # Errors
    /// [`Error::Reverted`] with `UnknownRequest`.
    pub async fn request_state(&self, request: RequestId) -> Result<RequestState> {
        let s = self
            .view(
                "requestState",
                target_request(request),
                self.contract.requestState(request.0),
            )
            .await?;
        let v = s;
        RequestState::from_u8(v).ok_or(Error::UnexpectedValue {
            what: "RequestState",
            value: v.to_string(),
        })
    }

    /// The state of a slot.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn slot_state(&self, slot: SlotId) -> Result<SlotState> {
        let s = self
            .view(
                "slotState",
                target_slot(slot),
                self.contract.slotState(slot.0),
            )
            .await?;
        let v = s;
        SlotState::from_u8(v).ok_or(Error::UnexpectedValue {
            what: "SlotState",
            value: v.to_string(),
        })
    }

    /// When the request ends (or ended, when cancelled or failed).
    ///
    /// # Errors
    /// [`Error::Reverted`] with `UnknownRequest`.
    pub async fn request_end(&self, request: RequestId) -> Result<u64> {
        self.view(
            "requestEnd",
            target_request(request),
            self.contract.requestEnd(request.0),
        )
        .await
    }

    /// When the request expires unless filled.
    ///
    /// # Errors
    /// [`Error::Reverted`] with `UnknownRequest`.
    pub async fn request_expiry(&self, request: RequestId) -> Result<u64> {
        self.view(
            "requestExpiry",
            target_request(request),
            self.contract.requestExpiry(request.0),
        )
        .await
    }

    /// The host of a slot, if it has one.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn get_host(&self, slot: SlotId) -> Result<Option<Address>> {
        let host = self
            .view("getHost", target_slot(slot), self.contract.getHost(slot.0))
            .await?;
        Ok((host != Address::ZERO).then_some(host))
    }

    /// The collateral the slot's host would get back now.
    ///
    /// # Errors
    /// [`Error::Reverted`] with `SlotIsFree`.
    pub async fn current_collateral(&self, slot: SlotId) -> Result<U256> {
        self.view(
            "currentCollateral",
            target_slot(slot),
            self.contract.currentCollateral(slot.0),
        )
        .await
    }

    /// `proofProbability * (256 - downtime) / 256` for the slot's request.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn slot_probability(&self, slot: SlotId) -> Result<U256> {
        self.view(
            "slotProbability",
            target_slot(slot),
            self.contract.slotProbability(slot.0),
        )
        .await
    }

    /// Proofs the current host missed.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn missing_proofs(&self, slot: SlotId) -> Result<u64> {
        self.view(
            "missingProofs",
            target_slot(slot),
            self.contract.missingProofs(slot.0),
        )
        .await
    }

    /// The slot's pointer at the latest block.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn pointer(&self, slot: SlotId) -> Result<u8> {
        self.view(
            "getPointer",
            target_slot(slot),
            self.contract.getPointer(slot.0),
        )
        .await
    }

    /// The challenge a proof must answer now (`getChallenge`): the prover's
    /// entropy is [`crate::challenge_to_field`] of it. It stays the same from block
    /// to block within a period unless the pointer wraps; prove and send within
    /// the same period.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn challenge(&self, slot: SlotId) -> Result<[u8; 32]> {
        Ok(self
            .view(
                "getChallenge",
                target_slot(slot),
                self.contract.getChallenge(slot.0),
            )
            .await?
            .0)
    }

    /// The challenge of the next block, the one a transaction sent now lands in
    /// when no other comes first ([`MarketplaceClient::next_block`]): computed from
    /// the pointer formula, the next block's period and the hash of the block it
    /// points at. Unlike [`MarketplaceClient::challenge`], it is right also when the
    /// pointer wraps at the next block, and when the latest block is in an earlier
    /// period than the clock (a chain that mines on demand).
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn next_block_challenge(&self, slot: SlotId) -> Result<[u8; 32]> {
        let (number, timestamp) = self.next_block().await?;
        self.challenge_at(slot, number, self.config.period_of(timestamp))
            .await
    }

    /// The challenge of `slot` in block `block_number` (at most one block ahead of
    /// the latest) if that block falls in `period`.
    ///
    /// # Errors
    /// [`Error::Rpc`]; [`Error::InvalidInput`] when the block it points at is not mined.
    pub async fn challenge_at(
        &self,
        slot: SlotId,
        block_number: u64,
        period: u64,
    ) -> Result<[u8; 32]> {
        let p = crate::types::pointer(
            block_number,
            period,
            self.config.proofs.downtime_product,
            slot,
        );
        let referenced = block_number
            .checked_sub(1 + u64::from(p))
            .ok_or(Error::InvalidInput {
                what: "block number",
                message: format!("{block_number} is below 257"),
            })?;
        let block = self
            .provider
            .get_block_by_number(referenced.into())
            .await
            .map_err(|e| Error::rpc("eth_getBlockByNumber", e))?
            .ok_or(Error::InvalidInput {
                what: "block number",
                message: format!("block {referenced} not mined"),
            })?;
        Ok(crate::types::challenge_from_block_hash(block.header.hash))
    }

    /// Whether a proof is due in the current period.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn is_proof_required(&self, slot: SlotId) -> Result<bool> {
        self.view(
            "isProofRequired",
            target_slot(slot),
            self.contract.isProofRequired(slot.0),
        )
        .await
    }

    /// Whether a proof will be due once the pointer leaves the downtime.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn will_proof_be_required(&self, slot: SlotId) -> Result<bool> {
        self.view(
            "willProofBeRequired",
            target_slot(slot),
            self.contract.willProofBeRequired(slot.0),
        )
        .await
    }

    /// Whether this account may reserve the slot now.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn can_reserve_slot(&self, request: RequestId, index: u64) -> Result<bool> {
        let target = Target::Slot {
            slot: SlotId::new(request, index),
            index: Some(index),
        };
        self.view(
            "canReserveSlot",
            target,
            self.contract.canReserveSlot(request.0, index),
        )
        .await
    }

    /// This account's requests that have not been withdrawn.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn my_requests(&self) -> Result<Vec<RequestId>> {
        let ids = self
            .view(
                "myRequests",
                Target::Contract("Marketplace"),
                self.contract.myRequests(),
            )
            .await?;
        Ok(ids.into_iter().map(RequestId).collect())
    }

    /// This account's slots that have not been paid or freed.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn my_slots(&self) -> Result<Vec<SlotId>> {
        let ids = self
            .view(
                "mySlots",
                Target::Contract("Marketplace"),
                self.contract.mySlots(),
            )
            .await?;
        Ok(ids.into_iter().map(SlotId).collect())
    }

    // ------------------------------------------------------------ time

    /// The latest block's number.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn block_number(&self) -> Result<u64> {
        self.provider
            .get_block_number()
            .await
            .map_err(|e| Error::rpc("eth_blockNumber", e))
    }

    /// The latest block's timestamp.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn timestamp(&self) -> Result<u64> {
        crate::chain::latest_timestamp(&self.provider).await
    }

    /// The period of the latest block.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn current_period(&self) -> Result<u64> {
        Ok(self.config.period_of(self.timestamp().await?))
    }

    /// The number and timestamp of the block a transaction sent now lands in, as the
    /// node sees it (the `pending` block). On a chain that mines only when a
    /// transaction comes (anvil's automine) the latest block can be minutes behind the
    /// clock, while the next block takes the clock's time: proofs are timed by this.
    /// Never before the latest block's number and time plus one (what a node without a
    /// pending block gives).
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn next_block(&self) -> Result<(u64, u64)> {
        let pending: std::result::Result<serde_json::Value, _> = self
            .provider
            .raw_request("eth_getBlockByNumber".into(), ("pending", false))
            .await;
        let field = |v: &serde_json::Value, k: &str| {
            v[k].as_str()
                .and_then(|x| u64::from_str_radix(x.trim_start_matches("0x"), 16).ok())
        };
        let latest = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|e| Error::rpc("eth_getBlockByNumber", e))?
            .ok_or_else(|| Error::UnexpectedValue {
                what: "latest block",
                value: "none".into(),
            })?;
        let (number, timestamp) = (latest.header.number, latest.header.timestamp);
        let block_secs = {
            let mut blocks = self
                .blocks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            blocks.observe(number, timestamp);
            blocks.block_secs()
        };
        // A block's time is after its parent's: when blocks came faster than one a
        // second, the chain's clock runs ahead of the pending block's. A node that
        // keeps no pending block (most hosted ones answer with the latest, or null):
        // the next block comes a block time after the latest.
        Ok(match pending {
            Ok(v) if field(&v, "timestamp").is_some_and(|t| t > timestamp) => (
                field(&v, "number").unwrap_or(0).max(number + 1),
                field(&v, "timestamp").unwrap_or(0).max(timestamp + 1),
            ),
            _ => (number + 1, timestamp + block_secs),
        })
    }

    /// The period of the next block (see [`MarketplaceClient::next_block`]): the
    /// period a transaction sent now counts in.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn next_period(&self) -> Result<u64> {
        Ok(self.config.period_of(self.next_block().await?.1))
    }

    // ------------------------------------------------------------ events

    /// The marketplace's events in blocks `from..=to`, read in ranges of at most
    /// [`MarketplaceClient::log_range`] blocks (hosted endpoints refuse wide ones): a
    /// range the node refuses is halved and read again, down to one block, and the
    /// smaller range is kept for later reads.
    ///
    /// # Errors
    /// [`Error::Rpc`] (a one-block range refused too); logs that do not decode are
    /// skipped.
    pub async fn events(&self, from: u64, to: u64) -> Result<Vec<LoggedEvent>> {
        use std::sync::atomic::Ordering;
        let mut out = Vec::new();
        let mut start = from;
        while start <= to {
            let range = self.log_range.load(Ordering::Relaxed).max(1);
            let end = to.min(start.saturating_add(range - 1));
            let filter = Filter::new()
                .address(self.address())
                .from_block(start)
                .to_block(end);
            match self.provider.get_logs(&filter).await {
                Ok(logs) => {
                    out.extend(logs.into_iter().filter_map(|log| {
                        let decoded = MarketplaceEvents::decode_log(&log.inner).ok()?;
                        Some(LoggedEvent {
                            block_number: log.block_number.unwrap_or_default(),
                            tx: log.transaction_hash.unwrap_or_default(),
                            event: MarketEvent::from_abi(decoded.data),
                        })
                    }));
                    if end == u64::MAX {
                        break;
                    }
                    start = end + 1;
                }
                Err(e) if end > start && is_range_refusal(&e.to_string()) => {
                    let half = (end - start).div_ceil(2).max(1);
                    tracing::debug!(start, end, half, error = %e, "eth_getLogs range refused; halved");
                    self.log_range.fetch_min(half, Ordering::Relaxed);
                }
                Err(e) => return Err(Error::rpc(format!("eth_getLogs {start}..={end}"), e)),
            }
        }
        Ok(out)
    }

    /// The widest block range one `eth_getLogs` asks for now: the configured one
    /// ([`DEFAULT_LOG_RANGE`] unless set), or less once the node refused it.
    pub fn log_range(&self) -> u64 {
        self.log_range.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the widest block range one `eth_getLogs` asks for (at least 1); the
    /// client's clones share it.
    pub fn set_log_range(&self, blocks: u64) {
        self.log_range
            .store(blocks.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The hash of block `number`, `None` past the chain's head.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn block_hash(&self, number: u64) -> Result<Option<B256>> {
        Ok(self
            .provider
            .get_block_by_number(number.into())
            .await
            .map_err(|e| Error::rpc("eth_getBlockByNumber", e))?
            .map(|b| b.header.hash))
    }
}

/// The ABI's `Request` type, for callers of the raw bindings.
pub type AbiRequest = abi::Request;
