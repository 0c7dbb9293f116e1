//! Integration tests of codex-market on a real anvil running the compiled contracts.
//!
//! Every test starts its own anvil on 127.0.0.1 and a free port and stops it at
//! the end. Token balances are asserted exactly, computed with the formulas of
//! Codex's marketplace from the times the chain recorded.

#![allow(clippy::unwrap_used)]

mod artifacts;
mod common;
mod events;
mod lifecycle;
mod outcomes;
mod proofs;
mod proxy;
mod reverts;
mod transactions;
