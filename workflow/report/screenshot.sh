#!/usr/bin/env bash
# Render a Snakemake HTML report with a headless browser and save a PNG (docs/analysis.md "The HTML report").
# Needs Debian's chromium (apt-get install chromium). Usage: workflow/report/screenshot.sh REPORT.html OUT.png [WxH]
# The report is a JavaScript page: the virtual-time budget lets it render before the capture.
set -euo pipefail
report=$(realpath "$1")
out=$(realpath -m "$2")
size=${3:-1400,1600}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "no chromium found: apt-get install chromium" >&2
  exit 1
fi
# a fresh profile and no background services: otherwise chromium reaches for the network (updates, sync, QUIC)
# and, on a machine without internet, can stall before the capture
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --virtual-time-budget=10000 --window-size="$size" --screenshot="$out" "file://$report" >/dev/null 2>&1
test -s "$out"
echo "$out"
