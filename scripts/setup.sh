#!/usr/bin/env bash
# Set up everything spokehub needs on a fresh Debian machine, idempotently:
# Debian build tools (apt-get), a virtualenv in .venv with spokehub and its dev
# tools, and llama.cpp's llama-server built once into ~/.cache/spokehub/.
# Usage: scripts/setup.sh            (sourced by run.sh and test.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
export DEBIAN_FRONTEND=noninteractive

apt_install() {
  local SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  if [[ -z "${SPOKEHUB_APT_UPDATED:-}" ]]; then
    $SUDO apt-get update -q
    export SPOKEHUB_APT_UPDATED=1
  fi
  $SUDO apt-get install -y -q --no-install-recommends "$@"
}

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v g++ >/dev/null || missing+=(g++)
command -v curl >/dev/null || missing+=(curl)
command -v patchelf >/dev/null || missing+=(patchelf)  # llamacpp.sh: RUNPATH $ORIGIN
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
for extra in ${SPOKEHUB_APT_EXTRA:-}; do
  dpkg -s "$extra" >/dev/null 2>&1 || missing+=("$extra")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt_install "${missing[@]}"
fi

if [[ ! -x "$ROOT/.venv/bin/python" ]]; then
  echo "setup: creating $ROOT/.venv"
  "$PYTHON" -m venv "$ROOT/.venv"
fi
stamp="$ROOT/.venv/.spokehub-installed"
if [[ ! -f "$stamp" || "$ROOT/pyproject.toml" -nt "$stamp" ]]; then
  echo "setup: installing spokehub and dev tools into .venv"
  "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[dev]"
  touch "$stamp"
fi

echo "setup: llama-server: $(PYTHON="$ROOT/.venv/bin/python" bash "$ROOT/scripts/llamacpp.sh")"
