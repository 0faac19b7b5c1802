#!/usr/bin/env bash
# Fetch the browser assets we serve ourselves (never from a CDN at run time: a self-hosted app works
# offline) from the npm registry, unmodified, with their licence and version.
# Usage: scripts/vendor.sh   (re-run after changing a version below, then commit static/vendor/)
set -euo pipefail
cd "$(dirname "$0")/.."

HTMX_VERSION=2.0.11      # docs/architecture.md says why 2.x and not 4.x
SSE_VERSION=2.2.4        # htmx-ext-sse, the SSE extension for htmx 2
AXE_VERSION=4.14.1       # axe-core: the browser tests' accessibility checks (never served to a page)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() {  # fetch PACKAGE VERSION DEST_DIR FILE...
  local pkg=$1 version=$2 dest=$3; shift 3
  local tarball
  tarball=$(cd "$work" && npm pack --silent "$pkg@$version")
  mkdir -p "$work/$pkg" "$dest"
  tar -xzf "$work/$tarball" -C "$work/$pkg"
  for file in "$@"; do cp "$work/$pkg/package/$file" "$dest/"; done
  cp "$work/$pkg/package/LICENSE"* "$dest/"
  echo "$pkg@$version (npm registry, unmodified)" > "$dest/VERSION"
}

fetch htmx.org "$HTMX_VERSION" static/vendor/htmx dist/htmx.min.js
fetch htmx-ext-sse "$SSE_VERSION" static/vendor/htmx-ext-sse sse.js
fetch axe-core "$AXE_VERSION" static/vendor/axe-core axe.min.js
ls -l static/vendor/*
