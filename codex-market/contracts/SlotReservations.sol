// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

import {SlotReservationsConfig} from "./Configuration.sol";
import {slotIdOf} from "./Requests.sol";

/// Hosts reserve a slot before filling it; at most `maxReservations` per slot.
abstract contract SlotReservations {
    error SlotReservations_ReservationNotAllowed();

    event SlotReservationsFull(bytes32 indexed requestId, uint64 slotIndex);

    mapping(bytes32 => address[]) private _reservations;
    uint8 private immutable _maxReservations;

    constructor(SlotReservationsConfig memory config) {
        _maxReservations = config.maxReservations;
    }

    /// Whether the slot exists and is Free or Repair.
    function _slotReservable(bytes32 requestId, uint64 slotIndex) internal view virtual returns (bool);

    /// Reserves the slot for the sender.
    function reserveSlot(bytes32 requestId, uint64 slotIndex) public {
        if (!canReserveSlot(requestId, slotIndex)) {
            revert SlotReservations_ReservationNotAllowed();
        }
        address[] storage reservations = _reservations[slotIdOf(requestId, slotIndex)];
        reservations.push(msg.sender);
        if (reservations.length == _maxReservations) {
            emit SlotReservationsFull(requestId, slotIndex);
        }
    }

    /// Whether the sender may reserve the slot now.
    function canReserveSlot(bytes32 requestId, uint64 slotIndex) public view returns (bool) {
        address[] storage reservations = _reservations[slotIdOf(requestId, slotIndex)];
        return
            _slotReservable(requestId, slotIndex) &&
            reservations.length < _maxReservations &&
            !_contains(reservations, msg.sender);
    }

    function _hasReservation(bytes32 slotId, address host) internal view returns (bool) {
        return _contains(_reservations[slotId], host);
    }

    function _clearReservations(bytes32 slotId) internal {
        delete _reservations[slotId];
    }

    function _contains(address[] storage reservations, address host) private view returns (bool) {
        for (uint256 i = 0; i < reservations.length; i++) {
            if (reservations[i] == host) {
                return true;
            }
        }
        return false;
    }
}
