#!/bin/bash
# The demo's load, measured from the aggregator's side:
#   bench/embedded-run.sh [dist-dir] [port] [publisher flags] -- [aggregator env …]
# e.g. bench/embedded-run.sh dist 18100 "" DATA_DIR=/tmp/fresh        (embedded, first start on a new directory)
#      bench/embedded-run.sh dist 18100 "" DATABASE_URL=postgres://…   (PostgreSQL server)
# Starts `node <dist>/aggregator` with the env, times it until /ready answers 200, runs `node <dist>/publisher`
# with its defaults (or the flags), then prints events per commit from /metrics, the aggregator's CPU per event
# (/proc/<pid>/stat) and its peak memory (VmHWM), and stops it.
set -eu
dist=${1:-dist}; port=${2:-18100}; flags=${3:-}; shift 3 || true
[ "${1:-}" = "--" ] && shift
t0=$(date +%s%N)
env PORT=$port LOG_LEVEL=Warn "$@" node "$dist/aggregator" > "/tmp/embedded-run.$port.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
until curl -sf "localhost:$port/ready" > /dev/null; do
  kill -0 $pid 2> /dev/null || { echo "the aggregator exited:"; cat "/tmp/embedded-run.$port.log"; exit 1; }
  sleep 0.05
done
t1=$(date +%s%N)
ready_kb=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
c0=$(awk '{print $14+$15}' /proc/$pid/stat)
# shellcheck disable=SC2086
AGGREGATOR_URL=http://localhost:$port node "$dist/publisher" $flags 2>&1 | grep -E "^  (sent|elapsed)|^result" || true
c1=$(awk '{print $14+$15}' /proc/$pid/stat)
m=$(curl -s "localhost:$port/metrics")
events=$(echo "$m" | awk '/^aggregator_batch_size_events_sum/{print $2}')
commits=$(echo "$m" | awk '/^aggregator_batch_size_events_count/{print $2}')
hwm_kb=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
awk -v r=$(( (t1 - t0) / 1000000 )) -v rk="$ready_kb" -v e="$events" -v c="$commits" -v cpu=$((c1 - c0)) -v h="$hwm_kb" 'BEGIN {
  printf "until /ready %.2f s (VmHWM then %d MiB); %.1f events per commit; aggregator CPU %.2f ms per event; peak VmHWM %d MiB\n",
    r / 1000, rk / 1024, e / c, cpu * 10 / e, h / 1024 }'
