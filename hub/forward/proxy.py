"""Send a call to a worker, failing over before the first byte reaches the client.

Decisions (which worker, whether to try another) are sync; only the I/O awaits.
A worker failure before anything was written to the client is retried on the next
candidate (bounded by ``routing.max_attempts`` and the retry budget), except where a
retry would multiply GPU work or blame (:func:`after_failure`); once the client has a
byte, the stream is ended with an error event, never retried. One attempt (send,
answer) is ``attempt.py``'s; every attempt's outcome lands in one :class:`FleetReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from hub.admission.worker_queue import CapacityQueue
from hub.config.schema import Config, Timeouts
from hub.errors import ModelNotFound, NoWorker, RouteNotServed, UpstreamError
from hub.fleet.registry import Registry, Worker
from hub.forward import placement
from hub.forward.attempt import Attempt, AttemptFailed
from hub.forward.call import Call
from hub.resilience.breaker import Breakers, State
from hub.resilience.outlier import LatencyStat, OutlierDetector
from hub.resilience.report import AttemptOutcome, FleetReport
from hub.resilience.retry_budget import RetryBudget
from hub.routing import Policy, make_policy
from hub.upstream import Pool

log = logging.getLogger("spokehub.proxy")


def after_failure(outcome: AttemptOutcome, *, accepted: bool, earlier_5xx: bool,
                  retry_on_timeout: bool) -> tuple[AttemptOutcome, bool]:
    """What to report for an attempt that failed before the client's first byte, and
    whether another worker may try the request.

    * A timeout after the worker accepted the request (sent headers) is a slow
      generation that may still be running there: another worker would start it over,
      so it ends the request unless ``routing.retry_on_timeout``. It counts against
      that worker's breaker either way.
    * A 5xx for a request that already got one from another worker stops the failover
      and is not charged to the second worker's breaker. A request that two workers
      reject is more likely at fault than both workers (a "query of death"); charging
      every worker it visits would let one bad prompt, replayed by a client, open every
      breaker in the fleet. The first 5xx is charged, so a broken worker stays visible
      even when its neighbour is broken too.
    """
    if outcome is AttemptOutcome.SERVER_ERROR and earlier_5xx:
        return AttemptOutcome.REPEATED_SERVER_ERROR, False
    if outcome is AttemptOutcome.TIMED_OUT and accepted and not retry_on_timeout:
        return outcome, False
    return outcome, True


class Proxy:
    def __init__(self, registry: Registry, pool: Pool,
                 config: Config) -> None:
        self.registry = registry
        self.pool = pool
        self.policy: Policy = _policy(config)
        self._routing = config.routing
        self.fleet = FleetReport(registry, Breakers(config.resilience.breaker,
                                                    on_transition=_log_breaker))
        self.retry_budget = RetryBudget(config.resilience.retry_budget)
        self.outliers: dict[str, OutlierDetector] = {}  # per model: compare like with like
        self.capacity = CapacityQueue(config.admission.worker_queue_max,
                                      config.admission.worker_queue_timeout_s)
        self._weights = config.admission  # tenants' weights in the worker queue
        self.capacity.weight = lambda tenant: self._weights.for_tenant(tenant).weight
        self.capacity.has_room = lambda model, route: not registry.saturated(model, route)
        self._calls: set[asyncio.Task[object]] = set()  # handlers inside forward()
        self._no_calls = asyncio.Event()
        self._no_calls.set()
        self.stopping = False
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Take new settings (on reload); in-flight calls keep theirs. Breaker, budget and
        ejection state restart only if their own settings change."""
        new, old = config.routing, self._routing
        if (new.policy, new.vram_weighted, new.cache_aware) != (
                old.policy, old.vram_weighted, old.cache_aware):
            self.policy = _policy(config)
        self._routing = config.routing
        res = config.resilience
        if self.breakers.cfg != res.breaker:
            self.fleet.breakers = Breakers(res.breaker, on_transition=_log_breaker,
                                           listeners=self.breakers.listeners)
        if self.retry_budget.cfg != res.retry_budget:
            self.retry_budget = RetryBudget(res.retry_budget)
        if self.outliers and next(iter(self.outliers.values())).cfg != res.outlier:
            self.outliers.clear()
        self.outlier_cfg = res.outlier
        adm = config.admission
        self.capacity.max_waiters = adm.worker_queue_max
        self.capacity.timeout_s = adm.worker_queue_timeout_s
        self.capacity.sheddable_max = adm.worker_queue_sheddable_max
        self.capacity.aging_s = adm.batch_aging_s
        self._weights = adm
        self.timeouts: Timeouts = config.timeouts
        self.max_attempts = config.routing.max_attempts
        self.retry_on_timeout = config.routing.retry_on_timeout

    @property
    def breakers(self) -> Breakers:
        return self.fleet.breakers

    def pick(self, model: str, tried: list[Worker], route: str | None = None,
             call: Call | None = None) -> Worker | None:
        """The worker for the next attempt; a request-aware policy's choice is kept on
        ``call`` (``placement``)."""
        breakers = self.breakers
        candidates = [w for w in self.registry.candidates(model, route)
                      if w not in tried and breakers.get(w.name).would_allow()]
        detector = self.outliers.get(model)
        if detector is not None:
            candidates = detector.admit(candidates)
        worker = placement.place(self.policy, candidates, model, call)
        # Nothing awaited since would_allow(), so this admits; only the picked worker's
        # breaker is asked, or unused half-open probe slots would stay taken.
        if worker is None or not breakers.get(worker.name).allow():
            if worker is not None and call is not None:
                placement.failed(self.policy, call)
            return None
        return worker

    def forget(self, name: str) -> None:
        """A worker left the registry: drop its breaker, ejection and cache state."""
        self.breakers.remove(name)
        placement.forget(self.policy, name)
        for detector in self.outliers.values():
            detector.forget(name)

    def health_changed(self, worker: Worker) -> None:
        """A worker that went down (or moved) may come back with an empty cache."""
        if not worker.healthy:
            placement.forget(self.policy, worker.name)

    def review_latency(self) -> list[str]:
        """Eject slow outliers, per model; called once per prober round."""
        ejected: list[str] = []
        for model, workers in self.registry.known_models().items():
            detector = self.outliers.get(model)
            if detector is None:
                detector = self.outliers[model] = OutlierDetector(self.outlier_cfg)
            stats: list[LatencyStat] = []
            for w in workers:  # each worker's time to first byte for this model only
                ttfb = w.ttfb(model)
                stats.append(LatencyStat(w.name, ttfb.value, ttfb.samples, w.routable))
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
        earlier_5xx = False
        self.retry_budget.deposit()
        for _ in range(self.max_attempts):
            worker = self.pick(call.model, tried, call.route, call)
            if worker is None and not tried and self.registry.saturated(call.model, call.route):
                worker = await self._wait_for_room(call.model, call.route, call)
            if worker is None:
                break
            if tried and not self.retry_budget.try_withdraw():  # only a real retry pays
                self.fleet.attempt(worker, call.model).report(AttemptOutcome.ABANDONED)
                placement.failed(self.policy, call)
                log.info("request %s: retry budget spent; not retrying", call.request_id)
                break
            tried.append(worker)
            call.worker = worker.name
            call.attempts += 1
            try:
                with self.fleet.attempt(worker, call.model) as report:
                    try:
                        response = await Attempt(call, worker, self.pool, self.timeouts,
                                                 report=report, stopping=self._stopping,
                                                 ).run(request)
                        placement.served(self.policy, call, response.status)
                        return response
                    except AttemptFailed as failed:
                        placement.failed(self.policy, call)
                        outcome, go_on = after_failure(
                            failed.outcome, accepted=failed.accepted, earlier_5xx=earlier_5xx,
                            retry_on_timeout=self.retry_on_timeout)
                        earlier_5xx |= failed.outcome is AttemptOutcome.SERVER_ERROR
                        report.report(outcome, detail=failed.detail)
                        last = failed.error
                log.info("request %s: worker %s failed before first byte (%s); %s",
                         call.request_id, worker.name, last.message,
                         "giving up" if not go_on or call.attempts >= self.max_attempts
                         else "retrying")
                if not go_on:
                    break
            finally:
                if len(self.capacity):
                    self.capacity.wake()  # a slot is free: the longest waiter may take it
        if last is not None:
            raise last
        if not self.registry.serves(call.model):
            raise ModelNotFound(f"The model '{call.model}' does not exist", param="model")
        if not self.registry.serves(call.model, call.route):
            raise RouteNotServed(f"No worker serves the model '{call.model}' on this route",
                                 param="model")
        raise NoWorker(f"No healthy worker can serve model '{call.model}' right now")

    async def _wait_for_room(self, model: str, route: str | None = None,
                             call: Call | None = None) -> Worker | None:
        """Queue in the hub until a worker for ``model`` has room (bounded)."""
        deadline = asyncio.get_running_loop().time() + self.capacity.timeout_s
        # its class and cost decide its place (hub.admission.fair_order)
        place = (self.capacity.place(call.tenant, call.priority, call.cost_tokens, model, route)
                 if call is not None else self.capacity.place(model=model, route=route))
        with place:
            while True:
                await place.wait(deadline)
                worker = self.pick(model, [], route, call)
                if worker is not None or not self.registry.saturated(model, route):
                    return worker
                # someone else took the slot: the place stays first of its class

    def _stopping(self) -> bool:
        return self.stopping


def _policy(config: Config) -> Policy:
    routing = config.routing
    return make_policy(routing.policy, vram_weighted=routing.vram_weighted,
                       cache_aware=routing.cache_aware)


def _log_breaker(name: str, old: State, new: State) -> None:
    level = logging.INFO if new is State.CLOSED else logging.WARNING
    log.log(level, "worker %s: circuit breaker %s -> %s", name, old, new)
