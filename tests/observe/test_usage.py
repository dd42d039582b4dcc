"""Reading token counts from answers and stream ends (hub.observe.usage)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.observe.usage import INTER_TOKEN_BOUNDS, StreamTap, Usage, read_usage

# Captured from llama-server (llama-cpp-python 0.3.36's llama.cpp) with the tiny model.
LLAMA_ANSWER = (
    b'{"choices":[{"finish_reason":"length","index":0,"message":{"role":"assistant",'
    b'"content":" voltage subscription stating})\\\\ Feld"}}],"created":1796010396,'
    b'"model":"tiny","system_fingerprint":"b1-0c1e570","object":"chat.completion",'
    b'"usage":{"completion_tokens":5,"prompt_tokens":17,"total_tokens":22,'
    b'"prompt_tokens_details":{"cached_tokens":0}},"id":"chatcmpl-97HkOe7eBnBQECkdw",'
    b'"timings":{"cache_n":0,"prompt_n":17,"prompt_ms":2.31,"prompt_per_token_ms":0.1358,'
    b'"prompt_per_second":7359.3,"predicted_n":5,"predicted_ms":3.368,'
    b'"predicted_per_token_ms":0.842,"predicted_per_second":1187.6484560570073}}')
LLAMA_STREAM_END = (  # without stream_options.include_usage: timings on the last chunk
    b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":" \xd0\xb8"}}],'
    b'"created":1796010396,"id":"chatcmpl-sk1N","model":"tiny","object":'
    b'"chat.completion.chunk"}\n\n'
    b'data: {"choices":[{"finish_reason":"length","index":0,"delta":{}}],"created":1796010396,'
    b'"id":"chatcmpl-sk1N","model":"tiny","object":"chat.completion.chunk","timings":'
    b'{"cache_n":16,"prompt_n":1,"prompt_ms":0.939,"prompt_per_token_ms":0.939,'
    b'"prompt_per_second":1064.96,"predicted_n":3,"predicted_ms":1.653,'
    b'"predicted_per_token_ms":0.8265,"predicted_per_second":1209.92}}\n\n'
    b'data: [DONE]\n\n')
LLAMA_STREAM_USAGE_END = (  # with include_usage: a last chunk with usage and timings
    b'data: {"choices":[{"finish_reason":"length","index":0,"delta":{}}],"created":1,'
    b'"id":"c","model":"tiny","object":"chat.completion.chunk"}\n\n'
    b'data: {"choices":[],"created":1,"id":"c","model":"tiny","object":'
    b'"chat.completion.chunk","usage":{"completion_tokens":3,"prompt_tokens":17,'
    b'"total_tokens":20,"prompt_tokens_details":{"cached_tokens":16}},"timings":'
    b'{"cache_n":16,"prompt_n":1,"prompt_ms":1.102,"predicted_n":3,"predicted_ms":1.73,'
    b'"predicted_per_second":1156.07}}\n\n'
    b'data: [DONE]\n\n')
OLLAMA_FINAL = (b'{"model":"llama3.2","created_at":"2024-01-01T00:00:00Z","message":{"role":'
                b'"assistant","content":""},"done":true,"done_reason":"stop","total_duration":'
                b'5191566416,"load_duration":2154458,"prompt_eval_count":26,'
                b'"prompt_eval_duration":383809000,"eval_count":298,'
                b'"eval_duration":4799921000}\n')


def test_llama_answer_usage_and_timings() -> None:
    u = read_usage(LLAMA_ANSWER)
    assert u == Usage(prompt_tokens=17, completion_tokens=5, cached_tokens=0,
                      gen_tokens_per_s=1187.6484560570073, gen_s=0.003368)
    assert u.cached_ratio == 0.0


def test_llama_stream_end_without_usage_reads_timings() -> None:
    u = read_usage(LLAMA_STREAM_END)
    assert u is not None
    # prompt_n counts the tokens evaluated, cache_n those reused: the prompt is both.
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens) == (17, 3, 16)
    assert u.gen_tokens_per_s == 1209.92


def test_llama_stream_end_with_usage() -> None:
    u = read_usage(LLAMA_STREAM_USAGE_END)
    assert u is not None
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens) == (17, 3, 16)
    assert u.gen_s == pytest.approx(0.00173)
    assert u.cached_ratio == pytest.approx(16 / 17)


def test_openai_stream_with_null_usage_on_earlier_chunks() -> None:
    tail = (b'data: {"choices":[{"delta":{"content":"x"}}],"usage":null}\n\n'
            b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}\n\n'
            b'data: [DONE]\n\n')
    assert read_usage(tail) == Usage(9, 4, None)
    # The object before the last key is used when the last one is null.
    tail2 = (b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}\n\n'
             b'data: {"choices":[],"usage":null}\n\ndata: [DONE]\n\n')
    assert read_usage(tail2) == Usage(9, 4, None)


def test_ollama_native_final_object() -> None:
    for data in (OLLAMA_FINAL, b'{"message":{"content":"a"},"done":false}\n' + OLLAMA_FINAL):
        u = read_usage(data)
        assert u is not None
        assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens) == (26, 298, None)
        assert u.gen_s == pytest.approx(4.799921)
        assert u.gen_tokens_per_s == pytest.approx(298 / 4.799921)


def test_responses_and_anthropic_shapes() -> None:
    responses = json.dumps({"type": "response.completed", "response": {
        "usage": {"input_tokens": 40, "output_tokens": 7,
                  "input_tokens_details": {"cached_tokens": 32}, "total_tokens": 47}}})
    assert read_usage(b"event: response.completed\ndata: " + responses.encode() + b"\n\n") \
        == Usage(40, 7, 32)
    # Anthropic's input_tokens leaves out tokens read from the cache.
    anthropic = b'{"type":"message_delta","usage":{"input_tokens":8,' \
                b'"cache_read_input_tokens":100,"output_tokens":12}}'
    assert read_usage(anthropic) == Usage(108, 12, 100)


def test_embeddings_usage_has_no_completion() -> None:
    assert read_usage(b'{"data":[],"usage":{"prompt_tokens":6,"total_tokens":6}}') \
        == Usage(6, 0, None)


def test_key_inside_text_is_not_read() -> None:
    # A quote inside a JSON string is escaped, so a key never matches inside content.
    answer = json.dumps({"choices": [{"message": {"content": 'say "usage": {"prompt_tokens": '
                                                            '999} and "timings": {}'}}]})
    assert read_usage(answer.encode()) is None


@pytest.mark.parametrize("data", [
    b"",
    b"data: [DONE]\n\n",
    b'{"usage": 5}',
    b'{"usage": {"prompt_tokens": "12", "completion_tokens": true}}',
    b'{"usage": {"prompt_tokens": -1, "completion_tokens": 1e30}}',
    b'{"usage": {"prompt_tokens": 3,',  # cut off
    b'{"usage" {"prompt_tokens": 3}}',
    b'{"timings": {"prompt_ms": 1.0}}',
    b'{"eval_count": "many"}',
    b'not json "eval_count": 3',
])
def test_no_counts(data: bytes) -> None:
    assert read_usage(data) is None


def test_spaced_json_and_long_objects() -> None:
    assert read_usage(b'{ "usage" :\n { "prompt_tokens" : 3 , "completion_tokens" : 2 } }') \
        == Usage(3, 2, None)
    padding = {f"extra_{i}": "x" * 50 for i in range(100)}  # past the decode window
    doc = {"usage": {**padding, "prompt_tokens": 11, "completion_tokens": 5}}
    assert read_usage(json.dumps(doc).encode()) == Usage(11, 5, None)


@given(st.binary(max_size=300))
def test_never_raises(data: bytes) -> None:
    read_usage(data)
    read_usage(b'{"usage":' + data)
    read_usage(b'"timings":{' + data)


def test_tap_keeps_the_last_batches_and_buckets_gaps() -> None:
    tap = StreamTap(first_at=10.0)
    batches = [b"data: a\n\n", b"data: b\n\n", b"data: c\n\n", LLAMA_STREAM_END]
    times = [10.0, 10.004, 10.3, 12.3]  # the first batch is the first token: no gap
    for events, at in zip(batches, times, strict=True):
        tap.seen(events, at)
    assert tap.gaps == 3
    assert tap.tail() == b"data: c\n\n" + LLAMA_STREAM_END
    counts = dict(zip((*INTER_TOKEN_BOUNDS, float("inf")), tap.gap_counts, strict=True))
    assert counts[0.005] == 1 and counts[0.5] == 1 and counts[2.5] == 1
    assert sum(tap.gap_counts) == 3
    assert tap.gap_sum == pytest.approx(2.3)
    assert tap.usage() == read_usage(LLAMA_STREAM_END)


def test_tap_rate_without_worker_timings() -> None:
    tap = StreamTap(first_at=5.0)
    tap.seen(b"data: x\n\n", 5.0)
    tap.seen(b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":11}}\n\n'
             b"data: [DONE]\n\n", 7.0)
    u = tap.usage()
    assert u is not None and u.gen_tokens_per_s == pytest.approx(10 / 2.0)


def test_tap_prefers_the_workers_own_tail() -> None:
    tap = StreamTap(first_at=0.0)
    tap.seen(b'data: {"choices":[],"usage":{"prompt_tokens":0,"completion_tokens":0}}\n\n', 1.0)
    u = tap.usage(raw_tail=OLLAMA_FINAL)
    assert u is not None and (u.prompt_tokens, u.completion_tokens) == (26, 298)
