#!/usr/bin/env bash
# Peers side by side (issue 6): installs nginx (Debian package), LiteLLM's proxy (PyPI, into
# bench/.peers/litellm) and Portkey's gateway (npm, into bench/.peers/portkey) when missing, builds
# the release binaries, then runs bench/peers/run.py. Opt-in: not part of the test command.
# A peer that cannot be installed is reported as skipped. BENCH_QUICK=1 shortens every load.
set -uo pipefail
cd "$(dirname "$0")/../.."
mkdir -p bench/.peers
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  if [[ $(id -u) == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null 2>&1 ||
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null 2>&1 ||
      echo "nginx: could not install; it will be skipped" >&2
  else
    echo "nginx: not installed and not root; it will be skipped" >&2
  fi
fi
if [[ ! -x bench/.peers/litellm/bin/litellm ]]; then
  python3 -m venv bench/.peers/litellm &&
    bench/.peers/litellm/bin/pip install -q 'litellm[proxy]' ||
    echo "LiteLLM: could not install; it will be skipped" >&2
fi
if [[ ! -d bench/.peers/portkey/node_modules/@portkey-ai/gateway ]]; then
  (mkdir -p bench/.peers/portkey && cd bench/.peers/portkey && npm init -y >/dev/null &&
    npm install --silent @portkey-ai/gateway) ||
    echo "Portkey: could not install; it will be skipped" >&2
fi
if [[ -z "${BENCH_NO_BUILD:-}" ]]; then
  cargo build --release -p tollway -p tollway-mock -p tollway-bench || exit 1
fi
ulimit -n 65536 2>/dev/null || true
exec python3 bench/peers/run.py
