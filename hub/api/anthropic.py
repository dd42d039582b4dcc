"""Anthropic's Messages API: ``POST /v1/messages`` (plain, or streamed as Anthropic's
own SSE events, complete at ``message_stop``) and ``POST /v1/messages/count_tokens``.

Served by workers that speak it: llama.cpp's ``llama-server``, and Ollama or
OpenAI-compatible workers whose ``routes:`` list it. The API key may come as
``x-api-key`` (what Anthropic's SDK sends) or ``Authorization: Bearer``; it needs the
``infer`` scope. The hub's own errors on these routes are Anthropic-shaped
(``hub.error_shapes``), and a stream that breaks ends with ``event: error``.
"""

from __future__ import annotations

from aiohttp import web

from hub.api import surfaces
from hub.api.openai_extra import Inference


def add_anthropic_routes(app: web.Application, inference: Inference) -> None:
    app.router.add_post("/v1/messages", inference("/messages", surfaces.ANTHROPIC))
    app.router.add_post("/v1/messages/count_tokens",
                        inference("/messages/count_tokens", surfaces.ANTHROPIC_COUNT))
