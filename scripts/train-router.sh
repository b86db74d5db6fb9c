#!/usr/bin/env bash
# Rebuilds the shipped router models (lexical, then embedding) from the routing data and
# evaluates them on dev.
#   scripts/train-router.sh [TRAIN_JSONL] [DEV_JSONL]
# ROUTER_KINDS="lexical" (or "embedding", or "static") rebuilds one only. The embedding routers need
# the encoder (scripts/fetch-encoder.sh, run here); the contextual one reads 128 tokens per prompt,
# the static one (on the encoder's distilled token table) up to 4,096.
# Defaults: ../shared/data/routing/train.jsonl and the dev.jsonl next to it. Writes
# crates/tollway-engine/data/router-lexical.json and, under target/router/, the dev report
# (dev-report.json), the plot (dev.svg) and the scores (dev-scores.jsonl).
# The model is fitted and tuned on TRAIN only; DEV is only scored.
set -euo pipefail
cd "$(dirname "$0")/.."
train=${1:-../shared/data/routing/train.jsonl}
dev=${2:-$(dirname "$train")/dev.jsonl}
kinds=${ROUTER_KINDS:-lexical embedding static}
out=target/router
mkdir -p "$out"
cargo build --release -p tollway-engine --example router_train
bin=target/release/examples/router_train
for kind in $kinds; do
  case $kind in
    lexical)
      model=crates/tollway-engine/data/router-lexical.json
      "$bin" train "$train" "$model"
      suffix="" ;;
    embedding)
      scripts/fetch-encoder.sh
      model=crates/tollway-engine/data/router-embed.json
      "$bin" train "$train" "$model" --embedding --max-tokens 128
      suffix="-embedding" ;;
    static)
      scripts/fetch-encoder.sh
      model=crates/tollway-engine/data/router-static.json
      "$bin" train "$train" "$model" --embedding --static --max-tokens 4096
      suffix="-static" ;;
    *) echo "unknown router kind $kind" >&2; exit 2 ;;
  esac
  if [ -f "$dev" ]; then
    "$bin" eval "$dev" "$model" --dump-scores "$out/dev-scores$suffix.jsonl" --plot "$out/dev$suffix.svg" --report "$out/dev-report$suffix.json"
  else
    echo "no $dev: skipping the evaluation" >&2
  fi
done
