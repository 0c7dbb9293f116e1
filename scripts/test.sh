#!/usr/bin/env bash
# Runs the whole test suite: the workspace's tests (unit, property, integration on
# loopback, anvil, real proofs, the devnet scenario), then a short run of every fuzz
# target from its seed corpus (FUZZ_SECONDS each, default 5; see fuzz/README.md).
# scripts/setup.sh installs the pinned npm tools (solc, anvil) first.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-shot build gains nothing from incremental state, which costs disk.
export CARGO_INCREMENTAL=0
scripts/setup.sh

# The root crate's features (see "Cargo features" in README.md): without any, and
# with each alone, it builds; without any, none of the heavy stacks is compiled.
cargo check -p codex --no-default-features --locked
for feature in rest net proofs market logging metrics; do
    cargo check -p codex --no-default-features --features "$feature" --locked
done
heavy='^[│├└─ ]*(axum|libp2p|alloy|halo2-axiom|snark-verifier-sdk)(-[a-z0-9_-]+)? v'
tree=$(cargo tree -p codex --no-default-features -e normal --locked)
if grep -E "$heavy" <<<"$tree"; then
    echo "error: codex --no-default-features depends on the crates above" >&2
    exit 1
fi

cargo test --workspace --locked
cargo run --locked --example embed
cargo run --locked --example custom_swarm
cargo run --locked --example store_and_erasure
cargo run --locked --example custom_store
FUZZ_SECONDS="${FUZZ_SECONDS:-5}" scripts/fuzz.sh
