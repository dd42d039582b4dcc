"""Relay an upstream SSE stream to the client, whole event by whole event.

No JSON is parsed per chunk. Bytes are written only up to the last complete event (see
``sse.py``), and a stream counts as finished only when the worker sent its API's final
event (``data: [DONE]`` for OpenAI routes). A body that ends or breaks before that, or
an event larger than the relay holds, ends the client's stream with an OpenAI-style error
event and ``[DONE]`` (:func:`end_with_error`): the client never sees half an event, nor
a clean end the worker did not send.

The idle timer measures the worker: it runs while the relay waits for upstream bytes and
pauses while a write waits for a slow client.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Protocol

import aiohttp
from aiohttp import web

from hub.backends.base import StreamTranslator
from hub.errors import HubError, UpstreamError
from hub.forward.deadline import Deadline
from hub.forward.sse import OPENAI_DONE, Ending, EventSplitter, EventTooLarge, has_data
from hub.upstream.errors import UpstreamBodyError

if TYPE_CHECKING:
    from hub.observe.usage import StreamTap

DONE = b"data: [DONE]\n\n"
MAX_EVENT = 256 * 1024  # the largest event the relay holds; a larger one ends the stream

__all__ = ["DONE", "MAX_EVENT", "ByteSource", "ClientGone", "EventTooLarge", "StreamCut",
           "TranslatedStream", "end_with_error", "first_events", "relay_events"]


class ClientGone(Exception):
    """The client went away while we were writing to it."""


class StreamCut(UpstreamError):
    """The worker's stream ended before its final event."""


class ByteSource(Protocol):
    async def readany(self) -> bytes: ...


async def first_events(content: ByteSource, max_event: int = MAX_EVENT) -> bytes:
    """Read until the body holds a whole event with data (keep-alive comments are no
    answer); returns every byte read, for :func:`relay_events`. Raises StreamCut if the
    body ends first, EventTooLarge if ``max_event`` bytes come without one."""
    splitter = EventSplitter(max_event)
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            raise StreamCut("worker closed the stream before any data")
        parts.append(chunk)
        if has_data(splitter.feed(chunk)):
            return b"".join(parts)
        size += len(chunk)
        if size > max_event:
            raise EventTooLarge(f"the worker sent {size} bytes without a data event")


async def relay_events(content: ByteSource, out: web.StreamResponse, first: bytes,
                       deadline: Deadline, *, ending: Ending = OPENAI_DONE,
                       max_event: int = MAX_EVENT, tap: StreamTap | None = None) -> None:
    """Copy whole events to the client, up to and including the stream's final event.

    ``first`` holds the bytes already read from ``content``. Returns once the final
    event is written; nothing after it is relayed. Raises StreamCut if the body ends
    before it, EventTooLarge for an oversized event, the source's own error
    (``UpstreamTransportError``) if it breaks, and ClientGone if the client leaves.
    ``tap`` sees each batch of events written and its time (the deadline's, already
    taken), for token accounting at the end; it parses nothing.
    """
    splitter = EventSplitter(max_event)
    final = ending.quick
    chunk = first
    while chunk:
        events = splitter.feed(chunk)
        if events:
            end = ending.find(events) if final in events else -1  # the test inline: hot
            deadline.pause()  # waiting on the client is not the worker's idleness
            try:
                await out.write(events if end < 0 else events[:end])
            except (ConnectionResetError, aiohttp.ClientConnectionResetError) as exc:
                raise ClientGone() from exc
            finally:
                deadline.resume()  # and the worker's idle time starts again from here
            if tap is not None:
                tap.seen(events, deadline.last)
            if end >= 0:
                return
        else:
            deadline.touch()  # part of an event: progress all the same
        chunk = await content.readany()
    held = f" inside an event of {splitter.held} bytes" if splitter.held else ""
    raise StreamCut(f"the worker's stream ended before its final event{held}")


async def end_with_error(out: web.StreamResponse, error: HubError) -> None:
    """Terminate a started stream cleanly: an OpenAI-style error event, then [DONE]."""
    event = b"data: " + json.dumps(error.body()).encode() + b"\n\n"
    try:
        await out.write(event + DONE)
        await out.write_eof()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass


class TranslatedStream:
    """Reads an upstream body through a translator (e.g. Ollama NDJSON -> SSE).

    A translation failure looks like a broken upstream body (UpstreamBodyError),
    so the relay ends the stream the same way; events translated before it are
    still delivered.
    """

    def __init__(self, content: ByteSource, translator: StreamTranslator) -> None:
        self.content = content
        self.translator = translator
        self._eof = False
        self._error: str | None = None
        self._prev = self._last = b""  # the worker's own last bytes, for token counts

    def raw_tail(self) -> bytes:
        """The last two chunks the worker sent, before translation."""
        return self._prev + self._last

    async def readany(self) -> bytes:
        while True:
            if self._error is not None:
                raise UpstreamBodyError(self._error)
            if self._eof:
                return b""
            chunk = await self.content.readany()
            try:
                if chunk:
                    self._prev, self._last = self._last, chunk
                    out = self.translator.feed(chunk)
                else:
                    self._eof = True
                    out = self.translator.close()
            except Exception as exc:
                self._error = str(exc) or type(exc).__name__
                out = getattr(exc, "partial", b"")
            if out:
                return out
