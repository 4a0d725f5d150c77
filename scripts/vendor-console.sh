#!/usr/bin/env bash
# Refresh the console's browser libraries in consumer/console/static/vendor/ from their npm packages.
# The console works offline: these files ship inside the Python package, no CDN is ever used.
# To update: change a version below, run this script, check the console (pytest tests/console), commit.
set -euo pipefail
PACKAGES=("htmx.org@2.0.11:dist/htmx.min.js:LICENSE" "cytoscape@3.35.0:dist/cytoscape.min.js:LICENSE"
          "chart.js@4.6.1:dist/chart.umd.min.js:LICENSE.md")
DEST="$(cd "$(dirname "$0")/.." && pwd)/consumer/console/static/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST"
for entry in "${PACKAGES[@]}"; do
    IFS=: read -r spec file licence <<<"$entry"
    name="${spec%@*}"
    tarball="$(cd "$WORK" && npm pack --silent "$spec")"
    mkdir -p "$WORK/$name"
    tar -xzf "$WORK/$tarball" -C "$WORK/$name"
    cp "$WORK/$name/package/$file" "$DEST/"
    cp "$WORK/$name/package/$licence" "$DEST/$(basename "$file" .js).LICENSE.txt"
    echo "$spec $(basename "$file")" >>"$WORK/versions"
done
sort "$WORK/versions" >"$DEST/VERSIONS.txt"
