"""Server-sent events framing: where events end, and which event ends a stream.

Pure and sync. Bytes pass through as received: the relay only decides where it may cut.
An event ends at a blank line, and SSE lets a line end in CRLF, LF or CR, so a blank
line is any two line endings in a row (``\\n\\n``, ``\\r\\r``, ``\\r\\n\\r\\n``, ...). A CR
followed by LF is one line ending, also when they arrive in different chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hub.errors import UpstreamError

# Two line endings in a row. Atomic groups keep "\r\n" one line ending: without them,
# "\r\n" followed by text would backtrack into "\r" + "\n", a blank line that is not.
_EVENT_END = re.compile(rb"(?>\r\n|\r|\n)(?>\r\n|\r|\n)")
_DATA_LINE = re.compile(rb"(?<![^\r\n])data:")
_LONGEST_END = 4  # "\r\n\r\n"


class EventTooLarge(UpstreamError):
    """An event longer than the relay holds: it is not relayed in pieces."""


@dataclass(frozen=True, slots=True)
class Ending:
    """The event that completes a stream of one API, by one of its fields: ``data:
    [DONE]`` for OpenAI chat and completions, ``event: response.completed`` for the
    Responses API, ``event: message_stop`` for Anthropic Messages. A stream that ends
    without it was cut short, however cleanly its connection closed.

    ``also``: other values that end the stream as the API defines it (the Responses
    API's ``response.failed`` and ``response.incomplete``, an ``error`` event). With
    them, ``quick`` (the bytes every final event holds, for a cheap test before the
    exact one) is the field name itself."""

    name: bytes  # the field, b"data" or b"event"
    value: bytes
    also: tuple[bytes, ...] = ()
    quick: bytes = field(init=False, repr=False, compare=False)
    _line: re.Pattern[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = b"|".join(re.escape(v) for v in (self.value, *self.also))
        line = rb"(?<![^\r\n])" + re.escape(self.name) + rb": ?(?:" + values + rb")"
        object.__setattr__(self, "_line", re.compile(line + rb"(?=[\r\n])"))
        object.__setattr__(self, "quick", self.name + b":" if self.also else self.value)

    def find(self, events: bytes) -> int:
        """Index just past the final event in ``events`` (whole events only); -1 if none."""
        if self.quick not in events:  # the common case, for the cost of one memchr scan
            return -1
        line = self._line.search(events)
        if line is None:
            return -1
        end = _EVENT_END.search(events, line.end())
        return len(events) if end is None else end.end()


OPENAI_DONE = Ending(b"data", b"[DONE]")
RESPONSES_DONE = Ending(b"event", b"response.completed",
                        also=(b"response.failed", b"response.incomplete", b"error"))
ANTHROPIC_DONE = Ending(b"event", b"message_stop", also=(b"error",))

# Per route below /v1. A translator turns its worker's own stream into the route's API
# and vouches for the worker's own ending (Ollama's NDJSON ``"done": true``), so the
# translated stream ends the route's way too.
ROUTE_ENDINGS: dict[str, Ending] = {
    "/chat/completions": OPENAI_DONE,
    "/completions": OPENAI_DONE,
    "/responses": RESPONSES_DONE,
    "/messages": ANTHROPIC_DONE,
}


def ending_for(route: str) -> Ending:
    return ROUTE_ENDINGS.get(route, OPENAI_DONE)


def has_data(events: bytes) -> bool:
    """True if ``events`` has a data line: more than keep-alive comments."""
    return _DATA_LINE.search(events) is not None


class EventSplitter:
    """Cuts a byte stream into whole events.

    An unfinished event waits in one ``bytearray``: chunks are appended and each byte is
    searched once, so an event that arrives in many small pieces costs linear time.
    An event longer than ``max_event`` raises :class:`EventTooLarge`.
    """

    __slots__ = ("_held", "max_event")

    def __init__(self, max_event: int) -> None:
        self.max_event = max_event
        self._held = bytearray()

    @property
    def held(self) -> int:
        """Bytes of an unfinished event waiting for its end."""
        return len(self._held)

    def feed(self, chunk: bytes) -> bytes:
        """The events this chunk completes, as received; b"" if it completes none."""
        held = self._held
        if not held:  # nothing waiting: cut the chunk itself, no copy when it ends an event
            if chunk.endswith(b"\n\n") and len(chunk) <= self.max_event:
                return chunk  # the usual chunk: whole events, none over the cap
            end = self._last_end(chunk, 0)
            if end == len(chunk):
                return chunk
            held += memoryview(chunk)[end:]
            self._check(len(held))
            return chunk[:end]
        scan_from = max(len(held) - (_LONGEST_END - 1), 0)  # an end may straddle chunks
        held += chunk
        end = self._last_end(held, scan_from)
        if not end:
            self._check(len(held))
            return b""
        events = bytes(memoryview(held)[:end])
        del held[:end]
        self._check(len(held))
        return events

    def _last_end(self, data: bytes | bytearray, pos: int) -> int:
        """Index just past the last event end in ``data`` at or after ``pos``; 0 if none."""
        last = 0
        search = _EVENT_END.search
        while (m := search(data, pos)) is not None:
            pos = m.end()
            self._check(pos - last)
            last = pos
        return last

    def _check(self, size: int) -> None:
        if size > self.max_event:
            raise EventTooLarge(f"the worker sent an event over {self.max_event} bytes")

    def __repr__(self) -> str:
        return f"<EventSplitter held={len(self._held)} max={self.max_event}>"
