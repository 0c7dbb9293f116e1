#!/usr/bin/env bash
# The scale benchmark (issue 9): SCALE_BYTES (default 10 GiB) uploaded to a codex-node
# process through the REST API, downloaded back, then downloaded by a second node over
# libp2p; sha256 checked each way, MB/s per phase and peak RSS per process printed, and
# a failure when a hash differs or a process's peak RSS exceeds 300 MiB.
#
#   scripts/scale.sh                          # 10 GiB: needs about 23 GB free
#   SCALE_BYTES=1073741824 scripts/scale.sh   # 1 GiB
#
# Both nodes store the dataset, so about 2.2 x SCALE_BYTES must be free where the data
# goes (SCALE_DIR, default $TMPDIR or /tmp). Everything is deleted at the end. On a
# shared machine run it under the build lock so nothing compiles meanwhile:
#   flock /tmp/cargo.lock scripts/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bytes=${SCALE_BYTES:-$((10 << 30))}
parent=${SCALE_DIR:-${TMPDIR:-/tmp}}
work=$(mktemp -d "$parent/codex-scale.XXXXXX")
cleanup() {
    # Only the nodes this run started: their command lines name $work.
    pkill -9 -f -- "--data-dir $work/" 2>/dev/null || true
    rm -rf -- "$work"
}
trap cleanup EXIT

need=$((bytes * 22 / 10 + (2 << 30)))
avail=$(df -B1 --output=avail "$work" | tail -1)
df -h "$work"
if ((avail < need)); then
    echo "scale.sh: $bytes bytes need about $((need >> 30)) GiB free in $parent; $((avail >> 30)) GiB are" >&2
    exit 1
fi

cargo build --release -p codex-node --bin codex-node
SCALE_BYTES=$bytes SCALE_DIR=$work cargo bench --bench scale_10gib
