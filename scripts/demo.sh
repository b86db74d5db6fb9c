#!/usr/bin/env bash
# Build the release binaries and run the demo gateway (simulated models, no API keys needed).
# Extra arguments are passed to `tollway serve` (e.g. --listen 127.0.0.1:4001).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --bins
exec ./target/release/tollway serve --config examples/demo.yaml "$@"
