#!/usr/bin/env bash
# Rebuilds the shipped lexical router model from the routing data and evaluates it on dev.
#   scripts/train-router.sh [TRAIN_JSONL] [DEV_JSONL]
# Defaults: ../shared/data/routing/train.jsonl and the dev.jsonl next to it. Writes
# crates/tollway-engine/data/router-lexical.json and, under target/router/, the dev report
# (dev-report.json), the plot (dev.svg) and the scores (dev-scores.jsonl).
# The model is fitted and tuned on TRAIN only; DEV is only scored.
set -euo pipefail
cd "$(dirname "$0")/.."
train=${1:-../shared/data/routing/train.jsonl}
dev=${2:-$(dirname "$train")/dev.jsonl}
model=crates/tollway-engine/data/router-lexical.json
out=target/router
mkdir -p "$out"
cargo build --release -p tollway-engine --example router_train
bin=target/release/examples/router_train
"$bin" train "$train" "$model"
if [ -f "$dev" ]; then
  "$bin" eval "$dev" "$model" --dump-scores "$out/dev-scores.jsonl" --plot "$out/dev.svg" --report "$out/dev-report.json"
else
  echo "no $dev: skipping the evaluation" >&2
fi
