#!/usr/bin/env bash
# Viewer test: open an OME-Zarr image in vizarr in headless Chromium and check
# that it renders. Usage: tests/viewer/run.sh IMAGE_DIR [OUT_DIR]
# OUT_DIR defaults to tests/viewer/screenshots/<image name>.
# Exit: 0 pass, 1 fail, 2 setup problem (no node/npm/chromium, npm ci failed).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 IMAGE_DIR [OUT_DIR]" >&2
  exit 2
fi
image="$1"
out="${2:-$here/screenshots/$(basename "$image")}"
for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "viewer test: SETUP ERROR: $tool not found (apt-get install -y nodejs npm)" >&2
    exit 2
  fi
done
# (Re)install the pinned npm pieces when node_modules is missing or was
# installed from another package-lock.json.
stamp="$here/node_modules/.viewer-lock.sha256"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "viewer test: npm ci in $here" >&2
  if ! (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2); then
    echo "viewer test: SETUP ERROR: npm ci failed" >&2
    exit 2
  fi
  echo "$want" > "$stamp"
fi
exec node "$here/view.mjs" "$image" "$out"
