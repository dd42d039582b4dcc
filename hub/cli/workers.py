"""``spokehub workers``: the hub's workers at a glance, and drain/undrain, via the admin API.

    spokehub workers [--hub URL] [--token-file PATH] [--json]    GET /admin/workers
    spokehub workers drain NAME                                 POST /admin/workers/NAME/drain
    spokehub workers undrain NAME                               POST /admin/workers/NAME/undrain

Exit codes: 0 ok; 1 the hub refused the call (its message is printed: 401, 403, 404 ...)
or could not be reached; 2 usage or local configuration error (bad URL, unreadable token
file). Errors are one line on stderr, never a traceback.

How the hub is called (URL, token, timeout) is :mod:`hub.cli.hub_client`; the table is
:mod:`hub.cli.workers_table`. This module is the commands and their arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from urllib.parse import quote

from hub.cli.hub_client import (
    DEFAULT_HUB_URL,
    DEFAULT_TIMEOUT_S,
    ENV_HUB_URL,
    ENV_TOKEN,
    HubFailure,
    UsageError,
    hub_url,
    request,
    safe,
    timeout,
    token,
)
from hub.cli.workers_table import render_table, scrub, text


def _list(args: argparse.Namespace, url: str, tok: str | None, limit: float) -> str:
    doc = request(url, "GET", "/admin/workers", tok, limit)
    workers = doc.get("workers") if isinstance(doc, dict) else None
    if not isinstance(workers, list) or not all(isinstance(w, dict) for w in workers):
        raise HubFailure(f"{url}/admin/workers: unexpected answer (no worker list)")
    if getattr(args, "json", False):
        return json.dumps(scrub(doc), indent=2) + "\n"
    return render_table(workers)


def _drain(args: argparse.Namespace, url: str, tok: str | None, limit: float) -> str:
    action: str = args.workers_command
    name: str = args.name
    if not name:
        raise UsageError("NAME: must not be empty")
    doc = request(url, "POST", f"/admin/workers/{quote(name, safe='')}/{action}", tok, limit)
    if getattr(args, "json", False):
        return json.dumps(scrub(doc), indent=2) + "\n"
    if not isinstance(doc, dict):
        raise HubFailure(f"{url}: unexpected answer to {action}")
    if action == "drain":
        return (f"worker {safe(name)}: draining (no new requests; "
                f"{text(doc.get('in_flight'))} in flight will finish)\n")
    return f"worker {safe(name)}: back in rotation\n"


def _write(out: str) -> None:
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except BrokenPipeError:  # `spokehub workers | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def run(args: argparse.Namespace) -> int:
    command: Callable[[argparse.Namespace, str, str | None, float], str] = (
        _drain if getattr(args, "workers_command", None) in ("drain", "undrain") else _list)
    try:
        url, tok, limit = hub_url(args, os.environ), token(args, os.environ), timeout(args)
        out = command(args, url, tok, limit)
    except UsageError as exc:
        print(f"spokehub workers: {safe(exc)}", file=sys.stderr)
        return 2
    except HubFailure as exc:
        print(f"spokehub workers: {safe(exc)}", file=sys.stderr)
        return 1
    _write(out)
    return 0


def add_workers_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # The options are accepted before and after the drain/undrain word.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--hub", metavar="URL", default=argparse.SUPPRESS,
                        help=f"hub base URL (default ${ENV_HUB_URL}, else {DEFAULT_HUB_URL})")
    common.add_argument("--token-file", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"file holding an admin-scoped token (default ${ENV_TOKEN})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the hub's JSON answer instead of a table")
    common.add_argument("--timeout", type=float, metavar="SECONDS",
                        default=argparse.SUPPRESS,
                        help=f"give up after this long (default {DEFAULT_TIMEOUT_S:g})")
    p = sub.add_parser("workers", parents=[common], help="list the hub's workers; drain or "
                       "undrain one",
                       description="List the hub's workers (GET /admin/workers), or take one "
                                   "out of rotation and put it back.",
                       epilog="Exit codes: 0 ok, 1 the hub refused or is unreachable, "
                              "2 usage or configuration error.")
    p.set_defaults(func=run)
    wsub = p.add_subparsers(dest="workers_command", metavar="{drain,undrain}")
    d = wsub.add_parser("drain", parents=[common],
                        help="send no new requests to a worker (in-flight ones finish)")
    d.add_argument("name", metavar="NAME", help="worker name, as listed")
    u = wsub.add_parser("undrain", parents=[common], help="put a drained worker back")
    u.add_argument("name", metavar="NAME", help="worker name, as listed")
