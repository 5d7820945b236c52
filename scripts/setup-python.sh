#!/usr/bin/env bash
# The project's virtualenv (.venv) from uv.lock, with every extra and the dev group.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
if ! command -v uv >/dev/null 2>&1; then
  echo "[python] installing uv"
  python3 -m pip install -q "uv==0.13.8"
fi
uv sync --frozen --all-extras -q
echo "[python] .venv ready ($(.venv/bin/python --version))"
