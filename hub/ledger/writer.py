"""The one thread that writes the ledger, so a request never waits for a disk.

The event loop adds each finished request's row to a pending batch in memory
(:meth:`Writer.put`: an uncontended lock and a dict update, no I/O, no thread
wake-up), keyed like the table (hour, tenant, model, tier) so a batch holds one row
per key however many requests it counts. The thread wakes every
``flush_interval_s`` (or at once when the batch holds ``flush_rows`` keys, a read is
asked for, or the hub stops), takes the batch and commits it in one transaction. A
failed commit (disk full, locked too long) keeps the rows for the next try and is
logged. The thread sleeping between batches, rather than waking per request, keeps
it off the event loop's back (the GIL).

Reads go through the same thread (:meth:`call`), after the rows put before them are
committed: an admin query sees every request that had finished when it was asked.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hub.ledger.store import Key, Row, Store
from hub.ledger.windows import DAY, hour_start

log = logging.getLogger("spokehub.ledger")
T = TypeVar("T")


def _merge(into: dict[Key, Row], rows: dict[Key, Row]) -> None:
    for key, row in rows.items():
        have = into.get(key)
        if have is None:
            into[key] = row
        else:
            for i, value in enumerate(row):
                have[i] += value


class Writer:
    def __init__(self, path: str, *, flush_interval_s: float = 0.5, flush_rows: int = 1000,
                 retention_days: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.retention_days = retention_days
        self.clock = clock
        self.thread: threading.Thread | None = None
        self.started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._lock = threading.Lock()
        self._pending: dict[Key, Row] = {}
        self._wake = threading.Event()
        # Reads asked for, each with the rows put before it (the batch it closed).
        self._calls: queue.SimpleQueue[tuple[Callable[[Store], Any],
                                             concurrent.futures.Future[Any],
                                             dict[Key, Row]]] = queue.SimpleQueue()
        self._stopping = False
        # Counts for tests and metrics (written by the thread only).
        self.commits = 0
        self.rows_committed = 0
        self.commit_errors = 0

    # -- the event loop's side -------------------------------------------------------------

    def start(self) -> concurrent.futures.Future[None]:
        """Start the thread; the future is done once the file is open (or failed)."""
        self.thread = threading.Thread(target=self._run, name="spokehub-ledger", daemon=True)
        self.thread.start()
        return self.started

    def put(self, key: Key, row: Row) -> None:
        """Add ``row`` (requests, prompt, completion, cost, unreported) under ``key``."""
        with self._lock:
            have = self._pending.get(key)
            if have is None:
                self._pending[key] = list(row)
                full = len(self._pending) >= self.flush_rows
            else:
                for i, value in enumerate(row):
                    have[i] += value
                full = False
        if full:
            self._wake.set()

    def call(self, fn: Callable[[Store], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` on the store in the thread, after committing what was put."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self.thread is None or not self.thread.is_alive() or self._stopping:
            fut.set_exception(RuntimeError("the ledger is not running"))
            return fut
        with self._lock:  # the rows put so far go with it, and only those
            batch, self._pending = self._pending, {}
            self._calls.put((fn, fut, batch))
        self._wake.set()
        return fut

    def stop(self, timeout: float | None = None) -> None:
        """Commit what was put and close the file (blocking: run it in a thread)."""
        self._stopping = True
        self._wake.set()
        if self.thread is not None:
            self.thread.join(timeout)

    # -- the thread --------------------------------------------------------------------------

    def _take(self, carry: dict[Key, Row]) -> None:
        """Move the pending rows to ``carry``; not while a read waits, since rows put
        after it was asked for must not be committed before it runs."""
        with self._lock:
            if not self._calls.empty():
                return
            batch, self._pending = self._pending, {}
        if carry:
            _merge(carry, batch)
        else:
            carry.update(batch)

    def _run(self) -> None:
        try:
            store = Store(self.path)
        except (sqlite3.Error, OSError) as exc:
            self.started.set_exception(exc)
            return
        self.started.set_result(None)
        carry: dict[Key, Row] = {}  # taken, not yet committed
        next_prune = 0.0
        try:
            while not self._stopping:
                if self.retention_days and self.clock() >= next_prune:
                    next_prune = self.clock() + DAY
                    self._prune(store)
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()
                self._answer(store, carry)
                self._take(carry)
                self._commit(store, carry)
        finally:
            self._answer(store, carry)
            self._take(carry)
            if not self._commit(store, carry):
                log.error("ledger: %d usage rows could not be written at shutdown",
                          len(carry))
            store.close()

    def _answer(self, store: Store, carry: dict[Key, Row]) -> None:
        """Run the reads asked for, each after committing what was put before it."""
        while True:
            try:
                fn, fut, batch = self._calls.get_nowait()
            except queue.Empty:
                return
            _merge(carry, batch)
            self._commit(store, carry)
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(store))
                except Exception as exc:  # handed to the caller
                    fut.set_exception(exc)

    def _commit(self, store: Store, rows: dict[Key, Row]) -> bool:
        if not rows:
            return True
        try:
            store.add(rows)
        except sqlite3.Error as exc:
            self.commit_errors += 1
            log.error("ledger: writing %d usage rows to %s failed (kept for the next "
                      "try): %s", len(rows), self.path, exc)
            return False
        self.commits += 1
        self.rows_committed += len(rows)
        rows.clear()
        return True

    def _prune(self, store: Store) -> None:
        before = hour_start(self.clock()) - self.retention_days * DAY
        try:
            gone = store.prune(before)
        except sqlite3.Error as exc:
            log.error("ledger: deleting old rows from %s failed: %s", self.path, exc)
            return
        if gone:
            log.info("ledger: deleted %d hourly rows older than %d days", gone,
                     self.retention_days)
