"""``spokehub`` command line: serve, check-config, token issue|inspect."""

from __future__ import annotations

import argparse
import sys

from hub.auth.keys import KeyRing
from hub.cli.token import add_token_commands
from hub.cli.usage import add_usage_command
from hub.cli.workers import add_workers_commands
from hub.config.schema import ConfigError, load_config
from hub.observe.logs import setup_logging
from hub.server.process import ProcessRole, run
from hub.server.supervisor import child_ports, parse_processes, supervise


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        processes = parse_processes(args.processes)
    except ValueError as exc:
        print(f"spokehub: {exc}", file=sys.stderr)
        return 2
    if args.child_port_base is not None and processes == 1 and args.child is None:
        print("spokehub: --child-port-base needs --processes 2 or more", file=sys.stderr)
        return 2
    config = load_config(args.config)
    setup_logging(config.log_level)
    if args.child is not None:  # one of the supervisor's processes
        run(config, args.config,
            ProcessRole(args.child, tuple(child_ports(args.child_port_base, args.child))))
        return 0
    if processes > 1:
        return supervise(config, args.config, processes, args.child_port_base)
    run(config, args.config)
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config.auth.enabled:
        KeyRing.load(config.auth)  # reads the secrets and key files it names
    print(f"{args.config}: ok ({len(config.workers)} workers, policy {config.routing.policy})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spokehub",
                                 description="Load balancer for self-hosted LLM inference")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the hub")
    p.add_argument("--config", "-c", required=True, help="path to the YAML config")
    p.add_argument("--processes", default="1", metavar="N|auto",
                   help="hub processes on the one port (SO_REUSEPORT), sharing state "
                        "through Redis; auto = one per core (default: 1)")
    p.add_argument("--child-port-base", type=int, default=None, metavar="PORT",
                   help="with --processes: process i also listens on PORT+i, so each "
                        "one's /metrics can be scraped")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("check-config", help="validate a config file and exit")
    p.add_argument("config", help="path to the YAML config")
    p.set_defaults(func=_cmd_check_config)
    add_token_commands(sub)
    add_workers_commands(sub)
    add_usage_command(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"spokehub: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
