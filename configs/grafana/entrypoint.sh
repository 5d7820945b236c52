#!/bin/sh
# Grafana's entrypoint wrapper (configs/grafana/entrypoint.sh, see infra/specs/monitoring.py).
# Grafana reads GF_SECURITY_ADMIN_PASSWORD only when it creates its database, so a rotated
# monitoring password would never reach it. The password is in this container's environment
# (a new one replaces the container), so on every start with an existing database the stored
# admin password is reset to it first. It travels on stdin (printf is a shell builtin), never
# on a command line. The entry forwards its basic-auth header, which Grafana accepts while
# both hold the same password.
set -eu
data="${GF_PATHS_DATA:-/var/lib/grafana}"
if [ -f "$data/grafana.db" ]; then
    if ! printf '%s\n' "$GF_SECURITY_ADMIN_PASSWORD" | grafana cli \
        --homepath "${GF_PATHS_HOME:-/usr/share/grafana}" --config "${GF_PATHS_CONFIG:-/etc/grafana/grafana.ini}" \
        admin reset-admin-password --password-from-stdin; then
        echo "selextract: could not reset Grafana's admin login to GF_SECURITY_ADMIN_PASSWORD;" \
            "not starting with a login that may have been rotated away" >&2
        exit 1
    fi
fi
exec "$@"
