from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.fleet import JWT_ENV, AgentProcess, auth_section, child_env, jwt_secret
from tests.support.hubproc import HubProcess
from tests.support.llama import LlamaWorker


@pytest.fixture
def make_secure_hub(make_hub: Callable[..., HubProcess],
                    tmp_path: Path) -> Callable[..., HubProcess]:
    """A real hub with JWT auth on (HS256, secret from the environment), agent workers
    persisted in ``tmp_path/agents.json`` and fast probes."""
    env = child_env(**{JWT_ENV: jwt_secret()})

    def make(ttl_s: float = 3.0, **extra: Any) -> HubProcess:
        config: dict[str, Any] = {
            "auth": auth_section(),
            "health": {"interval_s": 0.5, "timeout_s": 1},
            "agents": {"ttl_s": ttl_s, "remove_after_s": 600,
                       "state_file": str(tmp_path / "agents.json")},
            "workers": [], **extra}
        return make_hub(config, env=env)

    return make


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Started ``spokehub-agent`` processes, stopped (SIGTERM) at the end of the test."""
    started: list[AgentProcess] = []

    def make(hub: HubProcess, token: str, workers: Iterable[LlamaWorker],
             **kw: Any) -> AgentProcess:
        agent = AgentProcess(tmp_path, hub.url, token, workers, **kw)
        started.append(agent)
        return agent.start()

    yield make
    for agent in started:
        agent.stop()
