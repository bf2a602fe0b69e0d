#!/usr/bin/env bash
# Benchmarks that print numbers (nothing here asserts a time). With no argument, all of them:
#   synth  — vephys synthesis vs a plain PyTorch loop: image-steps/s and their ratio
#   probes — cost of all paper probes of a filter against its synthesis
#   lease  — coordinator lease + complete throughput on PostgreSQL, jobs/s
#   e2e    — a whole `vephys local` campaign: wall time against the compute time the worker
#            reports, as overhead % (VEPHYS_BENCH_E2E_ARGS adds flags, e.g. "--steps 32")
# e.g. `scripts/bench.sh synth`. VEPHYS_BENCH_STEPS / VEPHYS_BENCH_ROUNDS scale the worker ones.
set -euo pipefail
cd "$(dirname "$0")/.."
VEPHYS_SKIP_BUILD=1 scripts/setup.sh
source scripts/env.sh
[ -f "$VEPHYS_FIXTURES/.stamp" ] || scripts/test.sh --no-run
for bench in "${@:-synth probes lease e2e}"; do
  for b in $bench; do
    case "$b" in
      synth | probes) cargo bench -p vephys-worker --bench "$b" ;;
      lease)
        VEPHYS_TEST_DATABASE_URL="$(scripts/postgres.sh)" cargo bench -p vephys-coordinator --bench lease ;;
      e2e)
        cargo build --release -p vephys-cli -p vephys-worker
        data="$(mktemp -d)"
        trap 'rm -rf "$data"' EXIT # a failed campaign leaves no database and images behind
        # shellcheck disable=SC2086 # the extra flags are meant to split
        "$CARGO_TARGET_DIR/release/vephys" local --data-dir "$data" ${VEPHYS_BENCH_E2E_ARGS:-} | grep -E "^(campaign|wall time)" ;;
      *) echo "bench: unknown benchmark '$b' (synth, probes, lease, e2e)" >&2; exit 2 ;;
    esac
  done
done
