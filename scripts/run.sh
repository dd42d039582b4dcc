#!/usr/bin/env bash
# Set up and run the main job: a hub (configs/example.yaml) with two real
# llama.cpp workers on this machine. Ctrl-C stops everything.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
exec .venv/bin/python scripts/run_local.py --config "${1:-configs/example.yaml}"
