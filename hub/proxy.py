"""Send a call to a worker, failing over before the first byte reaches the client.

Decisions (which worker) are sync reads of the registry; only the I/O awaits.
A worker failure before anything was written to the client is retried on the next
candidate (bounded by ``routing.max_attempts``); after that, the stream is ended
with an error event, never retried.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web

from hub.backends import backend_for
from hub.call import Call
from hub.config import Config, Timeouts
from hub.deadline import Deadline
from hub.errors import (
    HubError,
    ModelNotFound,
    NoWorker,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from hub.registry import Registry, Worker
from hub.relay import ClientGone, end_with_error, relay_events
from hub.routing import Policy, make_policy

log = logging.getLogger("spokehub.proxy")

# Statuses that mean "this worker cannot take it now": try another one.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_ERROR_BODY = 64 * 1024


class _Retry(Exception):
    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error


class Proxy:
    def __init__(self, registry: Registry, session: aiohttp.ClientSession,
                 config: Config) -> None:
        self.registry = registry
        self.session = session
        self.policy: Policy = make_policy(config.routing.policy)
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Take new timeouts, attempts and policy (on reload); in-flight calls keep theirs."""
        if config.routing.policy != self.policy.name:
            self.policy = make_policy(config.routing.policy)
        self.timeouts: Timeouts = config.timeouts
        self.max_attempts = config.routing.max_attempts
        # connect is bounded by aiohttp; first byte / idle / total by our Deadline.
        self._client_timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=config.timeouts.connect_s, sock_read=None)

    def pick(self, model: str, tried: list[Worker]) -> Worker | None:
        candidates = self.registry.candidates(model)
        if tried:
            candidates = [w for w in candidates if w not in tried]
        return self.policy.pick(candidates)

    async def forward(self, request: web.Request, call: Call) -> web.StreamResponse:
        tried: list[Worker] = []
        last: UpstreamError | None = None
        for _ in range(self.max_attempts):
            worker = self.pick(call.model, tried)
            if worker is None:
                break
            tried.append(worker)
            call.worker = worker.name
            call.attempts += 1
            try:
                return await self._attempt(request, call, worker)
            except _Retry as retry:
                last = retry.error
                log.info("request %s: worker %s failed before first byte (%s); %s",
                         call.request_id, worker.name, retry.error.message,
                         "retrying" if call.attempts < self.max_attempts else "giving up")
        if last is not None:
            raise last
        if not self.registry.serves(call.model):
            raise ModelNotFound(f"The model '{call.model}' does not exist", param="model")
        raise NoWorker(f"No healthy worker can serve model '{call.model}' right now")

    async def _attempt(self, request: web.Request, call: Call,
                       worker: Worker) -> web.StreamResponse:
        spec = worker.spec
        backend = backend_for(spec.kind)
        headers = {"Content-Type": "application/json", "X-Request-ID": call.request_id}
        headers.update(backend.request_headers(spec))
        url = backend.request_url(spec, call.route)
        out: web.StreamResponse | None = None
        up: aiohttp.ClientResponse | None = None
        t = self.timeouts
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            with worker.in_flight_slot():
                async with Deadline(t.first_byte_s, t.total_s) as deadline:
                    up = await self.session.post(url, data=call.body, headers=headers,
                                                 timeout=self._client_timeout)
                    if up.status in RETRYABLE_STATUS:
                        await up.content.read(MAX_ERROR_BODY)
                        raise _Retry(UpstreamError(f"worker answered HTTP {up.status}"))
                    if not call.stream or up.status != 200:
                        body = await up.read()
                        call.ttft_s = loop.time() - start
                        worker.observe_latency(call.ttft_s)
                        return web.Response(status=up.status, body=body, headers={
                            "Content-Type": up.headers.get("Content-Type", "application/json"),
                            "X-Request-ID": call.request_id,
                            "X-Spokehub-Worker": worker.name})
                    first = await up.content.readany()
                    if not first:
                        raise _Retry(UpstreamError("worker closed the stream before any data"))
                    call.ttft_s = loop.time() - start
                    worker.observe_latency(call.ttft_s)
                    deadline.set_phase("next chunk", t.idle_s)
                    out = web.StreamResponse(status=200, headers={
                        "Content-Type": up.headers.get("Content-Type", "text/event-stream"),
                        "Cache-Control": "no-cache",
                        "X-Accel-Buffering": "no",
                        "X-Request-ID": call.request_id,
                        "X-Spokehub-Worker": worker.name})
                    await out.prepare(request)
                    await relay_events(up.content, out, first, deadline)
                    await out.write_eof()
                    return out
        except ClientGone:
            call.status = 499
            call.error = "client_disconnected"
            assert out is not None
            return out
        except aiohttp.ClientConnectorError as exc:
            self.registry.mark_unreachable(worker, f"connect: {exc.os_error or exc}")
            raise _Retry(UpstreamConnectError(
                f"Could not connect to worker {worker.name}")) from exc
        except (aiohttp.ClientError, UpstreamTimeout) as exc:
            err: HubError = exc if isinstance(exc, UpstreamTimeout) else UpstreamError(
                f"Worker {worker.name} failed: {type(exc).__name__}")
            if out is None:
                assert isinstance(err, UpstreamError)
                raise _Retry(err) from exc
            call.error = err.code
            await end_with_error(out, err)
            return out
        finally:
            if up is not None:
                # An unfinished body closes the connection, so the worker sees the
                # disconnect and frees its slot; a finished one goes back to the pool.
                if up.content.is_eof():
                    up.release()
                else:
                    up.close()
