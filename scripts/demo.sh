#!/usr/bin/env bash
# The main job on the embedded default, from a fresh machine: set up (venv with libtorch, real
# EfficientNet-Lite0 weights, release build), then `vephys local`: SQLite + a local data
# directory + the coordinator and one worker on this machine characterize 16 filters of
# EfficientNet-Lite0 blocks.7 with every probe, print a summary and write an HTML report.
# Extra arguments go to `vephys local` (e.g. --steps 64 --size 128, --data-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
exec "$CARGO_TARGET_DIR/release/vephys" local "$@"
