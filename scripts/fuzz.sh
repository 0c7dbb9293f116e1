#!/usr/bin/env bash
# Fuzzes every decoder of outside input (fuzz/, cargo-fuzz + libFuzzer): installs
# cargo-fuzz at a pinned version if missing, builds every target, then runs each for
# FUZZ_SECONDS (default 10) from its committed seed corpus. Fails if any target crashes
# (the crashing input is left in fuzz/artifacts/<target>/). A long run:
#   FUZZ_SECONDS=3600 scripts/fuzz.sh            # every target for an hour
#   FUZZ_TARGETS="manifest cid" scripts/fuzz.sh  # some of them
# See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-10}
# address (default) or none; see fuzz/README.md.
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}

# The stable toolchain takes the -Z flags cargo-fuzz passes (-Zsanitizer=address and
# libFuzzer's coverage options) once RUSTC_BOOTSTRAP=1 is set; no nightly needed.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# -a: debug assertions and overflow checks on, as in the test suite's builds.
flags=(--sanitizer "$FUZZ_SANITIZER" --debug-assertions)
read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"

start=$SECONDS
cargo fuzz build "${flags[@]}"
echo "fuzz: built ${#targets[@]} targets in $((SECONDS - start)) s"

failed=()
for t in "${targets[@]}"; do
    # proof_verify sets up a real verifier in its first input (about 30 s under ASan
    # without the cache in fuzz/target/proof-keys): do that once on the seed before the
    # timed run, so that FUZZ_SECONDS are spent fuzzing.
    if [[ $t == proof_verify && ! -d fuzz/target/proof-keys ]]; then
        cargo fuzz run "${flags[@]}" "$t" fuzz/corpus/proof_verify/fixture_proof \
            >"fuzz/target/$t.setup.log" 2>&1 || true
    fi
    # New inputs go to a scratch corpus under fuzz/target; the committed seeds in
    # fuzz/corpus/<target> are only read.
    scratch=fuzz/target/corpus/$t
    mkdir -p "$scratch"
    echo "fuzz: $t for ${FUZZ_SECONDS} s"
    if ! cargo fuzz run "${flags[@]}" "$t" "$scratch" "fuzz/corpus/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 2>"fuzz/target/$t.log"; then
        tail -n 60 "fuzz/target/$t.log" >&2
        failed+=("$t")
    fi
    grep -E '^stat::number_of_executed_units' "fuzz/target/$t.log" | sed "s/^/fuzz: $t /" || true
done

if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${FUZZ_SECONDS} s each without a crash ($((SECONDS - start)) s in all)"
