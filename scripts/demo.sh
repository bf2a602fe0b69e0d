#!/usr/bin/env bash
# The main job on the embedded default, from a fresh machine: set up, then synthesize the max
# images of 16 filters of EfficientNet-Lite0's blocks.7 with its real ImageNet weights.
# Extra arguments go to `vephys-worker synth` (e.g. --steps 64 --size 128).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
out="${VEPHYS_OUT:-vephys-out/efficientnet_lite0/blocks.7}"
"$CARGO_TARGET_DIR/release/vephys-worker" synth --model efficientnet_lite0 --layer blocks.7 --filters 0-15 --out "$out" "$@"
echo "max images: $out/filter_*.png (one JSON beside each)"
