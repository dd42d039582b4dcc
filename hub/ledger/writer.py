"""The one thread that writes the ledger, so a request never waits for a disk.

The event loop hands each finished request's row to :meth:`Writer.put` (a lock-free
queue append, no I/O). The thread adds rows up into a batch keyed like the table (hour,
tenant, model, tier), and commits the batch in one transaction when it is
``flush_interval_s`` old or holds ``flush_rows`` keys, and at :meth:`stop`. A failed
commit (disk full, locked too long) keeps the batch for the next try and is logged.

Reads go through the same thread (:meth:`call`), after the rows queued before them are
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
_STOP = object()


class Writer:
    def __init__(self, path: str, *, flush_interval_s: float = 0.5, flush_rows: int = 1000,
                 retention_days: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.retention_days = retention_days
        self.clock = clock
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.started: concurrent.futures.Future[None] = concurrent.futures.Future()
        # Counts for tests and metrics (read from other threads: ints, no lock needed).
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
        self.queue.put((key, row))

    def call(self, fn: Callable[[Store], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` on the store in the thread, after committing what was queued."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self.thread is None or not self.thread.is_alive():
            fut.set_exception(RuntimeError("the ledger is not running"))
            return fut
        self.queue.put((fn, fut))
        return fut

    def stop(self, timeout: float | None = None) -> None:
        """Commit what is queued and close the file (blocking: run it in a thread)."""
        if self.thread is not None and self.thread.is_alive():
            self.queue.put(_STOP)
            self.thread.join(timeout)

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            store = Store(self.path)
        except (sqlite3.Error, OSError) as exc:
            self.started.set_exception(exc)
            return
        self.started.set_result(None)
        pending: dict[Key, Row] = {}
        due = 0.0  # monotonic time the pending batch is to be committed by
        next_prune = 0.0
        try:
            while True:
                if self.retention_days and self.clock() >= next_prune:
                    next_prune = self.clock() + DAY
                    self._prune(store)
                timeout = None if not pending else max(0.0, due - time.monotonic())
                try:
                    item = self.queue.get(timeout=timeout)
                except queue.Empty:
                    if self._commit(store, pending):
                        continue
                    due = time.monotonic() + self.flush_interval_s  # retry later
                    continue
                if item is _STOP:
                    break
                first, second = item
                if isinstance(first, tuple):
                    if not pending:
                        due = time.monotonic() + self.flush_interval_s
                    row = pending.get(first)
                    if row is None:
                        pending[first] = list(second)
                    else:
                        for i, value in enumerate(second):
                            row[i] += value
                    if len(pending) >= self.flush_rows and not self._commit(store, pending):
                        due = time.monotonic() + self.flush_interval_s
                    continue
                self._commit(store, pending)
                fut: concurrent.futures.Future[Any] = second
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(first(store))
                    except Exception as exc:  # handed to the caller
                        fut.set_exception(exc)
        finally:
            if pending and not self._commit(store, pending):
                log.error("ledger: %d usage rows could not be written at shutdown",
                          len(pending))
            store.close()

    def _commit(self, store: Store, pending: dict[Key, Row]) -> bool:
        if not pending:
            return True
        try:
            store.add(pending)
        except sqlite3.Error as exc:
            self.commit_errors += 1
            log.error("ledger: writing %d usage rows to %s failed (kept for the next "
                      "try): %s", len(pending), self.path, exc)
            return False
        self.commits += 1
        self.rows_committed += len(pending)
        pending.clear()
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
