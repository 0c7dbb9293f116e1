#!/usr/bin/env bash
# Many nodes on loopback (issue 18): codex-net's `many_nodes` test at scale. NODES
# nodes (default 50) in one process on real TCP sockets, each announcing DATASETS
# datasets (default 1 000); every node looks up LOOKUPS keys (default 20) of other
# nodes and must find their provider. Prints announce time, p50/p95 lookup times and
# memory per node. The suite runs 12 nodes x 100 datasets. 50 x 1 000 took 9 minutes on
# 2 cores (announcing 539 s; lookups p50 33 ms, p95 68 ms; 29 MiB per node).
#
#   scripts/many-nodes.sh
#   NODES=20 DATASETS=5000 scripts/many-nodes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CODEX_NODES=${NODES:-50} CODEX_DATASETS=${DATASETS:-1000} CODEX_LOOKUPS=${LOOKUPS:-20} \
    cargo test --locked -p codex-net --test many_nodes -- --nocapture
