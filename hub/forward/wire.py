"""How each route's stream looks to its client: framing, final event, error event.

SSE routes (OpenAI chat and completions, the Responses API, Anthropic Messages) relay
whole events up to the route's final event (``sse.py``'s :class:`Ending`), as bytes.
Ollama's API at the hub streams NDJSON; its streams always come through a translator
(``hub.backends.ollama_api``) that passes on whole lines only and vouches for the final
one, so a clean end of the translated body is the worker's own end (a cut raises).

A stream that breaks after its first byte ends with one error event in the route's own
API shape (``hub.error_shapes``), never with an ending the worker did not send.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web

from hub import error_shapes
from hub.errors import HubError
from hub.forward.deadline import Deadline
from hub.forward.relay import ByteSource, ClientGone, StreamCut, first_events, relay_events
from hub.forward.sse import ending_for
from hub.observe.usage import StreamTap


@dataclass(frozen=True, slots=True)
class Wire:
    route: str
    api: str  # error_shapes.OPENAI, RESPONSES, ANTHROPIC or OLLAMA
    content_type: str  # of a translated stream (a relayed one keeps the worker's)
    ndjson: bool = False

    async def first(self, content: ByteSource) -> bytes:
        """The bytes up to the first data event (or line); StreamCut if none comes."""
        if not self.ndjson:
            return await first_events(content)
        chunk = await content.readany()
        if not chunk:
            raise StreamCut("worker closed the stream before any data")
        return chunk

    async def relay(self, content: ByteSource, out: web.StreamResponse, first: bytes,
                    deadline: Deadline, *, tap: StreamTap | None = None) -> None:
        """Copy the stream to the client up to its end; ``tap`` sees each batch written
        (for token accounting at the end, see :class:`hub.observe.usage.StreamTap`)."""
        if not self.ndjson:
            await relay_events(content, out, first, deadline, ending=ending_for(self.route),
                               tap=tap)
            return
        chunk = first
        while chunk:
            deadline.pause()  # waiting on the client is not the worker's idleness
            try:
                await out.write(chunk)
            except (ConnectionResetError, aiohttp.ClientConnectionResetError) as exc:
                raise ClientGone() from exc
            finally:
                deadline.resume()
            if tap is not None:
                tap.seen(chunk, deadline.last)
            chunk = await content.readany()

    async def end_with_error(self, out: web.StreamResponse, error: HubError) -> None:
        """Terminate a started stream with the route's own error event."""
        try:
            await out.write(error_shapes.stream_error(self.api, error))
            await out.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass


SSE = "text/event-stream"
_WIRES = {
    "/responses": Wire("/responses", error_shapes.RESPONSES, SSE),
    "/messages": Wire("/messages", error_shapes.ANTHROPIC, SSE),
    "/api/chat": Wire("/api/chat", error_shapes.OLLAMA, "application/x-ndjson", ndjson=True),
    "/api/generate": Wire("/api/generate", error_shapes.OLLAMA, "application/x-ndjson",
                          ndjson=True),
}
_OPENAI = {route: Wire(route, error_shapes.OPENAI, SSE)
           for route in ("/chat/completions", "/completions")}


def wire_for(route: str) -> Wire:
    wire = _WIRES.get(route) or _OPENAI.get(route)
    return wire if wire is not None else Wire(route, error_shapes.OPENAI, SSE)
