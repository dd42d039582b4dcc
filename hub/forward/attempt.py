"""One attempt: send a call to one worker and answer the client from it.

:meth:`Attempt.run` builds the upstream request (through the worker kind's translator),
sends it under the call's deadlines and hands the answer to :meth:`Attempt.answer_whole`
(a plain answer) or :meth:`Attempt.answer_stream` (SSE). An answer reports the worker's
outcome once, through the attempt's :class:`AttemptReport`. A failure before anything
reached the client raises :class:`AttemptFailed`, for the proxy to decide on failover
and to report; a failure after that ends the client's stream with an error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable

from aiohttp import web

from hub.backends import backend_for
from hub.backends.base import Translator
from hub.backends.model_map import rename_model
from hub.cache.assemble import tap_for
from hub.config.schema import Timeouts
from hub.errors import (
    BadRequest,
    ShuttingDown,
    UpstreamAnswerTooLarge,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from hub.fleet.registry import Worker
from hub.forward.call import Call
from hub.forward.deadline import Deadline
from hub.forward.headers import answer_headers
from hub.forward.relay import ByteSource, ClientGone, TranslatedStream
from hub.forward.wire import wire_for
from hub.observe.usage import read_usage
from hub.resilience.report import AttemptOutcome, AttemptReport
from hub.upstream import (
    Pool,
    Response,
    UpstreamBodyTooLarge,
    UpstreamConnectFailed,
    UpstreamTransportError,
)

BUDGET_PHASE = "first byte (spill-over budget)"  # the Deadline phase the budget runs in
# Statuses that mean "this worker cannot take it now": try another one.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_ERROR_BODY = 64 * 1024
DRAIN_S = 1.0  # after a stream's final event, how long the body's end may take to come


class AttemptFailed(Exception):
    """The attempt failed before anything reached the client; another worker may try.

    ``accepted``: the worker had answered with headers, so it may still be working on
    the request (a timeout then is a slow generation, not a dead worker)."""

    def __init__(self, outcome: AttemptOutcome, error: UpstreamError, *, accepted: bool,
                 detail: str = "") -> None:
        super().__init__(error.message)
        self.outcome = outcome
        self.error = error
        self.accepted = accepted
        self.detail = detail  # for the log and passive health, never for the client


class FirstByteBudgetSpent(AttemptFailed):
    """The spill-over budget for the first byte ran out before the worker sent one. The
    attempt was cancelled and its connection closed (the worker frees its slot); slow is
    not broken, so the worker's breaker is not charged."""

    def __init__(self, error: UpstreamError, *, accepted: bool) -> None:
        super().__init__(AttemptOutcome.ABANDONED, error, accepted=accepted,
                         detail="spill-over budget for the first byte spent")


class Attempt:
    __slots__ = ("budget_s", "call", "deadline", "headers_s", "out", "pool", "report",
                 "started", "stopping", "timeouts", "translator", "up", "worker")

    def __init__(self, call: Call, worker: Worker, pool: Pool, timeouts: Timeouts, *,
                 report: AttemptReport, stopping: Callable[[], bool],
                 first_byte_budget_s: float | None = None) -> None:
        self.call = call
        self.worker = worker
        self.pool = pool
        self.timeouts = timeouts
        self.report = report
        self.stopping = stopping  # True once the hub is shutting down
        self.translator: Translator | None = None
        self.up: Response | None = None
        self.out: web.StreamResponse | None = None  # set once the client's stream started
        self.started = 0.0
        self.headers_s = 0.0  # from sending to the response headers
        # Spill-over: give up on this worker if no first byte came within this long.
        self.budget_s = first_byte_budget_s
        self.deadline: Deadline | None = None

    def _request(self) -> tuple[str, dict[str, str], bytes]:
        """URL, headers and body for this worker's kind; BadRequest if it cannot take it."""
        call, spec = self.call, self.worker.spec
        backend = backend_for(spec.kind)
        headers = {"Content-Type": call.content_type, "X-Request-ID": call.request_id}
        trace = call.trace
        if trace is not None:  # the hub's span is the worker's parent
            headers["traceparent"] = trace.traceparent
            if trace.state:
                headers["tracestate"] = trace.state
        headers.update(backend.request_headers(spec))
        body = call.body
        remote = spec.upstream_model(call.model) if spec.model_map else None
        if remote is not None:  # a fallback provider's own name for the model
            try:
                body = rename_model(body, call.content_type, remote)
            except ValueError as exc:
                raise BadRequest(f"Cannot send this request to worker {self.worker.name}: "
                                 f"{exc}") from None
        translator = self.translator = backend.translator(spec, call.route)
        if translator is None:
            return backend.request_url(spec, call.route), headers, body
        try:
            body = translator.request(body)  # may choose the path
            return spec.url + translator.path, headers, body
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:
            raise BadRequest(f"Cannot send this request to worker {self.worker.name}: {exc}",
                             ) from None

    async def run(self, request: web.Request) -> web.StreamResponse:
        url, headers, body = self._request()
        t = self.timeouts
        self.started = asyncio.get_running_loop().time()
        if not self.call.sent_at:
            self.call.sent_at = self.started  # waiting in the hub ends here
        first_byte_s, phase = t.first_byte_s, "first byte"
        if self.budget_s is not None and self.budget_s < first_byte_s:
            first_byte_s, phase = self.budget_s, BUDGET_PHASE
        try:
            with self.worker.in_flight_slot():
                async with Deadline(first_byte_s, t.total_s, phase) as deadline:
                    self.deadline = deadline
                    up = self.up = await self.pool.request("POST", url, headers, body,
                                                           t.connect_s)
                    self.headers_s = asyncio.get_running_loop().time() - self.started
                    if up.status in RETRYABLE_STATUS:
                        with contextlib.suppress(UpstreamBodyTooLarge):
                            await up.read(MAX_ERROR_BODY)  # only to reuse the connection
                        raise AttemptFailed(AttemptOutcome.for_status(up.status),
                                            UpstreamError(f"worker answered HTTP {up.status}"),
                                            accepted=True)
                    if not self._streams(up):
                        # Accepted: the answer may take until total_s (a worker may send
                        # its headers before it generates).
                        deadline.set_phase("the answer", math.inf)
                        return await self.answer_whole(up)
                    out = await self.answer_stream(request, up, deadline)
                await _drain(up)
                return out
        except asyncio.CancelledError:
            if self.stopping() and self.out is not None and not self.call.answered:
                self.call.error = ShuttingDown.code
                self._release()
                await wire_for(self.call.route).end_with_error(
                    self.out, ShuttingDown("The hub is shutting down"))
            raise
        except ClientGone:
            self.call.status = 499
            self.call.error = "client_disconnected"
            assert self.out is not None
            return self.out
        except (UpstreamTransportError, UpstreamError) as exc:
            if self.out is None:
                if self.deadline is not None and self.deadline.expired == BUDGET_PHASE:
                    self._release()  # close the connection now: the worker frees its slot
                    raise FirstByteBudgetSpent(
                        UpstreamTimeout(f"worker {self.worker.name} sent no first byte "
                                        f"within the spill-over budget"),
                        accepted=self.up is not None) from exc
                raise self._failed(exc) from exc
            err = exc if isinstance(exc, UpstreamError) else self._broken(exc)
            self.call.error = err.code
            self._release()  # free the worker before waiting on the client
            await wire_for(self.call.route).end_with_error(self.out, err)
            return self.out
        finally:
            self._release()

    def _streams(self, up: Response) -> bool:
        """Relay as a stream: the client asked for one and the worker is sending one.
        Whether a route can stream at all is the API surface's call (``call.stream``);
        this only covers a worker that answers a streaming request with one whole JSON
        body, which is passed on whole rather than failed as a stream without events.
        A translator's own wire format is its business."""
        if not self.call.stream or up.status != 200:
            return False
        return self.translator is not None or up.header(
            "Content-Type", "").startswith("text/event-stream")

    async def answer_whole(self, up: Response) -> web.Response:
        """Read the whole answer (translated if need be) and pass it on with its status."""
        call = self.call
        call.ttft_s = self.headers_s  # a non-stream answer's first byte: its headers
        try:
            answer = raw = await up.read()  # up to limits.max_upstream_body_bytes
        except UpstreamBodyTooLarge as exc:
            # The worker did its job; another would answer as much. Not a failover.
            self.report.report(AttemptOutcome.ANSWERED, ttfb_s=call.ttft_s)
            raise UpstreamAnswerTooLarge(
                f"Worker {self.worker.name}'s answer is over the hub's "
                f"limits.max_upstream_body_bytes ({exc.limit} bytes)") from None
        content_type = up.header("Content-Type", "application/json")
        if self.translator is not None:
            try:
                answer = self.translator.response(up.status, answer)
            except (ValueError, KeyError, TypeError):
                raise AttemptFailed(AttemptOutcome.BROKEN, UpstreamError(
                    f"Worker {self.worker.name} sent an unreadable answer"),
                    accepted=True) from None
            content_type = "application/json"
        self.report.report(AttemptOutcome.for_status(up.status), ttfb_s=call.ttft_s)
        if up.status == 200:
            self._account_whole(raw)
        headers = answer_headers(call, content_type, self.worker.name)
        return web.Response(status=up.status, body=answer, headers=headers)

    def _account_whole(self, raw: bytes) -> None:
        """Token counts of a whole answer (the worker's own bytes, before translation),
        and its first token's time: the end less the worker's generation time."""
        call = self.call
        call.answered = True
        usage = call.usage = read_usage(raw)
        if usage is not None and usage.gen_s is not None:
            done = asyncio.get_running_loop().time()
            call.first_token_at = max(self.started, done - usage.gen_s)

    async def answer_stream(self, request: web.Request, up: Response,
                            deadline: Deadline) -> web.StreamResponse:
        """Wait for the first data event (still under first_byte_s), then relay the stream
        up to its final event."""
        call = self.call
        content: ByteSource = up
        if self.translator is not None:
            content = TranslatedStream(up, self.translator.stream())
        wire = wire_for(call.route)
        first = await wire.first(content)
        now = asyncio.get_running_loop().time()
        call.ttft_s = now - self.started
        call.first_token_at = now
        tap = call.tap = tap_for(call, now)  # the cache's may record the events
        self.report.report(AttemptOutcome.ANSWERED, ttfb_s=call.ttft_s)
        deadline.set_phase("next chunk", self.timeouts.idle_s)
        headers = answer_headers(call, wire.content_type if self.translator else
                                 up.header("Content-Type", "text/event-stream"),
                                 self.worker.name)
        headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        out = self.out = web.StreamResponse(status=200, headers=headers)
        await out.prepare(request)
        await wire.relay(content, out, first, deadline, tap=tap)
        call.answered = True  # the worker's final event went out: read its counts once
        call.usage = tap.usage(content.raw_tail()
                               if isinstance(content, TranslatedStream) else b"")
        await out.write_eof()
        return out

    def _failed(self, exc: UpstreamTransportError | UpstreamError) -> AttemptFailed:
        """What a failure before the client's first byte says about the worker. Any
        transport error (whichever subclass the client raises) is a broken attempt."""
        accepted = self.up is not None
        if isinstance(exc, UpstreamConnectFailed):
            return AttemptFailed(AttemptOutcome.CONNECT_FAILED, UpstreamConnectError(
                f"Could not connect to worker {self.worker.name}"), accepted=False,
                detail=f"connect: {exc.os_error or exc}")
        if isinstance(exc, UpstreamTimeout):
            return AttemptFailed(AttemptOutcome.TIMED_OUT, exc, accepted=accepted)
        if isinstance(exc, UpstreamError):  # the stream's framing: cut short, oversized
            return AttemptFailed(AttemptOutcome.BROKEN, exc, accepted=accepted)
        return AttemptFailed(AttemptOutcome.BROKEN, self._broken(exc), accepted=accepted,
                             detail=str(exc))

    def _broken(self, exc: UpstreamTransportError) -> UpstreamError:
        return UpstreamError(f"Worker {self.worker.name} failed: {type(exc).__name__}")

    def _release(self) -> None:
        """An unfinished body closes the connection, so the worker sees the disconnect
        and frees its slot; a finished one goes back to the pool."""
        up = self.up
        if up is not None:
            if up.is_eof():
                up.release()
            else:
                up.close()

    def __repr__(self) -> str:
        return f"<Attempt {self.call.request_id} -> {self.worker.name} {self.report.outcome}>"


async def _drain(up: Response) -> None:
    """The client has its whole answer: read the rest of the worker's body (usually just
    the end of its chunked coding) so the connection can be reused. A worker that keeps
    sending or stalls gets its connection closed instead."""
    left = MAX_ERROR_BODY
    with contextlib.suppress(TimeoutError, UpstreamTransportError):
        async with asyncio.timeout(DRAIN_S):
            while left > 0 and not up.is_eof():
                left -= len(await up.readany())
