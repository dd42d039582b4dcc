"""The ``ledger:`` section: where usage is written, and how often.

::

    ledger:
      path: null              # the SQLite file; null: $STATE_DIRECTORY/ledger.sqlite3
                              # when systemd's StateDirectory= set it (/var/lib/spokehub),
                              # else in memory only (nothing survives a restart);
                              # ":memory:" keeps it in memory even under systemd
      flush_interval_s: 0.5   # a batch is committed at most this long after its first row
      flush_rows: 1000        # ... or once this many distinct rows are waiting
      retention_days: 400     # hourly rows older than this are deleted (at start, daily);
                              # 0 keeps everything
      refresh_s: 0            # several hub processes sharing one file: re-read the day's
                              # and month's totals this often, so each process's budget
                              # checks see the others' usage (0: only at start)

A relative ``path`` is taken from the state directory when there is one, else from
the hub's working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hub.config.kit import ConfigError, Section

MEMORY = ":memory:"
FILE_NAME = "ledger.sqlite3"
STATE_DIRECTORY_ENV = "STATE_DIRECTORY"  # set by systemd's StateDirectory=


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    path: str | None = None
    flush_interval_s: float = 0.5
    flush_rows: int = 1000
    retention_days: int = 400
    refresh_s: float = 0.0

    def resolve_path(self, env: Mapping[str, str] | None = None) -> str:
        """The SQLite file to open, or ``:memory:``."""
        env = os.environ if env is None else env
        # systemd passes several directories separated by ':' when given several.
        state_dir = env.get(STATE_DIRECTORY_ENV, "").split(":")[0].strip()
        if self.path is None:
            return str(Path(state_dir) / FILE_NAME) if state_dir else MEMORY
        if self.path == MEMORY:
            return MEMORY
        path = Path(self.path).expanduser()
        if not path.is_absolute() and state_dir:
            path = Path(state_dir) / path
        return str(path)


def parse_ledger(raw: object, path: str = "ledger") -> LedgerConfig:
    s = Section(raw, path)
    d = LedgerConfig()
    out = LedgerConfig(path=s.text("path"),
                       flush_interval_s=s.number("flush_interval_s", d.flush_interval_s),
                       flush_rows=s.integer("flush_rows", d.flush_rows, lo=1),
                       retention_days=s.integer("retention_days", d.retention_days, lo=0),
                       refresh_s=s.number("refresh_s", d.refresh_s, exclusive_lo=False))
    s.done()
    if 0 < out.retention_days < 32:
        raise ConfigError(f"{s.key('retention_days')}: must be 0 (keep everything) or at "
                          f"least 32, so a monthly budget can be reloaded after a restart")
    if out.flush_interval_s > 60:
        raise ConfigError(f"{s.key('flush_interval_s')}: must be at most 60, "
                          f"got {out.flush_interval_s}")
    return out
