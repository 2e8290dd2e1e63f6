#!/usr/bin/env bash
# Run the whole suite several times in a row while every core is kept busy,
# in a shuffled order each time (pytest-randomly; the seed is printed), to find
# tests that pass only on a quiet machine or in one order.
#   scripts/stress.sh              5 runs
#   scripts/stress.sh 3 -x         3 runs; the rest goes to pytest
# Prints one line per run and exits non-zero if any run failed; each run's
# output is kept in ${STRESS_LOG_DIR:-/tmp/arium-stress}/run-N.log.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
shift || true
export HF_HUB_OFFLINE=1
bash scripts/install.sh --dev
logs="${STRESS_LOG_DIR:-/tmp/arium-stress}"
mkdir -p "$logs"

# One busy process per core: stress-ng where installed, a shell loop elsewhere.
cores="$(nproc)"
load_pids=()
if command -v stress-ng >/dev/null 2>&1; then
    stress-ng --cpu "$cores" --quiet &
    load_pids+=("$!")
else
    for _ in $(seq "$cores"); do
        bash -c 'while :; do :; done' &
        load_pids+=("$!")
    done
fi
trap 'kill "${load_pids[@]}" 2>/dev/null || true' EXIT

failed=0
for run in $(seq "$runs"); do
    log="$logs/run-$run.log"
    started=$SECONDS
    seed=$((RANDOM * 32768 + RANDOM))
    if .venv/bin/python -m pytest -p randomly --randomly-seed="$seed" -q "$@" >"$log" 2>&1; then
        status=passed
    else
        status=FAILED
        failed=$((failed + 1))
    fi
    echo "run $run/$runs: $status in $((SECONDS - started)) s (--randomly-seed=$seed): $(tail -n 1 "$log")"
    grep -E '^(FAILED|ERROR) ' "$log" || true
done
echo "$((runs - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
