#!/usr/bin/env bash
# Open WebUI against a real hub, driven in Chromium (tests_ui/, not part of the
# default suite). Sets up .venv (spokehub + dev tools, llama-server) and, once,
# .venv-ui with the open-webui package from PyPI (heavy: torch and friends, several
# GB), then runs tests_ui/ with pytest. Extra arguments go to pytest.
# Usage: scripts/test_ui.sh [pytest args]     (or: scripts/test.sh --ui)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
start=$(date +%s)
SPOKEHUB_APT_EXTRA="${SPOKEHUB_APT_EXTRA:-chromium fonts-dejavu-core}" bash scripts/setup.sh

UI_PYTHON="${UI_PYTHON:-python3.11}"   # open-webui needs Python 3.11 or 3.12
UI_VENV="$ROOT/.venv-ui"
OPEN_WEBUI_SPEC="${OPEN_WEBUI_SPEC:-open-webui}"
stamp="$UI_VENV/.open-webui-installed"
if [[ ! -f "$stamp" ]]; then
  [[ -x "$UI_VENV/bin/python" ]] || "$UI_PYTHON" -m venv "$UI_VENV"
  echo "test_ui: installing $OPEN_WEBUI_SPEC into $UI_VENV (several GB, a few minutes)"
  t0=$(date +%s)
  "$UI_VENV/bin/python" -m pip install -q --disable-pip-version-check "$OPEN_WEBUI_SPEC"
  echo "test_ui: installed in $(( $(date +%s) - t0 ))s, $(du -sh "$UI_VENV" | cut -f1)"
  touch "$stamp"
fi
# As newer venvs do: git, and ruff in scripts/test.sh, then skip the whole virtualenv.
echo '*' > "$UI_VENV/.gitignore"
echo "test_ui: $("$UI_VENV/bin/python" -m pip show open-webui | grep -i '^version')"

echo "== ruff, mypy --strict (tests_ui)"
.venv/bin/ruff check tests_ui
.venv/bin/mypy tests_ui
echo "== pytest tests_ui"
SPOKEHUB_OPEN_WEBUI="$UI_VENV/bin/open-webui" \
  .venv/bin/pytest -q -s -p no:cacheprovider tests_ui "$@"
echo "== Open WebUI checks passed in $(( $(date +%s) - start ))s"
