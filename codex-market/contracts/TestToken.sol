// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// An ERC-20 token for development: anyone may mint.
contract TestToken is ERC20 {
    constructor() ERC20("TestToken", "TST") {}

    /// Creates `amount` tokens for `holder`.
    function mint(address holder, uint256 amount) public {
        _mint(holder, amount);
    }
}
