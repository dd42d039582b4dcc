"""What an agent may register: the trust checks applied to every heartbeat.

An agent token is a credential of one GPU box. Whatever its heartbeat says is a claim
to check, never a fact: the hub names the workers itself, the advertised URLs must
point into ``agents.allowed_networks``, the models must be allowed by the token, and
the reported numbers must be plausible. This module holds those checks as plain
functions (plus the bounded DNS resolver they use), so each one is unit-tested
without a network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hub.config.kit import ConfigError, check_url
from hub.config.workers import WORKER_KINDS
from hub.errors import BadRequest, Forbidden, HubError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The default of ``agents.allowed_networks``: this machine and the private ranges a
# GPU box on a company network or a VPN has (RFC 1918, IPv6 unique local addresses).
# Public addresses, CGNAT (100.64.0.0/10, e.g. Tailscale) and link-local are not in it.
DEFAULT_ALLOWED_NETWORKS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12",
                            "192.168.0.0/16", "fc00::/7")

# Cloud instance metadata services: a worker URL here would let an agent make the
# hub's prober (and proxy) fetch the hub machine's cloud credentials.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
    "fd00:ec2::254",  # AWS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",  # Oracle Cloud (classic)
))
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))

MAX_URL_CHARS = 2048
MAX_SLOTS = 4096
MAX_VRAM_MB = 16 * 1024 * 1024  # 16 TiB of free VRAM on one box
MAX_MODELS = 512  # per worker
MAX_MODEL_CHARS = 256
MAX_LABEL_CHARS = 63
MAX_HOST_REPORT_BYTES = 16 * 1024
MAX_HOSTNAMES_PER_HEARTBEAT = 4  # distinct DNS names to resolve for one heartbeat

_ANSI_RE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")
_BLANKS = frozenset("\t\n\r\v\f")
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@]*@")


class WorkerRefused(BadRequest):
    """An advertised worker breaks the trust policy (its URL, its network)."""

    code = "worker_not_allowed"


class TooManyAgentIds(Forbidden):
    code = "too_many_agent_ids"


class TooManyAgentWorkers(HubError):
    status = 429
    type = "rate_limit_error"
    code = "too_many_agent_workers"


class Rejected(ValueError):
    """One worker entry of a heartbeat is refused; the message says why."""


# -- configuration ---------------------------------------------------------------------


def parse_networks(values: object, where: str) -> tuple[IPNetwork, ...]:
    """``agents.allowed_networks``: a list of CIDRs (a bare address is a /32 or /128)."""
    if not isinstance(values, list):
        raise ConfigError(f"{where}: must be a list of networks (CIDR), e.g. [10.0.0.0/8]")
    out: list[IPNetwork] = []
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}[{i}]: must be a network in CIDR form, e.g. 10.0.0.0/8")
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=True))
        except ValueError as exc:
            raise ConfigError(f"{where}[{i}]: {exc}") from None
    return tuple(out)


# -- redaction and display -------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` without its user:password part (``http://***@host/``)."""
    return _USERINFO_RE.sub(r"\1***@", url)


def redact_text(text: str) -> str:
    """Any URL credentials inside free text (an error detail) replaced by ``***``."""
    return _USERINFO_RE.sub(r"\1***@", text) if "@" in text else text


def printable(text: str) -> str:
    """``text`` without terminal escape sequences and control or format characters
    (ESC, CR, backspace, bidirectional overrides, ...)."""
    if text.isprintable():
        return text
    text = _ANSI_RE.sub("", text)
    return "".join(c if c.isprintable() else " " for c in text
                   if c.isprintable() or c in _BLANKS)


# -- names and URLs --------------------------------------------------------------------


def default_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def worker_name(agent_id: str, kind: str, url: str) -> str:
    """The hub's name for an agent's worker: ``<agent_id>-<kind>-<port>``.

    Kinds contain no ``-`` and ports are digits, so the name always reads back as one
    (agent id, kind, port): no two agents can ever get the same name.
    """
    return f"{agent_id}-{kind}-{default_port(url)}"


def check_worker_url(raw: object, where: str) -> str:
    """An advertised worker URL, syntax only (the network check needs DNS, see
    :func:`address_problem`). Raises Rejected for a malformed URL and WorkerRefused
    for one with credentials, naming the URL without them."""
    if not isinstance(raw, str) or not raw:
        raise Rejected(f"{where}: is required (an http:// or https:// URL)")
    if len(raw) > MAX_URL_CHARS:
        raise Rejected(f"{where}: longer than {MAX_URL_CHARS} characters")
    shown = printable(redact_url(raw))
    if not raw.isascii() or not raw.isprintable() or " " in raw or "\\" in raw:
        raise Rejected(f"{where}: {shown!r} must be printable ASCII without spaces or "
                       f"backslashes")
    parts = urlsplit(raw)
    if "@" in parts.netloc:
        raise WorkerRefused(f"{where} {shown!r}: carries credentials (user:password@); "
                            f"agents may not register URLs with credentials", param=where)
    try:
        return check_url(raw, where)
    except ConfigError as exc:
        raise Rejected(str(exc)) from None


def check_kind(raw: object, where: str) -> str:
    kind = "llamacpp" if raw is None else raw
    if not isinstance(kind, str) or kind not in WORKER_KINDS:
        raise Rejected(f"{where}: must be one of {', '.join(WORKER_KINDS)}")
    return kind


def label(raw: object) -> str | None:
    """The name an agent sent: only a label now, shown as text, never a registry key."""
    if not isinstance(raw, str) or not raw:
        return None
    return printable(raw)[:MAX_LABEL_CHARS] or None


# -- networks --------------------------------------------------------------------------


def _special(addr: IPAddress) -> tuple[str, IPNetwork] | None:
    """(what it is, the range an allowed network must lie within to allow it)."""
    if addr in METADATA_ADDRESSES:
        return "a cloud metadata address", ipaddress.ip_network(addr)
    for net in LINK_LOCAL:
        if addr.version == net.version and addr in net:
            return "a link-local address", net
    if addr.is_unspecified:
        return "the unspecified address", ipaddress.ip_network(addr)
    return None


def address_problem(addr: IPAddress, allowed: Iterable[IPNetwork]) -> str | None:
    """Why ``addr`` may not be a worker address, or None if it may.

    It must be inside one of ``allowed``. Link-local, cloud metadata and unspecified
    addresses also need an allowed network that names them explicitly: a network
    inside 169.254.0.0/16 or fe80::/10 for link-local, the address itself (/32,
    /128) for metadata, so 0.0.0.0/0 never allows them.
    """
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    inside = [net for net in allowed if net.version == addr.version and addr in net]
    if not inside:
        return f"{addr} is not inside agents.allowed_networks"
    special = _special(addr)
    if special is not None:
        what, scope = special
        if not any(net.subnet_of(scope) for net in inside  # type: ignore[arg-type]
                   if net.version == scope.version):
            return (f"{addr} is {what}; it is refused unless agents.allowed_networks "
                    f"lists {scope} (or a part of it) explicitly")
    return None


def url_host(url: str) -> str:
    return urlsplit(url).hostname or ""


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def describe_networks(allowed: Iterable[IPNetwork]) -> str:
    return ", ".join(str(n) for n in allowed) or "none"


def check_addresses(url: str, addresses: Iterable[IPAddress],
                    allowed: tuple[IPNetwork, ...], where: str) -> None:
    """Every address ``url``'s host resolved to must be allowed; else WorkerRefused
    naming the URL (without credentials) and the rule."""
    found = list(addresses)
    if not found:
        raise WorkerRefused(f"{where} {printable(redact_url(url))!r}: its host resolved to "
                            f"no address",
                            param=where)
    for addr in found:
        problem = address_problem(addr, allowed)
        if problem is not None:
            raise WorkerRefused(
                f"{where} {printable(redact_url(url))!r}: {problem} "
                f"(allowed: {describe_networks(allowed)}); every address the host resolves "
                f"to must be allowed", param=where)


# -- DNS -------------------------------------------------------------------------------


class ResolveFailed(Exception):
    pass


Lookup = Callable[[str], Awaitable[list[tuple[Any, ...]]]]


class Resolver:
    """Resolve advertised host names with the event loop's getaddrinfo, bounded.

    At most ``lookups`` resolutions run at once (a slot is held until the lookup
    itself ends, even one the caller stopped waiting for), so heartbeats with slow or
    bogus names cannot fill the resolver threads that the proxy's own connects need.
    Answers are cached for ``ttl_s`` (failures for a fifth of it).
    """

    def __init__(self, *, lookups: int = 2, timeout_s: float = 2.0, ttl_s: float = 30.0,
                 size: int = 1024, lookup: Lookup | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.size = size
        self._lookup = lookup
        self._clock = clock
        self._slots = lookups
        self._sem: asyncio.Semaphore | None = None
        self._cache: OrderedDict[str, tuple[float, tuple[IPAddress, ...] | str]] = OrderedDict()

    async def _getaddrinfo(self, host: str) -> list[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        return await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM,
                                      proto=socket.IPPROTO_TCP)

    def _remember(self, host: str, value: tuple[IPAddress, ...] | str) -> None:
        ttl = self.ttl_s if isinstance(value, tuple) else self.ttl_s / 5
        self._cache[host] = (self._clock() + ttl, value)
        self._cache.move_to_end(host)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)

    async def resolve(self, host: str) -> tuple[IPAddress, ...]:
        hit = self._cache.get(host)
        if hit is not None and self._clock() < hit[0]:
            if isinstance(hit[1], str):
                raise ResolveFailed(hit[1])
            return hit[1]
        if self._sem is None:
            self._sem = asyncio.Semaphore(self._slots)
        sem = self._sem
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                await sem.acquire()
        except TimeoutError:
            raise ResolveFailed("the hub is busy resolving other names; try again") from None
        future = asyncio.ensure_future((self._lookup or self._getaddrinfo)(host))

        def done(f: asyncio.Future[list[tuple[Any, ...]]]) -> None:
            sem.release()
            if not f.cancelled():
                f.exception()  # retrieved: a lookup nobody waits for is no error

        future.add_done_callback(done)
        try:
            async with asyncio.timeout_at(deadline):
                infos = await asyncio.shield(future)
        except TimeoutError:
            raise ResolveFailed(f"no DNS answer within {self.timeout_s:g}s") from None
        except OSError as exc:
            reason = f"cannot resolve it: {exc.strerror or exc}"
            self._remember(host, reason)
            raise ResolveFailed(reason) from None
        addresses: list[IPAddress] = []
        for info in infos:
            addr = literal_address(str(info[4][0]).split("%", 1)[0])
            if addr is not None and addr not in addresses:
                addresses.append(addr)
        result = tuple(addresses)
        self._remember(host, result)
        return result


# -- reported numbers and models --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capacity:
    slots_total: int | None
    slots_busy: int | None
    vram_free_mb: float | None


def _number(raw: dict[str, Any], key: str, hi: float, where: str, *,
            whole: bool) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    shown = printable(str(value))[:40]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected(f"{where}.{key}: must be a number or null")
    try:
        number = float(value)
    except OverflowError:  # an int past float range
        number = math.inf
    if not math.isfinite(number) or not 0 <= number <= hi:
        raise Rejected(f"{where}.{key}: {shown} is out of range (0 to {int(hi)})")
    if whole and not number.is_integer():
        raise Rejected(f"{where}.{key}: must be a whole number, got {shown}")
    return number


def check_capacity(raw: dict[str, Any], where: str) -> Capacity:
    """Slots and free VRAM as reported; out-of-range values refuse the worker (a
    clamped 1e18 MB would still win every VRAM-weighted pick)."""
    total = _number(raw, "slots_total", MAX_SLOTS, where, whole=True)
    busy = _number(raw, "slots_busy", MAX_SLOTS, where, whole=True)
    if busy is not None and total is not None and busy > total:
        raise Rejected(f"{where}.slots_busy: {busy:g} is more than slots_total {total:g}")
    vram = _number(raw, "vram_free_mb", MAX_VRAM_MB, where, whole=False)
    return Capacity(None if total is None else int(total),
                    None if busy is None or total is None else int(busy), vram)


def model_names(value: object, where: str) -> frozenset[str]:
    """A list of model names as reported; Rejected if it is not one."""
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise Rejected(f"{where}: must be a list of model names")
    if len(value) > MAX_MODELS:
        raise Rejected(f"{where}: more than {MAX_MODELS} models")
    for name in value:
        if (not isinstance(name, str) or not name or len(name) > MAX_MODEL_CHARS
                or not name.isprintable()):
            raise Rejected(f"{where}: model names must be 1-{MAX_MODEL_CHARS} printable "
                           f"characters")
    return frozenset(value)


@dataclass(frozen=True, slots=True)
class ModelVerdict:
    allowed: frozenset[str]
    not_in_token: frozenset[str]
    alias_targets: frozenset[str]


def filter_models(models: frozenset[str], token_models: frozenset[str] | None,
                  alias_targets: frozenset[str]) -> ModelVerdict:
    """The models an agent's worker may serve: those its token's ``models`` claim
    allows (all, without the claim), minus the targets of ``aliases`` (pass an empty
    set when ``agents.alias_targets`` is on)."""
    not_in_token = models - token_models if token_models is not None else frozenset()
    rest = models - not_in_token
    aliased = rest & alias_targets
    return ModelVerdict(rest - aliased, not_in_token, aliased)


def host_report(value: object) -> dict[str, Any] | None:
    """The agent's host report if it is a small JSON object, else None."""
    if not isinstance(value, dict):
        return None
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError, RecursionError):
        return None
    return value if size <= MAX_HOST_REPORT_BYTES else None
