#!/usr/bin/env bash
# One command for Tollway's benchmark: builds the binaries, starts tollway-mock and tollway on
# ephemeral loopback ports, runs every scenario straight to the mock and then through the
# gateway, and writes bench/results/latest.json and latest.md (the table is printed too).
#
#   bench/run.sh               # the full suite, ~4 minutes plus the build
#   BENCH_QUICK=1 bench/run.sh # every phase shortened: a smoke run of the harness
#   BENCH_NO_BUILD=1 bench/run.sh  # use the binaries already in target/release
#
# Extra arguments go to `tollway-bench suite` (see `tollway-bench suite --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${BENCH_NO_BUILD:-}" ]]; then
  cargo build --release --bins -p tollway -p tollway-mock -p tollway-bench
fi

# 1,000 held-open streams need ~4,000 sockets across the three processes.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

pidfile=$(mktemp "${TMPDIR:-/tmp}/tollway-bench-pids.XXXXXX")
bench_pid=""
cleanup() {
  if [[ -n "$bench_pid" ]]; then kill "$bench_pid" 2>/dev/null || true; fi
  while read -r pid; do
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
  done <"$pidfile"
  rm -f "$pidfile"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "note: the load generator, the upstream mock and the gateway share this one machine"

target/release/tollway-bench suite \
  --tollway target/release/tollway \
  --mock target/release/tollway-mock \
  --out bench/results \
  --pidfile "$pidfile" \
  --clk-tck "$(getconf CLK_TCK)" \
  "$@" &
bench_pid=$!
wait "$bench_pid"
