from __future__ import annotations

import pytest

AGENT_ENV = ("SPOKEHUB_HUB_URL", "SPOKEHUB_AGENT_TOKEN", "SPOKEHUB_AGENT_TOKEN_FILE",
             "SPOKEHUB_AGENT_ID", "SPOKEHUB_ADVERTISE_HOST", "SPOKEHUB_HEARTBEAT_S")


@pytest.fixture(autouse=True)
def _clean_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own agent settings must not leak into the tests."""
    for name in AGENT_ENV:
        monkeypatch.delenv(name, raising=False)
