"""``GET /admin/usage``: tokens, requests and cost from the ledger, grouped as asked,
and each budgeted tenant's standing (admin scope).

Query parameters are :mod:`hub.ledger.query`'s: ``tenant``, ``since``, ``until``,
``group_by``. The answer::

    {"since": "2026-11-01T00:00:00Z", "until": null, "group_by": ["tenant", "model"],
     "rows": [{"tenant": "acme", "model": "tiny", "requests": 3, "prompt_tokens": 30,
               "completion_tokens": 12, "total_tokens": 42, "cost": 0.0000117,
               "unreported": 0}],
     "total": {"requests": 3, ...},
     "budgets": [{"tenant": "acme", "state": "soft", ...}]}
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from hub.errors import HubError
from hub.ledger.query import parse_query
from hub.ledger.store import SUMS
from hub.runtime.keys import HUB


class LedgerUnavailable(HubError):
    status = 503
    type = "server_error"
    code = "ledger_unavailable"


def _iso(seconds: int | None) -> str | None:
    return None if seconds is None else time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                      time.gmtime(seconds))


async def usage(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    hub.authorize(request.headers.get("Authorization"), "admin")
    query = parse_query(request.query)
    try:
        rows = await hub.ledger.query(query)
    except RuntimeError:
        raise LedgerUnavailable("The usage ledger is not running") from None
    total: dict[str, Any] = {name: 0 for name in SUMS}
    for row in rows:
        for name in SUMS:
            total[name] += row[name]
    total["total_tokens"] = total["prompt_tokens"] + total["completion_tokens"]
    return web.json_response({
        "since": _iso(query.since), "until": _iso(query.until),
        "group_by": list(query.group_by), "tenant": query.tenant,
        "rows": rows, "total": total,
        "budgets": hub.ledger.budget_status(query.tenant)})
