"""``spokehub usage``: tokens, requests and cost from the hub's ledger, as a table.

    spokehub usage [--tenant T] [--since 2026-11-01] [--until DATE] [--by model,tier]
                   [--hub URL] [--token-file PATH] [--json] [--timeout S]

Calls ``GET /admin/usage`` (admin scope; see :mod:`hub.cli.hub_client` for the URL and
token). ``--by`` groups rows by any of tenant, model, tier, day, month, hour (default
tenant,model,tier; ``--by ''`` for one total). Budgeted tenants' standing follows the
table. Exit codes as ``spokehub workers``: 0 ok, 1 the hub refused or is unreachable,
2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any
from urllib.parse import urlencode

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
from hub.cli.workers_table import scrub, text
from hub.errors import BadRequest
from hub.ledger.query import GROUPS, parse_query

NUMBERS = (("REQUESTS", "requests"), ("PROMPT", "prompt_tokens"),
           ("COMPLETION", "completion_tokens"), ("TOTAL", "total_tokens"), ("COST", "cost"))


def _cell(value: object, key: str) -> str:
    if key == "cost":
        return f"{value:.6f}" if isinstance(value, int | float) else "-"
    return text(value)


def _limit(used: object, limit: object, cost: bool) -> str | None:
    if limit is None:
        return None
    spec = ".6g" if cost else ","
    try:
        return f"{format(used, spec)}/{format(limit, spec)}"
    except (TypeError, ValueError):
        return None


def render(doc: dict[str, Any]) -> str:
    groups = [str(g) for g in doc.get("group_by") or []]
    rows = doc.get("rows") or []
    header = [g.upper() for g in groups] + [name for name, _ in NUMBERS]
    table = [header]
    for r in rows:
        table.append([text(r.get(g)) for g in groups] + [_cell(r.get(k), k) for _, k in NUMBERS])
    total = doc.get("total") or {}
    if groups:
        table.append(["TOTAL", *[""] * (len(groups) - 1)]
                     + [_cell(total.get(k), k) for _, k in NUMBERS])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for r in table:
        cells = [c.ljust(w) if i < len(groups) else c.rjust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    span = f"since {doc.get('since') or 'the start'}, until {doc.get('until') or 'now'}"
    lines += ["", f"{span} (UTC)" + (f"; tenant {text(doc.get('tenant'))}"
                                     if doc.get("tenant") else "")]
    if not rows:
        lines.append("no usage recorded")
    budgets = doc.get("budgets") or []
    if budgets:
        lines += ["", "budgets:"]
    for b in budgets:
        parts = []
        for window in ("daily", "monthly"):
            w = b.get(window) or {}
            for kind, cost in (("tokens", False), ("cost", True)):
                shown = _limit(w.get(kind), w.get(f"{kind}_limit"), cost)
                if shown:
                    parts.append(f"{window} {kind} {shown}")
        state = text(b.get("state"))
        if state == "hard":
            state += f" ({text(b.get('on_hard'))})"
        lines.append(f"  {text(b.get('tenant'))}: {state}; {', '.join(parts)}")
    return "\n".join(lines) + "\n"


def _params(args: argparse.Namespace) -> dict[str, str]:
    params: dict[str, str] = {}
    for name in ("tenant", "since", "until"):
        value = getattr(args, name, None)
        if value is not None:
            params[name] = value
    by = getattr(args, "by", None)
    if by is not None:
        params["group_by"] = by
    try:
        parse_query(params)  # the hub checks again; this gives exit 2 before a call
    except BadRequest as exc:
        flag = {"group_by": "--by"}.get(exc.param or "", f"--{exc.param}")
        raise UsageError(f"{flag}: {exc.message.split(': ', 1)[-1]}") from None
    return params


def run(args: argparse.Namespace) -> int:
    try:
        url, tok, limit = hub_url(args, os.environ), token(args, os.environ), timeout(args)
        params = _params(args)
        path = "/admin/usage" + (f"?{urlencode(params)}" if params else "")
        doc = request(url, "GET", path, tok, limit)
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            raise HubFailure(f"{url}/admin/usage: unexpected answer (no rows)")
        out = json.dumps(scrub(doc), indent=2) + "\n" if args.json else render(doc)
    except UsageError as exc:
        print(f"spokehub usage: {safe(exc)}", file=sys.stderr)
        return 2
    except HubFailure as exc:
        print(f"spokehub usage: {safe(exc)}", file=sys.stderr)
        return 1
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except BrokenPipeError:  # `spokehub usage | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def add_usage_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("usage", help="tokens and cost by tenant, model, tier or day",
                       description="Usage from the hub's ledger (GET /admin/usage).",
                       epilog="Exit codes: 0 ok, 1 the hub refused or is unreachable, "
                              "2 usage or configuration error.")
    p.add_argument("--tenant", metavar="T", help="only this tenant")
    p.add_argument("--since", metavar="DATE", help="from this UTC date or ISO time on")
    p.add_argument("--until", metavar="DATE", help="before this UTC date or ISO time")
    p.add_argument("--by", metavar="GROUPS",
                   help=f"comma-separated, from {', '.join(GROUPS)} "
                        f"(default tenant,model,tier)")
    p.add_argument("--hub", metavar="URL", default=argparse.SUPPRESS,
                   help=f"hub base URL (default ${ENV_HUB_URL}, else {DEFAULT_HUB_URL})")
    p.add_argument("--token-file", metavar="PATH", default=argparse.SUPPRESS,
                   help=f"file holding an admin-scoped token (default ${ENV_TOKEN})")
    p.add_argument("--json", action="store_true", help="print the hub's JSON answer")
    p.add_argument("--timeout", type=float, metavar="SECONDS", default=argparse.SUPPRESS,
                   help=f"give up after this long (default {DEFAULT_TIMEOUT_S:g})")
    p.set_defaults(func=run)
