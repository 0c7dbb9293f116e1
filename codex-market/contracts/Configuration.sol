// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

/// Percentages that govern collateral, slashing and rewards.
struct CollateralConfig {
    /// Share of the collateral a host that refills a slot in Repair does not have to post.
    uint8 repairRewardPercentage;
    /// Missed proofs after which a slot is freed by force.
    uint8 maxNumberOfSlashes;
    /// Share of the slot's collateral taken for each missed proof.
    uint8 slashPercentage;
    /// Share of each slashed amount paid to the account that marked the proof missing.
    uint8 validatorRewardPercentage;
}

/// The proof clock.
struct ProofConfig {
    /// Seconds per period.
    uint64 period;
    /// Seconds after the end of a period during which a missing proof can be marked.
    uint64 timeout;
    /// Pointer values (out of 256) during which no proof is required.
    uint8 downtime;
    /// Prime that moves the pointer from one period to the next.
    uint8 downtimeProduct;
    /// Identifies the verifying key the verifier checks against.
    string zkeyHash;
}

/// Limits on reservations.
struct SlotReservationsConfig {
    /// Hosts that may reserve one slot at the same time.
    uint8 maxReservations;
}

/// Everything a marketplace is deployed with.
struct MarketplaceConfig {
    CollateralConfig collateral;
    ProofConfig proofs;
    SlotReservationsConfig reservations;
    /// Longest duration a request may ask for, in seconds.
    uint64 requestDurationLimit;
}
