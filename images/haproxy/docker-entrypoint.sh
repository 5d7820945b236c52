#!/bin/sh
# Like the official haproxy image: `docker run IMAGE -f x.cfg` runs haproxy,
# and a bare `haproxy ...` gets master-worker mode in the foreground (-W -db).
set -e
case "$1" in -*) set -- haproxy "$@" ;; esac
if [ "$1" = haproxy ]; then
  shift
  set -- haproxy -W -db "$@"
fi
exec "$@"
