"""Token metrics on a real hub's /metrics, made to move by real requests.

Real llama.cpp workers report ``usage`` and ``timings``; the fault worker stands in
for a worker that reports nothing, and holds requests at a gate for the queue. Each
test reads the counts the client was sent and expects exactly those on /metrics,
and in the request log line.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.auth.config import parse_auth
from hub.auth.issue import issue_token
from tests.conftest import workers_config
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.llama import LlamaWorker
from tests.support.observe import Scrape, post, request_lines, scrape, sse_docs, wait_for
from tests.support.ollama_proc import OllamaFake

MakeHub = Callable[..., HubProcess]
MakeFault = Callable[..., FaultWorker]
DEADLINE_S = 60.0
W0 = {"model": "tiny", "worker": "w0"}
MESSAGES = [{"role": "user", "content": "Tell me about load balancers and caches."}]


def chat(hub: HubProcess, **body: Any) -> tuple[dict[str, str], bytes]:
    status, headers, raw = post(f"{hub.base_url}/chat/completions",
                                {"model": "tiny", "messages": MESSAGES, **body})
    assert status == 200, raw
    return headers, raw


def moved(hub: HubProcess, before: Scrape, name: str, by: float,
          **labels: str) -> Scrape:
    """Wait until the series has grown by ``by`` (the hub accounts a stream just after
    the client has its end); returns that scrape. Fails if it grew by more."""
    def check() -> Scrape | None:
        now = scrape(hub)
        return now if now.get(name, **labels) - before.get(name, **labels) >= by else None

    after = wait_for(check, DEADLINE_S, f"{name}{labels} grows by {by}")
    assert after.get(name, **labels) - before.get(name, **labels) == by
    return after


def test_non_stream_counts_what_the_worker_reported(
        llama_pair: tuple[LlamaWorker, LlamaWorker], make_hub: MakeHub) -> None:
    hub = make_hub(workers_config(llama_pair[0]))
    before = scrape(hub)
    headers, raw = chat(hub, max_tokens=6)
    usage = json.loads(raw)["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    after = moved(hub, before, "spokehub_prompt_tokens_total", usage["prompt_tokens"], **W0)
    delta = {name: after.get(name, **W0) - before.get(name, **W0) for name in (
        "spokehub_completion_tokens_total", "spokehub_cached_prompt_tokens_total",
        "spokehub_tokens_unreported_total")}
    assert delta == {"spokehub_completion_tokens_total": usage["completion_tokens"],
                     "spokehub_cached_prompt_tokens_total": cached,
                     "spokehub_tokens_unreported_total": 0}
    model = {"model": "tiny"}
    for hist in ("spokehub_time_to_first_token_seconds_count",  # from timings.predicted_ms
                 "spokehub_generation_tokens_per_second_count"):
        assert after.get(hist, **model) - before.get(hist, **model) == 1, hist
    assert after.get("spokehub_queue_wait_seconds_count") - \
        before.get("spokehub_queue_wait_seconds_count") == 1
    tenant = {"tenant": "default", "kind": "completion"}
    assert after.get("spokehub_tenant_tokens_total", **tenant) - \
        before.get("spokehub_tenant_tokens_total", **tenant) == usage["completion_tokens"]
    line = wait_for(lambda: [x for x in request_lines(hub)
                             if x["request_id"] == headers["x-request-id"]],
                    DEADLINE_S, "the request's log line")[0]
    assert (line["prompt_tokens"], line["completion_tokens"], line["cached_tokens"]) == (
        usage["prompt_tokens"], usage["completion_tokens"], cached)
    assert line["trace_id"] == headers["x-trace-id"]


def test_stream_without_include_usage_reads_the_final_timings(
        llama_pair: tuple[LlamaWorker, LlamaWorker], make_hub: MakeHub) -> None:
    hub = make_hub(workers_config(llama_pair[0]))
    before = scrape(hub)
    _, raw = chat(hub, max_tokens=8, stream=True)
    docs = sse_docs(raw)
    assert not any(d.get("usage") for d in docs)  # the client did not ask for usage
    timings = docs[-1]["timings"]  # llama.cpp's final chunk has them anyway
    prompt = timings["prompt_n"] + timings["cache_n"]
    after = moved(hub, before, "spokehub_prompt_tokens_total", prompt, **W0)
    assert after.get("spokehub_completion_tokens_total", **W0) - \
        before.get("spokehub_completion_tokens_total", **W0) == timings["predicted_n"]
    assert after.get("spokehub_cached_prompt_tokens_total", **W0) - \
        before.get("spokehub_cached_prompt_tokens_total", **W0) == timings["cache_n"]
    ttft = "spokehub_time_to_first_token_seconds_count"
    assert after.get(ttft, model="tiny") - before.get(ttft, model="tiny") == 1


def test_stream_with_include_usage_on_both_routes(
        llama_pair: tuple[LlamaWorker, LlamaWorker], make_hub: MakeHub) -> None:
    hub = make_hub(workers_config(llama_pair[0]))
    for route, body in (("/chat/completions", {"messages": MESSAGES}),
                        ("/completions", {"prompt": "Once upon a time"})):
        before = scrape(hub)
        status, _, raw = post(f"{hub.base_url}{route}", {
            "model": "tiny", "max_tokens": 5, "stream": True,
            "stream_options": {"include_usage": True}, **body})
        assert status == 200
        usage = next(d["usage"] for d in reversed(sse_docs(raw)) if d.get("usage"))
        after = moved(hub, before, "spokehub_completion_tokens_total",
                      usage["completion_tokens"], **W0)
        assert after.get("spokehub_prompt_tokens_total", **W0) - \
            before.get("spokehub_prompt_tokens_total", **W0) == usage["prompt_tokens"], route


def test_repeated_prompt_counts_cached_tokens(
        make_llama: Callable[..., LlamaWorker], make_hub: MakeHub) -> None:
    worker = make_llama(slots=1)  # one slot: the second request finds the first's prefix
    hub = make_hub(workers_config(worker))
    before = scrape(hub)
    reported = []
    for _ in range(2):
        _, raw = chat(hub, max_tokens=2, temperature=0)
        reported.append(json.loads(raw)["usage"]["prompt_tokens_details"]["cached_tokens"])
    assert reported[1] > 0  # llama.cpp reused the prompt it had just processed
    moved(hub, before, "spokehub_cached_prompt_tokens_total", sum(reported), **W0)


def test_answers_without_counts_are_unreported(
        make_fault: MakeFault, make_hub: MakeHub) -> None:
    worker = make_fault("quiet")
    worker.control(usage=False)  # no usage in answers; its streams never had any
    hub = make_hub(workers_config(worker))
    labels = {"model": "quiet", "worker": "w0"}
    before = scrape(hub)
    for stream in (False, True):
        status, _, _ = post(f"{hub.base_url}/chat/completions",
                            {"model": "quiet", "stream": stream, "messages": MESSAGES})
        assert status == 200
    after = moved(hub, before, "spokehub_tokens_unreported_total", 2, **labels)
    assert after.get("spokehub_prompt_tokens_total", **labels) == 0
    assert after.get("spokehub_completion_tokens_total", **labels) == 0
    line = request_lines(hub)[-1]
    assert (line["prompt_tokens"], line["completion_tokens"], line["cached_tokens"]) == (
        None, None, None)


def test_inter_token_gaps_of_a_stream(make_fault: MakeFault, make_hub: MakeHub) -> None:
    # Ten events 0.1 s apart: the relay reads them in several batches, so there are gaps.
    worker = make_fault("paced", chunks=10, delay_s=0.1)
    worker.control(stream_usage=True)
    hub = make_hub(workers_config(worker))
    model = {"model": "paced"}
    before = scrape(hub)
    status, _, _ = post(f"{hub.base_url}/chat/completions",
                        {"model": "paced", "stream": True, "messages": MESSAGES})
    assert status == 200
    after = moved(hub, before, "spokehub_completion_tokens_total", 10, model="paced",
                  worker="w0")
    gaps = after.get("spokehub_inter_token_seconds_count", **model)
    assert gaps >= 1
    assert after.get("spokehub_inter_token_seconds_sum", **model) > 0
    # Without worker timings the rate is completion tokens over the stream's span.
    assert after.get("spokehub_generation_tokens_per_second_count", **model) == 1


def test_queue_wait_while_the_only_worker_is_full(
        make_fault: MakeFault, make_hub: MakeHub) -> None:
    worker = make_fault("one", mode="gate")
    config = workers_config(worker)
    config["workers"][0]["max_concurrency"] = 1
    hub = make_hub(config)
    before = scrape(hub)
    statuses: list[int] = []

    def send() -> None:
        statuses.append(post(f"{hub.base_url}/chat/completions",
                             {"model": "one", "messages": MESSAGES})[0])

    first = threading.Thread(target=send)
    first.start()
    wait_for(lambda: worker.stats()["active"] == 1, DEADLINE_S, "first request at the worker")
    second = threading.Thread(target=send)
    second.start()
    wait_for(lambda: scrape(hub).get("spokehub_capacity_queue_length") == 1, DEADLINE_S,
             "second request queued in the hub")
    # It waits for as long as the gate stays shut: at least this long.
    time.sleep(0.3)
    worker.control(gate="open")
    first.join(DEADLINE_S)
    second.join(DEADLINE_S)
    assert statuses == [200, 200]
    after = moved(hub, before, "spokehub_queue_wait_seconds_count", 2)
    waited_long = after.get("spokehub_queue_wait_seconds_count") - \
        after.get("spokehub_queue_wait_seconds_bucket", le="0.25")
    assert waited_long == 1


def test_admission_rejections_by_tenant(make_fault: MakeFault, make_hub: MakeHub) -> None:
    worker = make_fault("m")
    hub = make_hub(workers_config(worker, admission={
        "requests_per_s": 0.01, "burst": 1, "queue_timeout_s": 0}))
    codes = [post(f"{hub.base_url}/chat/completions",
                  {"model": "m", "messages": MESSAGES})[0] for _ in range(3)]
    assert codes == [200, 429, 429]
    after = scrape(hub)
    assert after.get("spokehub_admission_rejected_total", tenant="default",
                     reason="rate_limit") == 2


def test_tenant_labels_are_capped(make_fault: MakeFault, make_hub: MakeHub) -> None:
    env_name = "SPOKEHUB_TOKEN_TEST_JWT"
    env = {env_name: secrets.token_hex(32)}
    auth = {"enabled": True, "keys": [{"kid": "t", "alg": "HS256", "secret_env": env_name}]}
    worker = make_fault("m")  # reports 1 prompt and 1 completion token per answer
    hub = make_hub(workers_config(worker, auth=auth, metrics={"max_tenants": 1}), env=env)
    cfg = parse_auth(auth)
    for tenant in ("acme", "globex", "initech", "acme"):
        token = issue_token(cfg, tenant=tenant, scopes=["infer"], ttl_s=600, environ=env)
        status, _, _ = post(f"{hub.base_url}/chat/completions",
                            {"model": "m", "messages": MESSAGES},
                            {"Authorization": f"Bearer {token}"})
        assert status == 200
    admin = issue_token(cfg, tenant="ops", scopes=["admin"], ttl_s=600, environ=env)
    after = scrape(hub, {"Authorization": f"Bearer {admin}"})
    prompt = {dict(k)["tenant"]: v
              for k, v in after.series("spokehub_tenant_tokens_total").items()
              if ("kind", "prompt") in k}
    assert prompt == {"acme": 2, "other": 2}


def test_agent_heartbeat_age(llama_pair: tuple[LlamaWorker, LlamaWorker],
                             make_hub: MakeHub) -> None:
    hub = make_hub({"agents": {"enabled": True, "ttl_s": 60}, "workers": [],
                    "health": {"interval_s": 0.5, "timeout_s": 1}})
    assert not scrape(hub).series("spokehub_agent_heartbeat_age_seconds")
    status, _, raw = post(f"{hub.url}/v1/agents/heartbeat", {
        "agent_id": "box-a", "workers": [{"url": llama_pair[0].url, "kind": "llamacpp",
                                          "models": ["tiny"]}]})
    assert status == 200, raw
    first = scrape(hub).series("spokehub_agent_heartbeat_age_seconds")
    assert list(first) == [frozenset({("agent", "box-a")})]
    # The age grows while the agent is silent.
    wait_for(lambda: scrape(hub).get("spokehub_agent_heartbeat_age_seconds",
                                     agent="box-a") >= 1.0, DEADLINE_S, "age grows")


def test_ollama_native_and_openai_layer(tmp_path: Path, make_hub: MakeHub) -> None:
    """Ollama (the conformance fake): the native /api/chat answer's prompt_eval_count
    and eval_count through the translator, streamed or not, and its /v1 layer's usage."""
    native = OllamaFake(tmp_path, models=["llama3.2:3b"]).start()
    layer = OllamaFake(tmp_path, models=["qwen2.5:7b"]).start()
    try:
        hub = make_hub({"health": {"interval_s": 0.5, "timeout_s": 1}, "workers": [
            {"name": "native", "url": native.url, "kind": "ollama", "api": "native"},
            {"name": "v1", "url": layer.url, "kind": "ollama", "api": "openai"}]})
        for model, worker in (("llama3.2:3b", "native"), ("qwen2.5:7b", "v1")):
            labels = {"model": model, "worker": worker}
            for stream in (False, True):
                before = scrape(hub)
                body: dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": 7,
                                        "stream": stream}
                if stream:
                    body["stream_options"] = {"include_usage": True}
                status, _, raw = post(f"{hub.base_url}/chat/completions", body)
                assert status == 200, raw
                usage = (next(d["usage"] for d in reversed(sse_docs(raw)) if d.get("usage"))
                         if stream else json.loads(raw)["usage"])
                assert usage["completion_tokens"] == 7
                after = moved(hub, before, "spokehub_completion_tokens_total", 7, **labels)
                assert after.get("spokehub_prompt_tokens_total", **labels) - before.get(
                    "spokehub_prompt_tokens_total", **labels) == usage["prompt_tokens"] > 0
                rate = "spokehub_generation_tokens_per_second_count"
                if worker == "native":  # eval_duration gives the rate
                    assert after.get(rate, model=model) - before.get(rate, model=model) == 1
    finally:
        native.stop()
        layer.stop()
