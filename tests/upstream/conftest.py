from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.upstream.fakes import RawUpstream, Script


class Upstreams:
    """Starts raw fake upstreams for a test and stops them after it."""

    def __init__(self) -> None:
        self.started: list[RawUpstream] = []

    def __call__(self, script: Script | list[Script]) -> RawUpstream:
        server = RawUpstream(script)
        self.started.append(server)
        return server


@pytest.fixture
def upstream() -> Iterator[Upstreams]:
    servers = Upstreams()
    yield servers
    for server in servers.started:
        server.close()
