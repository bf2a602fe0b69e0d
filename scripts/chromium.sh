#!/usr/bin/env bash
# Makes sure Debian's headless-capable Chromium is installed, for the results browser's browser
# tests (coordinator/tests/browser.rs drives it over the DevTools protocol; no chromedriver
# needed). Run by scripts/test.sh; idempotent. Prints the browser's path.
set -euo pipefail
find_chromium() {
  if [ -n "${VEPHYS_CHROMIUM:-}" ] && [ -x "$VEPHYS_CHROMIUM" ]; then echo "$VEPHYS_CHROMIUM"; return; fi
  command -v chromium || command -v chromium-browser || command -v google-chrome || true
}
found="$(find_chromium)"
if [ -z "$found" ]; then
  echo "chromium: installing Debian's chromium package (browser tests)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
  found="$(find_chromium)"
fi
[ -n "$found" ] || { echo "chromium: not found after installing; set VEPHYS_CHROMIUM" >&2; exit 1; }
echo "$found"
