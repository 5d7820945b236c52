# Shared helpers for the setup/run scripts (sourced, not executed).
SELEXTRACT_CACHE=${SELEXTRACT_CACHE:-$HOME/.cache/selextract}
SELEXTRACT_STATE=${SELEXTRACT_STATE:-$HOME/.local/state/selextract}
export SELEXTRACT_CACHE SELEXTRACT_STATE
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# the docker.io client (BuildKit) before a newer client without buildx; our Go tools; the
# sbin directories (haproxy, nginx, runuser live there; a non-login PATH may lack them)
export PATH="/usr/bin:$SELEXTRACT_CACHE/bin:$PATH:/usr/sbin:/sbin:/usr/local/go/bin"

step() {  # step "label" command... — prints the label, the command's time, fails loudly
  local label=$1; shift
  local start=$SECONDS
  echo "==> $label"
  if "$@"; then
    echo "    done: $label ($((SECONDS - start)) s)"
  else
    local rc=$?
    echo "!!  failed: $label (exit $rc)" >&2
    return $rc
  fi
}

pulumi_env() {  # the offline Pulumi toolchain and the local state backend
  [ -f "$SELEXTRACT_CACHE/pulumi/env.sh" ] && . "$SELEXTRACT_CACHE/pulumi/env.sh"
  command -v pulumi >/dev/null 2>&1 || export PATH="$SELEXTRACT_CACHE/pulumi/bin:$PATH"
  export PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
  export PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-file://$SELEXTRACT_STATE/pulumi}
  mkdir -p "${PULUMI_BACKEND_URL#file://}"
  export PATH="$REPO_ROOT/.venv/bin:$PATH"
}
