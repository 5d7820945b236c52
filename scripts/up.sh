#!/usr/bin/env bash
# pulumi up / preview / destroy for a stack, with the offline toolchain and file state.
# Usage: scripts/up.sh [--preview|--destroy] [STACK]   (default stack: local)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
pulumi_env
action=up
case "${1:-}" in --preview) action=preview; shift ;; --destroy) action=destroy; shift ;; esac
stack=${1:-local}
cd "$REPO_ROOT"
if [ "$stack" = local ] || [[ "$stack" == e2e-* ]]; then
  # Local simulation stacks: the passphrase only guards generated local passwords.
  export PULUMI_CONFIG_PASSPHRASE=${PULUMI_CONFIG_PASSPHRASE:-selextract-local}
fi
pulumi stack select --create --secrets-provider passphrase "$stack" >/dev/null
case $action in
  up) # a killed earlier run leaves a lock and unrecorded containers: clear them first
      "$REPO_ROOT/.venv/bin/python" -m ops.repair "$stack"
      pulumi up --yes --stack "$stack" --diff --suppress-progress
      echo; pulumi stack output --stack "$stack" ;;
  preview) pulumi preview --stack "$stack" --diff ;;
  destroy) pulumi destroy --yes --stack "$stack" --suppress-progress ;;
esac
