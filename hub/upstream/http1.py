"""HTTP/1.1 on the wire: request encoding, and response parsing (pure, sync, fed bytes).

The parser is strict on everything that decides where a response ends (RFC 9112
section 6): a message whose framing could be read two ways is refused, since the
next response on the same connection would then be read from the wrong place.
Refusals raise :class:`UpstreamProtocolError`, after which the connection is closed.
"""

from __future__ import annotations

import re

from hub.upstream.errors import UpstreamInvalidRequest, UpstreamProtocolError

MAX_HEAD = 64 * 1024
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 16 * 1024  # trailer fields are read and dropped; this much at most
MAX_LENGTH_DIGITS = 18  # a Content-Length below 10**18, a chunk size below 16**16

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE = r"[\t\x20-\x7e\x80-\xff]*"  # no control characters but HTAB
_VERSIONS = frozenset({"HTTP/1.1 ", "HTTP/1.0 "})
_TRAILER_LINE = re.compile((_TOKEN + ":" + _VALUE).encode("latin-1"))
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;" + _VALUE.encode("latin-1") + rb")?")
_FIELD_NAME = re.compile(_TOKEN)
_FRAMING = frozenset({"host", "content-length", "transfer-encoding"})
_SINGLE = frozenset({"content-length", "transfer-encoding"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

_checked_names: set[str] = set()


def request_bytes(method: str, target: str, host: str, headers: dict[str, str],
                  body: bytes) -> bytes:
    """The request head and body, or UpstreamInvalidRequest for a header that cannot be
    sent as it is (a line break would end the line early; not Latin-1)."""
    if method not in _METHODS and not _FIELD_NAME.fullmatch(method):
        raise UpstreamInvalidRequest(f"request method {method[:20]!r} is not a token")
    for name in headers:
        if name not in _checked_names:
            _check_name(name)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}",
             f"Content-Length: {len(body)}"]
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    # Method, target, host and names are checked above; a value must not hold a line
    # break or any other control character (one pass in C over the values).
    if headers and not "".join(headers.values()).isprintable():
        raise UpstreamInvalidRequest("a request header value has a line break or "
                                     "control character")
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    except UnicodeEncodeError:
        raise UpstreamInvalidRequest("a request header value has characters outside "
                                     "Latin-1") from None


def _check_name(name: str) -> None:
    if not _FIELD_NAME.fullmatch(name):
        raise UpstreamInvalidRequest(f"request header name {name[:40]!r} is not a token")
    if name.lower() in _FRAMING:
        raise UpstreamInvalidRequest(f"request header {name} is set by the client itself")
    if len(_checked_names) < 1024:
        _checked_names.add(name)


class Head:
    """Status line and headers; header names lower-cased, last value wins
    (except Content-Length and Transfer-Encoding, which must not repeat)."""

    __slots__ = ("headers", "reason", "status", "version")

    def __init__(self, raw: bytes) -> None:
        text = raw.decode("latin-1")
        lines = text.split("\r\n")
        status_line = lines[0]
        version = status_line[:9]
        status = status_line[9:12]
        if (version not in _VERSIONS or not (status.isdigit() and status.isascii())
                or status[0] == "0" or status_line[12:13] not in ("", " ")):
            raise UpstreamProtocolError("malformed status line")
        self.version = version[:8]
        self.status = int(status)
        self.reason = status_line[13:]
        # A CR or LF that is not part of a line end, or a NUL, anywhere in the head.
        ends = len(lines) - 1
        if text.count("\r") != ends or text.count("\n") != ends or "\0" in text:
            raise UpstreamProtocolError("bare CR, LF or NUL in the response head")
        headers: dict[str, str] = {}
        self.headers = headers
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            key = _field_names.get(name)
            if key is None or not sep:
                key = _field_name(name, sep)
            if key in _SINGLE and key in headers:
                raise UpstreamProtocolError(f"more than one {key} header")
            headers[key] = value.strip(" \t")

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    @property
    def keep_alive(self) -> bool:
        value = self.headers.get("connection")
        if value is None and self.version == "HTTP/1.1":
            return True
        tokens = {t.strip(" \t").lower() for t in value.split(",")} if value else set()
        if self.version == "HTTP/1.0":
            # RFC 9112 6.1: Transfer-Encoding in 1.0 means faulty framing; do not reuse
            return "keep-alive" in tokens and "transfer-encoding" not in self.headers
        return "close" not in tokens


_field_names: dict[str, str] = {}  # field names seen and found valid -> lower case


def _field_name(name: str, sep: str) -> str:
    """Checks a header line's name (a token, no space before the colon: so no folded
    line either); remembers good ones, as workers send the same few every time."""
    if not sep or not _FIELD_NAME.fullmatch(name):
        raise UpstreamProtocolError("malformed header line")
    key = name.lower()
    if len(_field_names) < 1024:
        _field_names[name] = key
    return key


class BodyDecoder:
    """Turns the bytes after the head into body bytes; knows when the body ends.

    Bytes past the end of the body are left in ``extra``: on a connection that carries
    one exchange at a time they can only be a broken or lying worker.
    """

    done: bool = False
    extra: bytes = b""

    def feed(self, data: bytes) -> bytes:
        raise NotImplementedError

    def eof(self) -> bool:
        """The connection closed: True if that is a clean end of this body."""
        return self.done


class LengthBody(BodyDecoder):
    def __init__(self, length: int) -> None:
        self.length = length
        self.left = length
        self.done = length == 0

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


_SIZE, _DATA, _CRLF, _TRAILERS = range(4)
_HEX_DIGITS = b"0123456789abcdefABCDEF"


class ChunkedBody(BodyDecoder):
    """RFC 9112 chunked transfer coding.

    Chunk sizes are plain hex digits (no sign, prefix, underscore or space), then
    optional extensions (skipped); trailer fields are checked, bounded and dropped.
    A line split across reads is kept in a bytearray and searched from where the
    last search stopped, so a worker dribbling bytes costs linear time.
    """

    def __init__(self) -> None:
        self.state = _SIZE
        self.left = 0  # bytes of the current chunk still to come
        self.pending = bytearray()  # an incomplete line (or CRLF) from earlier reads
        self.scan = 0  # where to resume looking for CRLF in pending
        self.trailer_bytes = 0

    def feed(self, data: bytes) -> bytes:
        state = self.state
        if state == _DATA and len(data) < self.left:
            self.left -= len(data)  # fast path: the middle of a chunk
            return data
        if self.pending:
            self.pending += data
            if state != _CRLF and self.pending.find(b"\r\n", self.scan) < 0:
                self._check_line_length(len(self.pending))
                self.scan = len(self.pending) - 1
                return b""
            buf = bytes(self.pending)
            self.pending.clear()
            self.scan = 0
        else:
            buf = data
        pos, end, left = 0, len(buf), self.left
        out: list[bytes] = []
        try:
            while True:
                if state == _DATA:
                    if pos >= end:
                        break
                    take = min(left, end - pos)
                    out.append(buf[pos:pos + take])
                    pos += take
                    left -= take
                    if left:
                        break
                    state = _CRLF
                elif state == _CRLF:
                    if end - pos < 2:
                        self.pending += buf[pos:]
                        pos = end
                        break
                    if buf[pos] != 13 or buf[pos + 1] != 10:
                        raise UpstreamProtocolError("chunk not followed by CRLF")
                    pos += 2
                    state = _SIZE
                else:
                    self.state = state
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        self._check_line_length(end - pos)
                        self.pending += buf[pos:]
                        self.scan = max(end - pos - 1, 0)
                        pos = end
                        break
                    line = buf[pos:eol]
                    pos = eol + 2
                    if state == _SIZE:
                        if 0 < len(line) <= 16 and not line.strip(_HEX_DIGITS):
                            left = int(line, 16)  # the usual line: hex digits alone
                        else:
                            left = self._size_with_extensions(line)
                        state = _DATA if left else _TRAILERS
                    elif self._trailer(line):  # the empty line: the end of the body
                        self.done = True
                        break
        finally:
            self.state, self.left = state, left
        if pos < end:
            self.extra = buf[pos:]
        return b"".join(out)

    @staticmethod
    def _size_with_extensions(line: bytes) -> int:
        if len(line) > MAX_CHUNK_LINE:
            raise UpstreamProtocolError("chunk size line too long")
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise UpstreamProtocolError("bad chunk size line")
        return int(match[1], 16)

    def _trailer(self, line: bytes) -> bool:
        if not line:
            return True
        self.trailer_bytes += len(line) + 2
        if self.trailer_bytes > MAX_TRAILERS:
            raise UpstreamProtocolError("chunked trailers too large")
        if _TRAILER_LINE.fullmatch(line) is None:
            raise UpstreamProtocolError("malformed trailer line")
        return False

    def _check_line_length(self, length: int) -> None:
        if self.state == _SIZE and length > MAX_CHUNK_LINE:
            raise UpstreamProtocolError("chunk size line too long")
        if self.state == _TRAILERS and self.trailer_bytes + length > MAX_TRAILERS:
            raise UpstreamProtocolError("chunked trailers too large")


def body_decoder(head: Head, method: str) -> BodyDecoder:
    """How the body of this response is framed (RFC 9112 6.3), strictly."""
    headers = head.headers
    coding = headers.get("transfer-encoding")
    length_text = headers.get("content-length")
    if coding is not None:
        if length_text is not None:
            raise UpstreamProtocolError("both Content-Length and Transfer-Encoding")
        if coding.lower() != "chunked":
            raise UpstreamProtocolError("Transfer-Encoding other than chunked alone")
    length: int | None = None
    if length_text is not None:
        if not (length_text.isascii() and length_text.isdigit()
                and len(length_text) <= MAX_LENGTH_DIGITS):
            raise UpstreamProtocolError("bad Content-Length")
        length = int(length_text)
    if method == "HEAD" or head.status in (204, 304) or head.status < 200:
        return LengthBody(0)
    if coding is not None:
        return ChunkedBody()
    if length is not None:
        return LengthBody(length)
    return UntilCloseBody()
