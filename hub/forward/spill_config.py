"""The ``spill:`` section: when a request may leave the local fleet for a fallback upstream.

::

    spill:
      enabled: false            # the default for tenants and models not listed below
      models: {tiny: true}      # per model (the hub's name, after aliases)
      tenants:
        acme: true              # shorthand for {enabled: true}
        globex:
          enabled: true
          max_queue_ms: {interactive: 200}   # this tenant's own budgets, per class
      max_queue_ms: {interactive: 500, batch: 30000, default: 5000}
      first_byte_ms: {interactive: 2000}

Whether a request may spill: the tenant's ``enabled`` if it is set, else the model's,
else ``spill.enabled`` (tenant over model over default). Budgets are per priority class
(``Call.priority``); ``default`` covers the classes not named. A tenant's budget for a
class wins over the section's. A class without a budget is never spilled by that
trigger: it waits in the queue as it would without spill-over (``max_queue_ms``) or
waits for its first byte up to ``timeouts.first_byte_s`` (``first_byte_ms``). With no
healthy local worker (or every local attempt failing before the first byte) an enabled
request always spills.

Kept apart from the proxy so the config schema can name it without the forwarding code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from hub.config.kit import ConfigError, Section

DEFAULT_CLASS = "default"  # a budget key that covers every class not named
_CLASS_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Budgets:
    """Latency budgets in seconds, per priority class."""

    max_queue_s: Mapping[str, float] = field(default_factory=dict)
    first_byte_s: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TenantSpill:
    enabled: bool | None = None  # None: the model's setting, else the default, decides
    budgets: Budgets = field(default_factory=Budgets)


@dataclass(frozen=True, slots=True)
class SpillConfig:
    enabled: bool = False
    tenants: Mapping[str, TenantSpill] = field(default_factory=dict)
    models: Mapping[str, bool] = field(default_factory=dict)
    budgets: Budgets = field(default_factory=Budgets)


def parse_spill(raw: object, path: str = "spill") -> SpillConfig:
    s = Section(raw, path)
    tenants: dict[str, TenantSpill] = {}
    ts = s.section("tenants")
    for name in list(ts.data):
        tenants[str(name)] = _tenant(ts.get(name), ts.key(str(name)))
    ms = s.section("models")
    models = {str(name): ms.flag(name, False) for name in list(ms.data)}
    out = SpillConfig(enabled=s.flag("enabled", False), tenants=tenants, models=models,
                      budgets=_budgets(s))
    s.done()
    return out


def _tenant(raw: object, path: str) -> TenantSpill:
    if isinstance(raw, bool):
        return TenantSpill(enabled=raw)
    s = Section(raw, path)
    enabled = s.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise ConfigError(f"{s.key('enabled')}: must be true or false")
    out = TenantSpill(enabled=enabled, budgets=_budgets(s))
    s.done()
    return out


def _budgets(s: Section) -> Budgets:
    return Budgets(max_queue_s=_per_class(s.section("max_queue_ms"), zero_ok=True),
                   first_byte_s=_per_class(s.section("first_byte_ms"), zero_ok=False))


def _per_class(s: Section, *, zero_ok: bool) -> dict[str, float]:
    """{class: milliseconds} -> {class: seconds}. A queue budget may be 0 (spill at once
    rather than queue); a first-byte budget must leave the local worker some time."""
    out: dict[str, float] = {}
    for name in list(s.data):
        if not isinstance(name, str) or not _CLASS_RE.match(name):
            raise ConfigError(f"{s.key(str(name))}: a priority class name (letters, digits, "
                              f"_.:-) or {DEFAULT_CLASS!r}")
        out[name] = s.number(name, 0.0, exclusive_lo=not zero_ok) / 1000.0
    return out
