"""Token counts a worker reported in its answer, read without parsing the whole answer.

Workers say how many tokens a request took in one of a few places:

- OpenAI ``usage``: ``prompt_tokens``, ``completion_tokens``,
  ``prompt_tokens_details.cached_tokens`` (llama.cpp, vLLM, Ollama's ``/v1``); in a
  stream only the last chunk has it, and only with ``stream_options.include_usage``.
  The Responses and Anthropic shapes (``input_tokens``, ``output_tokens``,
  ``input_tokens_details.cached_tokens``, ``cache_read_input_tokens``) are read too.
- llama.cpp ``timings``: ``prompt_n`` (prompt tokens evaluated), ``cache_n`` (prompt
  tokens reused from the KV cache), ``predicted_n``, ``predicted_ms``,
  ``predicted_per_second``; in a stream, on the final chunk even without
  ``include_usage``.
- Ollama's native API: the final object's ``prompt_eval_count``, ``eval_count`` and
  ``eval_duration`` (nanoseconds).

The readers look for these keys from the end of the bytes (:meth:`bytes.rfind`, a
memory scan) and decode only the object that follows, so a long answer costs one scan
and a few hundred bytes of JSON, and a stream costs one such read of its last events
(see :class:`StreamTap`), never a parse per chunk. A key cannot match inside a JSON
string: a quote there is always escaped, so ``"usage"`` (quote, name, quote) only
occurs as a key. Counts that are not non-negative integers are ignored.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Inter-token latency histogram bounds (seconds), shared with the metric; a gap lands in
# the first bucket whose bound it does not exceed (Prometheus' ``le``).
INTER_TOKEN_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15,
                      0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_COUNT = 1 << 40  # no real answer has more tokens; a larger value is garbage
_OBJECT_WINDOW = 2048  # bytes decoded after a key: a usage or timings object is ~300
# The C scanner behind JSONDecoder: one value at an index, without raw_decode's regex.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_SPACES = (b" ", b"\t", b"\r", b"\n")  # JSON whitespace, one byte each; b"" is not in


@dataclass(slots=True)
class Usage:
    """What the worker reported for one answer. ``cached_tokens`` is None when the
    worker did not say (Ollama), which is not the same as 0."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    gen_tokens_per_s: float | None = None  # the worker's own generation rate
    gen_s: float | None = None  # the worker's time generating (after the first token)

    @property
    def cached_ratio(self) -> float | None:
        """Share of the prompt served from the worker's prompt cache, if it said."""
        if self.cached_tokens is None or not self.prompt_tokens:
            return None
        return min(1.0, self.cached_tokens / self.prompt_tokens)


def _count(doc: dict[str, Any], key: str) -> int | None:
    value = doc.get(key)
    if type(value) is int and 0 <= value < MAX_COUNT:
        return value
    if type(value) is float and value.is_integer() and 0 <= value < MAX_COUNT:
        return int(value)
    return None


def _number(doc: dict[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) \
            and math.isfinite(value) and value > 0:
        return float(value)
    return None


def _object_after(data: bytes, key: bytes) -> dict[str, Any] | None:
    """The JSON object that is the value of the last ``key`` (quoted) in ``data``."""
    at = len(data)
    while (at := data.rfind(key, 0, at)) >= 0:
        pos = at + len(key)
        if not data.startswith(b":{", pos):  # compact JSON, the usual case; else look
            while data[pos:pos + 1] in _SPACES:
                pos += 1
            if data[pos:pos + 1] != b":":
                continue
            pos += 1
            while data[pos:pos + 1] in _SPACES:
                pos += 1
            if data[pos:pos + 1] != b"{":
                continue
            pos -= 1
        pos += 1
        try:
            doc = _scan(data[pos:pos + _OBJECT_WINDOW].decode("utf-8", "ignore"), 0)[0]
        except (StopIteration, ValueError, RecursionError):
            if len(data) - pos <= _OBJECT_WINDOW:
                continue
            try:  # an object longer than the window: decode the rest of the data
                doc = _scan(data[pos:].decode("utf-8", "ignore"), 0)[0]
            except (StopIteration, ValueError, RecursionError):
                continue
        return doc if isinstance(doc, dict) else None
    return None


def _line_with(data: bytes, key: bytes) -> dict[str, Any] | None:
    """The JSON object on the last line of ``data`` holding ``key`` (an NDJSON line, or
    an SSE ``data:`` line)."""
    at = data.rfind(key)
    if at < 0:
        return None
    start = max(data.rfind(b"\n", 0, at), data.rfind(b"\r", 0, at)) + 1
    end = min((i for i in (data.find(b"\n", at), data.find(b"\r", at)) if i >= 0),
              default=len(data))
    line = data[start:end].strip()
    if line.startswith(b"data:"):
        line = line[5:].lstrip()
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _from_usage(u: dict[str, Any], timings: dict[str, Any] | None) -> Usage | None:
    prompt = _count(u, "prompt_tokens")
    if prompt is None:
        prompt = _count(u, "input_tokens")
        cache_read = _count(u, "cache_read_input_tokens")  # Anthropic: not in input_tokens
        if prompt is not None and cache_read is not None:
            prompt += cache_read
    completion = _count(u, "completion_tokens")
    if completion is None:
        completion = _count(u, "output_tokens")
    if prompt is None and completion is None:
        return None
    details = u.get("prompt_tokens_details") or u.get("input_tokens_details")
    cached = _count(details, "cached_tokens") if isinstance(details, dict) else None
    if cached is None:
        cached = _count(u, "cache_read_input_tokens")
    out = Usage(prompt or 0, completion or 0, cached)
    if timings is not None:
        if out.cached_tokens is None:
            out.cached_tokens = _count(timings, "cache_n")
        _rates(out, timings)
    return out


def _from_timings(t: dict[str, Any]) -> Usage | None:
    evaluated, cached, predicted = (_count(t, "prompt_n"), _count(t, "cache_n"),
                                    _count(t, "predicted_n"))
    if evaluated is None and predicted is None:
        return None
    out = Usage((evaluated or 0) + (cached or 0), predicted or 0, cached)
    _rates(out, t)
    return out


def _rates(out: Usage, t: dict[str, Any]) -> None:
    out.gen_tokens_per_s = _number(t, "predicted_per_second")
    ms = _number(t, "predicted_ms")
    out.gen_s = None if ms is None else ms / 1000.0


def _from_ollama(doc: dict[str, Any]) -> Usage | None:
    prompt, completion = _count(doc, "prompt_eval_count"), _count(doc, "eval_count")
    if prompt is None and completion is None:
        return None
    out = Usage(prompt or 0, completion or 0, None)
    ns = _number(doc, "eval_duration")
    if ns is not None:
        out.gen_s = ns / 1e9
        if completion:
            out.gen_tokens_per_s = completion / out.gen_s
    return out


def read_usage(data: bytes) -> Usage | None:
    """The token counts in an answer body, or in the last events of a stream (OpenAI
    ``usage``, llama.cpp ``timings``, Ollama's final object); None if it has none."""
    if not data:
        return None
    timings = _object_after(data, b'"timings"')
    usage = _object_after(data, b'"usage"')
    if usage is not None:
        out = _from_usage(usage, timings)
        if out is not None:
            return out
    if timings is not None:
        return _from_timings(timings)
    if b'"eval_count"' in data or b'"prompt_eval_count"' in data:
        doc = _line_with(data, b'"prompt_eval_count"') or _line_with(data, b'"eval_count"')
        if doc is not None:
            return _from_ollama(doc)
    return None


class StreamTap:
    """What the relay keeps of a stream for accounting: the last two batches of events
    it wrote (bytes already in hand, no copy) and the gaps between batches, bucketed
    into :data:`INTER_TOKEN_BOUNDS`. Costs two assignments, a subtraction and a C bisect
    per batch; the events are read once, at the end (:meth:`usage`).

    A batch is whatever events one read from the worker completed: events that arrive
    together count as one gap.
    """

    __slots__ = ("at", "batches", "first_at", "gap_counts", "gap_sum", "last", "prev")

    def __init__(self, first_at: float) -> None:
        self.first_at = first_at  # loop time of the first data event
        self.at = first_at  # ... and of the latest batch
        self.batches = 0
        self.prev = b""
        self.last = b""
        self.gap_counts = [0] * (len(INTER_TOKEN_BOUNDS) + 1)
        self.gap_sum = 0.0

    def seen(self, events: bytes, now: float) -> None:
        self.prev = self.last
        self.last = events
        if self.batches:
            gap = now - self.at
            self.gap_counts[bisect_left(INTER_TOKEN_BOUNDS, gap)] += 1
            self.gap_sum += gap
        self.at = now
        self.batches += 1

    @property
    def gaps(self) -> int:
        return self.batches - 1 if self.batches else 0

    def tail(self) -> bytes:
        """The last events, enough to hold a stream's final usage chunk(s)."""
        return self.prev + self.last

    def usage(self, raw_tail: bytes = b"") -> Usage | None:
        """Token counts from the stream's end. ``raw_tail``: the worker's own last
        bytes when a translator rewrote them (Ollama's NDJSON has counts and durations
        that its translation drops); read first."""
        out = read_usage(raw_tail) if raw_tail else None
        if out is None:
            out = read_usage(self.tail())
        if out is not None and out.gen_tokens_per_s is None and out.completion_tokens > 1:
            span = self.at - self.first_at
            if span > 0:
                out.gen_tokens_per_s = (out.completion_tokens - 1) / span
        return out
