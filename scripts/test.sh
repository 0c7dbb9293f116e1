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

# Every test is built once. Then the tests bound by real time rather than by the CPU
# (anvil's block times: `chain_timing` spends 2 CPU-seconds of its 115 s, codex-market's
# `it` 26 of 56) run in a second lane beside all the others, which skip them. Tests that
# prove or erasure-code against a clock stay in the first lane, so that no second lane
# takes the cores they were sized for; so do the tests that start node processes or
# build network namespaces. The second lane and the examples run the
# binaries this build made, from their package's directory as cargo would (a `cargo
# test -p` or `cargo run` of a few packages would resolve features for those alone and
# build again).
built=$(mktemp)
lane=$(mktemp)
trap 'rm -f "$built" "$lane"' EXIT
cargo test --workspace --locked --no-run --message-format=json-render-diagnostics >"$built"

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

timed=(chain_timing it)
skip=()
for t in "${timed[@]}"; do
    found=$(artifact test "$t")
    read -r dir exe <<<"$found"
    names=$("$exe" --list --format terse)
    while read -r name; do
        skip+=(--skip "$name")
    done < <(sed -n 's/: test$//p' <<<"$names")
done
(
    for t in "${timed[@]}"; do
        found=$(artifact test "$t") || exit 1
        read -r dir exe <<<"$found"
        echo "--- $t"
        (cd "$dir" && "$exe") || exit 1
    done
) >"$lane" 2>&1 &
second=$!
first=0
cargo test --workspace --locked --no-fail-fast -- --exact "${skip[@]}" || first=$?
second_rc=0
wait "$second" || second_rc=$?
echo "--- the second lane (tests bound by real time):"
cat "$lane"
if [ "$first" -ne 0 ] || [ "$second_rc" -ne 0 ]; then
    echo "error: tests failed (first lane: exit $first, second lane: exit $second_rc)" >&2
    exit 1
fi

# The examples, as `cargo test` built them (`cargo run --example` would build them again
# with the root package's features alone).
for example in embed custom_swarm store_and_erasure custom_store; do
    found=$(artifact example "$example")
    read -r dir exe <<<"$found"
    echo "--- example $example"
    (cd "$dir" && "$exe")
done
