from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hub.routing.prompt_key import (
    BLOCK_CHARS,
    MAX_BLOCKS,
    canonical_prompt,
    prompt_blocks,
    text_blocks,
)
from tests.support.procs import ROOT

SYSTEM = "You are a careful assistant. " * 12  # ~350 characters


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages), **extra}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


TURN1 = chat({"role": "system", "content": SYSTEM}, user("What is a KV cache? " * 20))
TURN2 = chat(*TURN1["messages"], assistant("It keeps attention keys and values. " * 10),
             user("And why does the prefix matter? " * 5))


def test_same_body_same_key_and_64_bit_ints() -> None:
    a = prompt_blocks(TURN1)
    assert a == prompt_blocks(json.loads(json.dumps(TURN1)))
    assert all(isinstance(b, int) and 0 <= b < 2**64 for b in a)
    assert len(set(a)) == len(a)


def test_key_is_the_same_in_another_process() -> None:
    # str hashes are salted per process; several hubs must agree on keys
    code = ("import json, sys; from hub.routing.prompt_key import prompt_blocks; "
            "print(json.dumps(prompt_blocks(json.loads(sys.stdin.read()))))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(TURN2), env=env,
                         capture_output=True, text=True, check=True, timeout=60)
    assert tuple(json.loads(out.stdout)) == prompt_blocks(TURN2)


def test_next_turn_shares_every_full_block_of_the_previous_prompt() -> None:
    one, two = prompt_blocks(TURN1), prompt_blocks(TURN2)
    full = len(canonical_prompt(TURN1).encode()) // BLOCK_CHARS
    assert len(two) > len(one) >= full >= 5
    assert two[:full] == one[:full]
    assert common_prefix(one, two) == full  # the partial last block is not shared


def test_a_conversation_diverging_shares_only_the_common_part() -> None:
    other = chat(*TURN1["messages"][:1], user("Something else entirely. " * 20))
    shared = common_prefix(prompt_blocks(TURN1), prompt_blocks(other))
    system_blocks = len(canonical_prompt(chat(TURN1["messages"][0])).encode()) // BLOCK_CHARS
    assert shared == system_blocks  # the system prompt's blocks, then the paths part


def test_identical_prompt_matches_in_full() -> None:
    assert common_prefix(prompt_blocks(TURN1), prompt_blocks(dict(TURN1))) == len(
        prompt_blocks(TURN1))


def test_roles_names_and_tool_fields_change_the_key() -> None:
    base = prompt_blocks(TURN1)
    as_user = chat({"role": "user", "content": SYSTEM}, *TURN1["messages"][1:])
    named = chat({"role": "system", "content": SYSTEM, "name": "ops"}, *TURN1["messages"][1:])
    assert prompt_blocks(as_user)[0] != base[0]
    assert prompt_blocks(named)[0] != base[0]
    call = {"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}
    with_call = chat(*TURN1["messages"], {"role": "assistant", "content": None,
                                          "tool_calls": [call]})
    other_call = chat(*TURN1["messages"], {"role": "assistant", "content": None,
                                           "tool_calls": [{**call, "id": "c2"}]})
    result = {"role": "tool", "tool_call_id": "c1", "content": "12 C"}
    k1 = prompt_blocks(chat(*with_call["messages"], result))
    k2 = prompt_blocks(chat(*with_call["messages"], {**result, "tool_call_id": "c9"}))
    assert prompt_blocks(with_call) != prompt_blocks(other_call)
    assert k1 != k2
    # all of them still share the conversation before the differing message
    assert common_prefix(k1, base) >= len(base) - 1


def test_tools_come_first_and_their_key_order_does_not_matter() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"a": 1, "b": 2}}}
    reordered = {"function": {"parameters": {"b": 2, "a": 1}, "name": "f"},
                 "type": "function"}
    with_tools = prompt_blocks({**TURN1, "tools": [tool]})
    assert with_tools == prompt_blocks({**TURN1, "tools": [reordered]})
    assert with_tools[0] != prompt_blocks(TURN1)[0]  # tools render before the messages
    other = prompt_blocks({**TURN1, "tools": [{**tool, "type": "other"}]})
    assert other[0] != with_tools[0]


def test_content_parts() -> None:
    text = chat(user("hello there " * 30))
    parts = chat({"role": "user", "content": [{"type": "text", "text": "hello there " * 30}]})
    assert prompt_blocks(text) == prompt_blocks(parts)
    image = "data:image/png;base64," + "A" * 200_000
    with_image = chat({"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": image}}]})
    other_image = chat({"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": image + "B"}}]})
    assert len(canonical_prompt(with_image)) < 100  # the image stands in as its digest
    assert prompt_blocks(with_image) != prompt_blocks(other_image)


def test_completion_prompts() -> None:
    text = "Once upon a time " * 40
    assert prompt_blocks({"model": "m", "prompt": text}) == text_blocks(text.encode())
    batch = prompt_blocks({"model": "m", "prompt": [text, "more"]})
    assert batch[: len(text) // BLOCK_CHARS] == text_blocks(text.encode())[
        : len(text) // BLOCK_CHARS]
    tokens = prompt_blocks({"model": "m", "prompt": list(range(500))})
    assert tokens and tokens != prompt_blocks({"model": "m", "prompt": list(range(1, 501))})
    assert prompt_blocks({"model": "m", "prompt": [[1, 2], [3]]})


def test_nothing_to_key() -> None:
    assert prompt_blocks({"model": "m"}) == ()
    assert prompt_blocks({"model": "m", "input": "embed me"}) == ()
    assert prompt_blocks({"model": "m", "prompt": ""}) == ()
    assert text_blocks(b"") == ()


def test_odd_bodies_give_a_key_or_none_but_never_raise() -> None:
    odd: list[dict[str, Any]] = [
        {"model": "m", "messages": ["not a message", 3, None]},
        chat({"role": 5, "content": {"x": [1, 2]}, "name": 7, "tool_call_id": 8}),
        chat({"content": None}),
        chat(user("\ud800 lone surrogate")),
        chat(user("x"), tools=json.loads("[" * 900 + "]" * 900)),
        {"model": "m", "messages": [], "prompt": "ignored"},
        {"model": "m", "prompt": {"weird": True}},
    ]
    for payload in odd:
        key = prompt_blocks(payload)
        assert isinstance(key, tuple)


def test_block_count_and_caps() -> None:
    assert len(text_blocks(b"x" * BLOCK_CHARS)) == 1
    assert len(text_blocks(b"x" * (BLOCK_CHARS + 1))) == 2
    assert len(text_blocks(b"x" * 10, block_chars=4)) == 3
    huge = chat(*[user(f"message {i} " + "y" * 1000) for i in range(1000)])
    assert len(prompt_blocks(huge)) == MAX_BLOCKS
    assert len(prompt_blocks(huge, max_blocks=10, block_chars=64)) == 10
    # serialisation stops once enough text is written
    assert len(canonical_prompt(huge, limit=4096)) < 4096 + 1100


def test_non_ascii_is_cut_by_bytes() -> None:
    text = "é" * 200  # 400 UTF-8 bytes
    blocks = prompt_blocks({"model": "m", "prompt": text})
    assert len(blocks) == -(-400 // BLOCK_CHARS)


@given(st.binary(max_size=600), st.binary(max_size=600), st.integers(1, 64))
def test_shared_prefix_property(a: bytes, b: bytes, size: int) -> None:
    ka, kab = text_blocks(a, size), text_blocks(a + b, size)
    full = len(a) // size
    assert kab[:full] == ka[:full]
    if b and len(a) % size:
        # a's partial last block became a different, longer block
        assert kab[full] != ka[full]
