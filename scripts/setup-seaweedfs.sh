#!/usr/bin/env bash
# Build SeaweedFS's `weed` (Apache-2.0 S3 server) from its Go module, once: the local
# stack's object store and the test suite's S3 server. MinIO is AGPL and not built here.
set -euo pipefail
VERSION=${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}
CACHE=${SELEXTRACT_CACHE:-$HOME/.cache/selextract}
BIN=$CACHE/bin/weed
STAMP=$CACHE/bin/weed.version
if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION" ]; then
  echo "[seaweedfs] cached: $BIN ($VERSION)"
  exit 0
fi
export GOTOOLCHAIN=local GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build GOFLAGS=-mod=mod
mkdir -p "$CACHE/bin" "$CACHE/src"
echo "[seaweedfs] fetching module github.com/seaweedfs/seaweedfs@$VERSION ..."
dir=$(go mod download -json "github.com/seaweedfs/seaweedfs@$VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "[seaweedfs] module download failed" >&2; exit 1; }
# Its go.mod has replace directives, honoured only when it is the main module: build a copy.
src=$CACHE/src/seaweedfs-$VERSION
if [ ! -d "$src" ]; then
  cp -r "$dir" "$src.tmp" && chmod -R u+w "$src.tmp" && mv "$src.tmp" "$src"
fi
echo "[seaweedfs] building weed (cold: ~5-10 min on 2 cores) ..."
start=$(date +%s)
(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" ./weed)
mv "$BIN.tmp" "$BIN"
echo "$VERSION" > "$STAMP"
echo "[seaweedfs] built $BIN in $(( $(date +%s) - start )) s"
