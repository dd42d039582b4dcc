"""Prompt keys: chained hashes over fixed-size blocks of a request's prompt text.

A request body (already parsed by the API layer) is written out canonically -- ``tools``
first, then every message's role, name, tool-call id, content and tool calls, in order;
or a completion's ``prompt`` -- and cut into blocks of ``block_chars`` UTF-8 bytes.
Block *i*'s hash covers the whole text up to the end of block *i*, so two requests that
share a prefix share their leading block hashes and part ways at the first block that
differs. Turn 6 of a conversation starts with the text of turn 5, so its leading hashes
are the ones turn 5 left in a worker's prefix index (``hub.routing.prefix_index``).
The last, partial block is hashed too: an identical prompt then matches in full.

No tokenizer: the hub does not know the worker's vocabulary or chat template, and it
does not need to. Characters stand in for tokens (about four per token for English);
the chat template adds a few tokens of its own per message, which moves token and
character boundaries apart but keeps "same prefix" the same on both sides.

Block size, 128 bytes (~32 tokens): llm-d hashes 16-token blocks because vLLM caches
KV in 16-token pages; llama.cpp reuses a prefix at token granularity, so there is no
page size to mirror, and resolution finer than one message header (the template's own
5-10 tokens) predicts nothing more. What smaller blocks do cost is hashing time and
index memory, both linear in the block count: 128 bytes is half of llm-d's per-request
work, still resolves a 1.3 KB chat body into ~10 blocks (10% steps against the 30% hit
threshold), and a whole user turn into several.

Cost cap: at most ``max_blocks`` blocks (256: the first 32 KiB, the seed's prompt cap)
are hashed, and serialisation stops once that much text is written, so a 1 MiB body
costs no more than a 32 KiB one. Measured with bench/prompt_key.py on the 2-core test
machine while other jobs ran: 18 us for a 1.3 KB chat body (10 blocks), 154 us for a
20 KB one (159 blocks; 107 us with 256-byte blocks, 287 us with 64). The hashing is most
of it (about 1 us a block), so the API layer should build keys only for this policy.

Hash: blake2b with an 8-byte digest, read as an unsigned 64-bit int. It is the same
in every process (several hubs can share an index later; Python's ``hash()`` of str
is salted per process), and it is not forgeable: with a linear checksum such as CRC32
(3x faster) a client could compute a prompt whose blocks collide with a guessed prompt
of another tenant and read the routing decision as an oracle.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from typing import Any

BLOCK_CHARS = 128
MAX_BLOCKS = 256

_SEED = b"spokehub.prompt_key.1"
# ASCII control characters that mark structure in the canonical text. Prompt text can
# contain them too; the worst a forged separator does is make two prompts look alike
# to the router, which only changes where a request goes.
_REC = "\x1e"  # starts a message (or the tools, or a prompt of a batch)
_UNIT = "\x1f"  # starts a field inside a message: one letter names it
_PART = "\x1d"  # stands in for a non-text content part (image, audio), with its digest


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def _digest(value: object) -> str:
    data = value if isinstance(value, str) else _json(value)
    return hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _content(content: object) -> str:
    """A message's content as text: a string as is; a list of parts as their texts
    (one text part reads like the plain string); any other part as its type and digest,
    so an inline image of a megabyte costs 20 characters, not a megabyte."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        out: list[str] = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(
                    part.get("text"), str):
                out.append(part["text"])
            elif isinstance(part, Mapping):
                out.append(f"{_PART}{part.get('type')}:{_digest(part)}")
            else:
                out.append(_json(part))
        return "\n".join(out)
    return _json(content)


def _message(msg: object) -> str:
    if not isinstance(msg, Mapping):
        return _REC + _json(msg)
    role = msg.get("role")
    out = [_REC, role if isinstance(role, str) else _json(role)]
    name = msg.get("name")
    if name is not None:
        out += [_UNIT, "n", name if isinstance(name, str) else _json(name)]
    call_id = msg.get("tool_call_id")
    if call_id is not None:
        out += [_UNIT, "i", call_id if isinstance(call_id, str) else _json(call_id)]
    out += [_UNIT, "c", _content(msg.get("content"))]
    calls = msg.get("tool_calls")
    if calls:
        out += [_UNIT, "t", _json(calls)]
    return "".join(out)


def _prompt(prompt: object) -> str:
    """A completion prompt: a string; a batch of strings; token ids; a batch of those."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        if all(isinstance(p, str) for p in prompt):
            return _REC.join(prompt)
        if all(isinstance(t, int) for t in prompt):
            return ",".join(map(str, prompt))
    return _json(prompt)


def canonical_prompt(payload: Mapping[str, Any], limit: int | None = None) -> str:
    """The request's prompt as canonical text: what decides the prompt's prefix.

    ``limit`` (characters) lets serialisation stop early; the text returned may then
    run somewhat past it. Bodies without ``messages`` or ``prompt`` give "".
    """
    messages = payload.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        size = 0
        tools = payload.get("tools")
        if tools:
            parts.append(f"{_REC}tools{_UNIT}{_json(tools)}")
            size += len(parts[-1])
        system = payload.get("system")  # top-level system prompt (Anthropic Messages)
        if system:
            parts.append(f"{_REC}system{_UNIT}c{_content(system)}")
            size += len(parts[-1])
        for msg in messages:
            if limit is not None and size >= limit:
                break
            parts.append(_message(msg))
            size += len(parts[-1])
        return "".join(parts)
    prompt = payload.get("prompt")
    if prompt is not None:
        return _prompt(prompt)
    return ""


def text_blocks(data: bytes, block_chars: int = BLOCK_CHARS,
                max_blocks: int = MAX_BLOCKS) -> tuple[int, ...]:
    """Chained block hashes of ``data``: hash *i* covers ``data[:(i + 1) * block_chars]``."""
    if block_chars < 1 or max_blocks < 0:
        raise ValueError("block_chars must be >= 1 and max_blocks >= 0")
    end = min(len(data), block_chars * max_blocks)
    if end == 0:
        return ()
    if end < len(data):
        data = data[:end]
    h = hashlib.blake2b(_SEED, digest_size=8)
    update, copy = h.update, h.copy
    digests: list[bytes] = []
    append = digests.append
    for start in range(0, end, block_chars):
        update(data[start:start + block_chars])
        append(copy().digest())
    return struct.unpack(f"<{len(digests)}Q", b"".join(digests))


def prompt_blocks(payload: Mapping[str, Any], *, block_chars: int = BLOCK_CHARS,
                  max_blocks: int = MAX_BLOCKS) -> tuple[int, ...]:
    """The prompt key of a parsed request body: chained hashes of its leading blocks."""
    limit = block_chars * max_blocks
    try:
        text = canonical_prompt(payload, limit)
    except (ValueError, TypeError, RecursionError):  # e.g. nesting deeper than we recurse
        return ()  # no key: the request is routed by load
    if not text:
        return ()
    data = text[:limit].encode("utf-8", "surrogatepass")
    return text_blocks(data, block_chars, max_blocks)
