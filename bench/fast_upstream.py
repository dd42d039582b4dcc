#!/usr/bin/env python3
"""A minimal OpenAI-shaped upstream that answers in microseconds, for hub benchmarks.

Raw asyncio protocol on uvloop, HTTP/1.1 keep-alive, canned answers: a JSON chat
completion, or (when the body says ``"stream": true``) ``--chunks`` SSE events
sent back to back. ``GET /health`` and ``GET /v1/models`` work so the hub's
prober sees a healthy llama.cpp-like worker.

Usage: python -m bench.fast_upstream --port P [--chunks 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvloop

ANSWER = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model"}]}).encode()
EVENT = (b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,'
         b'"model":"bench","choices":[{"index":0,"delta":{"content":"tok "},'
         b'"finish_reason":null}]}\n\n')


def _response(body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


class Upstream(asyncio.Protocol):
    def __init__(self, chunks: int) -> None:
        self.buf = b""
        self.chunks = chunks
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            self.answer(head, body)

    def answer(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        if head.startswith(b"get /v1/models"):
            self.transport.write(_response(MODELS))
        elif head.startswith(b"get "):
            self.transport.write(_response(b'{"status":"ok"}'))
        elif b'"stream":true' in body.replace(b" ", b""):
            event = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
            done = b"data: [DONE]\n\n"
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + event * self.chunks
                + b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        else:
            self.transport.write(_response(ANSWER))


async def serve(port: int, chunks: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Upstream(chunks), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=1000)
    args = ap.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.port, args.chunks))


if __name__ == "__main__":
    main()
