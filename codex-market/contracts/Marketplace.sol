// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {EnumerableSet} from "@openzeppelin/contracts/utils/structs/EnumerableSet.sol";
import {MarketplaceConfig} from "./Configuration.sol";
import {Request, Ask, ActiveSlot, RequestState, SlotState, requestIdOf, slotIdOf} from "./Requests.sol";
import {IStorageProofVerifier} from "./IStorageProofVerifier.sol";
import {Proofs} from "./Proofs.sol";
import {SlotReservations} from "./SlotReservations.sol";

/// The storage marketplace, following the rules of Codex's marketplace.
///
/// A client pays up front for a request split into slots; hosts reserve a slot,
/// fill it with collateral and a storage proof, keep proving when challenged and
/// are paid when the request finishes. Missed proofs are slashed, too many of
/// them free the slot for repair by another host.
contract Marketplace is SlotReservations, Proofs {
    using EnumerableSet for EnumerableSet.Bytes32Set;

    error Marketplace_RepairRewardPercentageTooHigh();
    error Marketplace_SlashPercentageTooHigh();
    error Marketplace_MaximumSlashingTooHigh();
    error Marketplace_ValidatorRewardPercentageTooHigh();
    error Marketplace_InvalidExpiry();
    error Marketplace_InvalidMaxSlotLoss();
    error Marketplace_InsufficientSlots();
    error Marketplace_InsufficientDuration();
    error Marketplace_InsufficientProofProbability();
    error Marketplace_InsufficientCollateral();
    error Marketplace_InsufficientReward();
    error Marketplace_InvalidClientAddress();
    error Marketplace_RequestAlreadyExists();
    error Marketplace_InvalidSlot();
    error Marketplace_InvalidCid();
    error Marketplace_SlotNotFree();
    error Marketplace_InvalidSlotHost();
    error Marketplace_AlreadyPaid();
    error Marketplace_TransferFailed();
    error Marketplace_UnknownRequest();
    error Marketplace_InvalidState();
    error Marketplace_StartNotBeforeExpiry();
    error Marketplace_SlotNotAcceptingProofs();
    error Marketplace_ProofNotSubmittedByHost();
    error Marketplace_SlotIsFree();
    error Marketplace_ReservationRequired();
    error Marketplace_NothingToWithdraw();
    error Marketplace_DurationExceedsLimit();

    event StorageRequested(bytes32 requestId, Ask ask, uint64 expiry);
    event RequestFulfilled(bytes32 indexed requestId);
    event RequestFailed(bytes32 indexed requestId);
    event RequestCancelled(bytes32 indexed requestId);
    event SlotFilled(bytes32 indexed requestId, uint64 slotIndex);
    event SlotFreed(bytes32 indexed requestId, uint64 slotIndex);
    event ProofSubmitted(bytes32 id);

    struct RequestContext {
        RequestState state;
        uint256 fundsToReturnToClient;
        uint64 slotsFilled;
        uint64 startedAt;
        uint64 endsAt;
        uint64 expiresAt;
    }

    struct Slot {
        SlotState state;
        bytes32 requestId;
        uint64 filledAt;
        uint64 slotIndex;
        uint256 currentCollateral;
        address host;
    }

    MarketplaceConfig private _config;
    IERC20 private immutable _token;

    mapping(bytes32 => Request) private _requests;
    mapping(bytes32 => RequestContext) private _contexts;
    mapping(bytes32 => Slot) private _slots;
    mapping(address => EnumerableSet.Bytes32Set) private _requestsOf;
    mapping(address => EnumerableSet.Bytes32Set) private _slotsOf;

    constructor(
        MarketplaceConfig memory config,
        IERC20 token_,
        IStorageProofVerifier verifier
    ) SlotReservations(config.reservations) Proofs(config.proofs, verifier) {
        if (config.collateral.repairRewardPercentage > 100) {
            revert Marketplace_RepairRewardPercentageTooHigh();
        }
        if (config.collateral.slashPercentage > 100) {
            revert Marketplace_SlashPercentageTooHigh();
        }
        if (uint256(config.collateral.maxNumberOfSlashes) * config.collateral.slashPercentage > 100) {
            revert Marketplace_MaximumSlashingTooHigh();
        }
        if (config.collateral.validatorRewardPercentage > 100) {
            revert Marketplace_ValidatorRewardPercentageTooHigh();
        }
        _config = config;
        _token = token_;
    }

    // ---------------------------------------------------------------- views

    /// The configuration the marketplace was deployed with.
    function configuration() public view returns (MarketplaceConfig memory) {
        return _config;
    }

    /// The ERC-20 token payments and collateral are made in.
    function token() public view returns (IERC20) {
        return _token;
    }

    /// A request by id.
    function getRequest(bytes32 requestId) public view returns (Request memory) {
        return _knownRequest(requestId);
    }

    /// The filled (or once filled) slot and its request.
    function getActiveSlot(bytes32 slotId) public view returns (ActiveSlot memory) {
        Slot storage slot = _nonFreeSlot(slotId);
        return ActiveSlot(_requests[slot.requestId], slot.slotIndex);
    }

    /// The host of a slot, or the zero address.
    function getHost(bytes32 slotId) public view returns (address) {
        return _slots[slotId].host;
    }

    /// The collateral the slot's host would get back now.
    function currentCollateral(bytes32 slotId) public view returns (uint256) {
        return _nonFreeSlot(slotId).currentCollateral;
    }

    /// The end of the request: when it finishes, or when it was cancelled or failed.
    function requestEnd(bytes32 requestId) public view returns (uint64) {
        _knownRequest(requestId);
        RequestContext storage context = _contexts[requestId];
        if (requestState(requestId) == RequestState.Cancelled) {
            return context.expiresAt;
        }
        return context.endsAt;
    }

    /// The time after which an unfilled request is cancelled.
    function requestExpiry(bytes32 requestId) public view returns (uint64) {
        _knownRequest(requestId);
        return _contexts[requestId].expiresAt;
    }

    /// The state of a request, with expiry and end applied.
    function requestState(bytes32 requestId) public view returns (RequestState) {
        _knownRequest(requestId);
        RequestContext storage context = _contexts[requestId];
        RequestState state = context.state;
        if (state == RequestState.New && block.timestamp > context.expiresAt) {
            return RequestState.Cancelled;
        }
        if ((state == RequestState.New || state == RequestState.Started) && block.timestamp > context.endsAt) {
            return RequestState.Finished;
        }
        return state;
    }

    /// The state of a slot, with its request's state applied.
    function slotState(bytes32 slotId) public view override returns (SlotState) {
        Slot storage slot = _slots[slotId];
        if (slot.requestId == 0) {
            return SlotState.Free;
        }
        if (slot.state == SlotState.Paid) {
            return SlotState.Paid;
        }
        RequestState state = requestState(slot.requestId);
        if (state == RequestState.Cancelled) {
            return SlotState.Cancelled;
        }
        if (state == RequestState.Finished) {
            return SlotState.Finished;
        }
        if (state == RequestState.Failed) {
            return SlotState.Failed;
        }
        return slot.state;
    }

    /// `proofProbability * (256 - downtime) / 256`: 0 means every period.
    function slotProbability(bytes32 slotId) public view override returns (uint256) {
        Request storage request = _requests[_slots[slotId].requestId];
        return (request.ask.proofProbability * (256 - uint256(_config.proofs.downtime))) / 256;
    }

    /// The requests of the sender that have not been withdrawn.
    function myRequests() public view returns (bytes32[] memory) {
        return _requestsOf[msg.sender].values();
    }

    /// The slots the sender holds and has not been paid for.
    function mySlots() public view returns (bytes32[] memory) {
        return _slotsOf[msg.sender].values();
    }

    /// Reverts with the reason a missing proof cannot be marked now; succeeds otherwise.
    function canMarkProofAsMissing(bytes32 slotId, uint64 period) public view {
        if (slotState(slotId) != SlotState.Filled) {
            revert Marketplace_SlotNotAcceptingProofs();
        }
        _checkProofMissing(slotId, period);
    }

    // ---------------------------------------------------------------- client

    /// Creates a request and takes its full price from the client (approve first).
    function requestStorage(Request calldata request) public {
        if (request.client != msg.sender) {
            revert Marketplace_InvalidClientAddress();
        }
        bytes32 requestId = requestIdOf(request);
        if (_requests[requestId].client != address(0)) {
            revert Marketplace_RequestAlreadyExists();
        }
        _checkAsk(request);

        _requests[requestId] = request;
        RequestContext storage context = _contexts[requestId];
        context.endsAt = uint64(block.timestamp) + request.ask.duration;
        context.expiresAt = uint64(block.timestamp) + request.expiry;
        uint256 price = _maxPrice(request.ask);
        context.fundsToReturnToClient = price;
        _requestsOf[msg.sender].add(requestId);

        emit StorageRequested(requestId, request.ask, context.expiresAt);
        _pull(msg.sender, price);
    }

    /// Returns the client's funds once the request is Cancelled, Failed or Finished.
    function withdrawFunds(bytes32 requestId) public {
        withdrawFunds(requestId, msg.sender);
    }

    /// Returns the client's funds to `withdrawRecipient`.
    function withdrawFunds(bytes32 requestId, address withdrawRecipient) public {
        Request storage request = _knownRequest(requestId);
        if (request.client != msg.sender) {
            revert Marketplace_InvalidClientAddress();
        }
        RequestContext storage context = _contexts[requestId];
        RequestState state = requestState(requestId);
        if (state != RequestState.Cancelled && state != RequestState.Failed && state != RequestState.Finished) {
            revert Marketplace_InvalidState();
        }
        if (context.fundsToReturnToClient == 0) {
            revert Marketplace_NothingToWithdraw();
        }
        uint256 amount;
        if (state == RequestState.Cancelled) {
            context.state = RequestState.Cancelled;
            emit RequestCancelled(requestId);
            uint256 perSlot = uint256(context.endsAt - context.expiresAt) * _pricePerSlotPerSecond(request.ask);
            amount = context.fundsToReturnToClient + context.slotsFilled * perSlot;
        } else if (state == RequestState.Failed) {
            amount = _maxPrice(request.ask);
        } else {
            context.state = RequestState.Finished;
            amount = context.fundsToReturnToClient;
        }
        context.fundsToReturnToClient = 0;
        _requestsOf[msg.sender].remove(requestId);
        _push(withdrawRecipient, amount);
    }

    // ---------------------------------------------------------------- host

    /// Fills a reserved slot: proves it and posts collateral (approve first).
    function fillSlot(bytes32 requestId, uint64 slotIndex, bytes calldata proof) public {
        Request storage request = _knownRequest(requestId);
        if (slotIndex >= request.ask.slots) {
            revert Marketplace_InvalidSlot();
        }
        bytes32 slotId = slotIdOf(requestId, slotIndex);
        if (!_hasReservation(slotId, msg.sender)) {
            revert Marketplace_ReservationRequired();
        }
        RequestContext storage context = _contexts[requestId];
        if (context.state == RequestState.New && block.timestamp > context.expiresAt) {
            revert Marketplace_StartNotBeforeExpiry();
        }
        Slot storage slot = _slots[slotId];
        slot.requestId = requestId;
        slot.slotIndex = slotIndex;
        SlotState state = slotState(slotId);
        if (state != SlotState.Free && state != SlotState.Repair) {
            revert Marketplace_SlotNotFree();
        }

        slot.host = msg.sender;
        slot.filledAt = uint64(block.timestamp);
        slot.state = SlotState.Filled;
        _startRequiringProofs(slotId);
        _verifyProof(slotId, request, slotIndex, proof);

        context.fundsToReturnToClient -= _payout(request.ask, context.endsAt, slot.filledAt);
        uint256 collateral = _collateralPerSlot(request.ask);
        slot.currentCollateral = collateral;
        if (state == SlotState.Repair) {
            collateral -= (collateral * _config.collateral.repairRewardPercentage) / 100;
        }
        context.slotsFilled += 1;
        _slotsOf[msg.sender].add(slotId);
        emit SlotFilled(requestId, slotIndex);
        if (context.slotsFilled == request.ask.slots && context.state == RequestState.New) {
            context.state = RequestState.Started;
            context.startedAt = uint64(block.timestamp);
            emit RequestFulfilled(requestId);
        }
        _pull(msg.sender, collateral);
    }

    /// Submits the proof for the current period (host only).
    function submitProof(bytes32 slotId, bytes calldata proof) public {
        Slot storage slot = _slots[slotId];
        if (slot.host != msg.sender) {
            revert Marketplace_ProofNotSubmittedByHost();
        }
        if (slotState(slotId) != SlotState.Filled) {
            revert Marketplace_SlotNotAcceptingProofs();
        }
        _verifyProof(slotId, _requests[slot.requestId], slot.slotIndex, proof);
    }

    /// Frees the slot, paying the sender what it is owed.
    function freeSlot(bytes32 slotId) public {
        freeSlot(slotId, msg.sender, msg.sender);
    }

    /// Frees the slot: pays a finished or cancelled slot (reward and collateral
    /// to the given recipients), lets go of a failed one, and gives up a filled
    /// one (its whole collateral is lost).
    function freeSlot(bytes32 slotId, address rewardRecipient, address collateralRecipient) public {
        Slot storage slot = _nonFreeSlot(slotId);
        if (slot.host != msg.sender) {
            revert Marketplace_InvalidSlotHost();
        }
        SlotState state = slotState(slotId);
        if (state == SlotState.Paid) {
            revert Marketplace_AlreadyPaid();
        }
        if (state == SlotState.Finished) {
            _payOut(slotId, slot, _contexts[slot.requestId].endsAt, rewardRecipient, collateralRecipient);
        } else if (state == SlotState.Cancelled) {
            _payOut(slotId, slot, _contexts[slot.requestId].expiresAt, rewardRecipient, collateralRecipient);
        } else if (state == SlotState.Failed) {
            _slotsOf[msg.sender].remove(slotId);
        } else {
            _forciblyFreeSlot(slotId);
        }
    }

    // ---------------------------------------------------------------- validator

    /// Marks the proof of `period` missing: slashes the host, rewards the sender,
    /// and frees the slot after `maxNumberOfSlashes` missed proofs.
    function markProofAsMissing(bytes32 slotId, uint64 period) public {
        if (slotState(slotId) != SlotState.Filled) {
            revert Marketplace_SlotNotAcceptingProofs();
        }
        _markProofAsMissing(slotId, period);
        Slot storage slot = _slots[slotId];
        uint256 slashed = (_collateralPerSlot(_requests[slot.requestId].ask) * _config.collateral.slashPercentage) /
            100;
        uint256 reward = (slashed * _config.collateral.validatorRewardPercentage) / 100;
        slot.currentCollateral -= slashed;
        if (missingProofs(slotId) >= _config.collateral.maxNumberOfSlashes) {
            _forciblyFreeSlot(slotId);
        }
        _push(msg.sender, reward);
    }

    // ---------------------------------------------------------------- internals

    function _checkAsk(Request calldata request) private view {
        Ask calldata ask = request.ask;
        if (ask.duration == 0) {
            revert Marketplace_InsufficientDuration();
        }
        if (ask.duration > _config.requestDurationLimit) {
            revert Marketplace_DurationExceedsLimit();
        }
        if (request.expiry == 0 || request.expiry >= ask.duration) {
            revert Marketplace_InvalidExpiry();
        }
        if (ask.slots == 0) {
            revert Marketplace_InsufficientSlots();
        }
        if (ask.maxSlotLoss > ask.slots) {
            revert Marketplace_InvalidMaxSlotLoss();
        }
        if (ask.proofProbability == 0) {
            revert Marketplace_InsufficientProofProbability();
        }
        if (ask.collateralPerByte == 0) {
            revert Marketplace_InsufficientCollateral();
        }
        if (ask.pricePerBytePerSecond == 0) {
            revert Marketplace_InsufficientReward();
        }
        if (request.content.cid.length == 0) {
            revert Marketplace_InvalidCid();
        }
    }

    function _slotReservable(bytes32 requestId, uint64 slotIndex) internal view override returns (bool) {
        Request storage request = _requests[requestId];
        if (request.client == address(0) || slotIndex >= request.ask.slots) {
            return false;
        }
        RequestState requestNow = requestState(requestId);
        if (requestNow != RequestState.New && requestNow != RequestState.Started) {
            return false;
        }
        SlotState state = slotState(slotIdOf(requestId, slotIndex));
        return state == SlotState.Free || state == SlotState.Repair;
    }

    function _verifyProof(bytes32 slotId, Request storage request, uint64 slotIndex, bytes calldata proof) private {
        uint256[] memory pubSignals = new uint256[](3);
        pubSignals[0] = _challengeToField(getChallenge(slotId));
        pubSignals[1] = _rootToField(request.content.merkleRoot);
        pubSignals[2] = slotIndex;
        _proofReceived(slotId, proof, pubSignals);
        emit ProofSubmitted(slotId);
    }

    /// The slot's host leaves (or is made to leave): its payout returns to the
    /// client, its collateral stays here, the slot goes to Repair.
    function _forciblyFreeSlot(bytes32 slotId) private {
        Slot storage slot = _slots[slotId];
        bytes32 requestId = slot.requestId;
        Request storage request = _requests[requestId];
        RequestContext storage context = _contexts[requestId];

        context.fundsToReturnToClient += _payout(request.ask, context.endsAt, slot.filledAt);
        _slotsOf[slot.host].remove(slotId);
        _clearReservations(slotId);
        _resetMissingProofs(slotId);
        slot.state = SlotState.Repair;
        slot.filledAt = 0;
        slot.currentCollateral = 0;
        slot.host = address(0);
        context.slotsFilled -= 1;
        emit SlotFreed(requestId, slot.slotIndex);

        if (request.ask.slots - context.slotsFilled > request.ask.maxSlotLoss && context.state == RequestState.Started) {
            context.state = RequestState.Failed;
            context.endsAt = uint64(block.timestamp) - 1;
            emit RequestFailed(requestId);
        }
    }

    function _payOut(
        bytes32 slotId,
        Slot storage slot,
        uint64 paidUntil,
        address rewardRecipient,
        address collateralRecipient
    ) private {
        uint256 reward = _payout(_requests[slot.requestId].ask, paidUntil, slot.filledAt);
        uint256 collateral = slot.currentCollateral;
        _slotsOf[msg.sender].remove(slotId);
        slot.state = SlotState.Paid;
        slot.currentCollateral = 0;
        _push(rewardRecipient, reward);
        _push(collateralRecipient, collateral);
    }

    function _knownRequest(bytes32 requestId) private view returns (Request storage request) {
        request = _requests[requestId];
        if (request.client == address(0)) {
            revert Marketplace_UnknownRequest();
        }
    }

    function _nonFreeSlot(bytes32 slotId) private view returns (Slot storage slot) {
        slot = _slots[slotId];
        if (slot.requestId == 0) {
            revert Marketplace_SlotIsFree();
        }
    }

    function _pull(address from, uint256 amount) private {
        if (!_token.transferFrom(from, address(this), amount)) {
            revert Marketplace_TransferFailed();
        }
    }

    function _push(address to, uint256 amount) private {
        if (!_token.transfer(to, amount)) {
            revert Marketplace_TransferFailed();
        }
    }

    function _pricePerSlotPerSecond(Ask storage ask) private view returns (uint256) {
        return ask.pricePerBytePerSecond * ask.slotSize;
    }

    function _collateralPerSlot(Ask storage ask) private view returns (uint256) {
        return ask.collateralPerByte * ask.slotSize;
    }

    function _maxPrice(Ask calldata ask) private pure returns (uint256) {
        return uint256(ask.slots) * ask.duration * ask.pricePerBytePerSecond * ask.slotSize;
    }

    function _maxPrice(Ask storage ask) private view returns (uint256) {
        return uint256(ask.slots) * ask.duration * ask.pricePerBytePerSecond * ask.slotSize;
    }

    function _payout(Ask storage ask, uint64 until, uint64 from) private view returns (uint256) {
        return uint256(until - from) * _pricePerSlotPerSecond(ask);
    }

    /// The first 31 bytes of the challenge as a little-endian integer (< 2^248).
    function _challengeToField(bytes32 challenge) private pure returns (uint256) {
        return uint256(_byteSwap(bytes32(bytes31(challenge))));
    }

    /// The 32 bytes of the root as a little-endian integer.
    function _rootToField(bytes32 root) private pure returns (uint256) {
        return uint256(_byteSwap(root));
    }

    function _byteSwap(bytes32 input) private pure returns (bytes32) {
        uint256 v = uint256(input);
        v =
            ((v & 0xFF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00) >> 8) |
            ((v & 0x00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF) << 8);
        v =
            ((v & 0xFFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000) >> 16) |
            ((v & 0x0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF) << 16);
        v =
            ((v & 0xFFFFFFFF00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF00000000) >> 32) |
            ((v & 0x00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF) << 32);
        v =
            ((v & 0xFFFFFFFFFFFFFFFF0000000000000000FFFFFFFFFFFFFFFF0000000000000000) >> 64) |
            ((v & 0x0000000000000000FFFFFFFFFFFFFFFF0000000000000000FFFFFFFFFFFFFFFF) << 64);
        v = (v >> 128) | (v << 128);
        return bytes32(v);
    }
}
