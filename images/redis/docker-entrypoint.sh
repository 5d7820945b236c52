#!/bin/sh
# Like the official redis image's entrypoint: `docker run IMAGE --opt` and
# `docker run IMAGE some.conf` run redis-server; redis-server drops root to the
# redis user. The official binary is patched to default to protected-mode no;
# Debian's is not, so pass --protected-mode no unless a config file or the
# arguments decide it. With no config file Redis binds to all interfaces.
set -e

case "$1" in -*|*.conf) set -- redis-server "$@" ;; esac

if [ "$1" = redis-server ] || [ "$1" = /usr/bin/redis-server ]; then
  conf=no; pm=no
  for a in "$@"; do
    case "$a" in *.conf) conf=yes ;; --protected-mode) pm=yes ;; esac
  done
  if [ $conf = no ] && [ $pm = no ]; then set -- "$@" --protected-mode no; fi
  if [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
  fi
fi
umask 0077
exec "$@"
