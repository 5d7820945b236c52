#!/bin/sh
# Like the official nginx image's entrypoint, for `nginx` commands:
#  - /etc/nginx/templates/*.template are rendered with envsubst into
#    /etc/nginx/conf.d/ (only variables that are set are substituted),
#  - executable /docker-entrypoint.d/*.sh scripts are run.
set -e
if [ "$1" = nginx ] || [ "$1" = nginx-debug ]; then
  for t in /etc/nginx/templates/*.template; do
    [ -f "$t" ] || continue
    out=/etc/nginx/conf.d/$(basename "$t" .template)
    vars=$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/${\1}/p' | tr '\n' ' ')
    echo "$0: rendering $t to $out"
    envsubst "$vars" <"$t" >"$out"
  done
  for s in /docker-entrypoint.d/*.sh; do
    if [ -x "$s" ]; then echo "$0: running $s"; "$s"; fi
  done
fi
exec "$@"
