#!/usr/bin/env bash
# Benchmarks that print numbers (nothing here asserts a time). With no argument, all of them:
#   synth  — vephys synthesis vs a plain PyTorch loop: image-steps/s and their ratio
#   probes — cost of all paper probes of a filter against its synthesis
#   lease  — coordinator lease + complete throughput on PostgreSQL, jobs/s
#   e2e    — a whole `vephys local` campaign: wall time against the compute time the worker
#            reports, as overhead % (VEPHYS_BENCH_E2E_ARGS adds flags, e.g. "--steps 32")
#   ui     — the results browser with a campaign of 10,000 units, SQLite and PostgreSQL: ms per
#            layer page and unit page, memory (VEPHYS_BENCH_UI_UNITS changes the size)
#   gpu    — the synthesis benchmark on CUDA, fp32 and bf16, batch 1-64, VGG-19 block3_pool and
#            EfficientNet-Lite0 blocks.7, both memory formats, against this machine's own PyTorch
#            (torch 2.11 with CUDA, torchvision, safetensors): from a prebuilt release binary
#            (VEPHYS_WORKER_BIN, or target/release/vephys-worker), so no Rust toolchain is
#            needed; extra arguments go to `vephys-worker bench` (see its --help)
# e.g. `scripts/bench.sh synth`. VEPHYS_BENCH_STEPS / VEPHYS_BENCH_ROUNDS scale the worker ones;
# VEPHYS_BENCH_PRECISIONS, VEPHYS_BENCH_LAYOUTS=both, VEPHYS_BENCH_QUALITY=1 and
# VEPHYS_BENCH_BATCHES tune `synth` (see worker/benches/synth.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = gpu ]; then
  shift
  python="${VEPHYS_BENCH_PYTHON:-python3}"
  bin="${VEPHYS_WORKER_BIN:-}"
  if [ -z "$bin" ]; then
    for candidate in "${CARGO_TARGET_DIR:-$HOME/.cache/vephys/target}/release/vephys-worker" \
                     target/release/vephys-worker "$(command -v vephys-worker || true)"; do
      if [ -n "$candidate" ] && [ -x "$candidate" ]; then bin="$candidate"; break; fi
    done
  fi
  if [ -z "$bin" ]; then
    if command -v cargo >/dev/null; then
      source scripts/env.sh
      cargo build --release -p vephys-worker
      bin="$CARGO_TARGET_DIR/release/vephys-worker"
    else
      echo "bench gpu: no vephys-worker binary; set VEPHYS_WORKER_BIN to one built by \`cargo build --release -p vephys-worker\` against torch 2.11 with CUDA" >&2
      exit 2
    fi
  fi
  # the binary runs on this machine's libtorch: the torch wheel's (the same release it was built with)
  torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
  export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fixtures="${VEPHYS_FIXTURES:-$HOME/.cache/vephys/fixtures}"
  weights="${VEPHYS_WEIGHTS_DIR:-$HOME/.cache/vephys/weights},$fixtures"
  photos="$fixtures/photos"
  quality=()
  if [ -d "$photos" ]; then quality=(--quality-photos "$photos"); fi
  # models without weights in $weights run with seeded random weights on both sides
  exec "$bin" bench --device "${VEPHYS_DEVICE:-cuda}" --precisions fp32,bf16 --batches 1,4,16,64 \
    --models vgg19,efficientnet_lite0 --both-layouts --rounds "${VEPHYS_BENCH_ROUNDS:-3}" \
    --weights-dir "$weights" --python "$python" --script scripts/python/bench_synth.py \
    --json "${VEPHYS_BENCH_JSON:-bench-gpu.json}" "${quality[@]}" "$@"
fi

VEPHYS_SKIP_BUILD=1 scripts/setup.sh
source scripts/env.sh
[ -f "$VEPHYS_FIXTURES/.stamp" ] || scripts/test.sh --no-run
for bench in "${@:-synth probes lease e2e ui}"; do
  for b in $bench; do
    case "$b" in
      synth | probes) cargo bench -p vephys-worker --bench "$b" ;;
      lease)
        VEPHYS_TEST_DATABASE_URL="$(scripts/postgres.sh)" cargo bench -p vephys-coordinator --bench lease ;;
      ui)
        VEPHYS_TEST_DATABASE_URL="$(scripts/postgres.sh)" cargo bench -p vephys-coordinator --bench ui ;;
      e2e)
        cargo build --release -p vephys-cli -p vephys-worker
        data="$(mktemp -d)"
        trap 'rm -rf "$data"' EXIT # a failed campaign leaves no database and images behind
        # shellcheck disable=SC2086 # the extra flags are meant to split
        "$CARGO_TARGET_DIR/release/vephys" local --data-dir "$data" ${VEPHYS_BENCH_E2E_ARGS:-} | grep -E "^(campaign|wall time)" ;;
      *) echo "bench: unknown benchmark '$b' (synth, probes, lease, e2e, ui)" >&2; exit 2 ;;
    esac
  done
done
