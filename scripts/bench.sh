#!/usr/bin/env bash
# Benchmarks that print numbers (nothing here asserts a time):
#   synth — vephys synthesis vs a plain PyTorch loop, image-steps/s and ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
VEPHYS_SKIP_BUILD=1 scripts/setup.sh
source scripts/env.sh
[ -f "$VEPHYS_FIXTURES/vgg19.safetensors" ] || scripts/test.sh --no-run
cargo bench -p vephys-worker --bench synth
