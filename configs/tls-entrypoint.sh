#!/bin/sh
# Entry-point wrapper for nginx/HAProxy: make sure a certificate exists before the proxy
# starts (the stack's self-signed bootstrap certificate until ACME replaces it), then
# exec the proxy given as arguments.
set -eu
dir=/etc/selextract/tls
if [ ! -s "$dir/cert.pem" ]; then
  cp /etc/selextract/tls-bootstrap/cert.pem /etc/selextract/tls-bootstrap/key.pem \
     /etc/selextract/tls-bootstrap/combined.pem "$dir/"
  chmod 600 "$dir/key.pem" "$dir/combined.pem"
fi
# HAProxy loads the monitoring login from a second config file that the password-sync
# step writes; until it has, an empty userlist keeps the monitoring hostname closed.
if [ -n "${MONITORING_USERLIST:-}" ] && [ ! -s "$MONITORING_USERLIST" ]; then
  (umask 077; printf 'userlist monitoring_users\n' > "$MONITORING_USERLIST")
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
