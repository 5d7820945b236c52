#!/bin/sh
# Entry-point wrapper for nginx/HAProxy: make sure a certificate exists before the proxy
# starts (self-signed until ACME replaces it), then exec the proxy given as arguments.
set -eu
dir=/etc/selextract/tls
if [ ! -s "$dir/cert.pem" ] && command -v openssl >/dev/null 2>&1; then
  openssl req -x509 -nodes -newkey rsa:2048 -days 365 -subj "/CN=${TLS_COMMON_NAME:-localhost}" \
    -addext "subjectAltName=DNS:${TLS_COMMON_NAME:-localhost},DNS:*.${TLS_COMMON_NAME:-localhost},IP:127.0.0.1" \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
  cat "$dir/cert.pem" "$dir/key.pem" > "$dir/combined.pem"
fi
# Pick up renewed certificates: reload the proxy every RELOAD_EVERY seconds if set.
if [ -n "${RELOAD_EVERY:-}" ]; then
  (
    while sleep "$RELOAD_EVERY"; do
      case "$1" in
        nginx) nginx -s reload ;;
        haproxy) kill -USR2 1 ;;
      esac
    done
  ) &
fi
exec "$@"
