#!/usr/bin/env bash
# `make bench`: pbkv (view service + primary + backup) and Redis (primary + replica, SET + WAIT 1 0)
# side by side at 1, 16 and 64 clients, write ratios 1.0 and 0.5, 64-byte values; prints the
# table and records it in docs/performance.md, with its pictures in docs/images (bench.svg,
# bench-latency.svg of the 64-client cells, bench-failover.svg of a killed primary). Everything
# it starts runs on loopback and is stopped when it ends (or is interrupted).
#
# Environment: BENCH_DURATION seconds per cell (default 5); BENCH_REPEAT runs per cell and
# system (default 1), of which BENCH_PICK=median|best (default median) is kept;
# BENCH_SETTLE=PERCENT waits before each run until the rest of a shared machine is busy less
# than PERCENT of one core (default 0: off);
# BENCH_RECORD=0 leaves docs/performance.md alone; PYTHON (default .venv/bin/python). Extra
# arguments go to `python -m pbkv.bench.suite`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}

if ! command -v redis-server >/dev/null 2>&1; then
    echo "bench: redis-server is missing; installing Debian's redis-server" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    if ! $sudo apt-get install -y redis-server >/dev/null; then
        $sudo apt-get update >/dev/null
        $sudo apt-get install -y redis-server >/dev/null
    fi
fi

record=()
if [ "${BENCH_RECORD:-1}" != "0" ]; then record=(--record docs/performance.md); fi

settings=""
for name in BENCH_DURATION BENCH_REPEAT BENCH_PICK BENCH_SETTLE; do
    if [ -n "${!name:-}" ]; then settings+="$name=${!name} "; fi
done
export PBKV_BENCH_COMMAND="${settings}make bench${*:+ (scripts/bench.sh $*)}"
plots=()
if [ "${BENCH_RECORD:-1}" != "0" ]; then plots=(--plots docs/images); fi
"$PYTHON" -m pbkv.bench.suite \
    --duration "${BENCH_DURATION:-5}" \
    --repeat "${BENCH_REPEAT:-1}" \
    --settle "${BENCH_SETTLE:-0}" \
    --pick "${BENCH_PICK:-median}" \
    "${record[@]}" "${plots[@]}" "$@"
if [ "${BENCH_RECORD:-1}" != "0" ]; then
    # The failover picture: a local cluster whose primary is killed 2 s into the window.
    "$PYTHON" -m pbkv bench --local-cluster --clients 16 --duration 5 --kill-primary-at 2 \
        --no-progress --plot docs/images/bench-failover.svg
fi
