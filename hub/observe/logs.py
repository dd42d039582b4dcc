"""Structured JSON logs: one line per request, never prompt text."""

from __future__ import annotations

import json
import logging
import sys
import time

from aiohttp.http_exceptions import HttpProcessingError

from hub.forward.call import Call


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        else:
            doc["msg"] = record.getMessage()
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"))


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request head it cannot parse at level error, with a traceback whose
    message quotes up to 100 bytes of the offending line -- for an over-long
    Authorization header, the start of the bearer token. Any client can cause this, so
    keep one info line naming the error class, and nothing the client sent."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "rejected a malformed request: %s (HTTP %s)", (
                type(exc).__name__, exc.code)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())


_request_log = logging.getLogger("spokehub.request")
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def log_call(call: Call, seconds: float) -> None:
    """One JSON line per request, written straight to the log stream.

    The request log is the hot path's only I/O besides the proxying itself, so it
    skips LogRecord machinery (about a quarter of the hub's per-request CPU with
    it); it still obeys the ``spokehub.request`` logger's level and handlers'
    stream. Never logs prompt text: token counts only, as the worker reported them
    (null when it did not, or the request got no whole answer).
    """
    if not _request_log.isEnabledFor(logging.INFO):
        return
    ttft = call.ttft_s
    usage = call.usage
    trace = call.trace
    line = _dumps({
        "ts": round(time.time(), 3),
        "level": "info",
        "logger": "spokehub.request",
        "msg": "request",
        "request_id": call.request_id,
        "tenant": call.tenant,
        "priority": call.priority,
        "route": call.route,
        "model": call.model,
        "stream": call.stream,
        "worker": call.worker,
        "tier": call.tier,
        "cache": call.cache,
        "attempts": call.attempts,
        "status": call.status,
        "error": call.error,
        "ttft_ms": None if ttft is None else round(ttft * 1000, 2),
        "routing": call.choice and call.choice.reason,
        "matched": call.choice and round(call.choice.matched, 2),
        "latency_ms": round(seconds * 1000, 2),
        "prompt_tokens": None if usage is None else usage.prompt_tokens,
        "completion_tokens": None if usage is None else usage.completion_tokens,
        "cached_tokens": None if usage is None else usage.cached_tokens,
        "trace_id": None if trace is None else trace.trace_id,
    })
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        if stream is not None:
            stream.write(line + "\n")
            return
