"""Shared pieces of the security tests: keys and tokens, HTTP clients, OpenAI error checks.

Two HTTP clients: :func:`request` (http.client, one connection per call, any method
and headers) and :func:`raw` (a socket, bytes in and the first answer out), for
requests http.client refuses to send (bad framing, bad header syntax).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

AUDIENCE = "spokehub-test"
ISSUER = "https://issuer.spokehub.test"


# -- keys and tokens -----------------------------------------------------------------------

@dataclass(frozen=True)
class RsaPair:
    key: rsa.RSAPrivateKey
    private_pem: bytes
    public_pem: bytes
    private_path: Path
    public_path: Path


def rsa_pair(directory: Path, name: str) -> RsaPair:
    """A fresh 2048-bit RSA key pair, written as PKCS#8 / SPKI PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path = directory / f"{name}.pem"
    public_path = directory / f"{name}.pub.pem"
    private_path.write_bytes(private_pem)
    public_path.write_bytes(public_pem)
    return RsaPair(key, private_pem, public_pem, private_path, public_path)


def hmac_secret() -> str:
    """A random HS256 secret (64 url-safe characters, above the 32-byte minimum)."""
    return base64.urlsafe_b64encode(os.urandom(48)).decode()


def claims(tenant: str, scope: str = "infer", *, ttl_s: float = 3600,
           now: float | None = None, **extra: Any) -> dict[str, Any]:
    """Claims the test hubs accept (right aud and iss); ``extra`` adds or overrides,
    and a value of None drops that claim."""
    t = int(time.time() if now is None else now)
    out: dict[str, Any] = {"sub": f"{tenant}-user", "tenant": tenant, "scope": scope,
                           "iat": t, "nbf": t, "exp": int(t + ttl_s),
                           "aud": AUDIENCE, "iss": ISSUER}
    for name, value in extra.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def sign(payload: dict[str, Any], key: str | bytes | rsa.RSAPrivateKey, alg: str,
         kid: str | None) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(doc: object) -> str:
    return b64url(json.dumps(doc, separators=(",", ":")).encode())


# -- HTTP ----------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    seconds: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _headers(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def request(port: int, method: str, path: str, body: bytes | str | dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, *, token: str | None = None,
            timeout: float = 15.0) -> Reply:
    """One HTTP/1.1 request on a fresh connection to 127.0.0.1:``port``."""
    data = (json.dumps(body).encode() if isinstance(body, dict)
            else body.encode() if isinstance(body, str) else body)
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    start = time.monotonic()
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        return Reply(resp.status, _headers(resp.getheaders()), payload,
                     time.monotonic() - start)
    finally:
        conn.close()


def chat(port: int, token: str | None, model: str = "rec-model", *,
         headers: dict[str, str] | None = None, timeout: float = 15.0,
         **fields: Any) -> Reply:
    body: dict[str, Any] = {"model": model,
                            "messages": [{"role": "user", "content": "hi"}], **fields}
    return request(port, "POST", "/v1/chat/completions", body, headers, token=token,
                   timeout=timeout)


class _Conn:
    """Buffered reads from a socket; ``more()`` is False once the peer closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.closed = False

    def more(self) -> bool:
        if self.closed:
            return False
        chunk = self.sock.recv(65536)
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        return True

    def until(self, marker: bytes) -> bytes | None:
        while marker not in self.buf:
            if not self.more():
                return None
        head, _, self.buf = self.buf.partition(marker)
        return head

    def take(self, n: int) -> bytes:
        while len(self.buf) < n and self.more():
            pass
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _read_chunked(conn: _Conn) -> bytes:
    out = b""
    while True:
        size_line = conn.until(b"\r\n")
        if size_line is None:
            return out
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            conn.until(b"\r\n")
            return out
        out += conn.take(size)
        conn.take(2)


def read_response(sock: socket.socket, *, head_only: bool = False) -> Reply | None:
    """The first final (non-1xx) HTTP/1.x response on ``sock``; None if the peer closed
    (or timed out) before a status line and headers arrived."""
    conn = _Conn(sock)
    start = time.monotonic()
    try:
        while True:
            head = conn.until(b"\r\n\r\n")
            if head is None:
                return None
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            if 100 <= status < 200:
                continue  # 100 Continue and friends: the real answer follows
            pairs = [line.split(":", 1) for line in lines[1:] if ":" in line]
            hdrs = _headers([(k.strip(), v.strip()) for k, v in pairs])
            if head_only or status in (204, 304):
                body = b""
            elif "chunked" in hdrs.get("transfer-encoding", "").lower():
                body = _read_chunked(conn)
            elif "content-length" in hdrs:
                body = conn.take(int(hdrs["content-length"]))
            else:
                while conn.more():
                    pass
                body = conn.buf
            return Reply(status, hdrs, body, time.monotonic() - start)
    except (TimeoutError, ConnectionError):
        return None


def raw(port: int, data: bytes, *, timeout: float = 5.0, head_only: bool = False) -> Reply | None:
    """Send ``data`` as is and parse the first final response; None if the server closed
    the connection (or stayed silent for ``timeout``) without answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # it may answer and close before reading it all
            sock.sendall(data)
        return read_response(sock, head_only=head_only)


def wait_until(pred: Any, timeout: float = 10.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


# -- checks --------------------------------------------------------------------------------

def assert_openai_error(reply: Reply, status: int, code: str | None = None) -> dict[str, Any]:
    """An OpenAI-shaped error: ``{"error": {"message", "type", "param", "code"}}``."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert (reply.header("content-type") or "").startswith("application/json"), reply.headers
    doc = reply.json()
    assert set(doc) == {"error"}, doc
    err: dict[str, Any] = doc["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"], err
    if code is not None:
        assert err["code"] == code, err
    return err


def assert_unauthorized(reply: Reply, code: str | None = None) -> dict[str, Any]:
    err = assert_openai_error(reply, 401, code)
    assert err["type"] == "authentication_error", err
    challenge = reply.header("www-authenticate") or ""
    assert challenge.startswith("Bearer"), reply.headers
    return err


def assert_forbidden(reply: Reply, code: str | None = None) -> dict[str, Any]:
    err = assert_openai_error(reply, 403, code)
    assert err["type"] == "permission_error", err
    return err
