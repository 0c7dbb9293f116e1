//! `sol!` bindings generated from the committed artifacts in `artifacts/`.
//!
//! The Rust types of the rest of the crate convert to and from these; use them
//! directly only for what the typed client does not cover.

#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::too_many_arguments
)]

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    Marketplace,
    "artifacts/Marketplace.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    TestToken,
    "artifacts/TestToken.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    Halo2Verifier,
    "artifacts/Halo2Verifier.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    TestVerifier,
    "artifacts/TestVerifier.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    EchoProofCheck,
    "artifacts/EchoProofCheck.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    RefusingToken,
    "artifacts/RefusingToken.json"
);
