"""The agent daemon: collect, heartbeat, back off, deregister on SIGTERM/SIGINT.

Logging is one line per state change (hub reachable or not, a worker going up or
down, GPUs appearing or failing), never one line per heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from agent import __version__
from agent.client import HEADERS, open_pool
from agent.config import AgentConfig, read_token_file
from agent.failover import HubChooser, Switch
from agent.gpu import GpuReader, GpuReading
from agent.heartbeat import (
    AUTH,
    OK,
    REFUSED,
    UNAVAILABLE,
    Backoff,
    HubClient,
    HubReply,
    WorkerStatus,
    build_heartbeat,
)
from agent.host import read_host
from agent.targets import WorkerTarget, is_loopback
from hub.config.kit import ConfigError
from hub.probing import probe
from hub.upstream import Pool

log = logging.getLogger("spokehub.agent")

Sleep = Callable[[float], Awaitable[None]]


class Changes:
    """Remembers the last value per key so callers log only transitions."""

    def __init__(self) -> None:
        self._last: dict[str, Hashable] = {}

    def changed(self, key: str, value: Hashable) -> bool:
        if key in self._last and self._last[key] == value:
            return False
        self._last[key] = value
        return True

    def forget(self, key: str) -> None:
        self._last.pop(key, None)

    def keys(self, prefix: str) -> list[str]:
        return [k for k in self._last if k.startswith(prefix)]


class Agent:
    def __init__(self, config: AgentConfig, pool: Pool, *,
                 gpu_reader: GpuReader | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Sleep = asyncio.sleep,
                 rng: Callable[[], float] = random.random,
                 version: str = __version__) -> None:
        self.config = config
        self.pool = pool
        self.version = version
        self.hubs = [HubClient(pool, url, config.agent_id, config.token, config.hub_timeout_s)
                     for url in config.hubs]
        self.chooser = HubChooser(max(1, len(self.hubs)), config.hub_failback_s)
        self._accepted_by: set[int] = set()  # hubs that took a heartbeat: deregister there
        self._all_down = False  # the last round found every hub unavailable
        self.gpu_reader = gpu_reader or GpuReader(config.gpu)
        self.clock = clock
        self.sleep = sleep
        self.backoff = Backoff(rng=rng)
        self.interval_s = config.heartbeat_s
        self.probe_timeout_s = config.probe_timeout_s
        self.targets = config.targets()
        self.last_reply: HubReply | None = None
        self.failures = 0
        self._seen: set[str] = set()  # discovered workers that answered at least once
        self._changes = Changes()
        self._down_since: float | None = None

    # -- collecting ----------------------------------------------------------------

    async def _probe(self, target: WorkerTarget) -> WorkerStatus:
        return WorkerStatus(target, await probe(self.pool, target.kind, target.url, HEADERS,
                                                self.probe_timeout_s))

    async def collect(self) -> dict[str, Any]:
        """Read GPUs, host and workers; return the heartbeat payload."""
        reading, statuses = await asyncio.gather(
            self.gpu_reader.read(), asyncio.gather(*(self._probe(t) for t in self.targets)))
        self._note_gpus(reading)
        workers: list[WorkerStatus] = []
        for status in statuses:
            if status.target.discovered:
                if not status.result.reachable and status.name not in self._seen:
                    continue  # nothing listens on this default port
                self._seen.add(status.name)
            self._note_worker(status)
            workers.append(status)
        host = read_host(reading.gpus)
        return build_heartbeat(self.config.agent_id, self.version, self.interval_s, host,
                               workers)

    def _note_gpus(self, reading: GpuReading) -> None:
        names = tuple(g.name for g in reading.gpus)
        if not self._changes.changed("gpus", (reading.source, reading.error, names)):
            return
        if reading.error:
            log.warning("GPU stats unavailable: %s", reading.error)
        elif reading.gpus:
            log.info("%d GPU(s) via %s: %s", len(names), reading.source, ", ".join(names))
        elif reading.source != "none":
            log.info("%s reports no GPUs", reading.source)
        elif self.config.gpu == "none":
            log.info("GPU stats disabled (gpu: none); reporting host RAM/CPU only")
        else:
            log.info("no nvidia-smi or rocm-smi found; reporting host RAM/CPU only")

    def _note_worker(self, s: WorkerStatus) -> None:
        r = s.result
        state = (r.healthy, r.detail, r.models)
        if not self._changes.changed(f"worker:{s.name}", state):
            return
        where = f"{s.target.kind} {s.target.url}"
        if r.healthy:
            slots = "" if r.slots_total is None else f", {r.slots_total} slots"
            extra = "" if r.detail == "ok" else f"; {r.detail}"
            log.info("worker %s up (%s): models %s%s%s", s.name, where,
                     ", ".join(r.models or ()) or "none", slots, extra)
        else:
            log.warning("worker %s down (%s): %s", s.name, where, r.detail)

    # -- talking to the hub ----------------------------------------------------------

    @property
    def hub(self) -> HubClient | None:
        """The hub heartbeats go to now (one at a time; see agent/failover.py)."""
        return self.hubs[self.chooser.index] if self.hubs else None

    async def beat(self) -> HubReply:
        """Collect and send one heartbeat: to the current hub, and on to the next ones
        while they are unavailable, at most once round them all."""
        if not self.hubs:
            raise ConfigError("hub_url: is required")
        payload = await self.collect()
        self._note_switch(self.chooser.before_attempt(self.clock()), None)
        for tried in range(1, len(self.hubs) + 1):
            reply = await self.hubs[self.chooser.index].heartbeat(payload)
            if reply.ok:
                self._accepted_by.add(self.chooser.index)
            if reply.outcome != UNAVAILABLE:
                break  # the hub answered (a refusal is the same on every hub)
            switch = self.chooser.failed(self.clock())
            if tried == len(self.hubs):
                break  # every hub failed this round: the caller backs off
            if not self._all_down:  # while all are down, rounds repeat: log them once
                self._note_switch(switch, reply)
        self._all_down = reply.outcome == UNAVAILABLE
        self._note_reply(reply)
        return reply

    def _note_switch(self, switch: Switch | None, reply: HubReply | None) -> None:
        """One line per change of hub."""
        if switch is None:
            return
        old, new = self.hubs[switch.old].hub_url, self.hubs[switch.new].hub_url
        if switch.reason == "failback":
            log.info("going back to the preferred hub %s (on %s for at least %gs)", new, old,
                     self.config.hub_failback_s)
        else:
            log.warning("hub %s unavailable (%s); failing over to %s", old,
                        reply.detail if reply else "?", new)

    def _note_reply(self, reply: HubReply) -> None:
        self.last_reply = reply
        hub = self.hub.hub_url if self.hub else "?"
        if self._all_down and len(self.hubs) > 1:
            hub = "(every one: " + ", ".join(h.hub_url for h in self.hubs) + ")"
        now = self.clock()
        if reply.ok:
            accepted = tuple(sorted(reply.accepted))
            if self._changes.changed("hub", (OK, hub)):
                after = ""
                if self._down_since is not None:
                    after = (f" after {self.failures} failed attempt(s) over "
                             f"{now - self._down_since:.0f}s")
                log.info("registered with hub %s%s: accepted %s", hub, after,
                         ", ".join(accepted) or "no workers")
                self._changes.changed("accepted", accepted)
            elif self._changes.changed("accepted", accepted):
                log.info("hub now accepts workers: %s", ", ".join(accepted) or "none")
            self._note_rejected(reply.rejected)
            self.failures = 0
            self._down_since = None
            if reply.interval_s is not None and reply.interval_s != self.interval_s:
                log.info("hub asks for a heartbeat every %gs (was %gs)", reply.interval_s,
                         self.interval_s)
                self.interval_s = reply.interval_s
            return
        self.failures += 1
        if self._down_since is None:
            self._down_since = now
        if not self._changes.changed("hub", (reply.outcome, reply.status)):
            log.debug("hub still failing (%s), attempt %d", reply.detail, self.failures)
            return
        self._changes.forget("accepted")
        if reply.outcome == AUTH:
            log.error("hub %s refused the agent token (%s): check the token and that it "
                      "is agent-scoped; retrying with backoff", hub, reply.detail)
        elif reply.outcome == REFUSED:
            log.error("hub %s rejected the heartbeat (%s); retrying with backoff", hub,
                      reply.detail)
        else:
            log.warning("hub %s unavailable (%s); retrying with backoff (max %gs)", hub,
                        reply.detail, min(self.backoff.cap_s,
                                          max(self.interval_s, self.backoff.base_s)))

    def _note_rejected(self, rejected: tuple[tuple[str, str], ...]) -> None:
        now = {name for name, _ in rejected}
        for key in self._changes.keys("rejected:"):
            if key.removeprefix("rejected:") not in now:
                self._changes.forget(key)
        for name, reason in rejected:
            if self._changes.changed(f"rejected:{name}", reason):
                log.warning("hub rejected worker %s: %s", name, reason or "no reason given")

    def _reload_token(self) -> None:
        """After a 401/403, pick up a rotated token file without a restart."""
        path = self.config.token_path
        if not self.hubs or path is None:
            return
        try:
            token = read_token_file(path, "token_file")
        except ConfigError as exc:
            if self._changes.changed("token_file", str(exc)):
                log.error("%s", exc)
            return
        self._changes.forget("token_file")
        if self.hub is not None and token != self.hub.token:
            log.info("token file %s changed; using the new token", path)
            for hub in self.hubs:
                hub.token = token
            self._changes.forget("hub")

    async def run(self) -> None:
        """Heartbeat forever (until cancelled). Never returns on errors."""
        while True:
            started = self.clock()
            try:
                reply = await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the heartbeats
                if self._changes.changed("crash", repr(exc)):
                    log.exception("heartbeat failed: %r", exc)
                reply = HubReply(UNAVAILABLE, detail=repr(exc))
            if reply.ok:
                self._changes.forget("crash")
                self.backoff.reset()
                delay = max(0.0, started + self.interval_s - self.clock())
            else:
                if reply.outcome == AUTH:
                    self._reload_token()
                # A hub that is down or busy hears from us at least once per heartbeat
                # interval (never more often than when it is up), so after a restart
                # every agent is back within one interval, before its workers' TTL.
                cap = self.interval_s if reply.outcome == UNAVAILABLE else None
                delay = self.backoff.next_delay(cap)
            await self.sleep(delay)

    async def deregister(self) -> HubReply | None:
        """Deregister from the current hub and from every other one that took a
        heartbeat (hubs without shared state each hold the agent until it expires);
        returns the current hub's answer."""
        if self.hub is None:
            return None
        current = self.chooser.index
        targets = sorted(self._accepted_by | {current})
        replies = await asyncio.gather(*(self.hubs[i].deregister() for i in targets))
        for i, reply in zip(targets, replies, strict=True):
            url = self.hubs[i].hub_url
            if reply.ok or reply.status == 404:
                log.info("deregistered from hub %s", url)
            else:
                log.warning("could not deregister from hub %s (%s); it will expire the "
                            "agent when heartbeats stop", url, reply.detail)
        return replies[targets.index(current)]

    def log_startup(self) -> None:
        c = self.config
        listed = ", ".join(f"{t.name}={t.url}" for t in self.targets if not t.discovered)
        workers = listed or ("discovering on 127.0.0.1:8080 (llama.cpp), 127.0.0.1:11434 "
                             "(Ollama)" if c.discover and not c.workers else "none")
        log.info("spokehub-agent %s starting: agent_id=%s hub=%s heartbeat=%gs gpu=%s "
                 "workers: %s", self.version, c.agent_id, ", ".join(c.hubs) or None,
                 c.heartbeat_s, c.gpu,
                 workers)
        if c.hubs and not all(is_loopback(u) for u in c.hubs):
            for t in self.targets:
                if is_loopback(t.advertise_url):
                    log.warning("worker %s is advertised as %s, which the hub cannot reach; "
                                "set advertise_host", t.name, t.advertise_url)


# -- entry points ----------------------------------------------------------------------


def setup_logging(level: str) -> None:
    """Plain lines on stderr; journald adds its own timestamps."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _urls(config: AgentConfig) -> list[str]:
    """Every URL the agent talks to (to know whether TLS is needed)."""
    return [*config.hubs, *(t.url for t in config.targets())]


async def collect_once(config: AgentConfig) -> dict[str, Any]:
    async with open_pool(_urls(config)) as pool:
        return await Agent(config, pool).collect()


async def send_once(config: AgentConfig) -> HubReply:
    async with open_pool(_urls(config)) as pool:
        return await Agent(config, pool).beat()


async def serve(config: AgentConfig, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then deregister. Returns 0."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.info("received %s again; still shutting down", sig.name)
            return
        log.info("received %s; deregistering and exiting", sig.name)
        stop.set()

    signals = (signal.SIGTERM, signal.SIGINT)
    crashed: BaseException | None = None
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with open_pool(_urls(config)) as pool:
            agent = Agent(config, pool)
            agent.log_startup()
            beating = asyncio.create_task(agent.run(), name="spokehub-agent-heartbeat")
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({beating, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if beating.done() and not beating.cancelled():
                crashed = beating.exception()
            for task in (beating, stopping):
                task.cancel()
            await asyncio.gather(beating, stopping, return_exceptions=True)
            if crashed:
                log.error("heartbeat loop stopped: %r", crashed)
            await agent.deregister()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return 0 if crashed is None else 1
