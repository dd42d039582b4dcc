"""Property-based fuzzing of the hub over HTTP: no malformed request gets a 5xx.

Target: the hub as a real process (``python -m hub serve``, uvloop, auth and
admission on) in front of two recording upstreams that answer 200 to anything, so
every 5xx would be the hub's own (see tests/security/fuzzing.py for what is sent).
A real process rather than an in-process test server: it is what ships, and the
process boundary lets the test watch it survive; the client side (hypothesis) and
the hub then each get a core of their own.

``SPOKEHUB_FUZZ_EXAMPLES`` (default 10,000) sets the number of requests and
``SPOKEHUB_FUZZ_SECONDS`` (default 60) caps the sending time; ``bench/fuzz.py``
runs longer campaigns and prints the same report.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.fuzzing import FuzzTarget, environ_int, run

EXAMPLES = environ_int("SPOKEHUB_FUZZ_EXAMPLES", 10_000)
SECONDS = environ_int("SPOKEHUB_FUZZ_SECONDS", 60)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    t = FuzzTarget.start(tmp_path_factory.mktemp("fuzz"))
    try:
        yield t
    finally:
        t.stop()


@pytest.mark.timeout(SECONDS + 120)
def test_malformed_requests_never_get_a_5xx(target: FuzzTarget, tmp_path: Path) -> None:
    rss_before = target.rss_kb()
    report = run(target, EXAMPLES, SECONDS)
    print(f"\nfuzz: {report.summary()}")
    print(f"fuzz: hub RSS {rss_before} kB -> {target.rss_kb()} kB")
    print("fuzz: slowest: " + "; ".join(f"{t:.2f}s {b[:160]}" for t, b in report.slowest))
    unhandled = target.unhandled_errors()
    if unhandled:
        print("fuzz: unhandled exceptions in the hub log:")
        for line, n in unhandled.most_common():
            print(f"  {n:5d}  {line}")

    # the hub is still up and a well-formed request of every kind still succeeds
    assert target.healthy() == []
    # enough was sent (the time cap only bites on a very slow machine)
    assert report.sent >= min(EXAMPLES, 1000), report.summary()
    assert report.statuses.get("timeout", 0) == 0, report.errors()
    assert report.five_xx == 0, (f"{report.five_xx} answers were 5xx:\n{report.errors()}\n"
                                 f"hub exceptions: {dict(unhandled)}")
    assert not unhandled
