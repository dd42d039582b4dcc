#!/usr/bin/env bash
# The whole test suite, as CI runs it: set up, then ruff, mypy --strict, pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
start=$(date +%s)
SPOKEHUB_APT_EXTRA="${SPOKEHUB_APT_EXTRA:-systemd chromium fonts-dejavu-core wrk}" bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest -q -p no:cacheprovider "$@"
echo "== all checks passed in $(( $(date +%s) - start ))s"
