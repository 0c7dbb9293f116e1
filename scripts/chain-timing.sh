#!/usr/bin/env bash
# Proof timing on slow chains (issue 17): the suite's `chain_timing` test on anvil
# mining a block every BLOCK_TIME seconds (default 12; the suite runs 2) for PERIODS
# periods (default 10) of max(10 blocks, 20 s). Every proof must land in the period it
# was made for; the host's marketplace calls per block are printed.
#
#   scripts/chain-timing.sh                     # 12 s blocks, 10 periods of 120 s: ~25 min
#   BLOCK_TIME=1 PERIODS=10 scripts/chain-timing.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
CODEX_BLOCK_TIME=${BLOCK_TIME:-12} CODEX_PERIODS=${PERIODS:-10} \
    cargo test --locked -p codex --test chain_timing -- --nocapture
