"""Send a call to a worker, failing over before the first byte reaches the client.

Decisions (which worker) are sync reads of the registry; only the I/O awaits.
A worker failure before anything was written to the client is retried on the next
candidate (bounded by ``routing.max_attempts``); after that, the stream is ended
with an error event, never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from hub.admission.worker_queue import CapacityQueue
from hub.backends import backend_for
from hub.config.schema import Config, Timeouts
from hub.errors import (
    BadRequest,
    HubError,
    ModelNotFound,
    NoWorker,
    ShuttingDown,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from hub.fleet.registry import Registry, Worker
from hub.forward.call import Call
from hub.forward.deadline import Deadline
from hub.forward.relay import (
    MAX_PENDING,
    ByteSource,
    ClientGone,
    TranslatedStream,
    end_with_error,
    has_data_event,
    relay_events,
)
from hub.resilience.breaker import Breakers, Outcome, Permit, State, outcome_for_status
from hub.resilience.outlier import LatencyStat, OutlierDetector
from hub.resilience.retry_budget import RetryBudget
from hub.routing import Policy, make_policy
from hub.upstream import (
    Pool,
    Response,
    UpstreamConnectFailed,
    UpstreamTransportError,
)

log = logging.getLogger("spokehub.proxy")

# Statuses that mean "this worker cannot take it now": try another one.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_ERROR_BODY = 64 * 1024


class _Retry(Exception):
    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error


class Proxy:
    def __init__(self, registry: Registry, pool: Pool,
                 config: Config) -> None:
        self.registry = registry
        self.pool = pool
        self.policy: Policy = make_policy(config.routing.policy,
                                          vram_weighted=config.routing.vram_weighted)
        self._routing = config.routing
        self.breakers = Breakers(config.resilience.breaker, on_transition=_log_breaker)
        self.retry_budget = RetryBudget(config.resilience.retry_budget)
        self.outliers: dict[str, OutlierDetector] = {}  # per model: compare like with like
        self.capacity = CapacityQueue(config.admission.worker_queue_max,
                                      config.admission.worker_queue_timeout_s)
        self._calls: set[asyncio.Task[object]] = set()  # handlers inside forward()
        self._no_calls = asyncio.Event()
        self._no_calls.set()
        self.stopping = False
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Take new settings (on reload); in-flight calls keep theirs. Breaker, budget and
        ejection state restart only if their own settings change."""
        if (config.routing.policy, config.routing.vram_weighted) != (
                self._routing.policy, self._routing.vram_weighted):
            self.policy = make_policy(config.routing.policy,
                                      vram_weighted=config.routing.vram_weighted)
        self._routing = config.routing
        res = config.resilience
        if self.breakers.cfg != res.breaker:
            self.breakers = Breakers(res.breaker, on_transition=_log_breaker)
        if self.retry_budget.cfg != res.retry_budget:
            self.retry_budget = RetryBudget(res.retry_budget)
        if self.outliers and next(iter(self.outliers.values())).cfg != res.outlier:
            self.outliers.clear()
        self.outlier_cfg = res.outlier
        adm = config.admission
        self.capacity.max_waiters = adm.worker_queue_max
        self.capacity.timeout_s = adm.worker_queue_timeout_s
        self.timeouts: Timeouts = config.timeouts
        self.max_attempts = config.routing.max_attempts

    def pick(self, model: str, tried: list[Worker]) -> Worker | None:
        breakers = self.breakers
        candidates = [w for w in self.registry.candidates(model)
                      if w not in tried and breakers.get(w.name).would_allow()]
        detector = self.outliers.get(model)
        if detector is not None:
            candidates = detector.admit(candidates)
        worker = self.policy.pick(candidates)
        # Nothing awaited since would_allow(), so this admits; only the picked worker's
        # breaker is asked, or unused half-open probe slots would stay taken.
        if worker is None or not breakers.get(worker.name).allow():
            return None
        return worker

    def forget(self, name: str) -> None:
        """A worker left the registry: drop its breaker and ejection state."""
        self.breakers.remove(name)
        for detector in self.outliers.values():
            detector.forget(name)

    def review_latency(self) -> list[str]:
        """Eject slow outliers, per model; called once per prober round."""
        ejected: list[str] = []
        for model, workers in self.registry.known_models().items():
            detector = self.outliers.get(model)
            if detector is None:
                detector = self.outliers[model] = OutlierDetector(self.outlier_cfg)
            stats = [LatencyStat(w.name, w.ewma_latency_s, w.latency_samples, w.routable)
                     for w in workers]
            for name in detector.update(stats):
                log.warning("worker %s ejected for model %s: time to first byte far above "
                            "its peers'", name, model)
                ejected.append(name)
        return ejected

    async def drain(self, grace_s: float) -> None:
        """Shutdown: calls in flight may finish for up to ``grace_s``; the rest are then
        cancelled, and a cut stream ends with an error event and [DONE]."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._no_calls.wait()
        self.stopping = True
        for task in list(self._calls):
            task.cancel()

    async def forward(self, request: web.Request, call: Call) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        self._no_calls.clear()
        try:
            return await self._forward(request, call)
        finally:
            self._calls.discard(task)
            if not self._calls:
                self._no_calls.set()

    async def _forward(self, request: web.Request, call: Call) -> web.StreamResponse:
        tried: list[Worker] = []
        last: UpstreamError | None = None
        self.retry_budget.deposit()
        for attempt in range(self.max_attempts):
            if attempt and not self.retry_budget.try_withdraw():
                log.info("request %s: retry budget spent; not retrying", call.request_id)
                break
            worker = self.pick(call.model, tried)
            if worker is None and not tried and self.registry.saturated(call.model):
                worker = await self._wait_for_room(call.model)
            if worker is None:
                break
            tried.append(worker)
            call.worker = worker.name
            call.attempts += 1
            try:
                with Permit(self.breakers.get(worker.name)) as permit:
                    return await self._attempt(request, call, worker, permit)
            except _Retry as retry:
                last = retry.error
                log.info("request %s: worker %s failed before first byte (%s); %s",
                         call.request_id, worker.name, retry.error.message,
                         "retrying" if call.attempts < self.max_attempts else "giving up")
            finally:
                if len(self.capacity):
                    self.capacity.wake()  # a slot is free: the longest waiter may take it
        if last is not None:
            raise last
        if not self.registry.serves(call.model):
            raise ModelNotFound(f"The model '{call.model}' does not exist", param="model")
        raise NoWorker(f"No healthy worker can serve model '{call.model}' right now")

    async def _wait_for_room(self, model: str) -> Worker | None:
        """Queue in the hub until a worker for ``model`` has room (bounded)."""
        deadline = asyncio.get_running_loop().time() + self.capacity.timeout_s
        front = False
        while True:
            await self.capacity.wait(deadline, front=front)
            worker = self.pick(model, [])
            if worker is not None or not self.registry.saturated(model):
                return worker
            front = True  # someone else took the slot: keep our place at the front

    async def _attempt(self, request: web.Request, call: Call, worker: Worker,
                       permit: Permit) -> web.StreamResponse:
        spec = worker.spec
        backend = backend_for(spec.kind)
        headers = {"Content-Type": "application/json", "X-Request-ID": call.request_id}
        headers.update(backend.request_headers(spec))
        translator = backend.translator(spec, call.route)
        if translator is None:
            url, body = backend.request_url(spec, call.route), call.body
        else:
            url = spec.url + translator.path
            try:
                body = translator.request(call.body)
            except (ValueError, TypeError, AttributeError, RecursionError) as exc:
                raise BadRequest(f"Cannot send this request to worker {worker.name}: {exc}",
                                 ) from None
        out: web.StreamResponse | None = None
        up: Response | None = None
        t = self.timeouts
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            with worker.in_flight_slot():
                async with Deadline(t.first_byte_s, t.total_s) as deadline:
                    up = await self.pool.request("POST", url, headers, body, t.connect_s)
                    if up.status in RETRYABLE_STATUS:
                        permit.record(outcome_for_status(up.status))  # 429: not a fault
                        await up.read(MAX_ERROR_BODY)
                        raise _Retry(UpstreamError(f"worker answered HTTP {up.status}"))
                    if not call.stream or up.status != 200:
                        answer = await up.read()
                        call.ttft_s = loop.time() - start
                        worker.observe_latency(call.ttft_s)
                        content_type = up.header("Content-Type", "application/json")
                        if translator is not None:
                            try:
                                answer = translator.response(up.status, answer)
                            except (ValueError, KeyError, TypeError):
                                permit.record(Outcome.FAILURE)
                                raise _Retry(UpstreamError(
                                    f"Worker {worker.name} sent an unreadable answer")) from None
                            content_type = "application/json"
                        permit.record(outcome_for_status(up.status))
                        return web.Response(status=up.status, body=answer, headers={
                            "Content-Type": content_type,
                            "X-Request-ID": call.request_id,
                            "X-Spokehub-Worker": worker.name})
                    content: ByteSource = up
                    if translator is not None:
                        content = TranslatedStream(up, translator.stream())
                    first = await content.readany()
                    # Answered once a whole data event came (still under first_byte_s):
                    # keep-alive comments or an event that never ends are no answer.
                    while first and not has_data_event(first) and len(first) <= MAX_PENDING:
                        more = await content.readany()
                        if not more:
                            break
                        first += more
                    permit.record(Outcome.SUCCESS if first else Outcome.FAILURE)
                    if not first:
                        raise _Retry(UpstreamError("worker closed the stream before any data"))
                    call.ttft_s = loop.time() - start
                    worker.observe_latency(call.ttft_s)
                    deadline.set_phase("next chunk", t.idle_s)
                    out = web.StreamResponse(status=200, headers={
                        "Content-Type": "text/event-stream" if translator else
                        up.header("Content-Type", "text/event-stream"),
                        "Cache-Control": "no-cache",
                        "X-Accel-Buffering": "no",
                        "X-Request-ID": call.request_id,
                        "X-Spokehub-Worker": worker.name})
                    await out.prepare(request)
                    await relay_events(content, out, first, deadline)
                    await out.write_eof()
                    return out
        except asyncio.CancelledError:
            if self.stopping and out is not None:
                call.error = ShuttingDown.code
                await end_with_error(out, ShuttingDown("The hub is shutting down"))
            raise
        except ClientGone:
            call.status = 499
            call.error = "client_disconnected"
            assert out is not None
            return out
        except UpstreamConnectFailed as exc:
            permit.record(Outcome.FAILURE)
            self.registry.mark_unreachable(worker, f"connect: {exc.os_error or exc}")
            raise _Retry(UpstreamConnectError(
                f"Could not connect to worker {worker.name}")) from exc
        except (UpstreamTransportError, UpstreamTimeout) as exc:
            err: HubError = exc if isinstance(exc, UpstreamTimeout) else UpstreamError(
                f"Worker {worker.name} failed: {type(exc).__name__}")
            permit.record(Outcome.FAILURE)  # no-op mid-stream: the first byte counted
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
                if up.is_eof():
                    up.release()
                else:
                    up.close()


def _log_breaker(name: str, old: State, new: State) -> None:
    level = logging.INFO if new is State.CLOSED else logging.WARNING
    log.log(level, "worker %s: circuit breaker %s -> %s", name, old, new)
