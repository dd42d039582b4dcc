"""SSE framing: event ends for every line ending, the cap, and each API's final event."""

from __future__ import annotations

import asyncio

import pytest

from hub.errors import UpstreamTimeout
from hub.forward.deadline import Deadline
from hub.forward.sse import (
    ANTHROPIC_DONE,
    OPENAI_DONE,
    RESPONSES_DONE,
    EventSplitter,
    EventTooLarge,
    ending_for,
    has_data,
)


def _split(parts: list[bytes], cap: int = 1 << 20) -> list[bytes]:
    splitter = EventSplitter(cap)
    return [splitter.feed(p) for p in parts]


@pytest.mark.parametrize("end", [b"\n\n", b"\r\r", b"\r\n\r\n", b"\n\r\n", b"\r\n\n", b"\r\r\n"])
def test_every_blank_line_ends_an_event(end: bytes) -> None:
    assert _split([b"data: 1" + end + b"data: 2"]) == [b"data: 1" + end]


@pytest.mark.parametrize("line", [b"\n", b"\r\n", b"\r"])
def test_a_single_line_ending_does_not(line: bytes) -> None:
    assert _split([b"data: 1" + line + b"data: 2" + line]) == [b""]


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    assert _split([b"data: 1\r", b"\ndata: 2\r", b"\n", b"\r\n"]) == [
        b"", b"", b"", b"data: 1\r\ndata: 2\r\n\r\n"]


def test_whole_events_come_out_as_received_and_the_rest_waits() -> None:
    splitter = EventSplitter(1024)
    assert splitter.feed(b"data: a\n\ndata: b\n\ndata: c") == b"data: a\n\ndata: b\n\n"
    assert splitter.held == len(b"data: c")
    assert splitter.feed(b"\n\n") == b"data: c\n\n"
    assert splitter.held == 0


def test_an_event_over_the_cap_raises_whether_whole_or_unfinished() -> None:
    with pytest.raises(EventTooLarge):
        _split([b"data: " + b"x" * 100 + b"\n\n"], cap=64)
    splitter = EventSplitter(64)
    splitter.feed(b"data: " + b"x" * 40)
    with pytest.raises(EventTooLarge):
        splitter.feed(b"x" * 40)


def test_keep_alive_comments_are_not_data() -> None:
    assert not has_data(b": ping\n\n: ping\r\r")
    assert has_data(b": ping\n\ndata: {}\n\n")
    assert has_data(b"event: x\rdata: {}\r\r")
    assert not has_data(b": see data: later\n\n")


def test_each_api_has_its_final_event() -> None:
    done = b'data: {"a": 1}\n\ndata: [DONE]\n\ndata: late\n\n'
    assert OPENAI_DONE.find(done) == done.index(b"data: late")
    assert OPENAI_DONE.find(b'data: {"text": "[DONE]"}\n\n') == -1  # inside a value
    assert OPENAI_DONE.find(b"data:[DONE]\r\r") == len(b"data:[DONE]\r\r")
    stop = b"event: message_delta\ndata: {}\n\nevent: message_stop\ndata: {}\n\n"
    assert ANTHROPIC_DONE.find(stop) == len(stop)
    assert ANTHROPIC_DONE.find(stop.replace(b"message_stop", b"message_delta")) == -1
    completed = b"event: response.completed\r\ndata: {}\r\n\r\n"
    assert RESPONSES_DONE.find(completed) == len(completed)


def test_endings_by_route() -> None:
    assert ending_for("/chat/completions") is OPENAI_DONE
    assert ending_for("/completions") is OPENAI_DONE
    assert ending_for("/messages") is ANTHROPIC_DONE
    assert ending_for("/responses") is RESPONSES_DONE


async def test_a_paused_deadline_waits_on_the_client_without_an_idle_timeout() -> None:
    async with Deadline(idle_s=10, total_s=60) as dl:
        dl.set_phase("next chunk", 0.05)
        dl.pause()
        await asyncio.sleep(0.5)  # ten idle allowances, all spent waiting on the client
        assert dl.expired is None
    assert dl.expired is None


async def test_a_paused_deadline_still_ends_at_the_total() -> None:
    with pytest.raises(UpstreamTimeout, match="total"):
        async with Deadline(idle_s=0.05, total_s=0.3) as dl:
            dl.set_phase("next chunk", 0.05)
            dl.pause()
            await asyncio.sleep(30)
