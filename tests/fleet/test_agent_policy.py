"""The agent trust checks as plain functions: no hub, no sockets, no DNS.

Link-local and cloud metadata refusals are tested here, at the validation function,
on purpose: a test over HTTP would have the hub resolve or reach those addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from typing import Any

import pytest

from hub.config.kit import ConfigError
from hub.fleet.agent_policy import (
    DEFAULT_ALLOWED_NETWORKS,
    MAX_VRAM_MB,
    IPAddress,
    Rejected,
    ResolveFailed,
    Resolver,
    WorkerRefused,
    address_problem,
    check_addresses,
    check_capacity,
    check_worker_url,
    filter_models,
    host_report,
    label,
    model_names,
    parse_networks,
    printable,
    redact_text,
    redact_url,
    worker_name,
)

DEFAULT = parse_networks(list(DEFAULT_ALLOWED_NETWORKS), "agents.allowed_networks")
EVERYTHING = parse_networks(["0.0.0.0/0", "::/0"], "x")


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


# -- addresses -------------------------------------------------------------------------


@pytest.mark.parametrize("addr", ["127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1",
                                  "172.31.255.254", "192.168.1.20", "fd12:3456::1"])
def test_default_networks_allow_loopback_and_private(addr: str) -> None:
    assert address_problem(ip(addr), DEFAULT) is None


@pytest.mark.parametrize("addr", ["8.8.8.8", "172.32.0.1", "100.64.0.1", "2001:db8::1",
                                  "169.254.1.1", "169.254.169.254", "fe80::1", "0.0.0.0", "::",
                                  "100.100.100.200", "fd00:ec2::254"])
def test_default_networks_refuse_public_cgnat_link_local_metadata(addr: str) -> None:
    problem = address_problem(ip(addr), DEFAULT)
    assert problem is not None and addr in problem


@pytest.mark.parametrize(("addr", "what"), [
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"),
    ("100.100.100.200", "metadata"), ("192.0.0.192", "metadata"),
    ("169.254.10.10", "link-local"), ("fe80::1234", "link-local"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
])
def test_special_addresses_are_refused_even_inside_a_broad_network(addr: str, what: str) -> None:
    problem = address_problem(ip(addr), EVERYTHING)
    assert problem is not None and what in problem and "explicitly" in problem


def test_special_addresses_need_an_explicit_listing() -> None:
    link_local = parse_networks(["169.254.0.0/16", "fe80::/10"], "x")
    assert address_problem(ip("169.254.10.10"), link_local) is None
    assert address_problem(ip("fe80::1"), link_local) is None
    # the metadata address needs itself listed, not just its link-local range
    assert address_problem(ip("169.254.169.254"), link_local) is not None
    metadata = parse_networks(["169.254.169.254/32", "100.100.100.200/32"], "x")
    assert address_problem(ip("169.254.169.254"), metadata) is None
    assert address_problem(ip("100.100.100.200"), metadata) is None
    # a wide network around the metadata address is not an explicit listing of it
    assert address_problem(ip("100.100.100.200"),
                           parse_networks(["100.64.0.0/10"], "x")) is not None
    assert address_problem(ip("100.64.1.2"), parse_networks(["100.64.0.0/10"], "x")) is None


def test_ipv4_mapped_ipv6_is_judged_as_ipv4() -> None:
    assert address_problem(ip("::ffff:169.254.169.254"), EVERYTHING) is not None
    assert address_problem(ip("::ffff:8.8.8.8"), DEFAULT) is not None
    assert address_problem(ip("::ffff:10.0.0.1"), DEFAULT) is None


def test_every_resolved_address_must_be_allowed() -> None:
    url = "http://box.internal:8080"
    check_addresses(url, [ip("10.0.0.5"), ip("10.0.0.6")], DEFAULT, "workers[0].url")
    with pytest.raises(WorkerRefused) as err:
        check_addresses(url, [ip("10.0.0.5"), ip("169.254.169.254")], DEFAULT,
                        "workers[0].url")
    message = err.value.message
    assert "workers[0].url" in message and url in message
    assert "169.254.169.254" in message and "agents.allowed_networks" in message
    assert err.value.status == 400
    with pytest.raises(WorkerRefused):
        check_addresses(url, [], DEFAULT, "workers[0].url")


def test_refusal_names_the_url_and_the_rule() -> None:
    only = parse_networks(["127.0.0.2/32"], "x")
    with pytest.raises(WorkerRefused) as err:
        check_addresses("http://127.0.0.1:9", [ip("127.0.0.1")], only, "workers[0].url")
    assert "'http://127.0.0.1:9'" in err.value.message
    assert "not inside agents.allowed_networks" in err.value.message
    assert "127.0.0.2/32" in err.value.message


def test_parse_networks() -> None:
    assert [str(n) for n in parse_networks(["10.0.0.0/8", "::1", "192.168.1.7"], "k")] == \
        ["10.0.0.0/8", "::1/128", "192.168.1.7/32"]
    for bad, message in ((["10.0.0.1/8"], "has host bits set"), (["nope"], "does not appear"),
                         ([5], "must be a network"), ("10.0.0.0/8", "must be a list")):
        with pytest.raises(ConfigError, match=message):
            parse_networks(bad, "k")


# -- DNS -------------------------------------------------------------------------------


def fake_lookup(table: dict[str, list[str]], calls: list[str] | None = None) -> Any:
    async def lookup(host: str) -> list[tuple[Any, ...]]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, 0)) for a in table[host]]

    return lookup


async def test_a_name_that_resolves_to_metadata_is_refused() -> None:
    """DNS is the way around a check of literal addresses: the resolved ones count."""
    resolver = Resolver(lookup=fake_lookup({"metadata.evil.test": ["169.254.169.254"],
                                            "mixed.evil.test": ["10.0.0.1", "fe80::1"]}))
    for host in ("metadata.evil.test", "mixed.evil.test"):
        found = await resolver.resolve(host)
        with pytest.raises(WorkerRefused):
            check_addresses(f"http://{host}:8080", found, EVERYTHING, "workers[0].url")


async def test_resolver_caches_and_reports_failures() -> None:
    calls: list[str] = []
    now = [0.0]
    resolver = Resolver(lookup=fake_lookup({"box.internal": ["10.0.0.7", "10.0.0.7"]}, calls),
                        ttl_s=30, clock=lambda: now[0])
    assert await resolver.resolve("box.internal") == (ip("10.0.0.7"),)
    assert await resolver.resolve("box.internal") == (ip("10.0.0.7"),)
    assert calls == ["box.internal"]
    now[0] = 31
    await resolver.resolve("box.internal")
    assert calls == ["box.internal"] * 2
    with pytest.raises(ResolveFailed, match="cannot resolve"):
        await resolver.resolve("nowhere.internal")


async def test_resolver_bounds_concurrent_lookups() -> None:
    """Lookups that never answer hold their slot until they end, so they cannot pile
    up; later callers give up after the timeout instead of waiting forever."""
    started: list[str] = []
    release = asyncio.Event()

    async def slow(host: str) -> list[tuple[Any, ...]]:
        started.append(host)
        await release.wait()
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 0))]

    resolver = Resolver(lookups=2, timeout_s=0.05, lookup=slow)
    results = await asyncio.gather(*(resolver.resolve(f"h{i}.internal") for i in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, ResolveFailed) for r in results)
    assert len(started) == 2  # only two lookups ever ran
    release.set()
    await asyncio.sleep(0)
    assert await resolver.resolve("h9.internal") == (ip("10.0.0.1"),)


# -- URLs, names, text -------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://user:secret@10.0.0.1:8080", "http://user@10.0.0.1",
                                 "http://:secret@10.0.0.1", "https://a:b@box.internal/v1"])
def test_urls_with_credentials_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(WorkerRefused) as err:
        check_worker_url(url, "workers[0].url")
    assert "credentials" in err.value.message
    assert "secret" not in err.value.message and ":b@" not in err.value.message


@pytest.mark.parametrize("url", [None, "", "ftp://10.0.0.1", "http://10.0.0.1:99999",
                                 "http://10.0.0.1/?q=1", "http://10.0.0.1\\x",
                                 "http://10.0.0.1:8080/\x1b[2J", "http://bäd.internal",
                                 "http://10.0.0.1/" + "a" * 3000])
def test_malformed_urls_are_rejected(url: object) -> None:
    with pytest.raises(Rejected):
        check_worker_url(url, "workers[0].url")


def test_worker_names_are_the_hubs() -> None:
    assert worker_name("box1", "llamacpp", "http://10.0.0.1:8080") == "box1-llamacpp-8080"
    assert worker_name("box1", "ollama", "http://10.0.0.1") == "box1-ollama-80"
    assert worker_name("box1", "openai", "https://10.0.0.1/v1") == "box1-openai-443"
    # the name reads back as one (agent, kind, port): agent ids cannot collide
    assert worker_name("a-llamacpp-1", "llamacpp", "http://h:2") != \
        worker_name("a", "llamacpp", "http://h:2")
    assert label("\x1b[31mstatic1\r") == "static1 "
    assert label(5) is None and label("x" * 100) == "x" * 63


def test_printable_strips_escapes_and_controls() -> None:
    assert printable("plain name:1.0") == "plain name:1.0"
    assert printable("\x1b[2J\x1b[1;31mred\x1b[0m") == "red"
    assert printable("a\rb\nc\td") == "a b c d"
    assert printable("\x1b]0;title\x07x") == "x"
    assert printable("evil\u202egnp.exe\x7f\x00\x9b") == "evilgnp.exe"


def test_redaction() -> None:
    assert redact_url("http://user:pw@10.0.0.1:8080/v1") == "http://***@10.0.0.1:8080/v1"
    assert redact_url("http://10.0.0.1:8080") == "http://10.0.0.1:8080"
    assert redact_text("connect to https://a:b@h/x failed; http://c@d too") == \
        "connect to https://***@h/x failed; http://***@d too"


# -- numbers, models, host reports -------------------------------------------------------


def test_capacity_in_range() -> None:
    cap = check_capacity({"slots_total": 4, "slots_busy": 1, "vram_free_mb": 20480.5}, "w")
    assert (cap.slots_total, cap.slots_busy, cap.vram_free_mb) == (4, 1, 20480.5)
    cap = check_capacity({}, "w")
    assert (cap.slots_total, cap.slots_busy, cap.vram_free_mb) == (None, None, None)
    assert check_capacity({"vram_free_mb": MAX_VRAM_MB}, "w").vram_free_mb == MAX_VRAM_MB


@pytest.mark.parametrize(("raw", "message"), [
    ({"vram_free_mb": 1e18}, "vram_free_mb: 1e+18 is out of range"),
    ({"vram_free_mb": -1}, "vram_free_mb: -1 is out of range"),
    ({"vram_free_mb": float("inf")}, "vram_free_mb"),
    ({"vram_free_mb": 10**400}, "vram_free_mb"),
    ({"slots_total": 10**9}, "slots_total"),
    ({"slots_total": -2}, "slots_total"),
    ({"slots_total": 2.5}, "whole number"),
    ({"slots_total": 2, "slots_busy": 3}, "more than slots_total"),
    ({"slots_busy": -1}, "slots_busy"),
    ({"slots_total": "4"}, "must be a number"),
    ({"slots_total": True}, "must be a number"),
])
def test_capacity_out_of_range_refuses(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(Rejected, match=re.escape(message)):
        check_capacity(raw, "w")


def test_models_filter() -> None:
    models = frozenset({"mine", "victim", "aliased"})
    v = filter_models(models, frozenset({"mine", "aliased"}), frozenset({"aliased"}))
    assert v.allowed == {"mine"} and v.not_in_token == {"victim"}
    assert v.alias_targets == {"aliased"}
    v = filter_models(models, None, frozenset())
    assert v.allowed == models and not v.not_in_token and not v.alias_targets


@pytest.mark.parametrize("value", ["m", [""], ["x" * 300], ["a\x1bb"], [5], ["m"] * 600])
def test_model_names_rejects_junk(value: object) -> None:
    with pytest.raises(Rejected):
        model_names(value, "w.models")


def test_host_report_is_bounded() -> None:
    assert host_report({"hostname": "box"}) == {"hostname": "box"}
    assert host_report({"blob": "x" * 20000}) is None
    assert host_report(["x"]) is None
