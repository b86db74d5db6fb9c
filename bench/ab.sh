#!/usr/bin/env bash
# Interleaved A/B of two tollway binaries: the same tollway-mock, gateway A and gateway B started
# side by side, then for each round: saturation (64 connections) and 1,000 RPS open loop through A,
# the same through B, and 1,000 RPS straight to the mock. On a machine whose speed drifts from one
# minute to the next, alternating is what makes a before/after comparison fair.
#
#   bench/ab.sh OLD_TOLLWAY NEW_TOLLWAY     # e.g. a copy of target/release/tollway from before a change
#   ROUNDS=5 DURATION=10 bench/ab.sh A B
#   B_ARGS=--pin-workers bench/ab.sh T T    # one binary, two ways of serving (A_ARGS, B_ARGS:
#                                           # extra arguments of `tollway serve`)
#   STREAMS=1 bench/ab.sh A B               # instead: 100 streams/s of 200 chunks sent at once
#                                           # (an upstream burst), through A, B and straight to
#                                           # the mock; time to first byte and to the last event
#
# Uses target/release/tollway-mock and tollway-bench (cargo build --release -p tollway-mock
# -p tollway-bench). Everything listens on 127.0.0.1 and is stopped at exit. Prints one line per
# run and a summary (median of the rounds) as Markdown.
set -euo pipefail
A=${1:?usage: bench/ab.sh TOLLWAY_A TOLLWAY_B}
B=${2:?usage: bench/ab.sh TOLLWAY_A TOLLWAY_B}
# the gateways run in temporary directories: absolute paths, relative to the caller's directory
A=$(realpath -e "$A") B=$(realpath -e "$B")
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
cd "$(dirname "$0")/.."
source bench/lib.sh # bench_setup, start_mock, listening
bench_setup ab tollway-mock tollway-bench
start_mock
BURST='bench-stream?tokens=200&tpt_ms=0&ttft_ms=0'
declare -A URL PID
for g in A B; do
  mkdir -p "$DIR/$g"
  cat > "$DIR/$g/gw.yaml" <<YAML
server:
  master_key: sk-bench
storage:
  url: sqlite://bench.db
providers:
  up: { kind: openai-compatible, base_url: "$MOCK/v1", api_key: none }
models:
  small: { deployments: [{ provider: up, model: "bench-small" }] }
  stream: { deployments: [{ provider: up, model: "$BURST" }] }
YAML
  bin=$A; extra=${A_ARGS:-}; [[ $g == B ]] && bin=$B && extra=${B_ARGS:-}
  # shellcheck disable=SC2086 # extra: words of arguments
  (cd "$DIR/$g" && RUST_LOG=warn exec "$bin" serve --listen 127.0.0.1:0 --config gw.yaml $extra > gw.out 2> gw.err) &
  PID[$g]=$!
  PIDS+=(${PID[$g]})
  URL[$g]=$(listening "$DIR/$g/gw.out")
done

run() { # NAME URL PID MODEL KEY ARGS... -> JSON file
  local name=$1 url=$2 pid=$3 model=$4 key=$5; shift 5
  local watch=(); [[ -n $pid ]] && watch=(--watch "gateway=$pid")
  local auth=(); [[ -n $key ]] && auth=(--key "$key")
  "$REL/tollway-bench" run --url "$url" --model "$model" "${auth[@]}" --duration "$DURATION" \
    --warmup 1 "${watch[@]}" "$@" > "$DIR/$name.json"
}

if [[ -n ${STREAMS:-} ]]; then
  for r in $(seq "$ROUNDS"); do
    for g in A B; do
      run "st-$g-$r" "${URL[$g]}" "${PID[$g]}" stream sk-bench --stream --rate 100
    done
    run "st-direct-$r" "$MOCK" "" "$BURST" "" --stream --rate 100
    echo "round $r of $ROUNDS done" >&2
  done
  python3 - "$DIR" "$ROUNDS" "$A" "$B" <<'PY'
import json, os, statistics, sys
d, rounds, a, b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def fig(name, key, q):
    with open(os.path.join(d, name + ".json")) as f:
        j = json.load(f)
    if key == "errors":
        return j.get("errors")
    src = j.get(key) or (j.get("stream_stats") or {}).get(key) or {}
    return src.get(q)
def cell(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    f = (lambda v: str(v)) if all(isinstance(v, int) for v in vals) else (lambda v: f"{v:.0f}")
    return f"{f(statistics.median(vals))} ({' / '.join(f(v) for v in vals)})"
print(f"A = {a}\nB = {b}\n{rounds} interleaved rounds of 100 streams/s, 200 chunks sent at once; median (each round)\n")
print("| figure | A | B | direct |\n| --- | --- | --- | --- |")
for label, key, q in [("time to first byte p50 µs", "ttfb_us", "p50"), ("time to first byte p99 µs", "ttfb_us", "p99"),
                      ("stream duration p50 µs", "stream_duration_us", "p50"), ("errors", "errors", None)]:
    print(f"| {label} | " + " | ".join(cell([fig(f"st-{g}-{r}", key, q) for r in range(1, rounds + 1)]) for g in ("A", "B", "direct")) + " |")
PY
  exit 0
fi

for r in $(seq "$ROUNDS"); do
  for g in A B; do
    run "sat-$g-$r" "${URL[$g]}" "${PID[$g]}" small sk-bench --connections 64
    run "1k-$g-$r" "${URL[$g]}" "${PID[$g]}" small sk-bench --rate 1000
  done
  run "1k-direct-$r" "$MOCK" "" bench-small "" --rate 1000
  echo "round $r of $ROUNDS done" >&2
done

python3 - "$DIR" "$ROUNDS" "$A" "$B" <<'PY'
import json, os, statistics, sys
d, rounds, a, b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(n):
    with open(os.path.join(d, n + ".json")) as f:
        return json.load(f)
def fig(j, what):
    lat = j.get("latency_us") or {}
    cpu = ((j.get("procs") or {}).get("gateway") or {}).get("cpu_s_per_1k_requests")
    return {"rps": j.get("achieved_rps"), "p50": lat.get("p50"), "p99": lat.get("p99"),
            "cpu": cpu, "errors": j.get("errors")}[what]
rows = [("saturation RPS (64 connections)", "sat", "rps"),
        ("gateway CPU s per 1,000 at saturation", "sat", "cpu"),
        ("p50 µs at 1,000 RPS", "1k", "p50"),
        ("p99 µs at 1,000 RPS", "1k", "p99"),
        ("gateway CPU s per 1,000 at 1,000 RPS", "1k", "cpu"),
        ("errors at 1,000 RPS", "1k", "errors")]
def cell(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    if all(isinstance(v, int) for v in vals):
        f = str
    else:
        f = (lambda v: f"{v:.3f}") if max(vals) < 10 else (lambda v: f"{v:.0f}")
    return f"{f(statistics.median(vals))} ({' / '.join(f(v) for v in vals)})"
print(f"A = {a} {os.environ.get('A_ARGS', '')}\nB = {b} {os.environ.get('B_ARGS', '')}\n{rounds} interleaved rounds; median (each round)\n")
print("| figure | A | B |\n| --- | --- | --- |")
for label, scen, what in rows:
    print(f"| {label} | " + " | ".join(cell([fig(load(f'{scen}-{g}-{r}'), what) for r in range(1, rounds + 1)]) for g in "AB") + " |")
direct = [fig(load(f"1k-direct-{r}"), "p50") for r in range(1, rounds + 1)]
print(f"| direct p50 µs at 1,000 RPS (the floor) | {cell(direct)} | |")
PY
