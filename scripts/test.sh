#!/usr/bin/env bash
# Runs the whole test suite: the workspace's tests (unit, property, integration on
# loopback, anvil, real proofs, the devnet scenario), then a short run of every fuzz
# target from its seed corpus (FUZZ_SECONDS each, default 5; see fuzz/README.md).
# scripts/setup.sh installs the pinned npm tools (solc, anvil) first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --locked
cargo run --locked --example custom_swarm
FUZZ_SECONDS="${FUZZ_SECONDS:-5}" scripts/fuzz.sh
