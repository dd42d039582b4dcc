"""Prompt text never leaves the hub except towards the worker.

A secret marker goes into the prompts of chat and completion requests, streamed and
not, and of requests that fail (a worker that answers 500 to it, a stream cut inside
an event, a prompt over the cap, a malformed field). Then every output of the hub is
searched for it: its log (stdout and stderr, at debug level), /metrics, the admin
and status endpoints, the status page. The token counts it logs are numbers only.
"""

from __future__ import annotations

import secrets
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.conftest import workers_config
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.llama import LlamaWorker
from tests.support.observe import post, request_lines, sse_docs, wait_for


def test_prompt_text_appears_in_no_hub_output(
        llama_pair: tuple[LlamaWorker, LlamaWorker], make_fault: Callable[..., FaultWorker],
        make_hub: Callable[..., HubProcess]) -> None:
    marker = f"SECRET-{secrets.token_hex(12)}"
    poisoned = make_fault("poisoned")
    poisoned.control(poison=marker)  # answers 500 to any body holding the marker
    cut = make_fault("cut", mode="cut_event")
    config = workers_config(llama_pair[0], poisoned, cut, log_level="debug",
                            admission={"max_prompt_chars": 2000})
    hub = make_hub(config)
    prompt = f"Please remember {marker} and repeat it."
    chat = {"messages": [{"role": "user", "content": prompt}]}
    sent: list[tuple[str, dict[str, Any], int]] = [
        ("/chat/completions", {"model": "tiny", "max_tokens": 4, **chat}, 200),
        ("/completions", {"model": "tiny", "max_tokens": 4, "prompt": prompt}, 200),
        ("/chat/completions", {"model": "tiny", "max_tokens": 4, "stream": True,
                               "stream_options": {"include_usage": True}, **chat}, 200),
        ("/completions", {"model": "tiny", "max_tokens": 4, "stream": True,
                          "prompt": prompt}, 200),
        ("/chat/completions", {"model": "poisoned", **chat}, 502),
        ("/chat/completions", {"model": "cut", "stream": True, **chat}, 200),
        ("/chat/completions", {"model": "tiny", "messages": [
            {"role": "user", "content": prompt * 100}]}, 413),
        ("/chat/completions", {"model": "tiny", "max_tokens": prompt, **chat}, 400),
    ]
    ids = []
    for route, body, expected in sent:
        status, headers, raw = post(f"{hub.base_url}{route}", body)
        assert status == expected, (route, body.get("model"), raw[:300])
        ids.append(headers["x-request-id"])
        if body.get("stream") and status == 200 and body["model"] == "cut":
            assert "error" in sse_docs(raw)[-1]  # cut inside an event: an error event
    assert poisoned.stats()["requests"] >= 1  # the marker reached the worker

    def logged() -> list[dict[str, Any]] | None:
        found = request_lines(hub)
        return found if len(found) >= len(sent) else None

    lines = wait_for(logged, 30, "every request logged")
    assert [line["request_id"] for line in lines] == ids
    for line in lines[:4]:  # the answered ones: counts, as numbers
        assert isinstance(line["prompt_tokens"], int) and line["prompt_tokens"] > 0
        assert isinstance(line["completion_tokens"], int)

    outputs = {"log": hub.proc.log()}
    for path in ("/metrics", "/admin/workers", "/admin/timeline", "/status", "/v1/models",
                 "/readyz"):
        with urllib.request.urlopen(f"{hub.url}{path}", timeout=10) as resp:
            outputs[path] = resp.read().decode()
    assert "spokehub_prompt_tokens_total" in outputs["/metrics"]
    assert '"requests_per_s"' in outputs["/admin/timeline"]
    leaked = [where for where, text in outputs.items() if marker in text]
    assert leaked == []
