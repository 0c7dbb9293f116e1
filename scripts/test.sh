#!/usr/bin/env bash
# Runs the whole test suite: the workspace's tests (unit, property, integration on
# loopback, anvil, real proofs, the devnet scenario, every fuzz target's committed
# inputs), and the examples. Fuzzing itself is scripts/fuzz.sh (see fuzz/README.md).
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

# Every test is built once, then run; the examples run as this build made them, from
# their package's directory as cargo would (`cargo run --example` resolves features for
# the root package alone and would build them again). `--no-fail-fast`: one failing
# binary does not hide the results of the others.
built=$(mktemp)
trap 'rm -f "$built"' EXIT
cargo test --workspace --locked --no-run --message-format=json-render-diagnostics >"$built"
cargo test --workspace --locked --no-fail-fast

# `artifact KIND NAME`: the package directory and the executable of the target built.
artifact() {
    local found
    found=$(sed -n 's/.*"manifest_path":"\([^"]*\)\/Cargo.toml","target":{"kind":\["'"$1"'"\],"crate_types":\["bin"\],"name":"'"$2"'".*"executable":"\([^"]*\)".*/\1 \2/p' "$built" | sort -u)
    if [ "$(wc -l <<<"$found")" -ne 1 ] || [ -z "$found" ]; then
        echo "error: expected one $1 target $2 in the build, found: ${found:-none}" >&2
        return 1
    fi
    echo "$found"
}

for example in embed custom_swarm store_and_erasure custom_store; do
    found=$(artifact example "$example")
    read -r dir exe <<<"$found"
    echo "--- example $example"
    (cd "$dir" && "$exe")
done
