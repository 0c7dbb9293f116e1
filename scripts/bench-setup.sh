#!/usr/bin/env bash
# The trusted setup at scale, through the release CLI: a ceremony of power P (default
# 19, what 100-sample proofs need) started and contributed to, the whole ceremony
# verified, and the file imported as proving parameters for 2^19 and for 2^15 rows.
# Prints wall time and peak RSS of each step (GNU time). Needs ~1 GiB in $WORK.
#   scripts/bench-setup.sh            # power 19
#   POWER=16 scripts/bench-setup.sh   # a quicker look
set -euo pipefail
cd "$(dirname "$0")/.."
POWER="${POWER:-19}"
WORK="${WORK:-$(mktemp -d /dev/shm/codex-setup.XXXXXX 2>/dev/null || mktemp -d)}"
trap 'rm -rf "$WORK"' EXIT
command -v /usr/bin/time >/dev/null || { echo "GNU time is required (apt-get install time)" >&2; exit 1; }
# halo2curves' assembly where the CPU has BMI2 and ADX (ASM=0 to measure without).
FEATURES=()
if [ "${ASM:-1}" = 1 ] && grep -qw adx /proc/cpuinfo && grep -qw bmi2 /proc/cpuinfo; then
    FEATURES=(--features codex/asm)
fi
flock /tmp/cargo.lock cargo build --release --locked -p codex-node "${FEATURES[@]}"
BIN=target/release/codex-node

step() {
    local name="$1"; shift
    /usr/bin/time -f "%e %M" -o "$WORK/time" "$BIN" "$@" > "$WORK/out" 2> "$WORK/err" \
        || { cat "$WORK/err" >&2; exit 1; }
    read -r secs kib < "$WORK/time"
    printf '%-40s %8.1f s %8d MiB\n' "$name" "$secs" "$((kib / 1024))"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); build: ${FEATURES[*]:-no asm}"
printf '%-40s %10s %12s\n' "step (power $POWER)" "wall" "peak RSS"
step "ceremony new" ceremony new --power "$POWER" -o "$WORK/c0.ptau"
step "ceremony contribute" ceremony contribute "$WORK/c0.ptau" "$WORK/c1.ptau" --name bench
rm -f "$WORK/c0.ptau"
step "ceremony verify (whole file)" ceremony verify "$WORK/c1.ptau"
for k in "$POWER" 15; do
    [ "$k" -le "$POWER" ] || continue
    step "params import --k $k (checks + Lagrange)" params import "$WORK/c1.ptau" --k "$k" -o "$WORK/params-$k.bin"
    step "params verify (k = $k)" params verify "$WORK/params-$k.bin"
done
ls -l "$WORK"/c1.ptau | awk '{printf "ceremony file: %d MiB\n", $5 / 1048576}'
