"""The writer thread and the SQLite file: batching, reads after writes, restarts,
retention. The file is read back with a second, plain sqlite3 connection."""

from __future__ import annotations

import calendar
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from hub.ledger.query import UsageQuery
from hub.ledger.store import Store
from hub.ledger.writer import Writer

HOUR = calendar.timegm((2026, 11, 30, 5, 0, 0))


def rows_on_disk(path: Path) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT hour, tenant, model, tier, requests, prompt_tokens, "
                          "completion_tokens, cost, unreported FROM usage "
                          "ORDER BY tenant, model").fetchall()


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    made: list[Writer] = []
    yield made
    for w in made:
        w.stop(10)


def start(writers: list[Writer], path: Path, **kw: float) -> Writer:
    w = Writer(str(path), **kw)  # type: ignore[arg-type]
    w.start().result(10)
    writers.append(w)
    return w


def test_rows_wait_for_the_batch_then_land_in_one_commit(
        tmp_path: Path, writers: list[Writer]) -> None:
    path = tmp_path / "ledger.sqlite3"
    w = start(writers, path, flush_interval_s=60.0, flush_rows=1000)
    for i in range(100):
        w.put((HOUR, "acme", "tiny", "local"), [1, 10, i % 3, 0.5, 0])
    w.put((HOUR, "beta", "tiny", "fallback"), [1, 0, 0, 0.0, 1])
    time.sleep(0.2)  # nothing is due for a minute: the file must not have them yet
    assert rows_on_disk(path) == []
    assert w.commits == 0
    # A read goes through the thread after what was queued: it commits first.
    got = w.call(lambda s: s.query(UsageQuery(group_by=("tenant",)))).result(10)
    assert [(r["tenant"], r["requests"], r["prompt_tokens"], r["completion_tokens"])
            for r in got] == [("acme", 100, 1000, 99), ("beta", 1, 0, 0)]
    assert w.commits == 1 and w.rows_committed == 2
    assert rows_on_disk(path) == [(HOUR, "acme", "tiny", "local", 100, 1000, 99, 50.0, 0),
                                  (HOUR, "beta", "tiny", "fallback", 1, 0, 0, 0.0, 1)]
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_full_batch_commits_without_waiting(tmp_path: Path, writers: list[Writer]) -> None:
    path = tmp_path / "ledger.sqlite3"
    w = start(writers, path, flush_interval_s=60.0, flush_rows=3)
    for model in ("a", "b"):
        w.put((HOUR, "acme", model, "local"), [1, 1, 1, 0.0, 0])
    time.sleep(0.2)
    assert rows_on_disk(path) == []  # two keys: not full, not due for a minute
    w.put((HOUR, "acme", "c", "local"), [1, 1, 1, 0.0, 0])
    deadline = time.monotonic() + 30
    while len(rows_on_disk(path)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [r[2] for r in rows_on_disk(path)] == ["a", "b", "c"]
    assert w.commits == 1


def test_the_interval_commits_a_partial_batch(tmp_path: Path, writers: list[Writer]) -> None:
    path = tmp_path / "ledger.sqlite3"
    w = start(writers, path, flush_interval_s=0.05, flush_rows=1000)
    w.put((HOUR, "acme", "tiny", "local"), [1, 3, 4, 0.0, 0])
    deadline = time.monotonic() + 30
    while not rows_on_disk(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rows_on_disk(path)[0][4:7] == (1, 3, 4)


def test_stop_commits_and_a_new_writer_adds_on(tmp_path: Path, writers: list[Writer]) -> None:
    path = tmp_path / "ledger.sqlite3"
    w = Writer(str(path), flush_interval_s=60.0)
    w.start().result(10)
    w.put((HOUR, "acme", "tiny", "local"), [2, 20, 8, 1.25, 0])
    w.stop(10)
    with pytest.raises(RuntimeError):  # stopped: reads are refused
        w.call(lambda s: None).result(1)
    assert w.thread is not None and not w.thread.is_alive()
    assert rows_on_disk(path) == [(HOUR, "acme", "tiny", "local", 2, 20, 8, 1.25, 0)]
    again = start(writers, path, flush_interval_s=60.0)
    again.put((HOUR, "acme", "tiny", "local"), [1, 5, 5, 0.25, 0])
    again.stop(10)
    assert rows_on_disk(path) == [(HOUR, "acme", "tiny", "local", 3, 25, 13, 1.5, 0)]


def test_a_stopped_writer_refuses_reads(tmp_path: Path) -> None:
    w = Writer(str(tmp_path / "l.sqlite3"))
    with pytest.raises(RuntimeError):
        w.call(lambda s: None).result(1)


def test_an_unopenable_file_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite3").mkdir()
    w = Writer(str(tmp_path / "dir.sqlite3"))
    with pytest.raises(sqlite3.Error):
        w.start().result(10)


def test_retention_deletes_old_hours(tmp_path: Path, writers: list[Writer]) -> None:
    path = tmp_path / "ledger.sqlite3"
    now = float(calendar.timegm((2026, 11, 30, 12, 0, 0)))
    store = Store(str(path))
    store.add({(int(now) - 3600 * 24 * 40, "acme", "tiny", "local"): [1, 1, 1, 0.0, 0],
               (int(now) - 3600 * 24 * 10, "acme", "tiny", "local"): [1, 2, 2, 0.0, 0]})
    store.close()
    w = start(writers, path, retention_days=32, clock=lambda: now)  # type: ignore[arg-type]
    w.call(lambda s: None).result(10)
    assert [r[5] for r in rows_on_disk(path)] == [2]


def test_query_filters_and_groups(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "l.sqlite3"))
    try:
        day1 = calendar.timegm((2026, 11, 1, 0, 0, 0))
        day2 = calendar.timegm((2026, 11, 2, 13, 0, 0))
        store.add({(day1, "acme", "tiny", "local"): [1, 10, 1, 0.5, 0],
                   (day1 + 3600, "acme", "big", "fallback"): [2, 20, 2, 1.0, 0],
                   (day2, "acme", "tiny", "local"): [3, 30, 3, 1.5, 1],
                   (day2, "beta", "tiny", "local"): [4, 40, 4, 2.0, 0]})
        by_day = store.query(UsageQuery(tenant="acme", group_by=("day",)))
        assert [(r["day"], r["requests"], r["total_tokens"], r["cost"]) for r in by_day] == [
            ("2026-11-01", 3, 33, 1.5), ("2026-11-02", 3, 33, 1.5)]
        since = store.query(UsageQuery(since=day2, group_by=("tenant", "tier")))
        assert [(r["tenant"], r["tier"], r["prompt_tokens"]) for r in since] == [
            ("acme", "local", 30), ("beta", "local", 40)]
        until = store.query(UsageQuery(until=day1 + 3600, group_by=()))
        assert [(r["requests"], r["completion_tokens"]) for r in until] == [(1, 1)]
        assert store.query(UsageQuery(tenant="nobody", group_by=())) == []
        assert store.query(UsageQuery(group_by=("month", "model")))[0]["month"] == "2026-11"
    finally:
        store.close()
