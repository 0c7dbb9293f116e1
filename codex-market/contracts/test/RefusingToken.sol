// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// For tests: an ERC-20 whose transfers return false, instead of moving tokens,
/// while `refusing` is set.
contract RefusingToken is ERC20 {
    bool public refusing;

    constructor() ERC20("RefusingToken", "RFT") {}

    function mint(address holder, uint256 amount) public {
        _mint(holder, amount);
    }

    function setRefusing(bool refusing_) public {
        refusing = refusing_;
    }

    function transfer(address to, uint256 value) public override returns (bool) {
        if (refusing) {
            return false;
        }
        return super.transfer(to, value);
    }

    function transferFrom(address from, address to, uint256 value) public override returns (bool) {
        if (refusing) {
            return false;
        }
        return super.transferFrom(from, to, value);
    }
}
