// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

import {IStorageProofVerifier} from "../IStorageProofVerifier.sol";

/// For tests of rules unrelated to proofs only: accepts any proof that is not
/// empty and does not start with a zero byte.
contract TestVerifier is IStorageProofVerifier {
    function verify(bytes calldata proof, uint256[] calldata) external pure returns (bool) {
        return proof.length > 0 && proof[0] != 0;
    }
}
