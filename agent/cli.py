"""``spokehub-agent`` command line.

    spokehub-agent [--config PATH]        run the daemon (SIGTERM/SIGINT: deregister, exit 0)
    spokehub-agent --once                 send one heartbeat, print the hub's answer
    spokehub-agent --once --print         print the heartbeat JSON, send nothing

Exit codes: 0 ok, 1 hub did not accept (--once) or the loop crashed, 2 config error.
The hub token is read from the environment or a file, never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from agent import __version__
from agent.config import DEFAULT_CONFIG_PATH, LOG_LEVELS, load_config
from agent.daemon import collect_once, send_once, serve, setup_logging
from hub.config.kit import ConfigError


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spokehub-agent",
        description="Report this machine's LLM workers and GPU capacity to a spokehub hub.",
        epilog="Environment: SPOKEHUB_HUB_URL, SPOKEHUB_AGENT_TOKEN, "
               "SPOKEHUB_AGENT_TOKEN_FILE, SPOKEHUB_AGENT_ID, SPOKEHUB_ADVERTISE_HOST, "
               "SPOKEHUB_HEARTBEAT_S override the config file.")
    ap.add_argument("--config", "-c", metavar="PATH",
                    help=f"YAML config file (default {DEFAULT_CONFIG_PATH}; "
                         "a missing default file means environment-only configuration)")
    ap.add_argument("--once", action="store_true", help="send a single heartbeat and exit")
    ap.add_argument("--print", dest="print_json", action="store_true",
                    help="print the heartbeat JSON that would be sent and exit "
                         "(implies --once; sends nothing, needs no hub or token)")
    ap.add_argument("--log-level", choices=LOG_LEVELS, help="override log_level")
    ap.add_argument("--version", action="version", version=f"spokehub-agent {__version__}")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, require_hub=not args.print_json)
    except ConfigError as exc:
        print(f"spokehub-agent: config error: {exc}", file=sys.stderr)
        return 2
    # --print keeps stderr quiet unless asked: its output is for people and scripts.
    setup_logging(args.log_level or ("warning" if args.print_json else config.log_level))
    try:
        if args.print_json:
            payload = asyncio.run(collect_once(config))
            json.dump(payload, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        if args.once:
            reply = asyncio.run(send_once(config))
            print(json.dumps({"outcome": reply.outcome, "status": reply.status,
                              "detail": reply.detail, "accepted": list(reply.accepted),
                              "rejected": [{"name": n, "reason": r}
                                           for n, r in reply.rejected],
                              "interval_s": reply.interval_s}))
            return 0 if reply.ok else 1
        return asyncio.run(serve(config))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
