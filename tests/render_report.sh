#!/usr/bin/env bash
# Render a run's report.html in headless Chromium (Debian package `chromium`) and check that the
# screenshot is not blank. Without an argument it builds the fake run of tests/report_test.ts.
#
#   tests/render_report.sh [RUN_DIR] [SCREENSHOT.png]
#
# Writes RUN_DIR/report.html (deno task report) and SCREENSHOT.png (default /tmp/report.png);
# exits 1 when Chromium is missing or the page renders blank. Look at the PNG afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
run="${1:-}"
shot="${2:-/tmp/report.png}"
browser="$(command -v chromium || command -v chromium-browser || true)"
if [[ -z "$browser" ]]; then
  echo "error: no chromium on PATH; install it with: apt-get install -y chromium" >&2
  exit 1
fi
if [[ -z "$run" ]]; then
  run="$(mktemp -d)/run"
  deno run -A tests/fixtures/report_run.ts "$run" >/dev/null
fi
deno run --allow-read --allow-write="$run" --allow-env stages/report.ts --run.dir="$run"
profile="$(mktemp -d)"
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --screenshot="$shot" --window-size=1200,3000 \
  "file://$(realpath "$run")/report.html" >/dev/null 2>&1
rm -rf "$profile"
deno run --allow-read tests/fixtures/png_ink.ts "$shot"
