"""Budgets judged on the fleet's usage, through a real redis-server: what one hub served
counts at another, the counters are per UTC window with an expiry, an outage keeps each
hub's own totals and the batches it could not send."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hub.config.kit import ConfigError
from hub.forward.call import Call
from hub.ledger.budgets import BudgetsConfig, State, parse_budgets
from hub.ledger.config import LedgerConfig
from hub.ledger.ledger import InsufficientQuota, Ledger
from hub.ledger.prices import parse_prices
from hub.ledger.windows import DAY, Windows
from hub.observe.usage import Usage
from hub.state.config import parse_state
from hub.state.redis_link import LINK_ERRORS
from hub.state.shared_budgets import SharedBudgets
from tests.state.limits_support import redis_server, two_links
from tests.state.link_impl import LinkForTests
from tests.support.redis_proc import RedisServer

__all__ = ["redis_server", "two_links"]  # fixtures

PRICES = parse_prices({"tiny": {"input_per_1m": 1.0, "output_per_1m": 2.0}})
BUDGETS = parse_budgets({"default": {"daily_tokens": 100, "on_hard": "reject"},
                         "tenants": {"free": {}}})


def call(tenant: str, prompt: int, completion: int = 0) -> Call:
    c = Call(request_id="r", route="/chat/completions", model="tiny", tenant=tenant,
             answered=True, worker="w0")
    c.usage = Usage(prompt, completion)
    return c


Hubs = Callable[[LinkForTests], SharedBudgets]


@pytest.fixture
async def fleet() -> AsyncIterator[Hubs]:
    made: list[SharedBudgets] = []

    def make(link: LinkForTests, budgets: BudgetsConfig = BUDGETS) -> SharedBudgets:
        ledger = Ledger(PRICES, LedgerConfig(), budgets, env={})
        share = SharedBudgets(link, ledger, every_s=lambda: 3600.0)  # synced by hand
        ledger.fleet = share
        made.append(share)
        return share

    yield make
    for share in made:
        await share.aclose()
        await share.ledger.stop()


async def test_usage_served_at_one_hub_counts_at_another(
        two_links: tuple[LinkForTests, LinkForTests], fleet: Hubs) -> None:
    link_a, link_b = two_links
    await link_a.start()
    await link_b.start()
    a, b = fleet(link_a), fleet(link_b)
    for share in (a, b):
        await share.ledger.start()
    a.ledger.record(call("acme", 60, 20))
    b.ledger.record(call("acme", 10))
    b.ledger.check("acme")  # b alone has seen 10 of 100
    await a.sync()
    await b.sync()
    daily, monthly = b.ledger.used("acme", time.time())
    assert (daily.tokens, monthly.tokens) == (90, 90)
    assert daily.cost == pytest.approx((70 * 1.0 + 20 * 2.0) / 1e6)
    b.ledger.record(call("acme", 10))  # not synced yet: counted on top of the fleet's 90
    with pytest.raises(InsufficientQuota):
        b.ledger.check("acme")
    await a.sync()
    assert a.ledger.budget_status("acme")[0]["daily"]["tokens"] == 90
    a.ledger.check("acme")  # b's last 10 have not reached Redis yet
    await b.sync()
    await a.sync()
    with pytest.raises(InsufficientQuota):
        a.ledger.check("acme")  # a learned b's usage: 100 of 100
    assert a.ledger.budget_status("acme")[0]["daily"]["tokens"] == 100
    # every tenant's usage is counted (a budget a reload adds sees the whole window),
    # per UTC window; only budgeted tenants are read back
    a.ledger.record(call("free", 500))
    await a.sync()
    assert "free" not in a.fleet
    w = Windows.at(time.time())
    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in
                  await link_a.client.keys(link_a.key("budget", "*")))
    assert keys == [link_a.key("budget", "{acme}", "day", w.label("daily")),
                    link_a.key("budget", "{acme}", "month", w.label("monthly")),
                    link_a.key("budget", "{free}", "day", w.label("daily")),
                    link_a.key("budget", "{free}", "month", w.label("monthly"))]
    assert await link_a.client.hget(keys[0], "tokens") == b"100"
    assert await link_a.client.ttl(keys[0]) > w.day_end + DAY - time.time() - 60
    # a hub never judges less than its own totals (an emptied Redis)
    await link_a.client.delete(*keys)
    await b.sync()
    assert b.ledger.used("acme", time.time())[0].tokens == 20  # its own 10 + 10
    assert b.ledger.verdict("acme").state is State.OK


async def test_a_default_budget_tenant_is_learned_from_its_first_check(
        two_links: tuple[LinkForTests, LinkForTests], fleet: Hubs) -> None:
    link_a, link_b = two_links
    await link_a.start()
    await link_b.start()
    a, b = fleet(link_a), fleet(link_b)
    for share in (a, b):
        await share.ledger.start()
    a.ledger.record(call("newco", 150))
    await a.sync()
    b.ledger.check("newco")  # b has never seen newco: judged on its own (nothing) ...
    await b.sync()  # ... and read from the fleet from now on
    with pytest.raises(InsufficientQuota):
        b.ledger.check("newco")


async def test_an_outage_judges_locally_and_sends_the_batch_again(
        tmp_path: Path, fleet: Hubs) -> None:
    server = RedisServer(tmp_path).start()
    link = LinkForTests(server.url, "hub-a", "budget-outage")
    other = LinkForTests(server.url, "hub-b", "budget-outage")
    try:
        await link.start()
        await other.start()
        a, b = fleet(link), fleet(other)
        for share in (a, b):
            await share.ledger.start()
        b.ledger.record(call("acme", 50))
        await b.sync()
        a.ledger.check("acme")  # a's first request of acme: read from the next sync on
        await a.sync()  # a knows the fleet's 50
        server.kill()
        a.ledger.record(call("acme", 30))
        with pytest.raises(LINK_ERRORS):
            await a.sync()
        assert not link.up and a.failures == 1
        # last known fleet totals plus what a recorded since: 80
        assert a.ledger.used("acme", time.time())[0].tokens == 80
        a.ledger.record(call("acme", 20))
        with pytest.raises(InsufficientQuota):
            a.ledger.check("acme")
        await a.sync()  # the link is down: nothing is tried
        assert a.failures == 1
        server.start()  # an empty Redis on the same port
        for _ in range(600):
            if link.up and other.up:
                break
            await asyncio.sleep(0.05)
        for lk in (link, other):  # as the hub's link does on reconnect: no dead sockets
            await lk.client.connection_pool.disconnect()
        await a.sync()  # the 30 that failed and the 20 since go now
        w = Windows.at(time.time())
        key = link.key("budget", "{acme}", "day", w.label("daily"))
        assert await link.client.hget(key, "tokens") == b"50"
        await b.sync()
        # b's 50 went to the Redis that restarted empty: lost from the fleet's count,
        # while b's own totals still bound what b judges
        assert b.ledger.used("acme", time.time())[0].tokens == 50
    finally:
        await link.aclose()
        await other.aclose()
        server.kill()


async def test_the_loop_syncs_on_its_own(
        two_links: tuple[LinkForTests, LinkForTests]) -> None:
    link_a, link_b = two_links
    ledgers = [Ledger(PRICES, LedgerConfig(), BUDGETS, env={}) for _ in range(2)]
    shares = [SharedBudgets(link, ledger, every_s=lambda: 0.05)
              for link, ledger in zip((link_a, link_b), ledgers, strict=True)]
    for ledger, share in zip(ledgers, shares, strict=True):
        ledger.fleet = share
        await ledger.start()
        share.start()
    await link_a.start()
    await link_b.start()
    try:
        ledgers[0].record(call("acme", 100))
        deadline = time.monotonic() + 30
        while ledgers[1].verdict("acme").state is not State.HARD:
            assert time.monotonic() < deadline, "hub b never saw hub a's usage"
            await asyncio.sleep(0.02)
    finally:
        for ledger, share in zip(ledgers, shares, strict=True):
            await share.aclose()
            await ledger.stop()


def test_the_state_keys_parse_and_errors_name_them() -> None:
    cfg = parse_state({"share_budgets": False, "budget_sync_s": 2,
                       "share_response_cache": False, "cache_lookup_timeout_s": 0.05})
    assert (cfg.share_budgets, cfg.budget_sync_s) == (False, 2.0)
    assert (cfg.share_response_cache, cfg.cache_lookup_timeout_s) == (False, 0.05)
    for raw, key in (({"budget_sync_s": 0.01}, "state.budget_sync_s"),
                     ({"budget_sync_s": "fast"}, "state.budget_sync_s"),
                     ({"cache_lookup_timeout_s": 10}, "state.cache_lookup_timeout_s"),
                     ({"cache_lookup_timeout_s": 0}, "state.cache_lookup_timeout_s"),
                     ({"share_budgets": "yes"}, "state.share_budgets")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_state(raw)
