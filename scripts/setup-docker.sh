#!/usr/bin/env bash
# Make sure a Docker engine is running on this machine: install docker.io from Debian
# if absent and start dockerd with a log file. Idempotent; prints what it does.
set -euo pipefail
LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
export PATH=/usr/bin:$PATH   # the docker.io client (BuildKit-capable) before any newer client without buildx

if docker info >/dev/null 2>&1; then
  echo "[docker] engine already running ($(docker version --format '{{.Server.Version}}'))"
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "[docker] installing docker.io and debootstrap from Debian..."
  [ "$(id -u)" = 0 ] || { echo "[docker] need root to install docker.io" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
echo "[docker] starting dockerd (log: $LOG)"
nohup dockerd >"$LOG" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "[docker] engine up ($(docker version --format '{{.Server.Version}}'))"
    exit 0
  fi
  sleep 1
done
echo "[docker] dockerd did not come up within 60 s; last log lines:" >&2
tail -20 "$LOG" >&2
exit 1
