// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

/// Time cut into periods of a fixed number of seconds: period(t) = t / seconds.
abstract contract Periods {
    error Periods_InvalidSecondsPerPeriod();

    uint64 internal immutable _secondsPerPeriod;

    constructor(uint64 secondsPerPeriod) {
        if (secondsPerPeriod == 0) {
            revert Periods_InvalidSecondsPerPeriod();
        }
        _secondsPerPeriod = secondsPerPeriod;
    }

    function _periodOf(uint256 timestamp) internal view returns (uint64) {
        return uint64(timestamp / _secondsPerPeriod);
    }

    function _currentPeriod() internal view returns (uint64) {
        return _periodOf(block.timestamp);
    }

    /// The first second after `period`.
    function _periodEnd(uint64 period) internal view returns (uint256) {
        return (uint256(period) + 1) * _secondsPerPeriod;
    }
}
