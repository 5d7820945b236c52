#!/usr/bin/env bash
# Offline `pulumi preview` of the committed Hetzner stacks with the policy pack: what
# would each stack create, and does it pass every mandatory policy? Needs no cloud
# credentials and no network.
#
# Usage: scripts/preview-stacks.sh [STACK...]      (default: phase1 phase2 phase3 phase4)
#
# For each stack, in a scratch project (a temp dir whose Pulumi.yaml points `main:` at
# stacks/ and `virtualenv:` at .venv, plus a copy of Pulumi.<stack>.yaml, so the
# repository's stack files never get an encryptionsalt) with a throwaway file backend
# and passphrase and a dummy HCLOUD_TOKEN:
#   pulumi stack init; pulumi preview --diff --policy-pack policies
#     -> artifacts/preview-<stack>.txt   (the diff and the policy report)
#   pulumi preview --json
#     -> artifacts/preview-<stack>.json  (the JSON digest; stderr in preview-<stack>.err;
#        the digest carries no policy results, so the pack is not run twice)
#   scripts/preview_summary.py           -> artifacts/preview-<stack>.md
# and a table of results and times in artifacts/preview-stacks.txt
# (PREVIEW_ARTIFACTS=DIR writes them to DIR instead; PREVIEW_STACK_DIR=DIR takes the
# Pulumi.<stack>.yaml files from DIR instead of the repository root).
#
# "No network": when this machine allows it (root, or unprivileged user namespaces),
# every pulumi command runs in a new network namespace with only loopback, so a
# provider that tried to reach Hetzner's API or a server would fail the preview
# instead of silently depending on the network. SELEXTRACT_PREVIEW_NETNS=0 turns that
# off; HCLOUD_ENDPOINT points at a closed local port either way.
#
# Exit status: 0 when every preview succeeded without a mandatory policy violation,
# 1 otherwise (all stacks are still previewed), 2 on bad usage.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ -z "${PREVIEW_ARTIFACTS:-}" ] || PREVIEW_ARTIFACTS=$(realpath -m "$PREVIEW_ARTIFACTS")
CONFIG_DIR=$(realpath -m "${PREVIEW_STACK_DIR:-$REPO_ROOT}")
cd "$REPO_ROOT"

STACKS=("$@")
[ ${#STACKS[@]} -gt 0 ] || STACKS=(phase1 phase2 phase3 phase4)
for s in "${STACKS[@]}"; do
  [ -f "$CONFIG_DIR/Pulumi.$s.yaml" ] || { echo "preview-stacks: no $CONFIG_DIR/Pulumi.$s.yaml" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/selextract-preview.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
export PULUMI_BACKEND_URL="file://$WORK/unused" # pulumi_env must not pick the shared state
pulumi_env
command -v pulumi >/dev/null || { echo "preview-stacks: no pulumi CLI (run scripts/setup-pulumi.sh)" >&2; exit 1; }
PY="$REPO_ROOT/.venv/bin/python"
ART=${PREVIEW_ARTIFACTS:-artifacts}
mkdir -p "$ART"

# Run a command without network access (loopback only) when the kernel lets us.
NETNS=()
if [ "${SELEXTRACT_PREVIEW_NETNS:-1}" = 1 ] && command -v unshare >/dev/null && command -v ip >/dev/null; then
  if unshare -n sh -c 'ip link set lo up' 2>/dev/null; then
    NETNS=(unshare -n)
  elif unshare -rn sh -c 'ip link set lo up' 2>/dev/null; then
    NETNS=(unshare -rn)
  fi
fi
offline() {
  if [ ${#NETNS[@]} -gt 0 ]; then
    "${NETNS[@]}" sh -c 'ip link set lo up && exec "$@"' offline "$@"
  else
    "$@"
  fi
}
if [ ${#NETNS[@]} -gt 0 ]; then
  echo "==> previews run without network (${NETNS[*]}: loopback only)"
else
  echo "==> note: cannot isolate the network here (unshare -n not permitted); previewing anyway"
fi

# What a preview must not need: real credentials, the Hetzner API, the deploy key.
export PULUMI_CONFIG_PASSPHRASE="selextract-preview-$$"
export HCLOUD_TOKEN
HCLOUD_TOKEN=$(printf 'p%.0s' $(seq 64))
export HCLOUD_ENDPOINT="http://127.0.0.1:9/v1" # closed port: an API call fails at once
export PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
unset SSH_AUTH_SOCK

resources_of() { # json digest -> "N (create A, same B, ...)"
  "$PY" - "$1" <<'EOF'
import json, sys
try:
    summary = json.load(open(sys.argv[1])).get("changeSummary") or {}
except (OSError, ValueError):
    summary = {}
if summary:
    print(f"{sum(summary.values())} ({', '.join(f'{k} {v}' for k, v in sorted(summary.items()))})")
else:
    print("-")
EOF
}
# Policy violations of a preview's text output, one "- [level] ... rule  (resource)" line
# each (the form preview_summary.py reads): with --diff the CLI prints them inline as
# "selextract@v1.0.0 [mandatory] [severity: ...]  rule  (type: name)message".
policy_lines() { # text-output
  "$PY" - "$1" <<'EOF'
import re, sys
listed = re.compile(r"^\s*- \[(mandatory|advisory|remediate)\]")
inline = re.compile(r"^\s*\S+@v\S+\s+(\[(?:mandatory|advisory|remediate)\](?:\s*\[severity: \w+\])?\s+\S+\s+\([^)]*\))")
seen = set()
for line in open(sys.argv[1], errors="replace"):
    if listed.match(line):
        out = line.strip()
    elif m := inline.match(line):
        out = "- " + m.group(1)
    else:
        continue
    if out not in seen:
        seen.add(out)
        print(out)
EOF
}
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

TABLE="$ART/preview-stacks.txt"
printf '%-8s %-6s %7s %7s  %s\n' stack result diff_s json_s resources >"$TABLE"
failed=()
for stack in "${STACKS[@]}"; do
  echo "==> preview $stack"
  project="$WORK/$stack"
  mkdir -p "$project/state"
  "$PY" - "$REPO_ROOT" "$project" <<'EOF'
import sys
from pathlib import Path
import yaml
root, project = Path(sys.argv[1]), Path(sys.argv[2])
doc = yaml.safe_load((root / "Pulumi.yaml").read_text())
doc["main"] = str(root / "stacks")
doc["runtime"]["options"]["virtualenv"] = str(root / ".venv")
(project / "Pulumi.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
EOF
  cp "$CONFIG_DIR/Pulumi.$stack.yaml" "$project/"
  export PULUMI_BACKEND_URL="file://$project/state"
  txt="$ART/preview-$stack.txt" json="$ART/preview-$stack.json"
  err="$ART/preview-$stack.err" md="$ART/preview-$stack.md"
  rm -f "$txt" "$json" "$err" "$md"
  if ! init_out=$(cd "$project" && pulumi stack init "$stack" --secrets-provider passphrase --non-interactive 2>&1); then
    echo "$init_out" | tee "$txt" >&2
    printf '%-8s %-6s %7s %7s  %s\n' "$stack" FAILED - - "pulumi stack init failed" >>"$TABLE"
    failed+=("$stack")
    continue
  fi

  t0=$EPOCHREALTIME
  set +e
  (cd "$project" && offline pulumi preview --stack "$stack" --diff --policy-pack "$REPO_ROOT/policies" \
    --non-interactive --color=never) >"$txt" 2>&1
  rc_diff=$?
  t1=$EPOCHREALTIME
  (cd "$project" && offline pulumi preview --stack "$stack" --json --non-interactive --color=never) \
    >"$json" 2>"$err"
  rc_json=$?
  t2=$EPOCHREALTIME
  set -e
  diff_s=$(seconds "$t0" "$t1")
  json_s=$(seconds "$t1" "$t2")
  policy_lines "$txt" >"$project/policy.txt"
  summary_args=("$json" --stack "$stack" --policy-log "$project/policy.txt" --output "$md")
  if [ -s "$err" ]; then summary_args+=(--errors "$err"); else rm -f "$err"; fi
  "$PY" scripts/preview_summary.py "${summary_args[@]}" || echo "    (preview_summary.py failed)" >&2

  result=ok
  if [ $rc_diff -ne 0 ] || [ $rc_json -ne 0 ]; then result=FAILED; fi
  if grep -q '^- \[mandatory\]' "$project/policy.txt"; then result=POLICY; fi
  [ "$result" = ok ] || failed+=("$stack")
  counts=$(resources_of "$json")
  printf '%-8s %-6s %7s %7s  %s\n' "$stack" "$result" "$diff_s" "$json_s" "$counts" >>"$TABLE"
  echo "    $stack: $result in ${diff_s} s (diff) + ${json_s} s (json); resources: $counts"
  if [ "$result" != ok ]; then
    { grep '^- \[mandatory\]' "$project/policy.txt"; grep -E '^\s*error:' "$txt"; } | head -20 | sed 's/^/    /' >&2 || true
  fi
done

echo "==> results ($ART/preview-<stack>.{txt,json,md})"
cat "$TABLE"
if [ ${#failed[@]} -gt 0 ]; then
  echo "!! preview failed or a mandatory policy was violated: ${failed[*]}" >&2
  exit 1
fi
