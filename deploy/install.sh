#!/usr/bin/env bash
# Install spokehub (hub and/or agent) as systemd services.
#
# Usage: sudo deploy/install.sh [--agent] [--hub] [--src DIR] [--python PYTHON] [--enable]
#
#   --agent        install the agent unit and /etc/spokehub/agent.yaml (GPU boxes)
#   --hub          install the hub unit and /etc/spokehub/hub.yaml
#   --src DIR      spokehub source tree to install (default: this checkout)
#   --python PY    interpreter for the venv, >= 3.11 (default: python3)
#   --enable       also `systemctl enable --now` the installed units
#
# What it does (idempotent; existing configs and env files are never overwritten):
#   - creates the system user/group `spokehub` (agent: also joins video/render if present)
#   - creates /opt/spokehub/venv and pip-installs spokehub into it
#   - installs /etc/spokehub/{agent,hub}.yaml from configs/*.example.yaml (0640 root:spokehub)
#     and an empty /etc/spokehub/{agent,hub}.env for secrets
#   - copies systemd/spokehub-{agent,hub}.service to /etc/systemd/system and reloads systemd
#
# DESTDIR=/some/dir stages the files under that directory for packaging; it skips the
# user, the venv, ownership changes and systemctl.
set -euo pipefail

SELF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(cd "$SELF_DIR/.." && pwd)"
PYTHON="${PYTHON:-python3}"
DESTDIR="${DESTDIR:-}"
PREFIX=/opt/spokehub
USER_NAME=spokehub
want_agent=0
want_hub=0
enable=0

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
say() { echo "install.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

while (($#)); do
  case "$1" in
    --agent) want_agent=1 ;;
    --hub) want_hub=1 ;;
    --src) SRC="$(cd "${2:?--src needs a directory}" && pwd)"; shift ;;
    --python) PYTHON="${2:?--python needs an interpreter}"; shift ;;
    --enable) enable=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
if ((!want_agent && !want_hub)); then
  usage >&2
  say "choose --agent, --hub or both"
  exit 2
fi
[[ -f "$SRC/pyproject.toml" ]] || die "$SRC does not look like a spokehub source tree"

staged=0
[[ -n "$DESTDIR" ]] && staged=1
if ((!staged)) && [[ $(id -u) -ne 0 ]]; then
  die "run as root (or set DESTDIR to stage files)"
fi

# install_file SRC DEST MODE [keep]: copy with mode, root:spokehub; `keep` leaves an
# existing DEST alone (operator-edited configs).
install_file() {
  local src="$1" dest="$DESTDIR$2" mode="$3" keep="${4:-}"
  if [[ -n "$keep" && -e "$dest" ]]; then
    say "keeping existing $2"
    return
  fi
  install -D -m "$mode" "$src" "$dest"
  ((staged)) || chown "root:$USER_NAME" "$dest"
  say "installed $2"
}

# -- user ------------------------------------------------------------------------------
if ((!staged)); then
  if ! getent passwd "$USER_NAME" >/dev/null; then
    nologin="$(command -v nologin || echo /usr/sbin/nologin)"
    useradd --system --user-group --home-dir /var/lib/spokehub --no-create-home \
      --shell "$nologin" --comment "spokehub" "$USER_NAME"
    say "created system user $USER_NAME"
  fi
  if ((want_agent)); then
    # AMD (/dev/kfd, /dev/dri/renderD*) and some NVIDIA setups restrict the GPU
    # device nodes to these groups.
    for group in video render; do
      if getent group "$group" >/dev/null; then
        usermod -a -G "$group" "$USER_NAME"
      fi
    done
  fi
fi

# -- virtualenv ------------------------------------------------------------------------
if ((staged)); then
  say "DESTDIR set: skipping the virtualenv (create $PREFIX/venv on the target)"
else
  "$PYTHON" - <<'PY' || die "$PYTHON is older than 3.11"
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
  install -d -m 0755 "$PREFIX"
  if [[ ! -x "$PREFIX/venv/bin/python" ]]; then
    "$PYTHON" -m venv "$PREFIX/venv"
    say "created $PREFIX/venv"
  fi
  "$PREFIX/venv/bin/pip" install --quiet --upgrade pip
  "$PREFIX/venv/bin/pip" install --quiet --upgrade "$SRC"
  say "installed spokehub from $SRC into $PREFIX/venv"
fi

# -- configuration ---------------------------------------------------------------------
install -d -m 0750 "$DESTDIR/etc/spokehub"
((staged)) || chown "root:$USER_NAME" "$DESTDIR/etc/spokehub"

env_template="$(mktemp)"
trap 'rm -f "$env_template"' EXIT

install_component() {
  local name="$1" example="$SRC/configs/$1.example.yaml"
  if [[ -f "$example" ]]; then
    install_file "$example" "/etc/spokehub/$name.example.yaml" 0640
    install_file "$example" "/etc/spokehub/$name.yaml" 0640 keep
  else
    say "warning: $example not found; write /etc/spokehub/$name.yaml yourself"
  fi
  printf '# Secrets and overrides for spokehub-%s (KEY=value lines).\n' "$name" >"$env_template"
  if [[ "$name" == agent ]]; then
    printf '# SPOKEHUB_AGENT_TOKEN=...\n# SPOKEHUB_ADVERTISE_HOST=10.0.0.5\n' >>"$env_template"
  fi
  install_file "$env_template" "/etc/spokehub/$name.env" 0640 keep
  install_file "$SRC/systemd/spokehub-$name.service" \
    "/etc/systemd/system/spokehub-$name.service" 0644
  ((staged)) || chown root:root "$DESTDIR/etc/systemd/system/spokehub-$name.service"
}

units=()
if ((want_agent)); then install_component agent; units+=(spokehub-agent.service); fi
if ((want_hub)); then
  install_component hub
  units+=(spokehub-hub.service)
  install -d -m 0750 "$DESTDIR/var/lib/spokehub"
  ((staged)) || chown "$USER_NAME:$USER_NAME" "$DESTDIR/var/lib/spokehub"
fi

# -- systemd ---------------------------------------------------------------------------
if ((!staged)) && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  if ((enable)); then
    systemctl enable --now "${units[@]}"
    say "enabled and started ${units[*]}"
  fi
elif ((enable)); then
  say "systemd is not running here: enable ${units[*]} on the target"
fi

say "done. Next: edit /etc/spokehub/*.yaml and *.env, then" \
  "'systemctl enable --now ${units[*]}'"
if ((want_agent)); then
  say "check the agent with: sudo -u $USER_NAME $PREFIX/venv/bin/spokehub-agent" \
    "--config /etc/spokehub/agent.yaml --once --print"
fi
