#!/usr/bin/env bash
# Runs the whole test suite. Installs nothing that a fresh machine of this project's kind
# lacks today: the Rust toolchain is on it. (Later layers add their set-up here.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --locked
