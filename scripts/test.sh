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
set +e
SELEXTRACT_RELIABILITY_REPORT=${SELEXTRACT_RELIABILITY_REPORT:-artifacts/reliability.md} \
  .venv/bin/pytest -ra --junitxml=artifacts/junit.xml "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "!! pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit $rc
