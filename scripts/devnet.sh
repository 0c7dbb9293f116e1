#!/usr/bin/env bash
# The main job: the whole network on this machine (anvil with our contracts, a client,
# five hosts, a spare host and a validator on loopback) through a storage request's
# life. Installs the pinned npm tools first (solc, anvil). Extra arguments go to the
# devnet (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release --locked -p codex-devnet -- "$@"
