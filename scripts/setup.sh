#!/usr/bin/env bash
# Installs what the project needs beyond the machine's Rust toolchain, pinned.
# Idempotent: cheap when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (rustup toolchain 1.95)" >&2; exit 1; }

# The marketplace toolchain from the npm registry, pinned by package-lock.json:
# solc 0.8.28 (our contracts), solc 0.8.19 (the generated halo2 verifier), anvil
# (the local chain, its binary ships in @foundry-rs/anvil-<platform>) and
# OpenZeppelin's contracts, and snarkjs (the reference for powers-of-tau ceremony
# files: the trusted-setup tests check our files with it). `npm ci` reinstalls from scratch, so it runs only when
# the lockfile changed since the last install (or node_modules is incomplete).
# Install scripts are not needed and are not run.
command -v npm >/dev/null || { echo "node and npm are required (node >= 18)" >&2; exit 1; }
stamp=node_modules/.codex-setup-stamp
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
    || [ ! -f node_modules/solc/package.json ] \
    || [ ! -f node_modules/solc-0.8.19/package.json ] \
    || [ ! -d node_modules/@openzeppelin/contracts ] \
    || [ ! -f node_modules/snarkjs/package.json ] \
    || ! ls node_modules/@foundry-rs/anvil-*/bin/anvil >/dev/null 2>&1; then
    npm ci --ignore-scripts --no-audit --no-fund
    echo "$want" > "$stamp"
fi

# iptables (Debian 12's package, pinned): codex-net's NAT traversal test
# (codex-net/tests/nat.rs) builds NAT routers in network namespaces with it, and skips
# without it. Installed only when missing, where apt-get is (Debian, Ubuntu).
IPTABLES_VERSION=1.8.9-2
if ! command -v iptables >/dev/null && [ ! -x /usr/sbin/iptables ] && command -v apt-get >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends \
        "iptables=$IPTABLES_VERSION"; then
        echo "warning: iptables $IPTABLES_VERSION is not available here; the NAT test will skip" >&2
    fi
fi
