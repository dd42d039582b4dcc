"""URLs the client can and cannot put on the wire (validation only: nothing connects
anywhere but loopback)."""

from __future__ import annotations

import pytest

from hub.upstream import Pool, UpstreamInvalidRequest, UpstreamTransportError, check_url
from hub.upstream.url import split_url
from tests.upstream.conftest import Upstreams
from tests.upstream.fakes import answer_forever


@pytest.mark.parametrize(("url", "normalized"), [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
    ("HTTP://Box.Example:80/v1/", "http://box.example/v1"),
    ("https://api.example.com:443/v1", "https://api.example.com/v1"),
    ("https://api.example.com:8443/v1", "https://api.example.com:8443/v1"),
    ("http://bücher.example:8080", "http://xn--bcher-kva.example:8080"),
    ("http://BÜCHER.example", "http://xn--bcher-kva.example"),
    ("http://例え.テスト/v1", "http://xn--r8jz45g.xn--zckzah/v1"),
    ("http://xn--bcher-kva.example", "http://xn--bcher-kva.example"),
    ("http://[::1]:11434", "http://[::1]:11434"),
    ("http://[0:0:0:0:0:0:0:1]", "http://[::1]"),
    ("http://gpu_box-2.lan:8080", "http://gpu_box-2.lan:8080"),
    ("http://localhost.:8080", "http://localhost.:8080"),
    ("http://10.0.0.5:11434/ollama/v1", "http://10.0.0.5:11434/ollama/v1"),
    ("http://h/caf\u00e9/v1", "http://h/caf%C3%A9/v1"),
    ("http://h/a%20b", "http://h/a%20b"),
    ("http://h/a[b]", "http://h/a%5Bb%5D"),
])
def test_valid_urls_are_normalized(url: str, normalized: str) -> None:
    assert check_url(url) == normalized
    assert check_url(normalized) == normalized


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://h/x", "http"),
    ("unix:///run/llama.sock", "http"),
    ("localhost:8080", "http"),
    ("//h:80/x", "http"),
    ("http:/h/x", "start with"),
    ("http:h", "start with"),
    ("http://", "no host"),
    ("http://:8080/v1", "no host"),
    ("http://user:hunter2@h/v1", "credentials"),
    ("http://token@h/v1", "credentials"),
    ("http://h:0", "out of range"),
    ("http://h:65536", "out of range"),
    ("http://h:99999999", "not a number"),
    ("http://h:+80", "not a number"),
    ("http://h:\uff18\uff10", "not a number"),
    ("http://h:", "empty"),
    ("http://h:8080:1", "more than one"),
    ("http://::1:8080", "more than one"),
    ("http://[::1", "IPv6"),
    ("http://[127.0.0.1]", "brackets"),
    ("http://[fe80::1%25eth0]:80", "zone"),
    ("http://h/v1?x=1", "query"),
    ("http://h/v1?", "query"),
    ("http://h/v1#frag", "fragment"),
    ("http://h/a b", "spaces"),
    ("http://h/a\tb", "control"),
    ("http://h/a\nb", "control"),
    ("http://h\r\n.evil/", "control"),
    ("http://h\\@evil/", "backslash"),
    ("http://h/a\x00", "control"),
    ("http://h/%zz", "hex"),
    ("http://h/100%", "hex"),
    ("http://h/\ud800", "cannot be encoded"),
    ("http://a..b/", "IDNA"),
    ("http://" + "a" * 64 + ".example/", "IDNA"),
    ("http://\u200b/", "IDNA"),
    ("http://a\u3000b.example/", "letters, digits"),
    ("http://ex!ample.com/", "letters, digits"),
    ("http://-lead.example/", "letters, digits"),
    ("http://a%2eb/", "letters, digits"),
    ("http://xn--zz.example/", "punycode"),
    ("http://127.1/", "IPv4"),
    ("http://2130706433/", "IPv4"),
    ("http://0x7f.0.0.1/", "IPv4"),
    ("http://010.0.0.1/", "IPv4"),
    ("http://256.0.0.1/", "IPv4"),
    ("http://h/" + "a" * 9000, "longer"),
    ("", "empty"),
])
def test_invalid_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(ValueError) as err:
        check_url(url)
    assert why.lower() in str(err.value).lower()
    assert "hunter2" not in str(err.value)


def test_check_url_refuses_non_strings() -> None:
    with pytest.raises(ValueError):
        check_url(b"http://h/")  # type: ignore[arg-type]


def test_request_urls_may_carry_a_query() -> None:
    target = split_url("http://h:8080/api/x?a=1&b=caf\u00e9")
    assert target.request_target == "/api/x?a=1&b=caf%C3%A9"
    assert (target.origin, target.authority) == (("http", "h", 8080), "h:8080")
    assert split_url("http://h").request_target == "/"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:1/v1/\ud800",
    "http://user:pw@127.0.0.1:1/v1",
    "http://127.0.0.1:99999/v1",
    "gopher://127.0.0.1:1/",
    "http://127.0.0.1:1/a\r\nX-Injected: 1",
])
async def test_pool_refuses_bad_urls_cleanly(url: str) -> None:
    pool = Pool()
    with pytest.raises(UpstreamInvalidRequest) as err:
        await pool.request("POST", url, {}, b"", 1.0)
    assert isinstance(err.value, UpstreamTransportError) and isinstance(err.value, ValueError)
    assert "pw" not in str(err.value)
    assert pool.stats.opened == 0


async def test_pool_sends_non_ascii_paths_percent_encoded(upstream: Upstreams) -> None:
    server = upstream(answer_forever)
    pool = Pool()
    resp = await pool.request("POST", f"http://127.0.0.1:{server.port}/m/\u2603?q=\u00e9",
                              {}, b"", 5.0)
    assert resp.status == 200 and await resp.read() == b"{}"
    resp.release()
    assert [r.target for r in server.requests] == ["/m/%E2%98%83?q=%C3%A9"]
    assert server.requests[0].headers["host"] == f"127.0.0.1:{server.port}"
    pool.close()


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer key\r\nX-Injected: 1"},
    {"Authorization": "Bearer key\n"},
    {"X-Id": "\x00"},
    {"Authorization": "Bearer \u2603"},
    {"Bad Name": "1"},
    {"X-A\r\nX-B": "1"},
    {"Content-Length": "0"},
    {"host": "elsewhere"},
    {"Transfer-Encoding": "chunked"},
])
async def test_pool_refuses_headers_it_cannot_send_as_given(
        upstream: Upstreams, headers: dict[str, str]) -> None:
    server = upstream(answer_forever)
    pool = Pool()
    with pytest.raises(UpstreamInvalidRequest):
        await pool.request("POST", server.url, headers, b"", 5.0)
    resp = await pool.request("POST", server.url, {"X-Ok": "caf\u00e9 v"}, b"", 5.0)
    await resp.read()
    resp.release()
    assert len(server.requests) == 1  # only the good one reached the worker
    pool.close()
