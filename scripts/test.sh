#!/usr/bin/env bash
# The whole test suite, as CI runs it: set up, then ruff, mypy --strict, pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# --ui: Open WebUI against a real hub in Chromium (scripts/test_ui.sh) instead of the suite.
if [[ "${1:-}" == "--ui" ]]; then
  shift
  exec bash scripts/test_ui.sh "$@"
fi
start=$(date +%s)
# prometheus (with promtool) and docker-compose: tests/deploy checks the alert rules,
# runs a real Prometheus against a hub and validates deploy/docker-compose.yml.
# redis-server and haproxy: several hubs sharing state, behind a real load balancer.
SPOKEHUB_APT_EXTRA="${SPOKEHUB_APT_EXTRA:-systemd chromium fonts-dejavu-core wrk prometheus docker-compose redis-server haproxy}" bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest -q -p no:cacheprovider "$@"
echo "== all checks passed in $(( $(date +%s) - start ))s"
