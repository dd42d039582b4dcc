"""Bounded client load for resilience tests.

Everything here has a fixed size and a deadline: a fixed number of requests at a fixed
concurrency, SSE streams read event by event with a read timeout, and polling loops
that give up after ``timeout`` seconds. Nothing here prints.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=5, sock_read=20)


def chat(model: str, *, stream: bool = False, max_tokens: int = 2,
         content: str = "hi", **extra: Any) -> dict[str, Any]:
    """A chat completion request body."""
    return {"model": model, "stream": stream, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": content}], **extra}


def session(limit: int = 0) -> aiohttp.ClientSession:
    """A client session with its own pool (``limit`` 0: no cap) and bounded timeouts."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=CLIENT_TIMEOUT)


# -- fixed-size load ---------------------------------------------------------------

@dataclass
class Tally:
    """What a batch of client requests saw."""

    sent: int = 0
    failed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    workers: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def ok(self, worker: str | None, status: int = 200) -> None:
        self.sent += 1
        self.statuses[status] += 1
        if worker:
            self.workers[worker] += 1

    def fail(self, status: int, why: str) -> None:
        self.sent += 1
        self.failed += 1
        self.statuses[status] += 1
        if len(self.errors) < 20:
            self.errors.append(f"{status}: {why}")


async def run_fixed(total: int, concurrency: int,
                    one: Callable[[int], Awaitable[object]]) -> None:
    """Run ``one(i)`` for i in 0..total-1, at most ``concurrency`` at a time."""
    counter = iter(range(total))

    async def lane() -> None:
        for i in counter:
            await one(i)

    await asyncio.gather(*(lane() for _ in range(min(concurrency, total))))


async def post_json(http: aiohttp.ClientSession, url: str, body: dict[str, Any],
                    ) -> tuple[int, str | None, Any]:
    """POST a JSON body; returns (status, X-Spokehub-Worker, parsed JSON or raw text)."""
    async with http.post(url, json=body) as resp:
        raw = await resp.read()
        try:
            doc: Any = json.loads(raw)
        except ValueError:
            doc = raw.decode(errors="replace")
        return resp.status, resp.headers.get("X-Spokehub-Worker"), doc


async def non_stream(http: aiohttp.ClientSession, hub_url: str, tally: Tally,
                     body: dict[str, Any]) -> tuple[int, str | None]:
    """One non-stream chat request through the hub, counted in ``tally``."""
    try:
        status, worker, doc = await post_json(http, f"{hub_url}/v1/chat/completions", body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.fail(0, f"{type(exc).__name__}: {exc}")
        return 0, None
    if status == 200 and isinstance(doc, dict) and doc.get("choices"):
        tally.ok(worker)
    else:
        tally.fail(status, str(doc)[:200])
    return status, worker


# -- SSE streams -------------------------------------------------------------------

@dataclass
class StreamResult:
    """One streamed response, every ``data:`` line checked."""

    status: int
    worker: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)  # parsed data lines
    bad_lines: list[bytes] = field(default_factory=list)  # data lines that were not JSON
    after_done: list[bytes] = field(default_factory=list)  # anything sent after [DONE]
    done: bool = False
    body: bytes = b""  # non-200 answers: the error body
    transport_error: str | None = None  # the connection broke before EOF

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if "error" in e]

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [e for e in self.events if "error" not in e]

    @property
    def clean(self) -> bool:
        """Well-formed: every data line JSON, ended by [DONE], nothing after, no cut."""
        return (self.status == 200 and self.done and not self.bad_lines
                and not self.after_done and self.transport_error is None)

    @property
    def complete(self) -> bool:
        """Clean and without an error event: the stream the worker sent, all of it."""
        return self.clean and not self.errors and bool(self.chunks)

    @property
    def finished(self) -> bool:
        """A complete answer whose last choice has a finish_reason (as llama.cpp sends)."""
        if not self.complete:
            return False
        last = [c for c in self.chunks if c.get("choices")]
        return bool(last) and last[-1]["choices"][0].get("finish_reason") is not None

    @property
    def ended_with_error(self) -> bool:
        """Cut off cleanly: an OpenAI-style error event as the last event, then [DONE]."""
        if not self.clean or not self.events or "error" not in self.events[-1]:
            return False
        err = self.events[-1]["error"]
        return (isinstance(err, dict) and isinstance(err.get("message"), str)
                and isinstance(err.get("type"), str) and "code" in err)


async def read_stream(http: aiohttp.ClientSession, url: str, body: dict[str, Any],
                      started: asyncio.Event | None = None, start_after: int = 1,
                      ) -> StreamResult:
    """POST a streaming request and read it to the end, checking each ``data:`` line.

    ``started`` is set once ``start_after`` events have arrived (or the answer is not a
    stream), so callers can inject a fault while the stream is known to be flowing.
    """
    try:
        async with http.post(url, json=body) as resp:
            result = StreamResult(resp.status, resp.headers.get("X-Spokehub-Worker"))
            if resp.status != 200:
                result.body = await resp.read()
                return result
            try:
                async for line in resp.content:
                    _take_line(result, line)
                    if started is not None and len(result.events) >= start_after:
                        started.set()
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError,
                    TimeoutError) as exc:
                result.transport_error = f"{type(exc).__name__}: {exc}"
            return result
    finally:
        if started is not None:
            started.set()


def _take_line(result: StreamResult, line: bytes) -> None:
    text = line.rstrip(b"\r\n")
    if result.done:
        if text:
            result.after_done.append(text)
        return
    if not text.startswith(b"data:"):
        return  # blank separators, comments, other SSE fields
    payload = text[5:].strip()
    if payload == b"[DONE]":
        result.done = True
        return
    try:
        doc = json.loads(payload)
    except ValueError:
        result.bad_lines.append(payload[:200])
        return
    if isinstance(doc, dict):
        result.events.append(doc)
    else:
        result.bad_lines.append(payload[:200])


async def open_raw_stream(port: int, body: dict[str, Any], events: int = 2,
                          timeout: float = 15.0,
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a streaming request over a raw socket; return once ``events`` data lines came."""
    raw = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\n"
                     b"Content-Type: application/json\r\n"
                     + f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
        await writer.drain()
        seen = b""
        async with asyncio.timeout(timeout):
            while seen.count(b"data: ") < events:
                chunk = await reader.read(65536)
                if not chunk:
                    raise ConnectionError(f"stream closed early: {seen[:300]!r}")
                seen += chunk
        if not seen.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(f"not a stream: {seen[:300]!r}")
    except BaseException:
        writer.close()
        raise
    return reader, writer


# -- hub and worker state ----------------------------------------------------------

async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        resp.raise_for_status()
        return await resp.json()


async def hub_workers(http: aiohttp.ClientSession, hub_url: str) -> dict[str, dict[str, Any]]:
    """``GET /admin/workers`` by worker name."""
    doc = await get_json(http, f"{hub_url}/admin/workers")
    return {w["name"]: w for w in doc["workers"]}


async def breaker_state(http: aiohttp.ClientSession, hub_url: str, worker: str) -> str:
    state: str = (await hub_workers(http, hub_url))[worker]["breaker"]["state"]
    return state


async def fault_stats(http: aiohttp.ClientSession, worker_url: str) -> dict[str, Any]:
    """A fault worker's counters: requests received, requests still open, mode."""
    stats: dict[str, Any] = await get_json(http, f"{worker_url}/_stats")
    return stats


async def fault_control(http: aiohttp.ClientSession, worker_url: str, **state: Any) -> None:
    async with http.post(f"{worker_url}/_control", json=state) as resp:
        resp.raise_for_status()


async def llama_busy_slots(http: aiohttp.ClientSession, worker_url: str) -> int:
    slots: list[dict[str, Any]] = await get_json(http, f"{worker_url}/slots")
    return sum(1 for s in slots if s.get("is_processing"))


_SAMPLE_RE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? '
                        r'(?P<value>\S+)$')


async def metric_samples(http: aiohttp.ClientSession, hub_url: str,
                         name: str) -> dict[str, float]:
    """Samples of one metric from ``/metrics``, keyed by their raw label string."""
    async with http.get(f"{hub_url}/metrics") as resp:
        resp.raise_for_status()
        text = await resp.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE_RE.match(line)
        if m and m.group("name") == name:
            out[m.group("labels") or ""] = float(m.group("value"))
    return out


async def until(pred: Callable[[], Awaitable[bool]], timeout: float,
                interval: float = 0.02, what: str = "condition") -> float:
    """Poll ``pred`` until it holds; returns the seconds it took. Fails after ``timeout``."""
    start = time.monotonic()
    while True:
        if await pred():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(interval)
