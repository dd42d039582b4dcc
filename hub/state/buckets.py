"""Per-tenant token buckets shared by every hub through Redis, so that a tenant's limit
holds across the hubs combined rather than once per hub.

Same semantics as :class:`hub.admission.token_bucket.TokenBucket` and the FIFO wait of
:class:`hub.admission.limiter.Admission`: a request books its tokens on arrival (the
bucket may go into debt) and sleeps until its turn; a booking is given back when the
caller is cancelled while waiting, and ``Ticket.settle`` refunds unused completion
tokens. Both of a tenant's buckets (requests, completion tokens) are checked and booked
by one Lua script, so an admission costs one round trip and two hubs can never both
take the last token. Admissions that arrive while a call is on the wire go out together
in one pipeline when it returns: under load one round trip serves many of them. The
script reads the time from Redis (``TIME``): the hubs' clocks do not matter. Each bucket
is a hash ``{t: tokens, s: stamp}`` that expires when it would have refilled anyway, so
idle tenants leave nothing behind.

What stays per hub: the bound on waiting requests (``max_queue``) counts this hub's
waiters only, and the wait itself is a local sleep.

Outage (a command fails or times out, or the link is already down): the link is marked
down and, per ``state.rate_limits_on_outage``, either the hub's local buckets limit alone
(``open``: each hub admits a tenant's whole limit, so N hubs admit up to N times it) or
requests of tenants that have limits get 503 ``rate_limiter_unavailable`` (``closed``).
Each such fallback is counted (``spokehub_shared_rate_limit_fallbacks_total``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from hub.admission.limiter import MAX_COST_TOKENS, TenantLimits, Ticket
from hub.errors import AdmissionRejected, HubError
from hub.state.link import SharedLink

log = logging.getLogger("spokehub.state")

LINK_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

# KEYS: request bucket, completion-token bucket.
# ARGV: op ("take" | "refund"), request rate, burst, n, token rate, burst, n, max wait.
# A rate of 0 means the tenant has no such limit: that bucket is not touched.
# take: the wait until both buckets have their n (n capped at burst, as locally); above
# max wait nothing is taken and {0, wait} returned, else both are booked (into debt if
# need be) and {1, wait} returned. refund: n back to each bucket, capped at burst.
# Numbers go back as strings: Redis would truncate a Lua number to an integer. A bucket
# deep in debt (one huge request) is kept 30 days at most.
SCRIPT = """
local MAX_TTL_MS = 2592000000
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function load(key, rate, burst)
  local v = redis.call('HMGET', key, 't', 's')
  local tokens, stamp = tonumber(v[1]), tonumber(v[2])
  if tokens == nil or stamp == nil then return burst end
  local elapsed = now - stamp
  if elapsed > 0 then tokens = math.min(burst, tokens + elapsed * rate) end
  return tokens
end
local function save(key, tokens, rate, burst)
  redis.call('HSET', key, 't', string.format('%.17g', tokens),
             's', string.format('%.17g', now))
  local ttl = math.min(math.ceil((burst - tokens) / rate * 1000) + 1000, MAX_TTL_MS)
  redis.call('PEXPIRE', key, string.format('%d', ttl))
end
local op = ARGV[1]
local rates = {tonumber(ARGV[2]), tonumber(ARGV[5])}
local bursts = {tonumber(ARGV[3]), tonumber(ARGV[6])}
local ns = {tonumber(ARGV[4]), tonumber(ARGV[7])}
local tokens = {0, 0}
local wait = 0
for i = 1, 2 do
  if rates[i] > 0 and ns[i] > 0 then
    tokens[i] = load(KEYS[i], rates[i], bursts[i])
    local short = math.min(ns[i], bursts[i]) - tokens[i]
    if short > 0 and short / rates[i] > wait then wait = short / rates[i] end
  end
end
if op == 'refund' then
  for i = 1, 2 do
    if rates[i] > 0 and ns[i] > 0 then
      save(KEYS[i], math.min(bursts[i], tokens[i] + ns[i]), rates[i], bursts[i])
    end
  end
  return {1, '0'}
end
if wait > tonumber(ARGV[8]) then return {0, string.format('%.17g', wait)} end
for i = 1, 2 do
  if rates[i] > 0 and ns[i] > 0 then
    save(KEYS[i], tokens[i] - ns[i], rates[i], bursts[i])
  end
end
return {1, string.format('%.17g', wait)}
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


_Pending = tuple[list[str], list[str], "asyncio.Future[tuple[bool, float]] | None"]


class RateLimiterUnavailable(HubError):
    """``rate_limits_on_outage: closed`` and the shared buckets cannot be reached."""

    status = 503
    type = "server_error"
    code = "rate_limiter_unavailable"


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class _SharedRefund:
    """A ticket's completion-token bucket, given back through the script."""

    __slots__ = ("_buckets", "_limits", "_tenant")

    def __init__(self, buckets: SharedBuckets, tenant: str, limits: TenantLimits) -> None:
        self._buckets = buckets
        self._tenant = tenant
        self._limits = limits

    def refund(self, n: float) -> None:
        self._buckets.refund_later(self._tenant, self._limits, 0.0, n)


class SharedBuckets:
    """The ``RemoteBuckets`` strategy of :class:`hub.admission.limiter.Admission`."""

    def __init__(self, link: SharedLink, *, on_outage: Callable[[], str] = lambda: "open",
                 timeout_s: float = 1.0, max_batch: int = 64,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.link = link
        self.on_outage = on_outage  # read per request: a reload may change it
        self.timeout_s = timeout_s
        self.max_batch = max_batch  # script calls per pipeline; 1: no pipelining
        self._sleep = sleep
        self._queued: Counter[str] = Counter()  # this hub's waiters, per tenant
        self._tasks: set[asyncio.Task[None]] = set()  # refunds and batches under way
        self._batch: list[_Pending] = []  # script calls waiting for the wire
        self._sending = False
        self.fallbacks: Counter[str] = Counter()  # "open" | "closed" -> requests

    def keys(self, tenant: str) -> list[str]:
        # The tenant in braces: both keys hash to one slot of a Redis Cluster.
        return [self.link.key("rl", f"{{{tenant}}}", "req"),
                self.link.key("rl", f"{{{tenant}}}", "tok")]

    @staticmethod
    def _args(op: str, limits: TenantLimits, requests: float, cost: float,
              max_wait: float) -> list[str]:
        rate = limits.requests_per_s or 0.0
        per_min = limits.tokens_per_min or 0.0
        return [op, repr(float(rate)), repr(float(limits.request_burst)),
                repr(float(requests if rate else 0.0)), repr(per_min / 60.0),
                repr(float(per_min)), repr(float(cost if per_min else 0.0)),
                repr(float(max_wait))]

    async def run(self, keys: list[str], args: list[str]) -> tuple[bool, float]:
        """One script call. Calls made while another batch is on the wire go out
        together in one pipeline when it returns (one round trip for many admissions
        under load; alone, a call goes at once). Raises the link's errors (RedisError,
        OSError, TimeoutError)."""
        if self.max_batch <= 1:  # every call on its own round trip
            async with asyncio.timeout(self.timeout_s):
                ok, wait = (await self._eval([(keys, args, None)]))[0]
            return bool(int(ok)), float(wait)
        fut: asyncio.Future[tuple[bool, float]] = asyncio.get_running_loop().create_future()
        self._batch.append((keys, args, fut))
        if not self._sending:
            self._sending = True
            task = asyncio.get_running_loop().create_task(self._send())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await fut

    async def _send(self) -> None:
        try:
            while self._batch:
                cut = self.max_batch
                batch, self._batch = self._batch[:cut], self._batch[cut:]
                try:
                    async with asyncio.timeout(self.timeout_s):
                        replies = await self._eval(batch)
                except BaseException as exc:
                    for _, _, fut in batch:
                        if fut is not None and not fut.done():
                            fut.set_exception(exc if isinstance(exc, Exception)
                                              else asyncio.CancelledError())
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, _, fut), (ok, wait) in zip(batch, replies, strict=True):
                    if fut is not None and not fut.done():
                        fut.set_result((bool(int(ok)), float(wait)))
        finally:
            self._sending = False

    async def _eval(self, batch: list[_Pending]) -> list[Any]:
        """EVALSHA each call, loading the script again after a ``SCRIPT FLUSH`` or a
        restart (NOSCRIPT)."""
        client = self.link.client
        if len(batch) == 1:
            keys, args, _ = batch[0]
            try:
                return [await client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)]
            except NoScriptError:
                await client.script_load(SCRIPT)
                return [await client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)]
        replies = await self._pipeline(batch)
        again = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if again:  # only these did not run: load the script and send them once more
            await client.script_load(SCRIPT)
            for i, reply in zip(again, await self._pipeline([batch[i] for i in again]),
                                strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _pipeline(self, batch: list[_Pending]) -> list[Any]:
        pipe = self.link.client.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    def _outage(self, tenant: str) -> None:
        """The shared buckets cannot be used: None (limit locally) or raise."""
        mode = self.on_outage()
        self.fallbacks[mode] += 1
        if mode == "closed":
            raise RateLimiterUnavailable(
                f"Rate limits for tenant {tenant!r} cannot be checked right now; retry "
                f"shortly", headers=_retry_after(1.0))

    async def admit(self, tenant: str, limits: TenantLimits,
                    cost_tokens: int) -> Ticket | None:
        """Book the request (and its completion tokens) in the tenant's shared buckets
        and wait for its turn; None when Redis is out and the limits fail open."""
        if not self.link.up:
            self._outage(tenant)
            return None
        cost = min(max(0, cost_tokens), MAX_COST_TOKENS) if limits.tokens_per_min else 0
        queued = self._queued[tenant]
        max_wait = limits.queue_timeout_s if queued < limits.max_queue else 0.0
        try:
            ok, wait = await self.run(self.keys(tenant),
                                      self._args("take", limits, 1.0, cost, max_wait))
        except LINK_ERRORS as exc:
            self.link.mark_down(exc)
            log.warning("shared rate limits: Redis failed (%s: %s); limits fail %s",
                        type(exc).__name__, exc, self.on_outage())
            self._outage(tenant)
            return None
        if not ok:
            if queued >= limits.max_queue:
                raise AdmissionRejected(
                    f"Rate limit exceeded for tenant {tenant!r}: {queued} requests "
                    f"already waiting; retry in {math.ceil(wait)} s",
                    headers=_retry_after(wait))
            raise AdmissionRejected(
                f"Rate limit exceeded for tenant {tenant!r}; retry in {math.ceil(wait)} s",
                headers=_retry_after(wait))
        if wait > 0.0:
            self._queued[tenant] += 1
            try:
                await self._sleep(wait)
            except BaseException:  # cancelled while queued: give the booking back
                self.refund_later(tenant, limits, 1.0, cost)
                raise
            finally:
                self._queued[tenant] -= 1
                if self._queued[tenant] <= 0:
                    del self._queued[tenant]
        return Ticket(tenant, wait, cost, _SharedRefund(self, tenant, limits) if cost else None)

    def queued(self, tenant: str) -> int:
        return self._queued[tenant]

    def refund_later(self, tenant: str, limits: TenantLimits, requests: float,
                     tokens: float) -> None:
        """Give tokens back without making the caller wait (best effort: while Redis is
        out the refund is lost, and the tenant waits a little longer than it should)."""
        if requests <= 0 and tokens <= 0:
            return
        task = asyncio.get_running_loop().create_task(
            self.refund(tenant, limits, requests, tokens))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refund(self, tenant: str, limits: TenantLimits, requests: float,
                     tokens: float) -> None:
        if not self.link.up:
            return
        try:
            await self.run(self.keys(tenant),
                           self._args("refund", limits, requests, tokens, 0.0))
        except LINK_ERRORS as exc:
            self.link.mark_down(exc)

    async def aclose(self) -> None:
        """Let refunds under way finish (each is bounded by ``timeout_s``)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
