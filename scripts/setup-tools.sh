#!/usr/bin/env bash
# Small Go tools the checks use (built once into $SELEXTRACT_CACHE/bin): actionlint for
# the GitHub workflows; Pebble, Let's Encrypt's ACME test server, for the certbot test
# (its test certificates are copied next to it, into $SELEXTRACT_CACHE/pebble).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ACTIONLINT_VERSION=v1.7.7
PEBBLE_VERSION=v2.10.1
bin=$SELEXTRACT_CACHE/bin
mkdir -p "$bin"
go_install() {
  GOTOOLCHAIN=local GOMODCACHE=$SELEXTRACT_CACHE/go/mod GOCACHE=$SELEXTRACT_CACHE/go/build GOBIN=$bin \
    CGO_ENABLED=0 go install "$1"
}
if [ -x "$bin/actionlint" ] && "$bin/actionlint" -version 2>/dev/null | grep -q "${ACTIONLINT_VERSION#v}"; then
  echo "[tools] actionlint $ACTIONLINT_VERSION cached"
else
  echo "[tools] building actionlint $ACTIONLINT_VERSION ..."
  go_install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
fi
pebble_dir=$SELEXTRACT_CACHE/pebble
if [ -x "$bin/pebble" ] && [ -f "$pebble_dir/$PEBBLE_VERSION" ]; then
  echo "[tools] pebble $PEBBLE_VERSION cached"
else
  echo "[tools] building pebble $PEBBLE_VERSION ..."
  go_install "github.com/letsencrypt/pebble/v2/cmd/pebble@$PEBBLE_VERSION"
  src=$SELEXTRACT_CACHE/go/mod/github.com/letsencrypt/pebble/v2@$PEBBLE_VERSION/test/certs
  rm -rf "$pebble_dir" && mkdir -p "$pebble_dir"
  cp "$src/pebble.minica.pem" "$src/localhost/cert.pem" "$src/localhost/key.pem" "$pebble_dir/"
  touch "$pebble_dir/$PEBBLE_VERSION"
fi
echo "[tools] ready"
