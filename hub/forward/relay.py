"""Relay an upstream SSE stream to the client as bytes, event by event.

No JSON is parsed per chunk. Bytes are written only up to the last complete event
(blank-line terminator), so if the upstream dies mid-event the client never sees
half an event: it gets an OpenAI-style error event and ``[DONE]`` instead.
"""

from __future__ import annotations

import json
from typing import Protocol

import aiohttp
from aiohttp import web

from hub.backends.base import StreamTranslator
from hub.errors import HubError
from hub.forward.deadline import Deadline
from hub.upstream.errors import UpstreamBodyError

DONE = b"data: [DONE]\n\n"
MAX_PENDING = 256 * 1024  # an upstream that never ends events still gets relayed


class ClientGone(Exception):
    """The client went away while we were writing to it."""


async def _write(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError) as exc:
        raise ClientGone() from exc


def _event_end(chunk: bytes) -> int:
    """Index just past the last complete SSE event in ``chunk``; 0 if none."""
    cut = chunk.rfind(b"\n\n")
    if cut >= 0:
        return cut + 2
    cut = chunk.rfind(b"\n\r\n")
    return cut + 3 if cut >= 0 else 0


def has_data_event(data: bytes) -> bool:
    """True once ``data`` holds a complete SSE event with a data line (not only comments)."""
    end = _event_end(data)
    return end > 0 and (data.startswith(b"data:") or b"\ndata:" in data[:end])


class ByteSource(Protocol):
    async def readany(self) -> bytes: ...


async def relay_events(content: ByteSource, out: web.StreamResponse,
                       first: bytes, deadline: Deadline) -> int:
    """Copy events until upstream EOF; returns the number of chunks relayed.

    Upstream errors (``UpstreamTransportError``) propagate to the caller, which ends
    the client stream with :func:`end_with_error`; a dead client raises ClientGone.
    """
    pending = b""
    tail = b""
    chunks = 0
    chunk = first
    while chunk:
        chunks += 1
        end = _event_end(chunk)
        if end:
            if pending:
                data = pending + chunk[:end]
                pending = chunk[end:]
            elif end == len(chunk):
                data = chunk
            else:
                data = chunk[:end]
                pending = chunk[end:]
            await _write(out, data)
            tail = data
        else:
            pending += chunk
            if len(pending) > MAX_PENDING:
                await _write(out, pending)
                tail, pending = pending, b""
        chunk = await content.readany()
        deadline.touch()
    if pending:
        await _write(out, pending)
        tail = pending
    if not tail.rstrip().endswith(b"[DONE]"):
        await _write(out, DONE)
    return chunks


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

    async def readany(self) -> bytes:
        while True:
            if self._error is not None:
                raise UpstreamBodyError(self._error)
            if self._eof:
                return b""
            chunk = await self.content.readany()
            try:
                if chunk:
                    out = self.translator.feed(chunk)
                else:
                    self._eof = True
                    out = self.translator.close()
            except Exception as exc:
                self._error = str(exc) or type(exc).__name__
                out = getattr(exc, "partial", b"")
            if out:
                return out
