"""Time to first byte per worker and model: what is measured, and who reads it."""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import make_mocked_request

from hub.config.schema import parse_config
from hub.config.workers import WorkerSpec
from hub.fleet.registry import ProbeResult, Registry, Worker
from hub.forward.call import Call
from hub.forward.proxy import Proxy
from hub.routing import LeastLoaded

ANSWER = json.dumps({"choices": [{"message": {"content": "ok"}}]}).encode()


class _Response:
    """An upstream answer whose body reads call ``seen`` first."""

    def __init__(self, parts: list[bytes], seen: Callable[[], None], status: int = 200,
                 content_type: str = "application/json") -> None:
        self.status = status
        self.parts = deque(parts)
        self.seen = seen
        self.content_type = content_type

    def header(self, name: str, default: str = "") -> str:
        return self.content_type if name.lower() == "content-type" else default

    async def readany(self) -> bytes:
        self.seen()
        return self.parts.popleft() if self.parts else b""

    async def read(self, limit: int | None = None) -> bytes:
        self.seen()
        body = b"".join(self.parts)
        self.parts.clear()
        return body

    def is_eof(self) -> bool:
        return not self.parts

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Pool:
    def __init__(self, response: _Response) -> None:
        self.response = response

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      connect_timeout: float) -> Any:
        return self.response


def _fleet(*names: str, models: frozenset[str] = frozenset({"m"})) -> Registry:
    registry = Registry([WorkerSpec(n, f"http://{n}") for n in names])
    for w in registry:
        registry.apply_probe(w, ProbeResult(healthy=True, models=models))
    return registry


def _worker(registry: Registry, name: str) -> Worker:
    worker = registry.get(name)
    assert worker is not None
    return worker


async def test_non_stream_ttfb_is_the_time_to_the_response_headers() -> None:
    """Known before the body is read: a long answer does not count as a slow worker."""
    registry = _fleet("w0")
    call = Call(request_id="r", route="/chat/completions", model="m", body=b"{}")
    ttft_at_body: list[float | None] = []
    pool = _Pool(_Response([ANSWER], lambda: ttft_at_body.append(call.ttft_s)))
    proxy = Proxy(registry, pool, parse_config({}))  # type: ignore[arg-type]
    response = await proxy.forward(make_mocked_request("POST", "/v1/chat/completions"), call)
    assert response.status == 200
    assert ttft_at_body == [call.ttft_s] and call.ttft_s is not None
    ttfb = _worker(registry, "w0").ttfb("m")
    assert (ttfb.value, ttfb.samples) == (call.ttft_s, 1)


async def test_stream_ttfb_is_the_time_to_the_first_data_event() -> None:
    registry = _fleet("w0")
    call = Call(request_id="r", route="/chat/completions", model="m", body=b"{}",
                stream=True)
    ttft_at_read: list[float | None] = []
    parts = [b": keep-alive\n\n", b'data: {"n": 1}\n\n', b"data: [DONE]\n\n"]
    pool = _Pool(_Response(parts, lambda: ttft_at_read.append(call.ttft_s),
                           content_type="text/event-stream"))
    proxy = Proxy(registry, pool, parse_config({}))  # type: ignore[arg-type]
    await proxy.forward(make_mocked_request("POST", "/v1/chat/completions"), call)
    assert call.error is None
    # Read 1 brought a comment, read 2 the data event: only then is the first byte in.
    assert ttft_at_read[:2] == [None, None]
    assert ttft_at_read[2] is not None
    assert _worker(registry, "w0").ttfb("m").samples == 1


def _served(worker: Worker, model: str, seconds: float, times: int) -> None:
    for _ in range(times):
        worker.observe_ttfb(model, seconds)


def test_least_loaded_ties_break_on_the_requested_models_ttfb() -> None:
    """w0 is quick on model a, which it serves most, but slow on b; w1 is quicker on b.
    Over all models w0 looks faster; for b, w1 is. (A worker with no answers for the
    model yet would count as fastest, so that it gets tried.)"""
    registry = _fleet("w0", "w1", models=frozenset({"a", "b"}))
    w0, w1 = _worker(registry, "w0"), _worker(registry, "w1")
    _served(w0, "b", 5.0, 2)
    _served(w0, "a", 0.1, 10)
    _served(w1, "a", 0.5, 3)
    _served(w1, "b", 1.0, 3)
    assert w0.ewma_latency_s is not None and w1.ewma_latency_s is not None
    assert w0.ewma_latency_s < w1.ewma_latency_s
    proxy = Proxy(registry, None, parse_config({}))  # type: ignore[arg-type]
    proxy.policy = LeastLoaded(random.Random(0))
    assert {getattr(proxy.pick("b", []), "name", None) for _ in range(20)} == {"w1"}
    assert {getattr(proxy.pick("a", []), "name", None) for _ in range(20)} == {"w0"}


def test_outliers_are_judged_on_each_models_own_ttfb() -> None:
    """A worker slow on one model only is ejected for that model, not for the other."""
    registry = _fleet("w0", "w1", "w2", models=frozenset({"a", "b"}))
    for name in ("w0", "w1", "w2"):
        worker = _worker(registry, name)
        _served(worker, "a", 0.5, 20)
        _served(worker, "b", 20.0 if name == "w2" else 0.5, 20)
    cfg = {"resilience": {"outlier": {"min_samples": 5, "min_latency_s": 0.1}}}
    proxy = Proxy(registry, None, parse_config(cfg))  # type: ignore[arg-type]
    assert proxy.review_latency() == ["w2"]
    assert proxy.outliers["b"].is_ejected("w2")
    assert not proxy.outliers["a"].is_ejected("w2")
