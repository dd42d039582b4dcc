"""One probe's requests to one worker: shared headers, one deadline for all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from hub.probing.http import TRANSPORT_ERRORS, AnswerTooLarge, describe_error, fetch, parse_json
from hub.probing.result import ProbeResult
from hub.upstream import Pool


class NoAnswer(Exception):
    """A probe request got no usable answer.

    ``reason`` says why (``timed out``, ``cannot connect: ...``, ``answer over 4 MiB``);
    ``reachable`` is True when the worker did answer, just not usably (too large).
    """

    def __init__(self, path: str, reason: str, *, reachable: bool) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason
        self.reachable = reachable


def _http_problem(path: str, status: int) -> str:
    detail = f"{path}: HTTP {status}"
    return f"{detail} (redirects are not followed)" if 300 <= status < 400 else detail


class ProbeSession:
    """GETs below ``base_url``, all within ``timeout_s`` from when it was made."""

    def __init__(self, pool: Pool, base_url: str, headers: dict[str, str] | None,
                 timeout_s: float) -> None:
        self.pool = pool
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self._loop = asyncio.get_running_loop()
        self.deadline = self._loop.time() + timeout_s

    async def get(self, path: str) -> tuple[int, Any]:
        """(status, the JSON document or None). Raises :class:`NoAnswer`."""
        left = self.deadline - self._loop.time()
        if left <= 0:
            raise NoAnswer(path, "timed out", reachable=False)
        try:
            status, body = await fetch(self.pool, "GET", f"{self.base_url}{path}",
                                       timeout_s=left, headers=self.headers)
        except AnswerTooLarge as exc:
            raise NoAnswer(path, str(exc), reachable=True) from None
        except TRANSPORT_ERRORS as exc:
            raise NoAnswer(path, describe_error(exc), reachable=False) from None
        return status, parse_json(body)

    async def check(self, path: str, meanings: Mapping[int, str] | None = None,
                    ) -> tuple[Any, ProbeResult | None]:
        """The health check: (the document at ``path``, None) when it answers 200, else
        (None, the unhealthy result). ``meanings`` words some statuses (503: loading)."""
        try:
            status, doc = await self.get(path)
        except NoAnswer as exc:
            # A worker that cannot be reached is described as such; anything it did
            # answer names the path.
            detail = str(exc) if exc.reachable else exc.reason
            return None, ProbeResult(healthy=False, reachable=exc.reachable, detail=detail)
        if status != 200:
            detail = (meanings or {}).get(status) or _http_problem(path, status)
            return None, ProbeResult(healthy=False, detail=detail)
        return doc, None

    async def read(self, path: str) -> tuple[Any, str | None]:
        """A listing: (the document at ``path``, None) when it answers 200, else (None,
        the problem, naming the path)."""
        try:
            status, doc = await self.get(path)
        except NoAnswer as exc:
            return None, str(exc)
        if status != 200:
            return None, _http_problem(path, status)
        return doc, None
