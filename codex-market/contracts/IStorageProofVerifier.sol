// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

/// Checks a storage proof against its public inputs
/// `[challenge field, dataset root field, slot index]`.
interface IStorageProofVerifier {
    /// True when `proof` is valid for `pubSignals`.
    function verify(bytes calldata proof, uint256[] calldata pubSignals) external view returns (bool);
}
