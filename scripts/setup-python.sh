#!/usr/bin/env bash
# The project's virtualenv (.venv) from uv.lock, with every extra and the dev group.
# uv itself comes from a pinned version in a virtualenv the project owns
# ($SELEXTRACT_CACHE/uv): never the system Python (PEP 668 refuses that on Debian) and
# never a `uv` that only a developer's machine happens to have on PATH.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
UV_VERSION=0.13.8
uv_venv=$SELEXTRACT_CACHE/uv/$UV_VERSION
UV=$uv_venv/bin/uv
if ! [ -x "$UV" ] || [ "$("$UV" --version 2>/dev/null | awk '{print $2}')" != "$UV_VERSION" ]; then
  py=$(command -v python3 || true)
  [ -n "$py" ] || { echo "[python] python3 is missing (setup-system.sh installs it)" >&2; exit 1; }
  if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "[python] $py has no venv/ensurepip module (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
  echo "[python] installing uv $UV_VERSION into $uv_venv"
  rm -rf "$uv_venv"
  "$py" -m venv "$uv_venv"
  # the platform's CA store (a machine behind a TLS-inspecting proxy has its CA only there)
  cert=()
  [ -z "${PIP_CERT:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ] && cert=(--cert /etc/ssl/certs/ca-certificates.crt)
  "$uv_venv/bin/python" -m pip install -q --disable-pip-version-check "${cert[@]}" "uv==$UV_VERSION"
fi
# The project's Python is the system's 3.11 (pyproject: >=3.11,<3.12); uv must not
# download one, and its cache stays with the project's other caches.
export UV_CACHE_DIR=${UV_CACHE_DIR:-$SELEXTRACT_CACHE/uv/cache}
export UV_PYTHON_DOWNLOADS=never
# TLS trust from the platform's store, as pip and curl have it, not uv's bundled roots
export UV_SYSTEM_CERTS=1
"$UV" sync --frozen --all-extras -q
echo "[python] .venv ready ($(.venv/bin/python --version), uv $UV_VERSION)"
