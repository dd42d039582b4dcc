#!/usr/bin/env bash
# The docker-compose stack without Docker: a hub, two llama.cpp workers, an agent
# and a real Prometheus (with the spokehub rules) as plain processes on this
# machine, all on 127.0.0.1. Grafana is left out (no Debian package); point one at
# the Prometheus printed below and import deploy/grafana/dashboards/*.json.
#
# Usage: deploy/stack/run.sh [run|start|stop|status] [--dir DIR]
#   run      start everything, wait for Ctrl-C or SIGTERM, stop everything (default)
#   start    start everything in the background and return; `stop` ends it
#   stop     stop the processes recorded in DIR/pids (SIGTERM, SIGKILL after 15 s)
#   status   show which of them are running
#   --dir    where configs, logs, pids and Prometheus data go (default .run/stack)
#
# Needs scripts/setup.sh done (.venv, llama-server) and Debian's prometheus package.
# Ports (moved to free ones when busy): SPOKEHUB_STACK_HUB_PORT (8080),
# SPOKEHUB_STACK_LLAMA1_PORT (8081), SPOKEHUB_STACK_LLAMA2_PORT (8082),
# SPOKEHUB_STACK_PROM_PORT (9090). SPOKEHUB_STACK_INTERVAL sets Prometheus' scrape
# and rule evaluation interval (15s).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${SPOKEHUB_CACHE:-$HOME/.cache/spokehub}"
PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || PY="$(command -v python3)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

cmd=run
DIR="$ROOT/.run/stack"
while (($#)); do
  case "$1" in
    run|start|stop|status) cmd="$1" ;;
    --dir) DIR="${2:?--dir needs a directory}"; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PIDS="$DIR/pids"

say() { echo "stack: $*" >&2; }

# The start time of a process (field 22 of /proc/PID/stat): with the PID it names
# the process we started, even if the PID was reused since.
started_at() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; }

ours() {  # ours PID START: is PID still the process recorded with START?
  [[ -n "$2" && "$(started_at "$1")" == "$2" ]]
}

stop_all() {
  [[ -f "$PIDS" ]] || { say "nothing recorded in $PIDS"; return 0; }
  local name pid start alive deadline
  # Reverse start order: Prometheus and the agent first, the workers last.
  while read -r name pid start; do
    if ours "$pid" "$start"; then kill -TERM "$pid" 2>/dev/null || true; fi
  done < <(tac "$PIDS")
  deadline=$((SECONDS + 15))
  while :; do
    alive=()
    while read -r name pid start; do
      if ours "$pid" "$start"; then alive+=("$name:$pid"); fi
    done <"$PIDS"
    ((${#alive[@]})) || break
    if ((SECONDS >= deadline)); then
      say "SIGKILL ${alive[*]}"
      for entry in "${alive[@]}"; do kill -KILL "${entry#*:}" 2>/dev/null || true; done
      break
    fi
    sleep 0.2
  done
  rm -f "$PIDS"
  say "stopped"
}

status() {
  [[ -f "$PIDS" ]] || { say "not running ($PIDS missing)"; return 1; }
  local name pid start rc=0
  while read -r name pid start; do
    if ours "$pid" "$start"; then echo "$name $pid running"; else echo "$name $pid gone"; rc=1; fi
  done <"$PIDS"
  return "$rc"
}

case "$cmd" in
  stop) stop_all; exit 0 ;;
  status) status; exit $? ;;
esac

if [[ -f "$PIDS" ]]; then
  while read -r name pid start; do
    if ours "$pid" "$start"; then
      say "$name ($pid) of an earlier start is running; first: $0 stop --dir $DIR"
      exit 1
    fi
  done <"$PIDS"
fi
command -v prometheus >/dev/null || { say "prometheus not found: apt-get install prometheus"; exit 1; }
command -v curl >/dev/null || { say "curl not found: apt-get install curl"; exit 1; }
mkdir -p "$DIR"
rm -f "$PIDS"

port_free() { "$PY" -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pick_port() {  # pick_port NAME DEFAULT
  local want="$2"
  if port_free "$want"; then echo "$want"; return; fi
  local other; other="$(free_port)"
  say "port $want for $1 is busy, using $other"
  echo "$other"
}
HUB_PORT="$(pick_port hub "${SPOKEHUB_STACK_HUB_PORT:-8080}")"
L1_PORT="$(pick_port llama1 "${SPOKEHUB_STACK_LLAMA1_PORT:-8081}")"
L2_PORT="$(pick_port llama2 "${SPOKEHUB_STACK_LLAMA2_PORT:-8082}")"
PROM_PORT="$(pick_port prometheus "${SPOKEHUB_STACK_PROM_PORT:-9090}")"
INTERVAL="${SPOKEHUB_STACK_INTERVAL:-15s}"

# launch NAME CMD...: start in the background, output to DIR/NAME.log, record the PID.
launch() {
  local name="$1"; shift
  "$@" >"$DIR/$name.log" 2>&1 </dev/null &
  local pid=$!
  echo "$name $pid $(started_at "$pid")" >>"$PIDS"
}

# wait_for NAME URL [TIMEOUT] [PATTERN]: until URL answers 2xx (and its body has PATTERN).
wait_for() {
  local name="$1" url="$2" deadline=$((SECONDS + ${3:-90})) pattern="${4:-}" pid body
  pid="$(awk -v n="$name" '$1 == n {print $2}' "$PIDS")"
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$name exited; last lines of $DIR/$name.log:"; tail -n 20 "$DIR/$name.log" >&2
      return 1
    fi
    if body="$(curl -fsS --max-time 2 "$url" 2>/dev/null)" && [[ "$body" == *"$pattern"* ]]; then
      return 0
    fi
    if ((SECONDS >= deadline)); then say "$name: $url not ready"; return 1; fi
    sleep 0.2
  done
}

trap 'say "start failed, stopping what was started"; stop_all' ERR

bin="$(PYTHON="$PY" bash "$ROOT/scripts/llamacpp.sh")"
vocab="$(dirname "$(dirname "$bin")")/vocab/ggml-vocab-llama-spm.gguf"
model1="$("$PY" "$ROOT/scripts/tinymodel.py" --vocab "$vocab" --out "$CACHE/models/tiny-s0.gguf" --seed 0 --name tiny)"
model2="$("$PY" "$ROOT/scripts/tinymodel.py" --vocab "$vocab" --out "$CACHE/models/tiny-s1.gguf" --seed 1 --name tiny)"

# The compose stack's hub and agent configs, moved onto 127.0.0.1 and these ports.
"$PY" - "$ROOT" "$DIR" "$HUB_PORT" "$L1_PORT" "$L2_PORT" "$PROM_PORT" "$INTERVAL" <<'PYCODE'
import sys
from pathlib import Path

import yaml

root, run_dir = Path(sys.argv[1]), Path(sys.argv[2])
hub_port, l1, l2, prom_port = (int(p) for p in sys.argv[3:7])
interval = sys.argv[7]
hub = yaml.safe_load((root / "deploy/compose/hub.yaml").read_text())
hub["listen"] = {"host": "127.0.0.1", "port": hub_port}
(worker,) = hub["workers"]
worker["url"] = f"http://127.0.0.1:{l1}"
(run_dir / "hub.yaml").write_text(yaml.safe_dump(hub, sort_keys=False))

agent = yaml.safe_load((root / "deploy/compose/agent.yaml").read_text())
agent["hub_url"] = f"http://127.0.0.1:{hub_port}"
agent.pop("advertise_host", None)  # the hub reaches the worker where the agent does
agent["workers"] = [{"url": f"http://127.0.0.1:{l2}", "kind": "llamacpp"}]
token = run_dir / "agent.token"
token.write_text("auth-is-off\n")  # the hub's auth is off; the agent needs a token file
token.chmod(0o600)
agent["token_file"] = str(token)
(run_dir / "agent.yaml").write_text(yaml.safe_dump(agent, sort_keys=False))

prom = yaml.safe_load((root / "deploy/prometheus/prometheus.yml").read_text())
prom["global"].update(scrape_interval=interval, evaluation_interval=interval)
prom["rule_files"] = [str(root / "deploy/prometheus" / f) for f in prom["rule_files"]]
for job in prom["scrape_configs"]:
    target = {"spokehub-hub": hub_port, "prometheus": prom_port}[job["job_name"]]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{target}"]}]
(run_dir / "prometheus.yml").write_text(yaml.safe_dump(prom, sort_keys=False))
PYCODE

llama_args=(--host 127.0.0.1 --alias tiny -np 2 -t 1 --slots --no-webui)
launch llama1 "$bin" -m "$model1" --port "$L1_PORT" "${llama_args[@]}"
launch llama2 "$bin" -m "$model2" --port "$L2_PORT" "${llama_args[@]}"
wait_for llama1 "http://127.0.0.1:$L1_PORT/health"
wait_for llama2 "http://127.0.0.1:$L2_PORT/health"
launch hub "$PY" -m hub serve --config "$DIR/hub.yaml"
wait_for hub "http://127.0.0.1:$HUB_PORT/healthz"
launch agent "$PY" -m agent.cli --config "$DIR/agent.yaml"
wait_for agent "http://127.0.0.1:$HUB_PORT/admin/workers" 60 "box2-llamacpp-$L2_PORT"
launch prometheus prometheus --config.file="$DIR/prometheus.yml" \
  --storage.tsdb.path="$DIR/prometheus-data" --web.listen-address="127.0.0.1:$PROM_PORT"
wait_for prometheus "http://127.0.0.1:$PROM_PORT/-/ready"
trap - ERR

cat >"$DIR/stack.env" <<ENV
SPOKEHUB_STACK_HUB_URL=http://127.0.0.1:$HUB_PORT
SPOKEHUB_STACK_PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT
SPOKEHUB_STACK_LLAMA1_URL=http://127.0.0.1:$L1_PORT
SPOKEHUB_STACK_LLAMA2_URL=http://127.0.0.1:$L2_PORT
ENV
say "hub        http://127.0.0.1:$HUB_PORT/v1 (model tiny; status page /status)"
say "workers    llama1 http://127.0.0.1:$L1_PORT (in the hub config)," \
    "llama2 http://127.0.0.1:$L2_PORT (registered by the agent as box2-llamacpp-$L2_PORT)"
say "prometheus http://127.0.0.1:$PROM_PORT (alerts: /alerts)"
say "logs, configs and pids in $DIR"

if [[ "$cmd" == start ]]; then
  say "stop with: $0 stop --dir $DIR"
  exit 0
fi
say "Ctrl-C stops everything"
trap 'stop_all; exit 0' INT TERM
while status >/dev/null; do sleep 1; done
say "a process exited:"; status >&2 || true
stop_all
exit 1
