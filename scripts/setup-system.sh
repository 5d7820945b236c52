#!/usr/bin/env bash
# Debian packages the project runs and tests with. Idempotent: installs only what is missing.
set -euo pipefail
PACKAGES=(
  docker.io debootstrap            # the local engine and registry-less base images
  postgresql redis-server          # real services for the app/worker tests
  haproxy nginx-light cloud-init   # config validation with the real tools
  prometheus prometheus-alertmanager
  chromium chromium-driver         # web console / dashboard browser tests
  wrk git curl openssl util-linux openssh-server   # openssh-server: the remote-command provider test
  iproute2 python3 python3-venv    # ip: preview netns; the project venv is made by a pinned uv in a venv of its own
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[system] all ${#PACKAGES[@]} packages present"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "[system] need root to install: ${missing[*]}" >&2; exit 1; }
echo "[system] installing: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages start their own daemons; the project runs its own instances.
for svc in postgresql redis-server nginx haproxy prometheus prometheus-alertmanager; do
  service "$svc" stop >/dev/null 2>&1 || true
done
echo "[system] installed ${#missing[@]} packages"
