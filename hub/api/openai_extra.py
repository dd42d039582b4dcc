"""OpenAI-style routes beyond chat, completions and embeddings, and llama.cpp's own:
the Responses API, rerank, audio transcriptions, tokenize and detokenize. Each is
routed by its ``model`` and takes the same path as chat (``routes._inference``): auth
(scope ``infer``), admission, breakers, failover before the first byte, timeouts,
metrics and the request log.

- ``POST /v1/responses``: streams the API's own SSE events, complete at
  ``response.completed`` (or ``response.failed``, ``response.incomplete``, ``error``);
- ``POST /v1/rerank`` and llama.cpp's aliases ``/rerank``, ``/v1/reranking``;
- ``POST /v1/audio/transcriptions``: a multipart upload, buffered within
  ``limits.max_upload_bytes``; the answer is relayed whole;
- ``POST /tokenize``, ``/detokenize``: ``model`` optional (``surfaces.TOKENIZE``).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from hub.api import surfaces
from hub.api.surfaces import Surface

Inference = Callable[[str, Surface], Handler]


def add_openai_extra_routes(app: web.Application, inference: Inference) -> None:
    app.router.add_post("/v1/responses", inference("/responses", surfaces.RESPONSES))
    rerank = inference("/rerank", surfaces.RERANK)
    for path in ("/v1/rerank", "/rerank", "/v1/reranking"):
        app.router.add_post(path, rerank)
    app.router.add_post("/v1/audio/transcriptions",
                        inference("/audio/transcriptions", surfaces.UPLOAD))
    app.router.add_post("/tokenize", inference("/tokenize", surfaces.TOKENIZE))
    app.router.add_post("/detokenize", inference("/detokenize", surfaces.DETOKENIZE))
