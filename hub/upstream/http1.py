"""HTTP/1.1 response parsing: pure, sync, fed bytes as they arrive."""

from __future__ import annotations

from hub.upstream.errors import UpstreamProtocolError

MAX_HEAD = 64 * 1024
MAX_CHUNK_LINE = 4096


def request_bytes(method: str, target: str, host: str, headers: dict[str, str],
                  body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}",
             f"Content-Length: {len(body)}"]
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Head:
    """Status line and headers; header names lower-cased, last value wins."""

    __slots__ = ("headers", "reason", "status", "version")

    def __init__(self, raw: bytes) -> None:
        try:
            text = raw.decode("latin-1")
            status_line, _, rest = text.partition("\r\n")
            version, status, *reason = status_line.split(" ", 2)
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
            self.version = version
            self.status = int(status)
            self.reason = reason[0] if reason else ""
        except ValueError:
            raise UpstreamProtocolError("malformed status line") from None
        self.headers: dict[str, str] = {}
        for line in rest.split("\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise UpstreamProtocolError("malformed header line")
            self.headers[name.strip().lower()] = value.strip()

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return conn == "keep-alive"
        return conn != "close"


class BodyDecoder:
    """Turns the bytes after the head into body bytes; knows when the body ends."""

    done: bool = False

    def feed(self, data: bytes) -> bytes:
        raise NotImplementedError

    def eof(self) -> bool:
        """The connection closed: True if that is a clean end of this body."""
        return self.done


class LengthBody(BodyDecoder):
    def __init__(self, length: int) -> None:
        self.left = length
        self.done = length == 0
        self.extra = b""  # bytes past the body (a protocol error for a response)

    def feed(self, data: bytes) -> bytes:
        if len(data) <= self.left:
            self.left -= len(data)
            self.done = self.left == 0
            return data
        out, self.extra = data[:self.left], data[self.left:]
        self.left = 0
        self.done = True
        return out


class UntilCloseBody(BodyDecoder):
    def feed(self, data: bytes) -> bytes:
        return data

    def eof(self) -> bool:
        self.done = True
        return True


class ChunkedBody(BodyDecoder):
    """RFC 9112 chunked transfer coding; extensions and trailers are skipped."""

    def __init__(self) -> None:
        self.buf = b""
        self.left = 0  # bytes of the current chunk still to come
        self.state = "size"  # size -> data -> crlf -> size ... -> trailers

    def feed(self, data: bytes) -> bytes:
        if self.state == "data" and not self.buf and len(data) < self.left:
            self.left -= len(data)  # fast path: the middle of a chunk
            return data
        buf = self.buf + data if self.buf else data
        pos, end_of_buf = 0, len(buf)
        out: list[bytes] = []
        while not self.done:
            if self.state == "data":
                if pos >= end_of_buf:
                    break
                take = min(self.left, end_of_buf - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self.left -= take
                if self.left:
                    break
                self.state = "crlf"
            elif self.state == "crlf":
                if end_of_buf - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise UpstreamProtocolError("chunk not followed by CRLF")
                pos += 2
                self.state = "size"
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    limit = MAX_CHUNK_LINE if self.state == "size" else MAX_HEAD
                    if end_of_buf - pos > limit:
                        raise UpstreamProtocolError(f"chunk {self.state} line too long")
                    break
                line = buf[pos:eol]
                pos = eol + 2
                if self.state == "trailers":  # lines until an empty one
                    self.done = not line
                    continue
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise UpstreamProtocolError("bad chunk size") from None
                if size < 0:
                    raise UpstreamProtocolError("bad chunk size")
                if size == 0:
                    self.state = "trailers"
                else:
                    self.left = size
                    self.state = "data"
        self.buf = buf[pos:]
        return b"".join(out)


def body_decoder(head: Head, method: str) -> BodyDecoder:
    if method == "HEAD" or head.status in (204, 304) or 100 <= head.status < 200:
        return LengthBody(0)
    if "chunked" in head.headers.get("transfer-encoding", "").lower():
        return ChunkedBody()
    length = head.headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise UpstreamProtocolError("bad Content-Length") from None
        if n < 0:
            raise UpstreamProtocolError("bad Content-Length")
        return LengthBody(n)
    return UntilCloseBody()
