#!/usr/bin/env bash
# Every test: starts the real services the tests use, then runs pytest over tests/.
# Extra arguments go to pytest (e.g. scripts/test.sh -k haproxy).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
pulumi_env
mkdir -p artifacts
if [ -x scripts/services.sh ]; then
  step "test services (Postgres, Redis, S3, test site on 127.0.0.1)" scripts/services.sh start
fi
export SELEXTRACT_RELIABILITY_REPORT=${SELEXTRACT_RELIABILITY_REPORT:-artifacts/reliability.md}
set +e
if [ $# -eq 0 ] && [ "${SELEXTRACT_TEST_SERIAL:-0}" != 1 ]; then
  # The machine test bed's suite (tests/machines: its own machines, networks and
  # addresses, nothing on 127.0.0.1) mostly waits on SSH and deploys: run it beside the
  # rest instead of after it. Its output follows the main session's.
  .venv/bin/pytest -ra --junitxml=artifacts/junit-machines.xml tests/machines >artifacts/machines.log 2>&1 &
  machines_pid=$!
  .venv/bin/pytest -ra --junitxml=artifacts/junit.xml --ignore=tests/machines
  rc=$?
  wait "$machines_pid"
  machines_rc=$?
  echo "==> tests/machines (run beside the rest; log: artifacts/machines.log)"
  cat artifacts/machines.log
else
  .venv/bin/pytest -ra --junitxml=artifacts/junit.xml "$@"
  rc=$?
  machines_rc=0
fi
set -e
if [ $rc -eq 5 ] || [ $machines_rc -eq 5 ]; then
  echo "!! pytest collected no tests: that is a failure here" >&2
  exit 1
fi
[ $rc -ne 0 ] && exit $rc
exit $machines_rc
