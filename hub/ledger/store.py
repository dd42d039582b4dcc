"""The ledger's SQLite file: one row per (UTC hour, tenant, model, tier) with requests,
prompt and completion tokens and cost, added to in place (an upsert), so the file grows
with hours x tenants x models, not with requests.

Only the writer thread (:mod:`hub.ledger.writer`) touches a :class:`Store`; this module
is plain blocking ``sqlite3`` and knows nothing of threads or the event loop. WAL lets
``sqlite3 ledger.sqlite3`` (or a backup) read while the hub writes; several hub
processes may share one file (each adds, none overwrites).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hub.ledger.budgets import Used
from hub.ledger.config import MEMORY
from hub.ledger.query import UsageQuery

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    hour INTEGER NOT NULL,              -- Unix seconds of the UTC hour's start
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    tier TEXT NOT NULL,                 -- local | fallback
    requests INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    unreported INTEGER NOT NULL DEFAULT 0,  -- answers whose worker reported no counts
    PRIMARY KEY (hour, tenant, model, tier)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_by_tenant ON usage (tenant, hour);
"""
UPSERT = """
INSERT INTO usage (hour, tenant, model, tier, requests, prompt_tokens, completion_tokens,
                   cost, unreported)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (hour, tenant, model, tier) DO UPDATE SET
    requests = requests + excluded.requests,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    cost = cost + excluded.cost,
    unreported = unreported + excluded.unreported
"""
# group name -> SQL expression; only these names ever reach the SQL text.
GROUP_SQL = {
    "tenant": "tenant",
    "model": "model",
    "tier": "tier",
    "day": "strftime('%Y-%m-%d', hour, 'unixepoch')",
    "month": "strftime('%Y-%m', hour, 'unixepoch')",
    "hour": "strftime('%Y-%m-%dT%H:00:00Z', hour, 'unixepoch')",
}
SUMS = ("requests", "prompt_tokens", "completion_tokens", "cost", "unreported")

Key = tuple[int, str, str, str]  # hour, tenant, model, tier
# requests, prompt tokens, completion tokens, cost, unreported
Row = list[Any]


class Store:
    def __init__(self, path: str) -> None:
        if path != MEMORY:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # The writer thread opens, uses and closes it: no sharing across threads.
        self.db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints,
            self.db.executescript(SCHEMA)                 # never corrupt
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"{path}: ledger schema version {version}, "
                                            f"this hub knows {SCHEMA_VERSION}")
        except BaseException:
            self.db.close()
            raise

    def add(self, rows: Mapping[Key, Row]) -> None:
        """Add the rows in one transaction: all or nothing."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(UPSERT, [(*key, *row) for key, row in rows.items()])

    def totals_since(self, since: int) -> dict[str, Used]:
        """Each tenant's tokens and cost from ``since`` (an hour's start) on."""
        cur = self.db.execute(
            "SELECT tenant, SUM(prompt_tokens + completion_tokens), SUM(cost) FROM usage "
            "WHERE hour >= ? GROUP BY tenant", (since,))
        return {tenant: Used(int(tokens or 0), float(cost or 0.0))
                for tenant, tokens, cost in cur}

    def query(self, q: UsageQuery) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[str | int] = []
        if q.tenant is not None:
            where.append("tenant = ?")
            args.append(q.tenant)
        if q.since is not None:
            where.append("hour >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("hour < ?")
            args.append(q.until)
        groups = [f"{GROUP_SQL[g]} AS g_{g}" for g in q.group_by]
        sums = [f"SUM({c})" for c in SUMS]
        sql = f"SELECT {', '.join([*groups, *sums])} FROM usage"  # names from GROUP_SQL only
        if where:
            sql += " WHERE " + " AND ".join(where)
        if q.group_by:
            names = ", ".join(f"g_{g}" for g in q.group_by)
            sql += f" GROUP BY {names} ORDER BY {names}"
        out = []
        for rec in self.db.execute(sql, args):
            row: dict[str, Any] = dict(zip(q.group_by, rec[:len(q.group_by)], strict=True))
            values = rec[len(q.group_by):]
            if values[0] is None:  # no rows at all: SUM over nothing
                continue
            requests, prompt, completion, cost, unreported = values
            row.update(requests=int(requests), prompt_tokens=int(prompt),
                       completion_tokens=int(completion),
                       total_tokens=int(prompt) + int(completion), cost=float(cost),
                       unreported=int(unreported))
            out.append(row)
        return out

    def prune(self, before: int) -> int:
        """Delete rows of hours before ``before``; how many went."""
        with self.db:
            return self.db.execute("DELETE FROM usage WHERE hour < ?", (before,)).rowcount

    def close(self) -> None:
        self.db.close()
