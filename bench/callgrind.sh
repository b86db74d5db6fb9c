#!/usr/bin/env bash
# Instructions per request of the gateway, counted by valgrind's callgrind: repeatable to a fraction
# of a percent for the same binary and load, whatever else the machine is doing (wall-clock figures
# on this shared 2-core VM drift by 2-3x from one hour to the next).
#
#   bench/callgrind.sh                  # 1,000 small chats, OpenAI-compatible upstream
#   KIND=anthropic bench/callgrind.sh   # the same through an Anthropic upstream
#   KIND=bedrock bench/callgrind.sh     # through Bedrock's Converse API, every request SigV4-signed
#   KIND=gemini bench/callgrind.sh      # through Google's Gemini API (also: azure, vertex)
#   STREAM=1 bench/callgrind.sh         # 300 streams of 200 chunks; prints instructions per chunk
#   ALL=1 bench/callgrind.sh            # everything on, as the suite's chat_1000rps_all: a virtual
#                                       # key with limits and a hard budget, in a team with both, a
#                                       # priced model with limits
#   PROMPT_BYTES=4000 bench/callgrind.sh  # a ~1,000-token prompt instead of a short one
#   ROUTED=1 PROMPT_BYTES=4000 bench/callgrind.sh  # through `auto`, a learned router (the built-in
#                                       # lexical model) over two models on the same upstream
#   API=anthropic bench/callgrind.sh    # the client speaks Anthropic's Messages API (/v1/messages)
#   TLS=1 bench/callgrind.sh            # the upstream over HTTPS (HTTP/2 by ALPN), trusted by
#                                       # ca_file (certificates from openssl, bench/lib.sh)
#   CACHE=1 bench/callgrind.sh          # the response cache on: the load's requests are all the
#                                       # same, so every measured one is a hit (none reaches the mock)
#   CACHE=miss bench/callgrind.sh       # the cache on, every request told `Cache-Control: no-cache`
#                                       # (keyed, answered upstream, kept): the cost of a miss
#   TRACE=1 bench/callgrind.sh          # OpenTelemetry traces on, every request sampled, exported
#                                       # every 200 ms to the mock (which answers 404: the export's
#                                       # JSON and POST are counted, the collector's work is not)
#   N=2000 TOLLWAY=/tmp/old-tollway bench/callgrind.sh
#
# The gateway runs with `--workers 1` and the SQLite ledger on; 200 requests warm it up, then the
# counters are zeroed (`callgrind_control -z`), N requests are sent open loop at a low rate (so
# batching and wake-ups look like a lightly loaded server, not a saturated one), and the counters
# are dumped. Every thread is counted (the lane, the background runtime, sqlx's SQLite worker).
# Keeps the profile (callgrind_annotate DIR/cg.out.1) and prints its directory.
# Needs release builds of tollway, tollway-mock and tollway-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh # bench_setup, start_mock, listening, test_certs
bench_setup cg "${TOLLWAY:-tollway}" tollway-mock tollway-bench
TOLLWAY=${TOLLWAY:-$REL/tollway}
KIND=${KIND:-openai}
PUBLIC=small; [[ -n ${ROUTED:-} ]] && PUBLIC=auto # the model the load asks for
STREAM=${STREAM:-}
if [[ -n $STREAM ]]; then N=${N:-300}; RATE=${RATE:-20}; MODEL='bench-stream?tokens=200&tpt_ms=0&ttft_ms=0'
else N=${N:-1000}; RATE=${RATE:-100}; MODEL=bench-small; fi
command -v valgrind > /dev/null || { echo "valgrind is not installed" >&2; exit 1; }

MOCK_TLS=() CA=""
if [[ -n ${TLS:-} ]]; then
  test_certs "$DIR"
  MOCK_TLS=(--tls-cert "$DIR/cert.pem" --tls-key "$DIR/key.pem")
  CA=", ca_file: \"$DIR/ca.pem\""
fi
start_mock "${MOCK_TLS[@]}"
case $KIND in
  openai) PROVIDER="{ kind: openai-compatible, base_url: \"$MOCK/v1\", api_key: none$CA }" ;;
  anthropic) PROVIDER="{ kind: anthropic, base_url: \"$MOCK\", api_key: none$CA }" ;;
  bedrock) PROVIDER="{ kind: bedrock, region: us-east-1, base_url: \"$MOCK\", access_key_id: AKIDBENCH, secret_access_key: tollway-mock-secret$CA }" ;;
  azure) PROVIDER="{ kind: azure, base_url: \"$MOCK\", api_key: bench, api_version: \"2024-10-21\"$CA }" ;;
  gemini) PROVIDER="{ kind: gemini, base_url: \"$MOCK/v1beta\", api_key: bench$CA }" ;;
  # the simulator's pre-issued token (crates/tollway-mock: MOCK_GCP_TOKEN)
  vertex) PROVIDER="{ kind: vertex, project: bench, location: us-central1, base_url: \"$MOCK\", access_token: ya29.tollway-mock-demo$CA }" ;;
  *) echo "KIND is openai, anthropic, bedrock, azure, gemini or vertex" >&2; exit 1 ;;
esac
cat > "$DIR/gw.yaml" <<YAML
server:
  master_key: sk-bench
storage:
  url: sqlite://bench.db
providers:
  up: $PROVIDER
models:
  small:
    rpm: 100000000
    tpm: 100000000000
    deployments: [{ provider: up, model: "$MODEL", price: { input: "0.15", output: "0.60" } }]
  small_strong: { deployments: [{ provider: up, model: "$MODEL" }] }
routers:
  auto: { kind: learned, candidates: [small_strong, small], strong_share: 0.3 }
teams:
  bench: { rpm: 100000000, tpm: 100000000000, budget: { usd: "1000000", period: monthly, hard: true } }
YAML
[[ -n ${ALL:-} ]] || sed -i '/rpm:\|tpm:\|^teams:/d; s/, price: {[^}]*}//' "$DIR/gw.yaml"
[[ -n ${CACHE:-} ]] && echo 'cache: { ttl_secs: 3600 }' >> "$DIR/gw.yaml"
[[ -n ${TRACE:-} ]] && echo "telemetry: { otlp_endpoint: \"$MOCK\", export_interval_ms: 200 }" >> "$DIR/gw.yaml"
# --trace-children: `tollway serve` restarts itself once (exec, same pid) with its allocator
# settings (crates/tollway/src/malloc.rs); the profile is of the restarted process
(cd "$DIR" && RUST_LOG=warn exec valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=cg.out \
  "$TOLLWAY" serve --workers 1 --listen 127.0.0.1:0 --config gw.yaml > gw.out 2> gw.err) &
PIDS+=($!)
URL=$(listening "$DIR/gw.out" 60) # valgrind starts slowly
KEY=sk-bench
if [[ -n ${ALL:-} ]]; then
  KEY=$(curl -sf "$URL/admin/keys" -H 'authorization: Bearer sk-bench' -H 'content-type: application/json' \
    -d '{"name":"bench","team":"bench","rpm":100000000,"tpm":100000000000,"budget_usd":"1000000","budget_period":"monthly"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
fi
load() { # REQUESTS
  local s=(); [[ -n $STREAM ]] && s=(--stream)
  [[ ${CACHE:-} == miss ]] && s+=(--header 'cache-control: no-cache')
  "$REL/tollway-bench" run --url "$URL" --model "$PUBLIC" --key "$KEY" "${s[@]}" --rate "$RATE" \
    --requests "$1" --warmup 0 --duration 600 --timeout 60 --prompt-bytes "${PROMPT_BYTES:-0}" \
    --api "${API:-openai}" > "$DIR/load-$1.json"
}
load 200
callgrind_control -z > /dev/null
load "$N"
sleep 1 # the ledger writer's last flush
callgrind_control -d > /dev/null
python3 - "$DIR" "$N" "$STREAM" <<'PY'
import json, os, sys
out, n, stream = sys.argv[1], int(sys.argv[2]), sys.argv[3]
total = None
with open(os.path.join(out, "cg.out.1")) as fh:  # the dump after zeroing: the measured requests only
    for line in fh:
        if line.startswith(("summary:", "totals:")):
            total = int(line.split()[1])
            break
if total is None:
    sys.exit("no totals in cg.out.1")
with open(os.path.join(out, f"load-{n}.json")) as fh:
    load = json.load(fh)
errors = load.get("errors") or 0
per = n * 200 if stream else n
unit = "chunk" if stream else "request"
print(f"{total:,} instructions over {n} {'streams' if stream else 'requests'} ({errors} errors): "
      f"{total / per / 1000:.1f} k per {unit}")
PY
echo "profile: $DIR (bench/cgdiff.py $DIR/cg.out.1; two profiles: what moved)"
