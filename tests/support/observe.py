"""Reading a real hub's /metrics page and request log lines in tests."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from tests.support.hubproc import HubProcess

T = TypeVar("T")


class Scrape:
    """One read of /metrics: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[s.name, frozenset(s.labels.items())] = s.value

    def get(self, name: str, **labels: str) -> float:
        """The sample's value; 0 if the series does not exist (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: v for (n, labels), v in self.samples.items() if n == name}


def scrape(hub: HubProcess, headers: dict[str, str] | None = None) -> Scrape:
    req = urllib.request.Request(f"{hub.url}/metrics", headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return Scrape(resp.read().decode())


def request_lines(hub: HubProcess) -> list[dict[str, Any]]:
    """The hub's request log lines so far (one JSON object per request)."""
    out = []
    for line in hub.proc.log().splitlines():
        if '"logger":"spokehub.request"' in line:
            out.append(json.loads(line))
    return out


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
         timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """(status, lowercased headers, body) of one JSON POST; never raises on HTTP errors."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def sse_docs(body: bytes) -> list[dict[str, Any]]:
    """The JSON documents of an SSE body's data events ([DONE] left out)."""
    docs = []
    for line in body.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            docs.append(json.loads(line[6:]))
    return docs


def wait_for(pred: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.05) -> T:
    """Poll until ``pred`` returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)
