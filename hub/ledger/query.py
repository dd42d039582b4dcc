"""What ``GET /admin/usage`` asks for, read from its query string (pure; a bad value is
a 400 that names the parameter).

- ``tenant``: one tenant (default: all);
- ``since``, ``until``: ``2026-11-01`` (UTC midnight) or an ISO 8601 time with a zone
  (``2026-11-01T12:00:00Z``); ``since`` inclusive, ``until`` exclusive; the ledger
  files usage by UTC hour, so times are rounded down to the hour;
- ``group_by``: comma-separated, from ``tenant``, ``model``, ``tier``, ``day``,
  ``month``, ``hour`` (default ``tenant,model,tier``; empty: one total row).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from hub.errors import BadRequest
from hub.ledger.windows import hour_start

GROUPS = ("tenant", "model", "tier", "day", "month", "hour")
DEFAULT_GROUPS = ("tenant", "model", "tier")
PARAMS = ("tenant", "since", "until", "group_by")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TENANT_MAX = 256


@dataclass(frozen=True, slots=True)
class UsageQuery:
    tenant: str | None = None
    since: int | None = None  # Unix seconds, an hour's start
    until: int | None = None
    group_by: tuple[str, ...] = DEFAULT_GROUPS


def parse_time(value: str, param: str) -> int:
    """Unix seconds of a date (UTC midnight) or an ISO 8601 time with a zone."""
    text = value.strip()
    try:
        if _DATE_RE.match(text):
            moment = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            if moment.tzinfo is None:
                raise BadRequest(f"{param}: give a time zone (e.g. Z) or a plain date, "
                                 f"got {value[:40]!r}", param=param)
    except ValueError:
        raise BadRequest(f"{param}: must be a date (2026-11-01) or an ISO 8601 time "
                         f"(2026-11-01T12:00:00Z), got {value[:40]!r}", param=param) from None
    return int(moment.timestamp())


def parse_query(params: Mapping[str, str]) -> UsageQuery:
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise BadRequest(f"{unknown[0][:40]}: unknown parameter (known: {', '.join(PARAMS)})",
                         param=unknown[0][:40])
    tenant = params.get("tenant")
    if tenant is not None and not 0 < len(tenant) <= _TENANT_MAX:
        raise BadRequest(f"tenant: must be 1 to {_TENANT_MAX} characters", param="tenant")
    since = until = None
    if params.get("since") is not None:
        since = hour_start(parse_time(params["since"], "since"))
    if params.get("until") is not None:
        until = hour_start(parse_time(params["until"], "until"))
    if since is not None and until is not None and until <= since:
        raise BadRequest("until: must be after since (by at least an hour)", param="until")
    groups: tuple[str, ...] = DEFAULT_GROUPS
    raw = params.get("group_by")
    if raw is not None:
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        bad = [p for p in parts if p not in GROUPS]
        if bad:
            raise BadRequest(f"group_by: {bad[0][:40]!r} is not one of {', '.join(GROUPS)}",
                             param="group_by")
        if len(set(parts)) != len(parts):
            raise BadRequest("group_by: a group is named twice", param="group_by")
        groups = tuple(parts)
    return UsageQuery(tenant=tenant, since=since, until=until, group_by=groups)
