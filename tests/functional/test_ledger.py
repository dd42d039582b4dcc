"""The cost ledger and budgets on a real hub with real llama.cpp workers, called with the
openai SDK; the ledger file is read back with the real sqlite3.

- the ledger's sums (``GET /admin/usage``, and the SQLite file itself) are the sums of
  the ``usage`` the clients were sent, streams and non-streams, and cost follows the
  price table;
- they survive a hub restart, and ``spokehub usage`` prints them;
- a tenant past a hard budget with ``on_hard: reject`` gets 429 ``insufficient_quota``
  while another tenant is served; past a soft limit the metric and one log line say so.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import closing as closing_db
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import workers_config
from tests.security.support import AUDIENCE, ISSUER, claims, hmac_secret, sign
from tests.support.closing import closing
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker
from tests.support.observe import Scrape, post, scrape, wait_for
from tests.support.procs import ROOT

MakeHub = Callable[..., HubProcess]
DEADLINE_S = 60.0
MESSAGES: list[Any] = [{"role": "user", "content": "Count the sheep in the field."}]
PRICE_IN, PRICE_OUT = 0.15, 0.60  # per 1M tokens
SECRET_ENV = "SPOKEHUB_TEST_LEDGER_SECRET"


def client(hub: HubProcess, api_key: str = "unused") -> openai.OpenAI:
    return closing(openai.OpenAI(base_url=hub.base_url, api_key=api_key, max_retries=0,
                                 timeout=60))


def get_json(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)


def ledger_rows(path: Path) -> dict[str, tuple[int, int, int, float]]:
    """model -> (requests, prompt, completion, cost), from the file with plain sqlite3."""
    with closing_db(sqlite3.connect(path)) as db:
        return {model: (req, p, c, cost) for model, req, p, c, cost in db.execute(
            "SELECT model, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), "
            "SUM(cost) FROM usage GROUP BY model")}


def usage_cli(hub: HubProcess, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "hub", "usage", "--hub", hub.url, *args],
                         capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_ledger_sums_equal_the_answers_usage_and_survive_a_restart(
        llama_pair: tuple[LlamaWorker, LlamaWorker], make_hub: MakeHub,
        tmp_path: Path) -> None:
    path = tmp_path / "state" / "ledger.sqlite3"
    hub = make_hub(workers_config(
        *llama_pair,
        prices={"tiny": {"input_per_1m": PRICE_IN, "output_per_1m": PRICE_OUT}},
        # Batches wait a minute: only a read (which commits first) or shutdown writes.
        ledger={"path": str(path), "flush_interval_s": 60}))
    sdk = client(hub)
    prompt = completion = 0
    for n in range(3):
        resp = sdk.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4 + n)
        assert resp.usage is not None
        prompt += resp.usage.prompt_tokens
        completion += resp.usage.completion_tokens
    for n in range(2):
        chunks = list(sdk.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=6 + n, stream=True,
            stream_options={"include_usage": True}))
        usage = chunks[-1].usage
        assert usage is not None
        prompt += usage.prompt_tokens
        completion += usage.completion_tokens
    text = sdk.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5)
    assert text.usage is not None
    prompt += text.usage.prompt_tokens
    completion += text.usage.completion_tokens
    cost = (prompt * PRICE_IN + completion * PRICE_OUT) / 1e6

    def totals() -> dict[str, Any]:
        status, doc = get_json(f"{hub.url}/admin/usage?group_by=tenant,model,tier")
        assert status == 200, doc
        return doc  # type: ignore[no-any-return]

    # The hub accounts a stream just after the client has its end: wait for all six.
    doc = wait_for(lambda: (d := totals())["total"]["requests"] == 6 and d, DEADLINE_S,
                   "six requests in the ledger")
    assert len(doc["rows"]) == 1
    row = doc["rows"][0]
    assert (row["tenant"], row["model"], row["tier"]) == ("default", "tiny", "local")
    assert (row["prompt_tokens"], row["completion_tokens"], row["unreported"]) == (
        prompt, completion, 0)
    assert row["cost"] == pytest.approx(cost)
    # The file itself, read with sqlite3 while the hub runs (WAL): the read committed.
    on_disk = ledger_rows(path)
    assert on_disk["tiny"][:3] == (6, prompt, completion)
    assert on_disk["tiny"][3] == pytest.approx(cost)
    metrics = scrape(hub)
    assert metrics.get("spokehub_cost_total", tenant="default", model="tiny",
                       tier="local") == pytest.approx(cost)

    assert hub.stop() == 0
    hub.start()
    after = totals()
    assert after["rows"] == doc["rows"] and after["total"] == doc["total"]
    out = usage_cli(hub, "--by", "model")
    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "REQUESTS", "PROMPT", "COMPLETION", "TOTAL", "COST"]
    assert lines[1].split() == ["tiny", "6", str(prompt), str(completion),
                                str(prompt + completion), f"{cost:.6f}"]
    assert lines[2].split()[:2] == ["TOTAL", "6"]
    by_day = json.loads(usage_cli(hub, "--by", "day", "--since", "2020-01-01", "--json"))
    assert [r["total_tokens"] for r in by_day["rows"]] == [prompt + completion]
    # The restarted hub adds on, and commits at shutdown what no batch wrote yet (a
    # non-stream answer is recorded before the client has it).
    resp = sdk.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
    assert resp.usage is not None
    assert hub.stop() == 0
    assert ledger_rows(path)["tiny"][:3] == (7, prompt + resp.usage.prompt_tokens,
                                             completion + resp.usage.completion_tokens)


def test_budgets_reject_soft_and_no_spill(
        llama_pair: tuple[LlamaWorker, LlamaWorker], make_hub: MakeHub) -> None:
    secret = hmac_secret()
    hub = make_hub(workers_config(
        *llama_pair,
        auth={"enabled": True, "audience": AUDIENCE, "issuer": ISSUER,
              "keys": [{"kid": "k", "alg": "HS256", "secret_env": SECRET_ENV}]},
        metrics={"max_tenants": 10},
        prices={"tiny": {"input_per_1m": PRICE_IN, "output_per_1m": PRICE_OUT}},
        budgets={"tenants": {
            "capped": {"daily_tokens": 1, "on_hard": "reject"},
            "thrifty": {"monthly_tokens": 100_000, "soft_ratio": 0.0001},  # soft at 10
            "local-only": {"daily_cost": 0.0, "on_hard": "no_spill"}}}),
        env={SECRET_ENV: secret})
    tokens = {t: sign(claims(t), secret, "HS256", "k")
              for t in ("capped", "thrifty", "local-only", "free")}
    admin = sign(claims("ops", "admin"), secret, "HS256", "k")

    capped = client(hub, tokens["capped"])
    first = capped.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
    assert first.usage is not None  # under budget until this answer is counted

    def rejected() -> openai.RateLimitError | None:
        try:
            capped.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
        except openai.RateLimitError as exc:
            return exc
        return None

    err = wait_for(rejected, DEADLINE_S, "the capped tenant is refused")
    assert err.status_code == 429
    assert err.code == "insufficient_quota"
    assert err.body["type"] == "insufficient_quota"  # type: ignore[index]
    assert 0 < int(err.response.headers["Retry-After"]) <= 86400
    status, _, raw = post(f"{hub.base_url}/messages",  # Anthropic clients: their shape
                          {"model": "tiny", "max_tokens": 3, "messages": MESSAGES},
                          {"Authorization": f"Bearer {tokens['capped']}"})
    assert status == 429
    assert json.loads(raw)["error"]["type"] == "rate_limit_error"
    # Another tenant is served meanwhile, and so is a no_spill tenant past its limit.
    for name in ("free", "local-only", "local-only"):
        ok = client(hub, tokens[name]).chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=3)
        assert ok.choices, name
    thrifty = client(hub, tokens["thrifty"]).chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=3)
    assert thrifty.usage is not None and thrifty.usage.total_tokens >= 10

    auth = {"Authorization": f"Bearer {admin}"}
    def soft_state() -> Scrape | None:
        m = scrape(hub, auth)
        return m if m.get("spokehub_budget_state", tenant="thrifty") == 1 else None

    states = wait_for(soft_state, DEADLINE_S, "thrifty is soft")
    assert states.get("spokehub_budget_state", tenant="capped") == 2
    assert states.get("spokehub_budget_state", tenant="local-only") == 2
    assert states.get("spokehub_budget_used_ratio", tenant="thrifty", window="monthly",
                      kind="tokens") == pytest.approx(thrifty.usage.total_tokens / 100_000)
    soft = [json.loads(line) for line in hub.proc.log().splitlines()
            if "budget soft limit reached" in line]
    assert len(soft) == 1 and soft[0]["tenant"] == "thrifty"
    assert soft[0]["window"] == "monthly" and soft[0]["kind"] == "tokens"

    status, doc = get_json(f"{hub.url}/admin/usage?group_by=tenant", admin)
    assert status == 200
    by_tenant = {r["tenant"]: r for r in doc["rows"]}
    assert by_tenant["capped"]["requests"] == 1  # the refused ones cost nothing
    assert by_tenant["capped"]["total_tokens"] == first.usage.total_tokens
    assert {b["tenant"]: b["state"] for b in doc["budgets"]} == {
        "capped": "hard", "thrifty": "soft", "local-only": "hard"}
    assert get_json(f"{hub.url}/admin/usage", tokens["free"])[0] == 403  # admin only
    status, doc = get_json(f"{hub.url}/admin/usage?group_by=weekday", admin)
    assert status == 400 and doc["error"]["param"] == "group_by"
    status, doc = get_json(f"{hub.url}/admin/usage?since=last-week", admin)
    assert status == 400 and doc["error"]["param"] == "since"


def test_two_hubs_sharing_a_ledger_file_enforce_one_budget(
        llama_pair: tuple[LlamaWorker, LlamaWorker], make_hub: MakeHub,
        tmp_path: Path) -> None:
    config = workers_config(
        *llama_pair,
        ledger={"path": str(tmp_path / "shared.sqlite3"), "flush_interval_s": 0.1,
                "refresh_s": 0.2},
        budgets={"default": {"daily_tokens": 1, "on_hard": "reject"}})
    first, second = make_hub(config), make_hub(config)  # both start with nothing spent
    served = client(first).chat.completions.create(model="tiny", messages=MESSAGES,
                                                   max_tokens=3)
    assert served.usage is not None and served.usage.total_tokens > 1

    # The second hub never served this tenant: only the shared file tells it.
    wait_for(lambda: scrape(second).get("spokehub_budget_state", tenant="default") == 2,
             DEADLINE_S, "the second hub sees the first hub's usage")
    with pytest.raises(openai.RateLimitError) as info:
        client(second).chat.completions.create(model="tiny", messages=MESSAGES,
                                               max_tokens=3)
    assert info.value.code == "insufficient_quota"
    status, doc = get_json(f"{second.url}/admin/usage?group_by=")
    assert status == 200
    assert doc["total"]["requests"] == 1
    assert doc["total"]["total_tokens"] == served.usage.total_tokens
