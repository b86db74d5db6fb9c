#!/usr/bin/env bash
# Soak: mixed traffic through the gateway for MINUTES (default 10) while its RSS is sampled every
# 2 s; then whether memory grew and whether the ledger has one row per authenticated request.
#
#   bench/soak.sh                 # 10 minutes, ~440 requests/s in all
#   MINUTES=60 bench/soak.sh      # an hour
#   SCALE=2 bench/soak.sh         # every rate doubled
#
# The mix, each an open-loop `tollway-bench run` of its own, all at once:
#   chat, everything on (virtual key of a team, limits, hard budgets, priced model)  300/s
#   streams of 200 chunks, everything on                                            30/s
#   failover: the first deployment answers 500, the second answers                  20/s
#   unknown model (404)                                                             10/s
#   a key nobody issued (401, no ledger row)                                        10/s
#   abandoned streams: the client gives up after 0.3 s of a 1 s stream (499)        10/s
# Memory: RSS after the first minute (caches and pools warm) against the end, and the slope of
# a least-squares line through the samples after the first minute. Ledger: rows counted in the
# gateway's SQLite file after a graceful stop, against the requests sent with a valid key.
# Writes bench/results/soak.json and prints a summary. Needs release builds of tollway,
# tollway-mock and tollway-bench (`cargo build --release --bins`). Everything listens on
# 127.0.0.1 and is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-10}
SCALE=${SCALE:-1}
source bench/lib.sh # bench_setup, start_mock, listening
bench_setup soak tollway tollway-mock tollway-bench
start_mock
cat > "$DIR/gw.yaml" <<YAML
server:
  master_key: sk-bench
storage:
  url: sqlite://soak.db
providers:
  up: { kind: openai-compatible, base_url: "$MOCK/v1", api_key: none }
models:
  chat:
    rpm: 100000000
    tpm: 100000000000
    deployments: [{ provider: up, model: "bench-small", price: { input: "0.15", output: "0.60" } }]
  stream:
    rpm: 100000000
    tpm: 100000000000
    deployments: [{ provider: up, model: "bench-stream?tokens=200&tpt_ms=0&ttft_ms=0", price: { input: "0.15", output: "0.60" } }]
  failover:
    deployments:
      - { provider: up, model: "bench-down?fault=500" }
      - { provider: up, model: "bench-small" }
  slow: { deployments: [{ provider: up, model: "bench-slow?tokens=50&tpt_ms=20" }] }
teams:
  soak: { rpm: 100000000, tpm: 100000000000, budget: { usd: "1000000", period: monthly, hard: true } }
YAML
(cd "$DIR" && RUST_LOG=warn exec "$REL/tollway" serve --listen 127.0.0.1:0 --config gw.yaml > gw.out 2> gw.err) &
GW=$!
PIDS+=($GW)
URL=$(listening "$DIR/gw.out" 20)
KEY=$(curl -sf "$URL/admin/keys" -H 'authorization: Bearer sk-bench' -H 'content-type: application/json' \
  -d '{"name":"soak","team":"soak","rpm":100000000,"tpm":100000000000,"budget_usd":"1000000","budget_period":"monthly"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

SECS=$(( MINUTES * 60 ))
load() { # NAME RATE ARGS...
  local name=$1 rate=$2; shift 2
  "$REL/tollway-bench" run --url "$URL" --rate "$(python3 -c "print($rate * $SCALE)")" \
    --duration "$SECS" --warmup 0 "$@" > "$DIR/$name.json" 2> "$DIR/$name.err" &
  LOADS+=($!)
}
LOADS=()
load chat 300 --model chat --key "$KEY"
load stream 30 --model stream --key "$KEY" --stream
load failover 20 --model failover --key "$KEY"
load unknown 10 --model no-such-model --key "$KEY"
load badkey 10 --model chat --key sk-tw-not-a-key-of-this-gateway
load abandoned 10 --model slow --key "$KEY" --stream --timeout 0.3
PIDS+=("${LOADS[@]}")
echo "soak: $MINUTES min of mixed traffic through $URL (samples in $DIR/rss.tsv)" >&2
START=$(date +%s.%N)
while kill -0 "${LOADS[0]}" 2>/dev/null; do
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$GW/status")
  echo "$(python3 -c "print(round($(date +%s.%N) - $START, 1))")	$rss" >> "$DIR/rss.tsv"
  sleep 2
done
wait "${LOADS[@]}" || true
# a graceful stop flushes the ledger
kill -TERM "$GW"
wait "$GW" || true
python3 - "$DIR" "$MINUTES" <<'PY'
import json, os, sqlite3, sys
d, minutes = sys.argv[1], float(sys.argv[2])
samples = [tuple(map(float, l.split())) for l in open(os.path.join(d, "rss.tsv")) if l.strip()]
loads = {n: json.load(open(os.path.join(d, n + ".json")))
         for n in ("chat", "stream", "failover", "unknown", "badkey", "abandoned")}
warm = [s for s in samples if s[0] >= 60] or samples
n = len(warm)
mt = sum(t for t, _ in warm) / n
mr = sum(r for _, r in warm) / n
var = sum((t - mt) ** 2 for t, _ in warm)
slope_kb_s = sum((t - mt) * (r - mr) for t, r in warm) / var if var else 0.0
sent = {k: v.get("sent", 0) for k, v in loads.items()}
authenticated = sum(v for k, v in sent.items() if k != "badkey")
rows = sqlite3.connect(os.path.join(d, "soak.db")).execute("select count(*) from tollway_ledger").fetchone()[0]
out = {
    "minutes": minutes,
    "requests_sent": sent,
    "ok": {k: v.get("ok") for k, v in loads.items()},
    "error_kinds": {k: v.get("error_kinds") for k, v in loads.items()},
    "rss_mb": {"after_1_min": round(warm[0][1] / 1024, 1), "end": round(samples[-1][1] / 1024, 1),
               "max": round(max(r for _, r in samples) / 1024, 1)},
    "rss_slope_mb_per_hour": round(slope_kb_s * 3600 / 1024, 2),
    "ledger_rows": rows,
    "ledger_rows_expected": authenticated,
    "samples": samples,
}
os.makedirs("bench/results", exist_ok=True)
with open("bench/results/soak.json", "w") as f:
    json.dump(out, f, indent=1)
total = sum(sent.values())
print(f"soak: {minutes:g} min, {total:,} requests ({total / minutes / 60:.0f}/s): " +
      ", ".join(f"{k} {v:,}" for k, v in sent.items()))
print(f"  ok: " + ", ".join(f"{k} {v}" for k, v in out["ok"].items()))
print(f"  RSS: {out['rss_mb']['after_1_min']} MB after the first minute, {out['rss_mb']['end']} MB at the end, "
      f"max {out['rss_mb']['max']} MB; slope after the first minute {out['rss_slope_mb_per_hour']:+} MB/hour")
print(f"  ledger: {rows:,} rows for {authenticated:,} authenticated requests"
      f" ({'every one' if rows == authenticated else 'MISMATCH'})")
print("  written: bench/results/soak.json")
PY
