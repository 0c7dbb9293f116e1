#!/usr/bin/env bash
# One account buying, selling (three sales workers) and validating at once (issue 17):
# the suite's `one_account` test for PERIODS periods (default 20; the suite runs 3) of
# 40 s on anvil with 2 s blocks, with real halo2 proofs. No nonce may be refused,
# taken or skipped, no transaction may revert or stick, no proof of the node's may be
# missed; its transaction counts are printed.
#
#   scripts/one-account.sh              # 20 periods: ~15 min (880 s, 138 transactions, 2026-12-05)
#   PERIODS=10 scripts/one-account.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
CODEX_PERIODS=${PERIODS:-20} cargo test --locked -p codex --test one_account -- --nocapture
