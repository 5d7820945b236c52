#!/usr/bin/env bash
# Small Go tools the checks use (built once into $SELEXTRACT_CACHE/bin): actionlint for
# the GitHub workflows.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ACTIONLINT_VERSION=v1.7.7
bin=$SELEXTRACT_CACHE/bin
if [ -x "$bin/actionlint" ] && "$bin/actionlint" -version 2>/dev/null | grep -q "${ACTIONLINT_VERSION#v}"; then
  echo "[tools] actionlint $ACTIONLINT_VERSION cached"
  exit 0
fi
mkdir -p "$bin"
echo "[tools] building actionlint $ACTIONLINT_VERSION ..."
GOTOOLCHAIN=local GOMODCACHE=$SELEXTRACT_CACHE/go/mod GOCACHE=$SELEXTRACT_CACHE/go/build GOBIN=$bin \
  go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
echo "[tools] actionlint ready"
