// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

/// What a client asks of the hosts that store its dataset.
struct Ask {
    /// A proof is due about once every `proofProbability` periods.
    uint256 proofProbability;
    /// Payment per byte of a slot per second, in token base units.
    uint256 pricePerBytePerSecond;
    /// Collateral a host posts per byte of its slot.
    uint256 collateralPerByte;
    /// Number of slots (hosts) the dataset is split into.
    uint64 slots;
    /// Size of one slot in bytes.
    uint64 slotSize;
    /// Seconds the storage lasts, counted from the request.
    uint64 duration;
    /// How many slots may be lost before the request fails.
    uint64 maxSlotLoss;
}

/// What is stored: the manifest CID and the dataset (verify) root, little-endian.
struct Content {
    bytes cid;
    bytes32 merkleRoot;
}

/// A storage request. Its id is `keccak256(abi.encode(request))`.
struct Request {
    address client;
    Ask ask;
    Content content;
    /// Seconds after the request at which it is cancelled unless all slots are filled.
    uint64 expiry;
    bytes32 nonce;
}

/// A filled slot with the request it belongs to.
struct ActiveSlot {
    Request request;
    uint64 slotIndex;
}

enum RequestState {
    New,
    Started,
    Cancelled,
    Finished,
    Failed
}

enum SlotState {
    Free,
    Filled,
    Finished,
    Failed,
    Paid,
    Cancelled,
    Repair
}

/// The id of a request.
function requestIdOf(Request calldata request) pure returns (bytes32) {
    return keccak256(abi.encode(request));
}

/// The id of slot `slotIndex` of request `requestId`.
function slotIdOf(bytes32 requestId, uint64 slotIndex) pure returns (bytes32) {
    return keccak256(abi.encode(requestId, slotIndex));
}
