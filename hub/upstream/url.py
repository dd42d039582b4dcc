"""Worker URLs: checked once, then turned into what goes on the wire.

:func:`check_url` is for configured base URLs (hub config, agent registration);
:func:`split_url` is what the pool uses for each request URL. Both refuse, with a
ValueError naming the problem, anything the client could only send by guessing:
another scheme, credentials, a bad port, a host that does not encode as an ASCII
(IDNA) name or IP literal, raw spaces or control characters, broken %-escapes.
Messages never repeat the URL itself (it may hold a secret); the caller adds where
it came from.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL = 8192  # llama.cpp's HTTP server refuses longer request targets

_CONTROL = re.compile(r"[\x00-\x20\x7f\\]")  # also a backslash: read as "/" by some
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_PATH_SAFE = "/%!$&'()*+,;=:@-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


class Target:
    """A request URL taken apart: where to connect and what to write (computed once)."""

    __slots__ = ("authority", "host", "origin", "path", "port", "query", "request_target",
                 "scheme")

    def __init__(self, scheme: str, host: str, port: int, path: str, query: str) -> None:
        self.scheme = scheme
        self.host = host  # what to connect to: an ASCII (IDNA) name or an IP literal
        self.port = port
        self.path = path  # %-encoded ASCII; "" for none
        self.query = query  # %-encoded ASCII, without the "?"
        self.origin = (scheme, host, port)
        name = f"[{host}]" if ":" in host else host
        # host[:port] as in a URL and the Host header, the default port left out
        self.authority = name if port == DEFAULT_PORTS[scheme] else f"{name}:{port}"
        self.request_target = (path or "/") + (f"?{query}" if query else "")


def split_url(url: str) -> Target:
    """A request URL (a query is allowed, a fragment is not), or ValueError."""
    if not isinstance(url, str):
        raise ValueError(f"must be a string, not {type(url).__name__}")
    if not url:
        raise ValueError("is empty")
    if len(url) > MAX_URL:
        raise ValueError(f"is longer than {MAX_URL} characters")
    if _CONTROL.search(url):
        raise ValueError("must not contain spaces, control characters or backslashes")
    if "#" in url:
        raise ValueError("must not have a #fragment")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL", NFKC-normalized netloc characters
        raise ValueError(f"cannot be parsed: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError("must be an http:// or https:// URL")
    if not url[len(parts.scheme):].startswith("://"):
        raise ValueError("must start with http:// or https://")
    host, port = _authority(parts.netloc, DEFAULT_PORTS[parts.scheme])
    return Target(parts.scheme, host, port, _encode(parts.path, _PATH_SAFE, "path"),
                  _encode(parts.query, _QUERY_SAFE, "query"))


def check_url(url: str) -> str:
    """A base URL, normalized, or ValueError saying what is wrong with it.

    The result has a lower-case scheme and host, the host IDNA-encoded (``bücher.example``
    becomes ``xn--bcher-kva.example``), no default port, the path %-encoded as it
    will be sent and no trailing slash: ``HTTP://Box:80/v1/`` gives ``http://box/v1``.
    """
    target = split_url(url)
    if "?" in url:
        raise ValueError("must not have a ?query (a base URL is extended with paths)")
    return f"{target.scheme}://{target.authority}{target.path.rstrip('/')}"


def _authority(netloc: str, default_port: int) -> tuple[str, int]:
    if not netloc:
        raise ValueError("has no host")
    if "@" in netloc:
        raise ValueError("must not contain credentials (user:password@); "
                         "give secrets another way")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise ValueError("has an unclosed [ in its host")
        host, rest = _ipv6(netloc[1:end]), netloc[end + 1:]
    else:
        name, sep, port_text = netloc.partition(":")
        if ":" in port_text:
            raise ValueError("has more than one ':' in its host (IPv6 addresses go in [])")
        host, rest = _hostname(name), sep + port_text
    if not rest:
        return host, default_port
    port_text = rest[1:]
    if not rest.startswith(":") or not port_text:
        raise ValueError("bad port: empty")
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        raise ValueError("bad port: not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"bad port {port}: out of range 1-65535")
    return host, port


def _ipv6(text: str) -> str:
    if "%" in text:
        raise ValueError("has an IPv6 zone identifier (%...), which is not supported")
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        raise ValueError("has [brackets] around something that is not an IPv6 address"
                         ) from None


def _hostname(name: str) -> str:
    if not name:
        raise ValueError("has no host")
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError("has a host name that cannot be IDNA-encoded "
                         "(an empty, too long or invalid label)") from None
    bare = ascii_name[:-1] if ascii_name.endswith(".") else ascii_name  # FQDN dot
    labels = bare.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # Resolvers read 127.1, 0x7f.0.0.1 or 2130706433 as addresses: only the
        # unambiguous dotted-decimal form is accepted.
        try:
            return str(ipaddress.IPv4Address(bare))
        except ValueError:
            raise ValueError("has a numeric host that is not a dotted-decimal IPv4 address"
                             ) from None
    if len(bare) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("has a host name with characters other than letters, digits, "
                         "'-' and '_' (after IDNA encoding)")
    for label in labels:
        if label.startswith("xn--"):
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError:
                raise ValueError("has an xn-- host label that is not valid punycode"
                                 ) from None
    return ascii_name


def _encode(text: str, safe: str, what: str) -> str:
    if _BAD_ESCAPE.search(text):
        raise ValueError(f"has a '%' in its {what} that is not followed by two hex digits")
    try:
        return quote(text, safe=safe)  # non-ASCII as %-encoded UTF-8; existing escapes kept
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 encoding
        raise ValueError(f"has characters in its {what} that cannot be encoded") from None
