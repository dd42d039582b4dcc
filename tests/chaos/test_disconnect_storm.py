"""Many clients abandon their streams at once: nothing upstream may stay open."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Callable

import aiohttp
import pytest

from tests.chaos.conftest import LLAMA_HTTP_THREADS, Figure
from tests.conftest import workers_config
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.llama import LlamaWorker
from tests.support.load import (
    chat,
    fault_stats,
    hub_workers,
    llama_busy_slots,
    metric_samples,
    open_raw_stream,
    until,
)

pytestmark = pytest.mark.timeout(60)


def _abort(writer: asyncio.StreamWriter, reset: bool) -> None:
    """Close a client connection: a FIN, or (``reset``) an RST as a crashed client sends."""
    if reset:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def _open_all(port: int, bodies: list[dict[str, object]], events: int,
                    ) -> list[asyncio.StreamWriter]:
    opened = await asyncio.gather(*(open_raw_stream(port, body, events=events)
                                    for body in bodies), return_exceptions=True)
    writers = [w for r in opened if not isinstance(r, BaseException) for w in [r[1]]]
    errors = [r for r in opened if isinstance(r, BaseException)]
    if errors:
        for w in writers:
            w.close()
        raise AssertionError(f"{len(errors)} streams did not start: {errors[0]!r}")
    return writers


async def _hub_idle(http: aiohttp.ClientSession, hub: HubProcess) -> bool:
    workers = await hub_workers(http, hub.url)
    gauge = await metric_samples(http, hub.url, "spokehub_worker_in_flight")
    return (all(w["in_flight"] == 0 for w in workers.values())
            and len(gauge) == len(workers) and all(v == 0 for v in gauge.values()))


async def test_hundred_clients_abort_streams_nothing_leaks(
        make_fault: Callable[..., FaultWorker], make_hub: Callable[..., HubProcess],
        http: aiohttp.ClientSession, figure: Figure) -> None:
    """100 streams, then every client goes away (half FIN, half RST): every upstream
    connection is closed and the hub's in-flight count (admin and metric) is back to 0."""
    clients = 100
    # Streams of 2000 events, 20 ms apart: 40 s each unless someone stops them.
    workers = [make_fault(mode="ok", chunks=2000, delay_s=0.02) for _ in range(2)]
    hub = make_hub(workers_config(*workers))
    body = chat("fault-model", stream=True)
    writers = await _open_all(hub.port, [body] * clients, events=2)
    try:
        active = [(await fault_stats(http, w.url))["active"] for w in workers]
        assert sum(active) == clients and min(active) > 0
        in_flight = sum(w["in_flight"] for w in (await hub_workers(http, hub.url)).values())
        assert in_flight == clients
    finally:
        t_abort = time.monotonic()
        for i, writer in enumerate(writers):
            _abort(writer, reset=i % 2 == 1)

    async def upstream_closed() -> bool:
        return all([(await fault_stats(http, w.url))["active"] == 0 for w in workers])
    upstream_s = await until(upstream_closed, timeout=5)
    await until(lambda: _hub_idle(http, hub), timeout=5)
    hub_s = time.monotonic() - t_abort
    # The hub still serves, and its own state is consistent with the workers'.
    ok = await open_raw_stream(hub.port, body, events=1)
    ok[1].close()
    figure("clients_aborted", clients)
    figure("upstream_connections_closed_s", round(upstream_s, 3))
    figure("hub_in_flight_zero_s", round(hub_s, 3))


async def test_abandoned_llama_streams_free_every_slot(
        make_llama: Callable[..., LlamaWorker], make_hub: Callable[..., HubProcess],
        http: aiohttp.ClientSession, figure: Figure) -> None:
    """40 long generations over two llama.cpp workers (8 running, 32 queued), all
    abandoned: every slot goes idle at once and no queued generation starts later."""
    # 4 slots per worker, 20 streams per worker: most of them wait in llama.cpp's queue.
    slots, clients = 4, 40
    workers = [make_llama(seed=i, slots=slots, ctx=slots * 4200, extra=LLAMA_HTTP_THREADS)
               for i in range(2)]
    hub = make_hub(workers_config(*workers))
    body = chat("tiny", stream=True, max_tokens=4000, ignore_eos=True)
    writers = await _open_all(hub.port, [body] * (2 * slots), events=2)  # the slots are busy
    queued = [asyncio.create_task(asyncio.open_connection("127.0.0.1", hub.port))
              for _ in range(clients - len(writers))]
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\n"
           b"Content-Type: application/json\r\nContent-Length: ")
    payload = json.dumps(body).encode()
    for task in queued:
        _, writer = await task
        writer.write(raw + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        writers.append(writer)
    await asyncio.gather(*(w.drain() for w in writers))

    async def all_sent() -> bool:
        counts = [int(w["in_flight"]) for w in (await hub_workers(http, hub.url)).values()]
        return sum(counts) == clients
    await until(all_sent, timeout=5)
    busy = [await llama_busy_slots(http, w.url) for w in workers]
    assert busy == [slots, slots]
    t_abort = time.monotonic()
    for i, writer in enumerate(writers):
        _abort(writer, reset=i % 2 == 1)

    async def slots_idle() -> bool:
        return all([await llama_busy_slots(http, w.url) == 0 for w in workers])
    slots_s = await until(slots_idle, timeout=5)
    await until(lambda: _hub_idle(http, hub), timeout=5)
    hub_s = time.monotonic() - t_abort
    # Nothing queued in llama.cpp survived either: the slots stay idle, and a new stream
    # starts right away.
    await asyncio.sleep(0.3)
    assert await slots_idle()
    start = time.monotonic()
    _, writer = await open_raw_stream(hub.port, chat("tiny", stream=True, max_tokens=8),
                                      events=1)
    writer.close()
    assert time.monotonic() - start < 2
    figure("clients_aborted", clients)
    figure("llama_slots_idle_s", round(slots_s, 3))
    figure("hub_in_flight_zero_s", round(hub_s, 3))
