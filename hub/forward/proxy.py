"""Send a call to a worker, failing over before the first byte reaches the client.

Decisions (which worker) are sync reads of the registry; only the I/O awaits.
A worker failure before anything was written to the client is retried on the next
candidate (bounded by ``routing.max_attempts``); after that, the stream is ended
with an error event, never retried. One attempt (send, answer) is ``attempt.py``'s;
every attempt's outcome lands in one :class:`FleetReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from hub.admission.worker_queue import CapacityQueue
from hub.config.schema import Config, Timeouts
from hub.errors import ModelNotFound, NoWorker, UpstreamError
from hub.fleet.registry import Registry, Worker
from hub.forward.attempt import Attempt, AttemptFailed
from hub.forward.call import Call
from hub.resilience.breaker import Breakers, State
from hub.resilience.outlier import LatencyStat, OutlierDetector
from hub.resilience.report import FleetReport
from hub.resilience.retry_budget import RetryBudget
from hub.routing import Policy, make_policy
from hub.upstream import Pool

log = logging.getLogger("spokehub.proxy")


class Proxy:
    def __init__(self, registry: Registry, pool: Pool,
                 config: Config) -> None:
        self.registry = registry
        self.pool = pool
        self.policy: Policy = make_policy(config.routing.policy,
                                          vram_weighted=config.routing.vram_weighted)
        self._routing = config.routing
        self.fleet = FleetReport(registry, Breakers(config.resilience.breaker,
                                                    on_transition=_log_breaker))
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
            self.fleet.breakers = Breakers(res.breaker, on_transition=_log_breaker)
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

    @property
    def breakers(self) -> Breakers:
        return self.fleet.breakers

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
                with self.fleet.attempt(worker, call.model) as report:
                    try:
                        return await Attempt(call, worker, self.pool, self.timeouts,
                                             report=report, stopping=self._stopping,
                                             ).run(request)
                    except AttemptFailed as failed:
                        report.report(failed.outcome, detail=failed.detail)
                        last = failed.error
                log.info("request %s: worker %s failed before first byte (%s); %s",
                         call.request_id, worker.name, last.message,
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

    def _stopping(self) -> bool:
        return self.stopping


def _log_breaker(name: str, old: State, new: State) -> None:
    level = logging.INFO if new is State.CLOSED else logging.WARNING
    log.log(level, "worker %s: circuit breaker %s -> %s", name, old, new)
