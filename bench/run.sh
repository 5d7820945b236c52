#!/usr/bin/env bash
# `make bench [BENCH_ARGS=--quick]`: the benchmark tools, then `python -m bench`.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
pulumi_env
cd "$REPO_ROOT"
# the bench dependency group (Scrapy, pyinstrument, py-spy); `make setup` syncs only the default groups
uv sync --frozen --all-extras --all-groups -q
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
exec .venv/bin/python -m bench "$@"
