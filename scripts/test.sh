#!/usr/bin/env bash
# The test command (README, .ci/run): sets up a fresh machine as needed, then runs every test of
# the workspace against the real parts: libtorch 2.11, the real EfficientNet-Lite0 weights,
# PyTorch/torchvision reference outputs, a real PostgreSQL server and a real S3-compatible
# object store (Garage, one node on loopback); then checks the images and the Helm chart.
set -euo pipefail
cd "$(dirname "$0")/.."
VEPHYS_SKIP_BUILD=1 scripts/setup.sh
source scripts/env.sh

# Reference outputs from PyTorch and the vephys-export models; rebuilt whenever the scripts that
# make them or the exporter change.
fixture_stamp="$( (cat scripts/python/make_fixtures.py scripts/python/reference.py \
  scripts/python/make_export_fixtures.py scripts/python/efficientnet_lite0_export.py;
  find exporter -path exporter/tests -prune -o -type f \( -name '*.py' -o -name '*.toml' \) -print \
    | LC_ALL=C sort | xargs cat) | sha256sum | cut -c1-16)"
fixtures_pid=
if [ "$(cat "$VEPHYS_FIXTURES/.stamp" 2>/dev/null)" != "$fixture_stamp" ]; then
  echo "test: writing PyTorch reference fixtures to $VEPHYS_FIXTURES (beside the build)" >&2
  rm -rf "$VEPHYS_FIXTURES"
  (
    set -e
    (cd scripts/python && python make_fixtures.py "$VEPHYS_FIXTURES")
    python scripts/python/make_export_fixtures.py "$VEPHYS_FIXTURES"
    echo "$fixture_stamp" > "$VEPHYS_FIXTURES/.stamp"
  ) &
  fixtures_pid=$!
fi
# the build first, beside the fixtures (both take minutes on a fresh machine)
cargo test --workspace --no-run "$@"
if [ -n "$fixtures_pid" ]; then
  wait "$fixtures_pid" || { echo "test: writing the fixtures failed (see above)" >&2; exit 1; }
fi

VEPHYS_TEST_DATABASE_URL="$(scripts/postgres.sh)"
export VEPHYS_TEST_DATABASE_URL
eval "$(scripts/postgres.sh tls)"   # TLS-only Postgres + its private CA for coordinator/tests/tls.rs

# S3 for the object-store and distributed tests; stopped however the tests end.
garage_env="$(scripts/garage.sh start)"   # a failed start stops the script (set -e)
eval "$garage_env"
trap 'scripts/garage.sh stop' EXIT

scripts/helm-check.sh
python -m pytest -q exporter/tests
# Headless Chromium for the results browser's browser tests (coordinator/tests/browser.rs).
VEPHYS_CHROMIUM="$(scripts/chromium.sh)"
export VEPHYS_CHROMIUM
cargo test --workspace --no-fail-fast "$@"
