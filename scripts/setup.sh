#!/usr/bin/env bash
# Installs what the project needs beyond the machine's Rust toolchain, pinned.
# Idempotent: cheap when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (rustup toolchain 1.95)" >&2; exit 1; }
# Nothing else yet: the marketplace issue adds `npm ci` for solc and anvil here.
