"""Probing workers: is it up, which models (installed and loaded), how many slots are
busy, for each worker kind, over :mod:`hub.upstream`. The hub's prober and the agent
both call :func:`probe`, so they learn the same things in the same way: no redirects
followed, answers capped at a few MiB (a larger one is unreadable, never cut off and
parsed), one timeout for the whole probe, and no exceptions (anything unexpected is
an unhealthy :class:`ProbeResult` with a detail). It owns the probe's HTTP and the
parsing of each kind's status endpoints; it must not import the fleet, the request
path (``hub.forward``, ``hub.backends``) or aiohttp, since the agent imports it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hub.probing import llamacpp, ollama, openai
from hub.probing.result import ProbeResult
from hub.probing.session import ProbeSession
from hub.upstream import Pool

_PROBES: dict[str, Callable[[ProbeSession], Awaitable[ProbeResult]]] = {
    "llamacpp": llamacpp.probe,
    "ollama": ollama.probe,
    "openai": openai.probe,
}


async def probe(pool: Pool, kind: str, url: str, headers: dict[str, str] | None,
                timeout_s: float) -> ProbeResult:
    """Probe the worker of ``kind`` at ``url`` within ``timeout_s``. Never raises."""
    kind_probe = _PROBES.get(kind)
    if kind_probe is None:
        return ProbeResult(healthy=False, reachable=False,
                           detail=f"no probe for worker kind {kind!r}")
    try:
        return await kind_probe(ProbeSession(pool, url, headers, timeout_s))
    except Exception as exc:  # a strange answer must never stop a prober
        return ProbeResult(healthy=False, reachable=False,
                           detail=f"probe error: {type(exc).__name__}")


__all__ = ["ProbeResult", "probe"]
