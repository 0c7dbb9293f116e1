// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

import {Periods} from "./Periods.sol";
import {ProofConfig} from "./Configuration.sol";
import {SlotState} from "./Requests.sol";
import {IStorageProofVerifier} from "./IStorageProofVerifier.sol";

/// When proofs are due, what they are checked against, and which were missed.
///
/// Each slot has a pointer into the last 256 blocks that moves with every block
/// and jumps by `downtimeProduct` each period. The challenge is the hash of the
/// block it points at. A proof is required in a period when the challenge is a
/// multiple of the slot's probability and the pointer is outside the downtime.
abstract contract Proofs is Periods {
    error Proofs_InsufficientBlockHeight();
    error Proofs_InvalidProof();
    error Proofs_ProofAlreadySubmitted();
    error Proofs_PeriodNotEnded();
    error Proofs_ValidationTimedOut();
    error Proofs_ProofNotMissing();
    error Proofs_ProofNotRequired();
    error Proofs_ProofAlreadyMarkedMissing();

    IStorageProofVerifier private immutable _verifier;
    uint64 private immutable _timeout;
    uint8 private immutable _downtime;
    uint8 private immutable _downtimeProduct;

    mapping(bytes32 => uint64) private _slotStarts;
    mapping(bytes32 => uint64) private _missed;
    mapping(bytes32 => mapping(uint64 => bool)) private _received;
    mapping(bytes32 => mapping(uint64 => bool)) private _markedMissing;

    constructor(ProofConfig memory config, IStorageProofVerifier verifier) Periods(config.period) {
        // blockhash must reach 256 blocks back
        if (block.number <= 256) {
            revert Proofs_InsufficientBlockHeight();
        }
        _verifier = verifier;
        _timeout = config.timeout;
        _downtime = config.downtime;
        _downtimeProduct = config.downtimeProduct;
    }

    /// The state of a slot, as the marketplace sees it.
    function slotState(bytes32 slotId) public view virtual returns (SlotState);

    /// The divisor that decides whether a challenge requires a proof.
    function slotProbability(bytes32 slotId) public view virtual returns (uint256);

    /// Proofs missed by the current host of the slot.
    function missingProofs(bytes32 slotId) public view returns (uint64) {
        return _missed[slotId];
    }

    /// The slot's pointer at the current block and period.
    function getPointer(bytes32 slotId) public view returns (uint8) {
        return _pointer(slotId, _currentPeriod());
    }

    /// The challenge a proof submitted in the current block must answer.
    function getChallenge(bytes32 slotId) public view returns (bytes32) {
        return _challenge(_pointer(slotId, _currentPeriod()));
    }

    /// Whether the slot must be proven in the current period.
    function isProofRequired(bytes32 slotId) public view returns (bool) {
        return _isProofRequired(slotId, _currentPeriod());
    }

    /// Whether a proof will be required once the pointer leaves the downtime.
    function willProofBeRequired(bytes32 slotId) public view returns (bool) {
        (bool required, uint8 pointer) = _requirement(slotId, _currentPeriod());
        return required && pointer < _downtime;
    }

    function _pointer(bytes32 slotId, uint64 period) internal view returns (uint8) {
        uint256 blockTerm = block.number % 256;
        uint256 periodTerm = (uint256(period) * _downtimeProduct) % 256;
        uint256 slotTerm = uint256(slotId) % 256;
        return uint8((blockTerm + periodTerm + slotTerm) % 256);
    }

    function _challenge(uint8 pointer) internal view returns (bytes32) {
        bytes32 hash = blockhash(block.number - 1 - pointer);
        assert(hash != bytes32(0));
        return keccak256(abi.encode(hash));
    }

    function _requirement(bytes32 slotId, uint64 period) internal view returns (bool required, uint8 pointer) {
        if (slotState(slotId) != SlotState.Filled || period <= _periodOf(_slotStarts[slotId])) {
            return (false, 0);
        }
        pointer = _pointer(slotId, period);
        uint256 probability = slotProbability(slotId);
        required = probability == 0 || uint256(_challenge(pointer)) % probability == 0;
    }

    function _isProofRequired(bytes32 slotId, uint64 period) internal view returns (bool) {
        (bool required, uint8 pointer) = _requirement(slotId, period);
        return required && pointer >= _downtime;
    }

    /// Starts the proof clock of a slot that was just filled.
    function _startRequiringProofs(bytes32 slotId) internal {
        _slotStarts[slotId] = uint64(block.timestamp);
    }

    function _resetMissingProofs(bytes32 slotId) internal {
        _missed[slotId] = 0;
    }

    /// Verifies a proof for the current period and records it.
    function _proofReceived(bytes32 slotId, bytes calldata proof, uint256[] memory pubSignals) internal {
        uint64 period = _currentPeriod();
        if (_received[slotId][period]) {
            revert Proofs_ProofAlreadySubmitted();
        }
        if (!_verifier.verify(proof, pubSignals)) {
            revert Proofs_InvalidProof();
        }
        _received[slotId][period] = true;
    }

    /// Reverts unless the proof for `period` is missing and may be marked now.
    function _checkProofMissing(bytes32 slotId, uint64 period) internal view {
        uint256 end = _periodEnd(period);
        if (end >= block.timestamp) {
            revert Proofs_PeriodNotEnded();
        }
        if (block.timestamp >= end + _timeout) {
            revert Proofs_ValidationTimedOut();
        }
        if (_received[slotId][period]) {
            revert Proofs_ProofNotMissing();
        }
        if (!_isProofRequired(slotId, period)) {
            revert Proofs_ProofNotRequired();
        }
        if (_markedMissing[slotId][period]) {
            revert Proofs_ProofAlreadyMarkedMissing();
        }
    }

    function _markProofAsMissing(bytes32 slotId, uint64 period) internal {
        _checkProofMissing(slotId, period);
        _markedMissing[slotId][period] = true;
        _missed[slotId] += 1;
    }
}
