"""When the proxy tries another worker, and what a failed attempt is charged."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from hub.config.schema import parse_config
from hub.config.workers import WorkerSpec
from hub.errors import UpstreamError
from hub.fleet.registry import ProbeResult, Registry
from hub.forward.call import Call
from hub.forward.proxy import Proxy, after_failure
from hub.resilience.report import AttemptOutcome as O
from hub.upstream import UpstreamTransportError


@pytest.mark.parametrize(("outcome", "accepted", "earlier_5xx", "retry_on_timeout", "want"), [
    (O.CONNECT_FAILED, False, False, False, (O.CONNECT_FAILED, True)),
    (O.BROKEN, True, False, False, (O.BROKEN, True)),
    (O.THROTTLED, True, True, False, (O.THROTTLED, True)),
    # Timeouts: before the worker accepted, try another; after, not unless configured.
    (O.TIMED_OUT, False, False, False, (O.TIMED_OUT, True)),
    (O.TIMED_OUT, True, False, False, (O.TIMED_OUT, False)),
    (O.TIMED_OUT, True, False, True, (O.TIMED_OUT, True)),
    # 5xx: the first is charged and failed over; a second one stops, uncharged.
    (O.SERVER_ERROR, True, False, False, (O.SERVER_ERROR, True)),
    (O.SERVER_ERROR, True, True, False, (O.REPEATED_SERVER_ERROR, False)),
])
def test_after_failure(outcome: O, accepted: bool, earlier_5xx: bool, retry_on_timeout: bool,
                       want: tuple[O, bool]) -> None:
    assert after_failure(outcome, accepted=accepted, earlier_5xx=earlier_5xx,
                         retry_on_timeout=retry_on_timeout) == want


class ClosedAfterSend(UpstreamTransportError):
    """A transport error the proxy has never heard of (as a newer client may raise)."""


class _Pool:
    """Fails every request with a transport error type unknown to the proxy."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      connect_timeout: float) -> Any:
        self.urls.append(url)
        raise ClosedAfterSend("connection closed after the request was sent")


async def test_an_unknown_transport_error_is_an_ordinary_failed_attempt() -> None:
    """Counted in the call's attempts, paid from the retry budget, charged to each
    worker's breaker, and failed over like any broken attempt."""
    registry = Registry([WorkerSpec("w0", "http://w0"), WorkerSpec("w1", "http://w1")])
    for w in registry:
        registry.apply_probe(w, ProbeResult(healthy=True, models=frozenset({"m"})))
    pool = _Pool()
    proxy = Proxy(registry, pool, parse_config({"routing": {"max_attempts": 3}}))  # type: ignore[arg-type]
    call = Call(request_id="r1", route="/chat/completions", model="m", body=b"{}")
    request = make_mocked_request("POST", "/v1/chat/completions")
    with pytest.raises(UpstreamError) as err:
        await proxy.forward(request, call)
    assert err.value.code == "upstream_error"
    assert call.attempts == 2 == len(pool.urls)  # both workers, then nobody left to try
    assert proxy.retry_budget.snapshot()["retries"] == 1
    for name in ("w0", "w1"):
        snap = proxy.breakers.get(name).snapshot()
        assert snap["window_failures"] == 1, (name, snap)
        worker = registry.get(name)
        assert worker is not None and worker.healthy  # not a connect failure
        assert worker.in_flight == 0


def test_retry_on_timeout_is_off_unless_configured() -> None:
    assert parse_config({}).routing.retry_on_timeout is False
    assert parse_config({"routing": {"retry_on_timeout": True}}).routing.retry_on_timeout
    with pytest.raises(ValueError, match=r"routing\.retry_on_timeout"):
        parse_config({"routing": {"retry_on_timeout": "sometimes"}})
