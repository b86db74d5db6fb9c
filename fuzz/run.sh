#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 60) each. Needs `cargo install cargo-fuzz`;
# the machine's stable toolchain is enough (RUSTC_BOOTSTRAP lets cargo-fuzz pass its -Z flags).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export RUSTC_BOOTSTRAP=1
secs="${FUZZ_SECONDS:-60}"
for t in openai_request anthropic_request upstream_stream upstream_answer bedrock_stream; do
  mkdir -p "corpus/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  echo "==> $t (${secs}s)"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=16384 2>&1 | grep -E "^(#[0-9]+.*DONE|Done|==|SUMMARY|artifact)" || true
done
