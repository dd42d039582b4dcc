"""Send a call to a worker, failing over before the first byte reaches the client.

Decisions (which worker, whether to try another) are sync; only the I/O awaits.
A worker failure before anything was written to the client is retried on the next
candidate (bounded by ``routing.max_attempts`` and the retry budget), except where a
retry would multiply GPU work or blame (:func:`after_failure`); once the client has a
byte, the stream is ended with an error event, never retried. One attempt (send,
answer) is ``attempt.py``'s; every attempt's outcome lands in one :class:`FleetReport`.
A request that may spill over (``spill.py``) leaves the local loop with SpillOver and
is sent to the fallback tier instead, still before the client's first byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiohttp import web

from hub.admission.worker_queue import CapacityQueue, WorkersBusy
from hub.config.schema import Config, Timeouts
from hub.errors import (
    HubError,
    ModelNotFound,
    NoWorker,
    RouteNotServed,
    UpstreamError,
    UpstreamTimeout,
)
from hub.fleet.registry import Registry, Worker
from hub.forward import placement, spill
from hub.forward.attempt import Attempt, AttemptFailed, FirstByteBudgetSpent
from hub.forward.call import Call
from hub.forward.spill import Reason, SpillOver, SpillPlan
from hub.forward.spill_metrics import SpillCounts
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
        # May this tenant spill over now (e.g. within its budget)? False: as if its
        # spill-over were disabled. Set by whoever owns tenants' spending.
        self.spill_gate: Callable[[str], bool] = _always
        self.spills = SpillCounts()
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
        self.spill_cfg = config.spill

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
                if w.spec.fallback:  # another tier: no peer of the local workers
                    continue
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
        plan = self._spill_plan(call)
        try:
            return await self._local(request, call, plan)
        except SpillOver as over:
            return await self._spill(request, call, over)

    def _spill_plan(self, call: Call) -> SpillPlan | None:
        """The call's spill-over plan, or None: it stays local. Asked once per request,
        before the first attempt, so a budget never cancels a local attempt for a
        request that could not spill anyway."""
        plan = spill.plan_for(self.spill_cfg, call.tenant, call.model, call.priority)
        if plan is None:
            return None
        breakers = self.breakers
        if not any(breakers.get(w.name).would_allow()
                   for w in self.registry.fallbacks(call.model, call.route)):
            return None  # no fallback could take it: stay local, cancel nothing
        return plan if self.spill_gate(call.tenant) else None

    async def _local(self, request: web.Request, call: Call,
                     plan: SpillPlan | None) -> web.StreamResponse:
        """The local fleet's failover loop; raises SpillOver when ``plan`` allows a
        spill and a trigger fires."""
        tried: list[Worker] = []
        last: UpstreamError | None = None
        earlier_5xx = False
        self.retry_budget.deposit()
        for _ in range(self.max_attempts):
            worker = self.pick(call.model, tried, call.route, call)
            if worker is None and not tried and self.registry.saturated(call.model, call.route):
                worker = await self._wait_or_spill(call, plan)
            if worker is None:
                break
            if tried and not self.retry_budget.try_withdraw():  # only a real retry pays
                self.fleet.attempt(worker, call.model).report(AttemptOutcome.ABANDONED)
                placement.failed(self.policy, call)
                log.info("request %s: retry budget spent; not retrying", call.request_id)
                break
            budget = spill.first_byte_left(plan, call.sent_at,
                                           asyncio.get_running_loop().time())
            if budget is not None and budget <= 0:
                self.fleet.attempt(worker, call.model).report(AttemptOutcome.ABANDONED)
                placement.failed(self.policy, call)
                raise SpillOver(Reason.FIRST_BYTE_BUDGET, last or UpstreamTimeout(
                    "no local worker sent a first byte within the spill-over budget"))
            tried.append(worker)
            call.worker = worker.name
            call.attempts += 1
            try:
                with self.fleet.attempt(worker, call.model) as report:
                    try:
                        response = await Attempt(call, worker, self.pool, self.timeouts,
                                                 report=report, stopping=self._stopping,
                                                 first_byte_budget_s=budget).run(request)
                        placement.served(self.policy, call, response.status)
                        return response
                    except AttemptFailed as failed:
                        placement.failed(self.policy, call)
                        if isinstance(failed, FirstByteBudgetSpent):
                            report.report(failed.outcome, detail=failed.detail)
                            raise SpillOver(Reason.FIRST_BYTE_BUDGET, failed.error) from None
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
        error = last or self._no_worker(call)
        if plan is not None:
            raise SpillOver(Reason.NO_LOCAL, error)
        raise error

    def _no_worker(self, call: Call) -> HubError:
        """Why nobody could take the call when no attempt was made."""
        if not self.registry.serves(call.model):
            return ModelNotFound(f"The model '{call.model}' does not exist", param="model")
        if not self.registry.serves(call.model, call.route):
            return RouteNotServed(f"No worker serves the model '{call.model}' on this route",
                                  param="model")
        return NoWorker(f"No healthy worker can serve model '{call.model}' right now")

    async def _wait_or_spill(self, call: Call, plan: SpillPlan | None) -> Worker | None:
        """Every local worker is full: queue for room, for at most the call's queue
        budget when it may spill. A queue it cannot get into, or a budget that runs
        out, spills (reason ``queue_budget``); without a plan it is the 503 as ever."""
        cap = self.capacity
        if spill.spill_now_instead_of_queueing(plan, len(cap), cap.max_waiters):
            raise SpillOver(Reason.QUEUE_BUDGET, cap.busy("the queue cannot clear in time"))
        budget = None if plan is None else plan.max_queue_s
        try:
            async with asyncio.timeout(budget):
                return await self._wait_for_room(call)
        except TimeoutError:  # only our budget: the queue's own timeout is WorkersBusy
            raise SpillOver(Reason.QUEUE_BUDGET, cap.busy(
                f"waited the spill-over budget of {budget:g}s")) from None
        except WorkersBusy as busy:
            if plan is None:
                raise
            raise SpillOver(Reason.QUEUE_BUDGET, busy) from None

    async def _spill(self, request: web.Request, call: Call,
                     over: SpillOver) -> web.StreamResponse:
        """Send the call to the fallback tier, in config order; nothing has reached the
        client yet. If no fallback can take it, the client gets the local error."""
        last: HubError = over.error
        counted = False
        tried: list[Worker] = []
        while True:
            breakers = self.breakers
            worker = next((w for w in self.registry.fallbacks(call.model, call.route)
                           if w not in tried and breakers.get(w.name).would_allow()), None)
            if worker is None or not breakers.get(worker.name).allow():
                break
            if not counted:
                counted = True
                self.spills.add(over.reason, call.model)
                log.info("request %s: spilling over to the fallback tier (%s)",
                         call.request_id, over.reason)
            tried.append(worker)
            call.tier = "fallback"
            call.worker = worker.name
            call.attempts += 1
            call.choice = None  # the routing policy did not place this one
            with self.fleet.attempt(worker, call.model) as report:
                try:
                    return await Attempt(call, worker, self.pool, self.timeouts,
                                         report=report, stopping=self._stopping,
                                         ).run(request)
                except AttemptFailed as failed:
                    report.report(failed.outcome, detail=failed.detail)
                    last = failed.error
            log.info("request %s: fallback %s failed before first byte (%s)",
                     call.request_id, worker.name, last.message)
        if not counted:
            log.info("request %s: would spill over (%s) but no fallback worker has room",
                     call.request_id, over.reason)
        raise last

    async def _wait_for_room(self, call: Call) -> Worker | None:
        """Queue in the hub until a worker for the call's model has room (bounded)."""
        deadline = asyncio.get_running_loop().time() + self.capacity.timeout_s
        model, route = call.model, call.route
        # its class and cost decide its place (hub.admission.fair_order)
        with self.capacity.place(call.tenant, call.priority, call.cost_tokens, model, route) \
                as place:
            while True:
                await place.wait(deadline)
                worker = self.pick(model, [], route, call)
                if worker is not None or not self.registry.saturated(model, route):
                    return worker
                # someone else took the slot: the place stays first of its class

    def _stopping(self) -> bool:
        return self.stopping


def _always(tenant: str) -> bool:
    return True


def _policy(config: Config) -> Policy:
    routing = config.routing
    return make_policy(routing.policy, vram_weighted=routing.vram_weighted,
                       cache_aware=routing.cache_aware)


def _log_breaker(name: str, old: State, new: State) -> None:
    level = logging.INFO if new is State.CLOSED else logging.WARNING
    log.log(level, "worker %s: circuit breaker %s -> %s", name, old, new)
