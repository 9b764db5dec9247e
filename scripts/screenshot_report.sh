#!/usr/bin/env bash
# Screenshot a `drcl report` folder with headless Chromium, to check by eye that it renders.
#
#   scripts/screenshot_report.sh REPORT_DIR OUT.png [WIDTH,HEIGHT]
#
# REPORT_DIR is the folder `drcl report ... --out REPORT_DIR` wrote (it holds index.html).
# The page is self-contained (inline CSS, relative PNGs, no JS), so no network is needed; every
# Chromium feature that could reach the network is switched off. Default window: 1400,3000.
# Needs `chromium` (Debian: apt-get install -y chromium); exits 2 when it is missing.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 REPORT_DIR OUT.png [WIDTH,HEIGHT]" >&2
    exit 2
fi
report_dir=$1
out_png=$2
window=${3:-1400,3000}

if [[ ! -f "$report_dir/index.html" ]]; then
    echo "$0: $report_dir/index.html not found (is it a drcl report folder?)" >&2
    exit 1
fi
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$browser" ]]; then
    echo "$0: chromium not found (Debian: apt-get install -y chromium)" >&2
    exit 2
fi

index=$(cd "$report_dir" && pwd)/index.html
out_abs=$(cd "$(dirname "$out_png")" && pwd)/$(basename "$out_png")
profile=$(mktemp -d)  # a throw-away profile: no state shared with a real browser
trap 'rm -rf "$profile"' EXIT

"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" \
    --screenshot="$out_abs" --window-size="$window" "file://$index" >/dev/null 2>&1

if [[ ! -s "$out_abs" ]]; then
    echo "$0: chromium wrote no screenshot to $out_abs" >&2
    exit 1
fi
echo "$out_abs"
