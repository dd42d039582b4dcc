"""Local worker targets: derived names, advertised URLs, loopback, discovery candidates."""

from __future__ import annotations

import pytest

from agent.targets import (
    DISCOVERY_DEFAULTS,
    advertised_url,
    derived_name,
    discovery_targets,
    is_loopback,
    make_target,
)


@pytest.mark.parametrize(("url", "host", "expected"), [
    ("http://127.0.0.1:8080", None, "http://127.0.0.1:8080"),
    ("http://127.0.0.1:8080", "10.0.0.5", "http://10.0.0.5:8080"),
    ("http://127.0.0.1:8080/v1", "gpu1.internal", "http://gpu1.internal:8080/v1"),
    ("https://localhost", "fd00::5", "https://[fd00::5]"),
])
def test_advertised_url(url: str, host: str | None, expected: str) -> None:
    assert advertised_url(url, host) == expected


def test_derived_names_use_the_port_or_the_scheme_default() -> None:
    assert derived_name("box", "llamacpp", "http://127.0.0.1:8080") == "box-llamacpp-8080"
    assert derived_name("box", "ollama", "https://gpu1") == "box-ollama-443"
    assert derived_name("box", "ollama", "http://gpu1") == "box-ollama-80"
    named = make_target("box", "http://127.0.0.1:8080", "llamacpp", "mine", "10.0.0.5")
    assert (named.name, named.advertise_url) == ("mine", "http://10.0.0.5:8080")


@pytest.mark.parametrize(("url", "expected"), [
    ("http://localhost:8080", True), ("http://127.0.0.2", True), ("http://[::1]:80", True),
    ("http://10.0.0.5", False), ("http://gpu1.internal", False),
])
def test_is_loopback(url: str, expected: bool) -> None:
    assert is_loopback(url) is expected


def test_discovery_targets() -> None:
    targets = discovery_targets("box", "10.0.0.5")
    assert [(t.name, t.url, t.advertise_url, t.discovered) for t in targets] == [
        (f"box-{kind}-{port}", f"http://127.0.0.1:{port}", f"http://10.0.0.5:{port}", True)
        for kind, port in DISCOVERY_DEFAULTS]
