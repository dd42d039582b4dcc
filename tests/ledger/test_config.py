"""The prices:, budgets: and ledger: sections: defaults, values, errors naming the key."""

from __future__ import annotations

import pytest

from hub.config.schema import ConfigError, parse_config
from hub.ledger.budgets import Budget, parse_budgets
from hub.ledger.config import MEMORY, LedgerConfig, parse_ledger
from hub.ledger.prices import Price, parse_prices


def test_absent_sections() -> None:
    cfg = parse_config({})
    assert cfg.prices.cost("any", "local", 1000, 1000) == 0.0
    assert not cfg.budgets.any
    assert cfg.ledger == LedgerConfig()


def test_prices_per_model_and_tier() -> None:
    prices = parse_prices({"tiny": {"input_per_1m": 1.0, "output_per_1m": 2.0,
                                    "fallback": {"input_per_1m": 0.15, "output_per_1m": 0.6}},
                           "half": {"fallback": {"output_per_1m": 4}}})
    assert prices.cost("tiny", "local", 1_000_000, 500_000) == pytest.approx(2.0)
    assert prices.cost("tiny", "fallback", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert prices.models["half"].for_tier("fallback") == Price(0.0, 4.0)
    assert prices.models["half"].for_tier("local") == Price(0.0, 0.0)
    assert prices.cost("unpriced", "fallback", 10**6, 10**6) == 0.0


@pytest.mark.parametrize(("raw", "key"), [
    ({"tiny": {"input_per_1m": -1}}, "prices.tiny.input_per_1m"),
    ({"tiny": {"output_per_1m": "cheap"}}, "prices.tiny.output_per_1m"),
    ({"tiny": {"input": 1}}, "prices.tiny.input"),
    ({"tiny": {"fallback": {"output_per_1m": -2}}}, "prices.tiny.fallback.output_per_1m"),
    ({"tiny": {"fallback": {"x": 1}}}, "prices.tiny.fallback.x"),
    ({"tiny": 3}, "prices.tiny"),
])
def test_price_errors_name_the_key(raw: object, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        parse_config({"prices": raw})


def test_budgets() -> None:
    cfg = parse_budgets({"default": {"monthly_cost": 50},
                         "tenants": {"acme": {"daily_tokens": 1000, "soft_ratio": 0.5,
                                              "on_hard": "reject"}}})
    assert cfg.for_tenant("other") == Budget(monthly_cost=50.0)
    assert cfg.for_tenant("acme") == Budget(daily_tokens=1000, soft_ratio=0.5,
                                            on_hard="reject")
    assert cfg.any


@pytest.mark.parametrize(("raw", "key"), [
    ({"default": {"daily_tokens": -1}}, "budgets.default.daily_tokens"),
    ({"default": {"daily_tokens": 1.5}}, "budgets.default.daily_tokens"),
    ({"tenants": {"acme": {"on_hard": "block"}}}, "budgets.tenants.acme.on_hard"),
    ({"tenants": {"acme": {"soft_ratio": 1.5}}}, "budgets.tenants.acme.soft_ratio"),
    ({"tenants": {"acme": {"soft_ratio": 0}}}, "budgets.tenants.acme.soft_ratio"),
    ({"tenants": {"acme": {"weekly_tokens": 5}}}, "budgets.tenants.acme.weekly_tokens"),
    ({"tenant": {}}, "budgets.tenant"),
])
def test_budget_errors_name_the_key(raw: object, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        parse_config({"budgets": raw})


def test_ledger_section() -> None:
    cfg = parse_ledger({"path": "/tmp/x.sqlite3", "flush_interval_s": 0.1, "flush_rows": 5,
                        "retention_days": 0})
    assert cfg == LedgerConfig("/tmp/x.sqlite3", 0.1, 5, 0)
    for raw, key in (({"retention_days": 7}, "ledger.retention_days"),
                     ({"flush_rows": 0}, "ledger.flush_rows"),
                     ({"flush_interval_s": 0}, "ledger.flush_interval_s"),
                     ({"flush_interval_s": 120}, "ledger.flush_interval_s"),
                     ({"file": "x"}, "ledger.file")):
        with pytest.raises(ConfigError, match=rf"^{key}: "):
            parse_config({"ledger": raw})


def test_ledger_path_from_the_state_directory() -> None:
    systemd = {"STATE_DIRECTORY": "/var/lib/spokehub"}
    assert LedgerConfig().resolve_path({}) == MEMORY
    assert LedgerConfig().resolve_path(systemd) == "/var/lib/spokehub/ledger.sqlite3"
    assert LedgerConfig(MEMORY).resolve_path(systemd) == MEMORY
    assert LedgerConfig("usage.db").resolve_path(systemd) == "/var/lib/spokehub/usage.db"
    assert LedgerConfig("usage.db").resolve_path({}) == "usage.db"
    assert LedgerConfig("/srv/l.db").resolve_path(systemd) == "/srv/l.db"
    assert LedgerConfig().resolve_path({"STATE_DIRECTORY": "/a:/b"}) == "/a/ledger.sqlite3"
