"""A config reload changes prices and budgets at once; the ledger file needs a restart."""

from __future__ import annotations

from hub.config.schema import parse_config
from hub.runtime.hub import Hub


def test_reload_takes_prices_and_budgets_but_not_the_file() -> None:
    hub = Hub(parse_config({"ledger": {"path": "/tmp/a.sqlite3"}}))
    assert hub.ledger.spill_allowed("acme")
    changes = hub.apply(parse_config({
        "ledger": {"path": "/tmp/b.sqlite3"},
        "prices": {"tiny": {"input_per_1m": 1.0}},
        "budgets": {"tenants": {"acme": {"daily_tokens": 0}}}}))
    assert "prices: updated" in changes and "budgets: updated" in changes
    assert any(c.startswith("ledger: needs a restart") for c in changes)
    assert hub.config.ledger.path == "/tmp/a.sqlite3" and hub.ledger.path == "/tmp/a.sqlite3"
    assert not hub.ledger.spill_allowed("acme")  # a zero budget is spent at once
    assert hub.ledger.prices.cost("tiny", "local", 1_000_000, 0) == 1.0
