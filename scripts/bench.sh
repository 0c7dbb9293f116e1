#!/usr/bin/env bash
# The performance table (issue 21), measured the way a user measures: `codex-node`
# processes (release build) driven by `curl` and the CLI, fresh random data every run
# (the store deduplicates blocks), sources and sinks in memory (/dev/shm, /dev/null),
# the reference measured in the same run beside ours, medians of RUNS runs. Prints one
# table: our figure, the reference's, and their ratio.
#
#   scripts/bench.sh                        # every row, 5 runs each
#   RUNS=3 BENCH="rest net" scripts/bench.sh
#
# Rows (BENCH, default "rest erasure slots net prove"):
#   rest     REST upload (`curl -T` of a /dev/shm file) and download (to /dev/null) of
#            REST_MIB (256) MiB, against `openssl dgst -sha256` of the same file; the
#            node's CPU seconds per upload from /proc/PID/stat; every download is
#            compared with its source (not timed).
#   erasure  `codex-node erasure --k 10 --m 5` of a stored ERASURE_MIB (1024) MiB dataset.
#   slots    `codex-node verifiable --k 2 --m 1` (erasure coding, then Poseidon2 slot
#            trees) of a stored SLOTS_MIB (64) MiB dataset.
#   net      node B downloads NET_MIB (256) MiB that node A holds over libp2p on loopback
#            (`GET /data/{cid}/network/stream`, to /dev/null), against iroh's `sendme`
#            (SENDME_VERSION 0.37.1, installed with `cargo install --locked` into
#            target/bench-tools the first time; SENDME=path to use another) sending the
#            same file between two processes.
#   prove    `codex-node proof-input prove` of Codex's fixture (5 samples, development
#            parameters; keys cached in target/bench-tools/proof-cache by a first,
#            untimed run): the prover's own time, as the CLI prints it.
#
# Node data directories are on disk (BENCH_DIR, default $TMPDIR or /tmp), as a user's
# node keeps them; each dataset is deleted after its row. Run it on a quiet machine:
#   flock /tmp/cargo.lock scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
BENCH=${BENCH:-rest erasure slots net prove}
REST_MIB=${REST_MIB:-256}
ERASURE_MIB=${ERASURE_MIB:-1024}
SLOTS_MIB=${SLOTS_MIB:-64}
NET_MIB=${NET_MIB:-256}
SENDME_VERSION=${SENDME_VERSION:-0.37.1}

for tool in curl openssl; do
    command -v "$tool" >/dev/null || { echo "bench.sh: $tool is required" >&2; exit 1; }
done

FEATURES=()
if grep -qw adx /proc/cpuinfo && grep -qw bmi2 /proc/cpuinfo; then
    FEATURES=(--features codex/asm)
fi
cargo build --release --locked -p codex-node "${FEATURES[@]}" >&2
BIN=$PWD/target/release/codex-node

work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/codex-bench.XXXXXX")
shm=$(mktemp -d /dev/shm/codex-bench.XXXXXX)
pids=()
trap 'stop_nodes; rm -rf -- "$work" "$shm"' EXIT

# start_node NAME [BOOTSTRAP_ADDR]: starts a node; sets URL_<NAME> and PID_<NAME>.
start_node() {
    local name=$1 dir=$work/$1
    mkdir -p "$dir"
    local args=(--data-dir "$dir" --api-port 0 --listen-addrs /ip4/127.0.0.1/tcp/0
        --storage-quota 40G --log-level warn)
    [ $# -ge 2 ] && args+=(--bootstrap-node "$2")
    "$BIN" "${args[@]}" >"$dir.url" 2>"$dir.log" &
    local pid=$! url=
    pids+=("$pid")
    disown "$pid" 2>/dev/null || true
    # The node prints its API's URL as its first line once it serves.
    for _ in $(seq 300); do
        url=$(head -1 "$dir.url" 2>/dev/null || true)
        [ -n "$url" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$dir.log" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$url" ] || { echo "bench.sh: node $name did not start" >&2; exit 1; }
    printf -v "URL_$name" '%s' "$url"
    printf -v "PID_$name" '%s' "$pid"
}

# Stops every node and deletes their data: each row starts from empty nodes, so that
# what one row left (a grown store, pages being written back) does not slow the next.
stop_nodes() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    pids=()
    rm -rf -- "${work:?}"/*
}

# CPU seconds (user + system) a process has used so far.
cpu_secs() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}

now() { date +%s.%N; }
# elapsed START: seconds since START.
elapsed() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.4f", e - s }'; }
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# mbps MIB SECONDS: MB/s (10^6 bytes a second).
mbps() { awk -v m="$1" -v s="$2" 'BEGIN { printf "%.0f", m * 1048576 / s / 1e6 }'; }

# fresh MIB: a file of MIB MiB of fresh random bytes in /dev/shm; prints its path.
fresh() {
    openssl rand -out "$shm/src" $(($1 << 20)) 2>/dev/null || head -c $(($1 << 20)) /dev/urandom >"$shm/src"
    echo "$shm/src"
}

upload() { # FILE URL: prints the CID
    curl -sS -f -X POST -H 'Expect:' -H 'Content-Type: application/octet-stream' -T "$1" "$2/data"
}

rows=()
row() { # NAME OURS REFERENCE_NAME REFERENCE RATIO
    rows+=("$(printf '%-46s | %-22s | %-16s | %-10s | %s' "$@")")
}

declare -A vals
add() { vals[$1]+="$2"$'\n'; }
med() { printf '%s' "${vals[$1]}" | grep . | median; }
last() { printf '%s' "${vals[$1]}" | grep . | tail -1; }

if [[ " $BENCH " == *" rest "* ]]; then
    stop_nodes; start_node A; api=$URL_A
    for ((i = 1; i <= RUNS; i++)); do
        f=$(fresh "$REST_MIB")
        t=$(now); openssl dgst -sha256 "$f" >/dev/null; add sha "$(elapsed "$t")"
        sync
        c0=$(cpu_secs "$PID_A"); t=$(now)
        cid=$(upload "$f" "$api")
        add up "$(elapsed "$t")"
        add upcpu "$(awk -v a="$c0" -v b="$(cpu_secs "$PID_A")" 'BEGIN { print b - a }')"
        t=$(now); curl -sS -f -o /dev/null "$api/data/$cid"; add down "$(elapsed "$t")"
        curl -sS -f "$api/data/$cid" | cmp -s - "$f" || { echo "bench.sh: download of $cid differs" >&2; exit 1; }
        curl -sS -f -X DELETE "$api/data/$cid" >/dev/null
        echo "rest run $i: sha256 $(mbps "$REST_MIB" "$(med sha)") MB/s (median so far), upload $(mbps "$REST_MIB" "$(last up)")" >&2
    done
    sha=$(mbps "$REST_MIB" "$(med sha)")
    up=$(mbps "$REST_MIB" "$(med up)")
    down=$(mbps "$REST_MIB" "$(med down)")
    cpu=$(med upcpu)
    row "REST upload, $REST_MIB MiB, curl -T" "$up MB/s (CPU $cpu s)" "openssl sha256" "$sha MB/s" \
        "$(awk -v a="$up" -v b="$sha" 'BEGIN { printf "%.2f", a / b }')"
    row "REST download, $REST_MIB MiB, to /dev/null" "$down MB/s" "openssl sha256" "$sha MB/s" \
        "$(awk -v a="$down" -v b="$sha" 'BEGIN { printf "%.2f", a / b }')"
fi

if [[ " $BENCH " == *" erasure "* ]]; then
    stop_nodes; start_node A; api=$URL_A
    for ((i = 1; i <= RUNS; i++)); do
        cid=$(upload "$(fresh "$ERASURE_MIB")" "$api")
        sync
        t=$(now)
        ecid=$("$BIN" erasure "$cid" --k 10 --m 5 --api "$api" 2>/dev/null)
        add erasure "$(elapsed "$t")"
        curl -sS -f -X DELETE "$api/data/$ecid" >/dev/null
        curl -sS -f -X DELETE "$api/data/$cid" >/dev/null
        echo "erasure run $i: $(mbps "$ERASURE_MIB" "$(last erasure)") MB/s" >&2
    done
    row "erasure, $ERASURE_MIB MiB, K=10 M=5, CLI" "$(mbps "$ERASURE_MIB" "$(med erasure)") MB/s" "(target >= 1 000 MB/s)" "" ""
fi

if [[ " $BENCH " == *" slots "* ]]; then
    stop_nodes; start_node A; api=$URL_A
    for ((i = 1; i <= RUNS; i++)); do
        cid=$(upload "$(fresh "$SLOTS_MIB")" "$api")
        t=$(now)
        out=$("$BIN" verifiable "$cid" --k 2 --m 1 --api "$api" 2>/dev/null)
        add slots "$(elapsed "$t")"
        vcid=$(awk '/^manifest:/ { print $2 }' <<<"$out")
        curl -sS -f -X DELETE "$api/data/$vcid" >/dev/null || true
        curl -sS -f -X DELETE "$api/data/$cid" >/dev/null
        echo "slots run $i: $(mbps "$SLOTS_MIB" "$(last slots)") MB/s" >&2
    done
    row "verifiable (erasure + slot trees), $SLOTS_MIB MiB" "$(mbps "$SLOTS_MIB" "$(med slots)") MB/s" "(target >= 25 MB/s)" "" ""
fi

if [[ " $BENCH " == *" net "* ]]; then
    sendme=${SENDME:-$PWD/target/bench-tools/bin/sendme}
    if [ ! -x "$sendme" ]; then
        echo "installing sendme $SENDME_VERSION into target/bench-tools (once)" >&2
        cargo install sendme --version "$SENDME_VERSION" --locked --root target/bench-tools >&2
    fi
    stop_nodes; start_node A; api=$URL_A
    boot=$(curl -sS -f "$api/debug/info" | grep -o '"addrs":\["[^"]*"' | sed 's/.*\["//; s/"$//')
    start_node B "$boot"
    for ((i = 1; i <= RUNS; i++)); do
        f=$(fresh "$NET_MIB")
        cid=$(upload "$f" "$api")
        sync
        t=$(now); curl -sS -f -o /dev/null "$URL_B/data/$cid/network/stream"; add net "$(elapsed "$t")"
        curl -sS -f "$URL_B/data/$cid" | cmp -s - "$f" || { echo "bench.sh: B's copy of $cid differs" >&2; exit 1; }
        curl -sS -f -X DELETE "$URL_B/data/$cid" >/dev/null
        curl -sS -f -X DELETE "$api/data/$cid" >/dev/null
        # sendme: the sender imports the file, the receiver writes it into /dev/shm.
        rm -rf "$shm/recv" && mkdir -p "$shm/recv" "$shm/send"
        # On loopback only: no relay servers, the ticket carries the addresses.
        (cd "$shm/send" && exec "$sendme" send --relay disabled --ticket-type addresses \
            --no-progress "$f" >"$shm/send.out" 2>&1) &
        sender=$!
        pids+=("$sender")
        ticket=
        for _ in $(seq 600); do
            ticket=$(grep -o 'blob[a-z0-9]*' "$shm/send.out" | head -1 || true)
            [ -n "$ticket" ] && break
            sleep 0.1
        done
        [ -n "$ticket" ] || { cat "$shm/send.out" >&2; exit 1; }
        t=$(now)
        (cd "$shm/recv" && "$sendme" receive --relay disabled --no-progress "$ticket" >"$shm/recv.out" 2>&1) \
            || { cat "$shm/recv.out" >&2; exit 1; }
        add sendme "$(elapsed "$t")"
        kill "$sender" 2>/dev/null || true; wait "$sender" 2>/dev/null || true
        cmp -s "$shm/recv/src" "$f" || { echo "bench.sh: sendme's copy differs" >&2; exit 1; }
        rm -rf "$shm/recv" "$shm/send"
        echo "net run $i: ours $(mbps "$NET_MIB" "$(last net)") MB/s, sendme $(mbps "$NET_MIB" "$(last sendme)") MB/s" >&2
    done
    ours=$(mbps "$NET_MIB" "$(med net)")
    ref=$(mbps "$NET_MIB" "$(med sendme)")
    row "node to node, $NET_MIB MiB, libp2p on loopback" "$ours MB/s" "sendme $SENDME_VERSION" "$ref MB/s" \
        "$(awk -v a="$ours" -v b="$ref" 'BEGIN { printf "%.2f", a / b }')"
fi

if [[ " $BENCH " == *" prove "* ]]; then
    input=codex-proofs/tests/fixtures/codex_input.json
    cache=$PWD/target/bench-tools/proof-cache
    prove() { "$BIN" proof-input prove "$input" --dev-params --cache-dir "$cache" 2>/dev/null; }
    prove >/dev/null
    for ((i = 1; i <= RUNS; i++)); do
        # "prove: 1.52s" or "prove: 950.3ms"
        secs=$(prove | awk '/^prove:/ { v = $2; if (v ~ /ms$/) { sub(/ms$/, "", v); v /= 1000 } else sub(/s$/, "", v); print v }')
        add prove "$secs"
        echo "prove run $i: $secs s" >&2
    done
    row "storage proof, 5 samples (Codex's fixture), CLI" "$(med prove) s" "(target <= 1 s)" "" ""
fi

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); medians of $RUNS runs; MB = 10^6 bytes"
printf '%-46s | %-22s | %-16s | %-10s | %s\n' "what" "ours" "reference" "" "ratio"
printf '%s\n' "${rows[@]}"
