"""Malformed-request fuzzing of a running hub: hypothesis strategies, a sender, a report.

Every case is a complete HTTP/1.x request as bytes, sent on its own connection, so
anything can be broken: the request line (method, target, version), the headers
(names, values, counts, Authorization, Content-Type/-Encoding, Expect, Upgrade),
the framing (Content-Length and Transfer-Encoding, alone, together, wrong) and the
body (random bytes, deep nesting, huge numbers, NaN/Infinity, lone surrogates,
NULs, other encodings, valid payloads with one field swapped for any JSON value).

The target (:class:`FuzzTarget`) is the hub as a real process with auth and
admission on, in front of recording upstreams that answer 200 to anything (one
llama.cpp-like, one Ollama-native so the request translator is fuzzed too). With
healthy upstreams a malformed request must get a 4xx: any 5xx is the hub's.

Used by tests/security/test_fuzz.py (bounded) and bench/fuzz.py (long runs).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import multiprocessing
import os
import re
import socket
import time
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.security.support import (
    AUDIENCE,
    ISSUER,
    chat,
    claims,
    hmac_secret,
    read_response,
    request,
    sign,
    wait_until,
)
from tests.security.upstream import RecordingUpstream
from tests.support.hubproc import HubProcess

MODEL = "fuzz-model"
NATIVE = "native-model"
ALIAS = "fuzz-alias"
WORKER_NAMES = ("fz-upstream-a", "fz-upstream-n")
ENV = "SPOKEHUB_FUZZ_SECRET"
MAX_BODY = 256 * 1024
BATCH = 2000
_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b")

# -- the target ----------------------------------------------------------------------------


@dataclass
class FuzzTarget:
    hub: HubProcess
    upstreams: list[RecordingUpstream]
    tokens: dict[str, str]  # tenant -> a token with every scope

    @property
    def port(self) -> int:
        return self.hub.port

    @classmethod
    def start(cls, workdir: Path, log_level: str = "warning") -> FuzzTarget:
        plain = RecordingUpstream(workdir, (MODEL,)).start()
        native = RecordingUpstream(workdir, (NATIVE,)).start()
        secret = hmac_secret()
        config = {
            "health": {"interval_s": 1, "timeout_s": 1},
            "log_level": log_level,
            "limits": {"max_body_bytes": MAX_BODY},
            "auth": {"enabled": True, "audience": AUDIENCE, "issuer": ISSUER,
                     "keys": [{"kid": "fz", "alg": "HS256", "secret_env": ENV}]},
            "admission": {"max_messages": 64, "max_prompt_chars": 50_000,
                          "max_tokens_cap": 256,
                          "tenants": {"metered": {"tokens_per_min": 1e12}}},
            "aliases": {ALIAS: MODEL},
            "agents": {"ttl_s": 30, "remove_after_s": 60},
            "workers": [{"name": WORKER_NAMES[0], "url": plain.url},
                        {"name": WORKER_NAMES[1], "url": native.url, "kind": "ollama",
                         "api": "native"}],
        }
        hub = HubProcess(config, workdir, {ENV: secret})
        try:
            hub.start()
        except BaseException:
            plain.stop()
            native.stop()
            raise
        tokens = {t: sign(claims(t, "infer admin agent", ttl_s=86400), secret, "HS256", "fz")
                  for t in ("fuzz", "metered")}
        target = cls(hub, [plain, native], tokens)
        for model in (MODEL, NATIVE):
            wait_until(lambda m=model: chat(target.port, tokens["fuzz"], m).status == 200,
                       timeout=15)
        return target

    def stop(self) -> None:
        self.hub.stop()
        for u in self.upstreams:
            u.stop()

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.hub.proc.pid}/status").read_text()
        m = re.search(r"VmRSS:\s+(\d+)", status)
        return int(m.group(1)) if m else 0

    def healthy(self) -> list[str]:
        """What a well client sees after the storm; empty when all is fine."""
        problems = []
        if not self.hub.proc.alive():
            return ["the hub process is gone"]
        if request(self.port, "GET", "/healthz").status != 200:
            problems.append("/healthz is not 200")
        tok = self.tokens["fuzz"]
        for model in (MODEL, NATIVE, ALIAS):
            for stream in (False, True):
                reply = chat(self.port, tok, model, stream=stream, max_tokens=4)
                if reply.status != 200:
                    problems.append(f"{model} stream={stream}: {reply.status}")
        for route, body in (("/v1/completions", {"model": MODEL, "prompt": "x"}),
                            ("/v1/embeddings", {"model": MODEL, "input": "x"})):
            reply = request(self.port, "POST", route, body, token=tok)
            if reply.status != 200:
                problems.append(f"{route}: {reply.status}")
        if request(self.port, "GET", "/admin/workers", token=tok).status != 200:
            problems.append("/admin/workers is not 200")
        return problems

    def unhandled_errors(self) -> Counter[str]:
        """Exceptions the hub's error middleware caught (each was a 500), by last line."""
        out: Counter[str] = Counter()
        for line in self.hub.proc.log().splitlines():
            if '"unhandled error' not in line:
                continue
            try:
                exc = str(json.loads(line).get("exc", ""))
            except ValueError:
                exc = ""
            kinds = [ln for ln in exc.splitlines() if _EXC_LINE.match(ln)]
            out[(kinds[-1] if kinds else "?")[:160]] += 1
        return out


# -- JSON with raw tokens ------------------------------------------------------------------

class Raw(str):
    """Text put into the JSON document as is (numbers json.dumps cannot make, bad escapes)."""


RAW_TOKENS = [
    "1e400", "-1e400", "1e-400", "1E+309", "-0", "-0.0", "0e0", "1.7976931348623157e308",
    "4.9e-324", "123456789012345678901234567890", "1" + "0" * 400, "-" + "9" * 4000,
    "9" * 4301, "NaN", "Infinity", "-Infinity", "nan", "inf", "0x10", "01", "+1", ".5",
    "1.", "1e", "--1", "True", "None", "undefined", '"\\ud800"', '"\\udfff\\ud800x"',
    '"\\u0000"', '"a\\u0000b"', '"\\x00"', '"\\uZZZZ"', '"\udcff\udcfe"', '"\\"', "'single'",
    "[1,]", "{,}", '{"a" 1}', "[" * 50 + "]" * 50, '{"a":' * 40 + "1" + "}" * 40,
]
FIELDS = ["model", "messages", "prompt", "input", "stream", "max_tokens",
          "max_completion_tokens", "n_predict", "n", "temperature", "top_p", "seed", "stop",
          "tools", "tool_choice", "response_format", "stream_options", "logit_bias", "user",
          "role", "content", "tool_calls", "tool_call_id", "name", "function", "arguments",
          "type", "text", "image_url", "url", "agent_id", "workers", "kind", "models",
          "slots_total", "slots_busy", "vram_free_mb", "healthy", "loaded_models", "host",
          "include_usage", "json_schema", "schema", "__proto__", ""]


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=len(value) % 2 == 0)
    return json.dumps(value)


def encode(text: str, how: str = "utf-8") -> bytes:
    if how == "utf-8":
        return text.encode("utf-8", "surrogateescape")
    return text.encode(how, "replace")


# Text is drawn as bytes and decoded (one draw instead of one per character): any code
# point but the surrogates, which the Raw tokens bring in as JSON escapes.
texts = st.binary(max_size=48).map(lambda b: b.decode("utf-8", "replace")) | st.binary(
    max_size=24).map(lambda b: b.decode("utf-16-le", "replace").replace("\ufffd", "\x00"))
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), texts,
    st.sampled_from(["", "\x00", "user", "assistant", "tool", "system", MODEL, NATIVE, ALIAS,
                     "text", "image_url", "function", "json_object", "json_schema",
                     "http://127.0.0.1:9", "data:image/png;base64,AAAA", "{}", "[]", "\u202e",
                     "\ufeff", "a" * 3000]),
    st.sampled_from(RAW_TOKENS).map(Raw),
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(FIELDS) | texts, inner, max_size=4),
    max_leaves=10)

# -- valid payloads, then one to three fields replaced or removed -------------------------

BASE: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": MODEL, "max_tokens": 4,
                             "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": MODEL, "prompt": "hi", "max_tokens": 4},
    "/v1/embeddings": {"model": MODEL, "input": "hi"},
    "/v1/agents/heartbeat": {"agent_id": "fz-agent", "workers": [
        {"name": "fz-agent-w", "url": "http://127.0.0.1:9", "kind": "llamacpp",
         "models": ["m"], "slots_total": 2, "slots_busy": 0, "vram_free_mb": 10}]},
}
Path_ = tuple[str | int, ...]
PATHS: dict[str, list[Path_]] = {
    "/v1/chat/completions": [
        ("model",), ("messages",), ("messages", 0), ("messages", 0, "role"),
        ("messages", 0, "content"), ("messages", 0, "content", 0),
        ("messages", 0, "content", 0, "type"), ("messages", 0, "content", 0, "text"),
        ("messages", 0, "content", 0, "image_url"), ("messages", 0, "content", 0, "image_url",
                                                     "url"),
        ("messages", 0, "tool_calls"), ("messages", 0, "tool_calls", 0),
        ("messages", 0, "tool_calls", 0, "id"), ("messages", 0, "tool_calls", 0, "function"),
        ("messages", 0, "tool_calls", 0, "function", "arguments"),
        ("messages", 0, "tool_calls", 0, "function", "name"), ("messages", 0, "tool_call_id"),
        ("messages", 0, "name"), ("messages", 1), ("stream",), ("stream_options",),
        ("stream_options", "include_usage"), ("max_tokens",), ("max_completion_tokens",),
        ("n_predict",), ("n",), ("temperature",), ("top_p",), ("seed",), ("stop",), ("tools",),
        ("tool_choice",), ("response_format",), ("response_format", "type"),
        ("response_format", "json_schema"), ("logit_bias",), ("user",)],
    "/v1/completions": [("model",), ("prompt",), ("prompt", 0), ("max_tokens",), ("n",),
                        ("stream",), ("n_predict",), ("max_completion_tokens",), ("echo",)],
    "/v1/embeddings": [("model",), ("input",), ("input", 0), ("encoding_format",),
                       ("dimensions",)],
    "/v1/agents/heartbeat": [
        ("agent_id",), ("workers",), ("workers", 0), ("workers", 0, "name"),
        ("workers", 0, "url"), ("workers", 0, "kind"), ("workers", 0, "models"),
        ("workers", 0, "loaded_models"), ("workers", 0, "slots_total"),
        ("workers", 0, "slots_busy"), ("workers", 0, "vram_free_mb"),
        ("workers", 0, "healthy"), ("host",), ("version",)],
}
INFER = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
POST_ROUTES = [*INFER[:1] * 6, *INFER * 2, *["/v1/agents/heartbeat"] * 2, "/admin/reload",
               "/admin/workers/fz-nope/drain", "/admin/workers/fz-nope/undrain"]
AGENT_IDS = ["fz-agent", "fz-agent-2", "fz-agent-3"]
SAFE_URLS = ["http://127.0.0.1:9", "https://127.0.0.1:9/x", "ftp://x", "http://", "",
             "http://127.0.0.1:99999", "http://[::1]:9", "http://127.0.0.1:9/\x00"]


def _set(doc: Any, path: Path_, value: Any, delete: bool = False) -> Any:
    """``doc`` with ``path`` set to ``value`` (or removed), building containers on the way."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(key, int):
        items = list(doc) if isinstance(doc, list) else []
        while len(items) <= key:
            items.append({})
        if delete and not rest:
            items.pop(key)
        else:
            items[key] = _set(items[key], rest, value, delete)
        return items
    obj = dict(doc) if isinstance(doc, dict) else {}
    if delete and not rest:
        obj.pop(key, None)
    else:
        obj[key] = _set(obj.get(key), rest, value, delete)
    return obj


@st.composite
def mutated_payload(draw: st.DrawFn, route: str) -> Any:
    doc: Any = json.loads(json.dumps(BASE[route]))
    if route in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        doc["model"] = draw(st.sampled_from([MODEL, MODEL, NATIVE, NATIVE, ALIAS, "nope"]))
        if draw(st.booleans()):
            doc["stream"] = True
    else:
        doc["agent_id"] = draw(st.sampled_from(AGENT_IDS))
        doc["workers"][0]["url"] = draw(st.sampled_from(SAFE_URLS))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS[route]))
        if path and path[0] == "workers" and path[-1] == "url":
            value: Any = draw(st.sampled_from(SAFE_URLS) | json_values.filter(
                lambda v: not isinstance(v, str)))
        elif path == ("agent_id",):
            value = draw(st.sampled_from(AGENT_IDS) | json_values.filter(
                lambda v: not isinstance(v, str)))
        else:
            value = draw(json_values)
        doc = _set(doc, path, value, delete=draw(st.integers(0, 9)) == 0)
    return doc


def nested(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    if kind == "dict":
        return '{"a":' * depth + "1" + "}" * depth
    return '[{"a":' * (depth // 2) + "[]" + "}]" * (depth // 2)


@st.composite
def body(draw: st.DrawFn, route: str) -> tuple[str, bytes]:
    """(kind, bytes) of a request body for ``route``."""
    kind = draw(st.sampled_from(["mutated"] * 8 + ["json"] * 2 + [
        "nested", "nested_field", "bytes", "text", "encoded", "truncated", "big"]))
    base_route = route if route in BASE else "/v1/chat/completions"
    if kind == "mutated":
        return kind, encode(dump(draw(mutated_payload(base_route))))
    if kind == "json":
        return kind, encode(dump(draw(json_values)))
    if kind == "nested":
        depth = draw(st.sampled_from([10, 500, 990, 1000, 5000, 100_000]))
        return kind, nested(depth, draw(st.sampled_from(["list", "dict", "mixed"]))).encode()
    if kind == "nested_field":
        depth = draw(st.sampled_from([20, 900, 980, 995, 3000]))
        field_name = draw(st.sampled_from(PATHS[base_route]))[0]
        doc = dump(draw(mutated_payload(base_route)))
        inner = nested(depth, draw(st.sampled_from(["list", "dict", "mixed"])))
        return kind, encode('{"' + str(field_name) + '":' + inner + "," + doc[1:]
                            if doc.startswith("{") and len(doc) > 2 else doc)
    if kind == "bytes":
        return kind, draw(st.binary(max_size=600))
    if kind == "text":
        return kind, encode(draw(texts))
    if kind == "encoded":
        how = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "utf-8-sig", "latin-1",
                                    "cp1252", "utf-7"]))
        return kind, encode(dump(draw(mutated_payload(base_route))), how)
    if kind == "truncated":
        text = encode(dump(draw(mutated_payload(base_route))))
        return kind, text[:draw(st.integers(0, max(0, len(text) - 1)))]
    # big: over max_body_bytes, or a huge string inside the limit
    size = draw(st.sampled_from([MAX_BODY - 200, MAX_BODY + 1, 3 * MAX_BODY]))
    return kind, ('{"model":"' + MODEL + '","messages":[{"role":"user","content":"'
                  + "a" * size + '"}]}').encode()


# -- headers, framing, request line --------------------------------------------------------

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
header_names = st.one_of(
    st.binary(min_size=1, max_size=30).map(
        lambda b: "".join(TOKEN_CHARS[x % len(TOKEN_CHARS)] for x in b)),
    st.sampled_from(["Host", "Content-Type", "Content-Length", "Transfer-Encoding",
                     "Authorization", "X-Request-ID", "Expect", "Upgrade", "Connection",
                     "Content-Encoding", "Accept", "Accept-Encoding", "Cookie", "TE",
                     "Trailer", "X-Forwarded-For", "Forwarded", "Proxy-Authorization",
                     "Range", "If-None-Match", "Origin", "Sec-WebSocket-Key"]),
    st.binary(min_size=1, max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b
                                              ).map(lambda b: b.decode("latin-1")),
)
header_values = st.one_of(
    texts.map(lambda s: s.replace("\r", "").replace("\n", "")),
    st.binary(max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b
                                  ).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["", " ", "\x00", "close", "keep-alive", "Upgrade", "websocket", "h2c",
                     "100-continue", "chunked", "gzip", "bytes=0-1", "*", "a" * 9000]),
)
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8",
                 "application/json; charset=utf-16", "application/json; charset=latin-1",
                 "application/json; charset=nope", "text/plain", "multipart/form-data",
                 "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
                 "application/octet-stream", "", ";;;", "application/json\x00"]
ENCODINGS = ["gzip", "gzip-bad", "deflate", "deflate-bad", "br", "zstd", "identity",
             "x-unknown", "gzip, gzip", "chunked"]


@st.composite
def auth_header(draw: st.DrawFn, tokens: dict[str, str]) -> list[tuple[str, str]]:
    good = tokens[draw(st.sampled_from(["fuzz", "fuzz", "fuzz", "metered"]))]
    kind = draw(st.sampled_from(["good"] * 4 + ["none", "garbage", "mangled", "scheme",
                                                "double", "long", "bytes"]))
    if kind == "good":
        return [("Authorization", f"Bearer {good}")]
    if kind == "none":
        return []
    if kind == "garbage":
        return [("Authorization", "Bearer " + draw(header_values))]
    if kind == "mangled":
        i = draw(st.integers(0, len(good) - 1))
        c = draw(st.sampled_from(list("A_-.=+/ \x00")))
        return [("Authorization", f"Bearer {good[:i]}{c}{good[i + 1:]}")]
    if kind == "scheme":
        return [("Authorization", draw(st.sampled_from(
            ["bearer ", "BEARER ", "Bearer  ", "Bearer\t", "Basic ", "Token ", ""])) + good)]
    if kind == "double":
        return [("Authorization", f"Bearer {good}"), ("Authorization", "Bearer x.y.z")]
    if kind == "long":
        return [("Authorization", "Bearer " + "a" * draw(st.sampled_from([8100, 8185, 9000])))]
    return [("Authorization", draw(st.binary(max_size=80)).replace(b"\r", b"").replace(
        b"\n", b"").decode("latin-1"))]


@dataclass
class Case:
    family: str
    data: bytes
    method: str
    target: str
    incomplete: bool = False  # the body is left unfinished on purpose: no answer is due
    note: str = ""
    started: float = 0.0

    def brief(self, limit: int = 600) -> str:
        """The request for a report: bearer tokens elided, head and body cut to ``limit``."""
        data = re.sub(rb"Bearer [A-Za-z0-9_.-]{40,}", b"Bearer <token>", self.data)
        head, _, rest = data.partition(b"\r\n\r\n")
        return f"[{self.family}/{self.note}] {head[:limit]!r} + {rest[:limit]!r}"


def _compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data)
    if how == "deflate":
        return zlib.compress(data)
    return data


def _chunks(data: bytes, sizes: list[int]) -> bytes:
    out, i = b"", 0
    for size in sizes:
        if i >= len(data):
            break
        part = data[i:i + max(1, size)]
        out += f"{len(part):x}".encode() + b"\r\n" + part + b"\r\n"
        i += len(part)
    if i < len(data):
        out += f"{len(data) - i:x}".encode() + b"\r\n" + data[i:] + b"\r\n"
    return out + b"0\r\n\r\n"


@st.composite
def framing(draw: st.DrawFn, payload: bytes, force: str | None = None
            ) -> tuple[str, list[tuple[str, str]], bytes, bool]:
    """(name, headers, bytes after the head, incomplete) for ``payload``."""
    kind = force or draw(st.sampled_from(
        ["cl", "chunked", "chunked_bad", "cl_te", "te_other", "cl_dup", "cl_bad", "cl_short",
         "cl_long", "none"]))
    n = len(payload)
    if kind == "cl":
        return kind, [("Content-Length", str(n))], payload, False
    if kind == "chunked":
        sizes = draw(st.lists(st.integers(1, 64), max_size=8))
        return kind, [("Transfer-Encoding", "chunked")], _chunks(payload, sizes), False
    if kind == "chunked_bad":
        how = draw(st.sampled_from(["hex", "neg", "huge", "short", "nocrlf", "lf", "ext",
                                    "trailer", "long"]))
        te = [("Transfer-Encoding", "chunked")]
        head = f"{n:x}".encode()
        if how == "hex":
            return kind, te, b"zz\r\n" + payload + b"\r\n0\r\n\r\n", False
        if how == "neg":
            return kind, te, b"-1\r\n" + payload + b"\r\n0\r\n\r\n", False
        if how == "huge":
            return kind, te, b"ffffffffffffffffffff\r\n" + payload + b"\r\n0\r\n\r\n", False
        if how == "short":  # says fewer bytes than follow
            return kind, te, f"{max(0, n - 3):x}".encode() + b"\r\n" + payload \
                + b"\r\n0\r\n\r\n", False
        if how == "nocrlf":
            return kind, te, head + b"\r\n" + payload + b"0\r\n\r\n", False
        if how == "lf":
            return kind, te, head + b"\n" + payload + b"\n0\n\n", False
        if how == "ext":
            return kind, te, head + b";" + draw(st.binary(max_size=20)).replace(
                b"\r", b"").replace(b"\n", b"") + b"\r\n" + payload + b"\r\n0\r\n\r\n", False
        if how == "trailer":
            return kind, te, _chunks(payload, [])[:-2] + b"X-Trailer: " + draw(
                st.binary(max_size=20)).replace(b"\r", b"").replace(b"\n", b"") \
                + b"\r\n\r\n", False
        # long: says more bytes than follow, then stops: the server waits for the rest
        return kind, te, f"{n + 50:x}".encode() + b"\r\n" + payload, True
    if kind == "cl_te":
        return kind, [("Content-Length", str(n)), ("Transfer-Encoding", "chunked")], \
            _chunks(payload, []), False
    if kind == "te_other":
        coding = draw(st.sampled_from(["gzip", "identity", "chunked, chunked", "xchunked",
                                   " chunked", "Chunked", "chunked\x0b", "gzip, chunked",
                                   "chunked, gzip", "compress"]))
        return kind, [("Transfer-Encoding", coding)], _chunks(payload, []), False
    if kind == "cl_dup":
        other = draw(st.sampled_from([n, n + 1, 0]))
        return kind, [("Content-Length", str(n)), ("Content-Length", str(other))], \
            payload, False
    if kind == "cl_bad":
        value = draw(st.sampled_from(["-1", "abc", "+10", "0x10", f" {n}", f"{n} ", "1e3",
                                      "", "99999999999999999999999", f"{n},{n}", f"\t{n}",
                                      "\u0661\u0660", "-0", f"0{n}"]))
        return kind, [("Content-Length", value)], payload, False
    if kind == "cl_short":
        return kind, [("Content-Length", str(n // 2))], payload, False
    if kind == "cl_long":
        return kind, [("Content-Length", str(n + draw(st.integers(1, 1000))))], payload, True
    return kind, [], payload, False  # none: no length at all


def _request(method: str, target: str, version: str, headers: list[tuple[str, str]],
             rest: bytes) -> bytes:
    head = f"{method} {target} {version}\r\n".encode("latin-1", "replace")
    for name, value in headers:
        head += name.encode("latin-1", "replace") + b": " + value.encode(
            "utf-8", "surrogateescape") + b"\r\n"
    return head + b"\r\n" + rest


@st.composite
def case(draw: st.DrawFn, tokens: dict[str, str]) -> Case:
    family = draw(st.sampled_from(["body"] * 8 + ["headers"] * 2 + ["framing"] * 2
                                  + ["line"] * 2 + ["auth"] * 2))
    route = draw(st.sampled_from(POST_ROUTES))
    method, target, version = "POST", route, "HTTP/1.1"
    headers: list[tuple[str, str]] = [("Host", "hub"), ("Connection", "close")]
    note = ""
    if family == "body":
        note, payload = draw(body(route))
        headers += [("Content-Type", "application/json")]
        tenant = draw(st.sampled_from(["fuzz", "fuzz", "fuzz", "metered"]))
        headers.append(("Authorization", f"Bearer {tokens[tenant]}"))
        fname, fheaders, rest, incomplete = draw(framing(payload, "cl"))
    else:
        payload = encode(dump(draw(mutated_payload("/v1/chat/completions"))))
        if draw(st.booleans()):
            payload = json.dumps(BASE["/v1/chat/completions"]).encode()
        force = None if family == "framing" else "cl"
        fname, fheaders, rest, incomplete = draw(framing(payload, force))
        note = fname
        headers += draw(auth_header(tokens)) if family == "auth" else [
            ("Authorization", f"Bearer {tokens['fuzz']}")]
        if family == "headers":
            ct = draw(st.sampled_from(CONTENT_TYPES) | header_values)
            headers.append(("Content-Type", ct))
            enc = draw(st.none() | st.sampled_from(ENCODINGS))
            if enc is not None:
                headers.append(("Content-Encoding", enc.removesuffix("-bad")))
                if enc in ("gzip", "deflate"):
                    payload = _compress(payload, enc)
                    fname, fheaders, rest, incomplete = draw(framing(payload, "cl"))
            extra = draw(st.lists(st.tuples(header_names, header_values), max_size=6))
            headers += [(k, v) for k, v in extra if k.lower() not in (
                "content-length", "transfer-encoding")]
            many = draw(st.sampled_from([0, 0, 0, 100, 127, 200, 1000]))
            headers += [(f"X-Fuzz-{i}", "v") for i in range(many)]
            note = f"ct={ct[:20]!r} enc={enc} extra={len(extra)} many={many}"
        else:
            headers.append(("Content-Type", "application/json"))
        if family == "line":
            method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD",
                                           "OPTIONS", "TRACE", "CONNECT", "PRI", "post",
                                           "GET POST", "\x00", ""]) | header_names | st.binary(
                min_size=1, max_size=8).map(lambda b: b.decode("latin-1")))
            target = draw(st.sampled_from([
                "/v1/models", "/healthz", "/readyz", "/metrics", "/admin/workers",
                "/admin/agents", "/v1/agents/fz-agent", "/", "*", "/v1/", "//v1/models",
                "/V1/MODELS", "/v1/chat/completions/", "/v1/chat/../chat/completions",
                "/v1/%63hat/completions", "/v1/chat%2Fcompletions", "/v1/chat%00/completions",
                "/admin/workers/%00/drain", "/admin/workers/../workers", "/%", "/%zz",
                "http://evil.example/v1/models", "127.0.0.1:80", "/" + "a" * 9000,
                "/v1/models?" + "a=1&" * 500, "/\udcff\udcfe", "/v1/models#frag"]) | texts.map(
                lambda s: "/" + s.replace("\r", "").replace("\n", "")))
            version = draw(st.sampled_from(["HTTP/1.1"] * 4 + [
                "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.2", "HTTP/9.9", "http/1.1",
                "HTTX/1.1", "", "HTTP/1.1 x", "HTTP/1.10"]))
            note = f"{method[:10]!r} {target[:30]!r} {version!r}"
            if method in ("GET", "HEAD") and draw(st.booleans()):
                fname, fheaders, rest, incomplete = "none", [], b"", False
        target = target.replace("\r", "").replace("\n", "")
    data = _request(method, target, version, headers + fheaders, rest)
    return Case(family, data, method, target, incomplete, f"{fname}:{note}"[:80])


# -- sending -------------------------------------------------------------------------------

def send(port: int, c: Case, timeout: float = 10.0) -> int | str:
    """The status the hub answered with, or "closed" (no answer), or "timeout"."""
    c.started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(c.data)
            if c.incomplete:
                return "incomplete (hung up)"
            start = time.monotonic()
            reply = read_response(sock, head_only=c.method == "HEAD")
            if reply is None:
                return "timeout" if time.monotonic() - start >= timeout - 0.1 else "closed"
            return reply.status
    except OSError as exc:
        return f"connect error {type(exc).__name__}"


@dataclass
class Report:
    statuses: Counter[str] = field(default_factory=Counter)
    families: Counter[str] = field(default_factory=Counter)
    server_errors: list[tuple[int | str, str]] = field(default_factory=list)
    slowest: list[tuple[float, str]] = field(default_factory=list)  # top 5 by latency
    sent: int = 0
    seconds: float = 0.0

    def add(self, c: Case, outcome: int | str) -> None:
        self.sent += 1
        self.statuses[str(outcome)] += 1
        self.families[c.family] += 1
        if (isinstance(outcome, int) and outcome >= 500) or outcome == "timeout":
            self.server_errors.append((outcome, c.brief()))
        took = time.monotonic() - c.started
        if len(self.slowest) < 5 or took > self.slowest[-1][0]:
            self.slowest = sorted([*self.slowest, (took, c.brief(200))], reverse=True)[:5]

    def merge(self, other: Report) -> None:
        self.statuses += other.statuses
        self.families += other.families
        self.server_errors += other.server_errors
        self.slowest = sorted([*self.slowest, *other.slowest], reverse=True)[:5]
        self.sent += other.sent

    @property
    def five_xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if s.isdigit() and int(s) >= 500)

    def summary(self) -> str:
        hist = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        fams = ", ".join(f"{f}: {n}" for f, n in sorted(self.families.items()))
        return (f"{self.sent} requests in {self.seconds:.1f}s "
                f"({self.sent / max(self.seconds, 1e-9):.0f}/s); 5xx: {self.five_xx}; "
                f"statuses: {hist}; families: {fams}")

    def errors(self, limit: int = 12) -> str:
        lines = [f"  {o}: {b}" for o, b in self.server_errors[:limit]]
        more = len(self.server_errors) - limit
        return "\n".join(lines + ([f"  ... and {more} more"] if more > 0 else []))


def campaign(port: int, tokens: dict[str, str], examples: int, deadline: float) -> Report:
    """One generator: up to ``examples`` cases, each sent as soon as it is drawn, until
    the wall-clock ``deadline``. Runs in a worker process of :func:`run`."""
    report = Report()
    start = time.time()

    def generate(c: Case) -> None:
        if time.time() < deadline:
            report.add(c, send(port, c))

    left = examples
    while left > 0 and time.time() < deadline:
        # Fresh hypothesis runs in batches: a long run slows down as the engine's record
        # of what it has tried grows. Size each batch to the time left, as hypothesis
        # keeps drawing a batch to its end even once the cases are no longer sent.
        rate = report.sent / max(time.time() - start, 1e-3) if report.sent else 200.0
        batch = min(left, BATCH, max(20, int(rate * (deadline - time.time()))))
        settings(max_examples=batch, deadline=None, database=None,
                 phases=[Phase.generate], suppress_health_check=list(HealthCheck))(
            given(c=case(tokens))(generate))()
        left -= batch
    return report


def run(target: FuzzTarget, examples: int, budget_s: float, *, procs: int = 2) -> Report:
    """Send ``examples`` generated cases (at most ``budget_s`` seconds), from ``procs``
    generator processes: drawing cases is the costly part, the hub answers far faster."""
    start = time.time()
    deadline = start + budget_s
    shares = [examples // procs + (i < examples % procs) for i in range(procs)]
    report = Report()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(procs, mp_context=ctx) as pool:
        parts = [pool.submit(campaign, target.port, target.tokens, n, deadline)
                 for n in shares if n]
        for part in parts:
            report.merge(part.result(timeout=budget_s + 120))
    report.seconds = time.time() - start
    return report


def environ_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default
