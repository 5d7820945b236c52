#!/usr/bin/env bash
# Everything `make up` and `make test` need, on a fresh machine; every step skips what is
# already there, so a second run takes seconds.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
total=$SECONDS
step "system packages (apt)" "$REPO_ROOT/scripts/setup-system.sh"
step "python venv (uv)" "$REPO_ROOT/scripts/setup-python.sh"
step "docker engine" "$REPO_ROOT/scripts/setup-docker.sh"
step "pulumi CLI + plugins (cold: built from Go modules)" "$REPO_ROOT/scripts/setup-pulumi.sh"
step "seaweedfs S3 server (cold: built from its Go module)" "$REPO_ROOT/scripts/setup-seaweedfs.sh"
step "go tools (actionlint)" "$REPO_ROOT/scripts/setup-tools.sh"
step "service images (registry-less)" "$REPO_ROOT/scripts/build-images.sh"
echo "==> setup complete in $((SECONDS - total)) s"
