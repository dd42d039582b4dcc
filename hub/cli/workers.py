"""``spokehub workers``: the hub's workers at a glance, and drain/undrain, via the admin API.

    spokehub workers [--hub URL] [--token-file PATH] [--json]    GET /admin/workers
    spokehub workers drain NAME                                 POST /admin/workers/NAME/drain
    spokehub workers undrain NAME                               POST /admin/workers/NAME/undrain

The hub URL comes from ``--hub``, else ``SPOKEHUB_HUB_URL``, else http://127.0.0.1:8080.
The admin-scoped token comes from ``--token-file`` or ``SPOKEHUB_TOKEN`` (never from the
command line, where ``ps`` would show it); without either nothing is sent, which suits a
hub with auth off.

Exit codes: 0 ok; 1 the hub refused the call (its message is printed: 401, 403, 404 ...)
or could not be reached; 2 usage or local configuration error (bad URL, unreadable token
file). Errors are one line on stderr, never a traceback.

Only the standard library's HTTP client is used. Redirects are not followed, so the
token is only ever sent to the URL that was given.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from hub import __version__

ENV_HUB_URL = "SPOKEHUB_HUB_URL"
ENV_TOKEN = "SPOKEHUB_TOKEN"
DEFAULT_HUB_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 16 << 20
_MESSAGE_CHARS = 500

COLUMNS = ("NAME", "KIND", "SOURCE", "HEALTH", "BREAKER", "MODELS", "SLOTS", "VRAM FREE",
           "IN-FLIGHT", "EWMA")


class UsageError(Exception):
    """Bad arguments or local configuration: exit 2."""


class HubFailure(Exception):
    """The hub answered with an error, or could not be reached: exit 1."""


# -- talking to the hub ------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(  # noqa: PLR0917 - urllib's signature
            self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
            newurl: str) -> None:
        return None  # the 3xx surfaces as an HTTPError below


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_NoRedirect)


def _hub_message(body: bytes) -> str:
    """The message of an OpenAI-style error body, else the body's text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error")
        message = err.get("message") if isinstance(err, dict) else err
        if isinstance(message, str) and message:
            text = message
    text = " ".join(text.split())
    return text[:_MESSAGE_CHARS] + ("..." if len(text) > _MESSAGE_CHARS else "")


def _hint(status: int) -> str:
    if status == 401:
        return (f" (send an admin-scoped token: --token-file PATH or {ENV_TOKEN}; "
                f"issue one with `spokehub token issue --scope admin`)")
    if status == 403:
        return " (the token needs the admin scope)"
    return ""


def request(hub_url: str, method: str, path: str, token: str | None,
            timeout_s: float) -> Any:
    """The parsed JSON answer of one admin call; HubFailure for anything else."""
    url = hub_url + path
    headers = {"Accept": "application/json", "User-Agent": f"spokehub-cli/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if method == "POST":  # the hub takes state changes as JSON only (no form posts)
        data = b""
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _opener().open(req, timeout=timeout_s) as resp:
            body = resp.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                err_body = exc.read(MAX_ANSWER_BYTES)
            except (OSError, http.client.HTTPException):
                err_body = b""
        if 300 <= exc.code < 400:
            where = exc.headers.get("Location", "?") if exc.headers else "?"
            raise HubFailure(f"{url}: redirected (HTTP {exc.code}) to {where}; "
                             f"give --hub the hub's own address") from None
        message = _hub_message(err_body) or exc.reason
        raise HubFailure(f"hub answered HTTP {exc.code}: {message}{_hint(exc.code)}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise HubFailure(f"no answer from {hub_url} within {timeout_s:g}s") from None
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        raise HubFailure(f"cannot reach the hub at {hub_url}: {text}") from None
    except TimeoutError:
        raise HubFailure(f"no answer from {hub_url} within {timeout_s:g}s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise HubFailure(f"connection to {hub_url} failed: "
                         f"{exc.__class__.__name__}: {exc}".rstrip(": ")) from None
    if len(body) > MAX_ANSWER_BYTES:
        raise HubFailure(f"answer from {url} is larger than {MAX_ANSWER_BYTES >> 20} MiB")
    try:
        return json.loads(body)
    except ValueError:
        raise HubFailure(f"{url} did not answer with JSON; is {hub_url} a spokehub hub?"
                         ) from None


# -- settings ------------------------------------------------------------------------------


def hub_url(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    value: str | None = getattr(args, "hub", None)
    source = "--hub"
    if value is None and env.get(ENV_HUB_URL, "").strip():
        value, source = env[ENV_HUB_URL].strip(), ENV_HUB_URL
    if value is None:
        return DEFAULT_HUB_URL
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UsageError(f"{source}: bad port in {value!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{source}: must be an http:// or https:// URL, got {value!r}")
    if parts.query or parts.fragment:
        raise UsageError(f"{source}: must not have a query or fragment, got {value!r}")
    return value.rstrip("/")


def token(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    path: str | None = getattr(args, "token_file", None)
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise UsageError(f"--token-file: cannot read {path}: {reason}") from None
        value = text.strip()
        if not value:
            raise UsageError(f"--token-file: {path} is empty")
        if any(c.isspace() for c in value):
            raise UsageError(f"--token-file: {path} must hold one token on one line")
        return value
    value = env.get(ENV_TOKEN, "").strip()
    return value or None


def timeout(args: argparse.Namespace) -> float:
    value: float = getattr(args, "timeout", DEFAULT_TIMEOUT_S)
    if not 0 < value <= 300:
        raise UsageError(f"--timeout: must be between 0 and 300 seconds, got {value:g}")
    return value


# -- the table -----------------------------------------------------------------------------


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def health(w: dict[str, Any]) -> str:
    flags = []
    if w.get("draining"):
        flags.append("draining")
    if w.get("agent_stale"):
        flags.append("stale")
    if w.get("ejected_for_models"):
        flags.append("ejected")
    base = "up" if w.get("healthy") else "down"
    return ", ".join([base, *flags])


def breaker(w: dict[str, Any]) -> str:
    snap = w.get("breaker")
    if not isinstance(snap, dict):
        return "-"
    state = _text(snap.get("state"))
    retry_in = _num(snap.get("retry_in_s"))
    if state == "open" and retry_in is not None:
        return f"open ({retry_in:.0f}s)"
    return state


def slots(w: dict[str, Any]) -> str:
    total, busy = _num(w.get("slots_total")), _num(w.get("slots_busy"))
    if total is None:
        return "-"
    return f"{'?' if busy is None else f'{busy:.0f}'}/{total:.0f}"


def vram(w: dict[str, Any]) -> str:
    mb = _num(w.get("vram_free_mb"))
    if mb is None:
        return "-"
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def latency(w: dict[str, Any]) -> str:
    ms = _num(w.get("ewma_latency_ms"))
    if ms is None:
        return "-"
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def models(w: dict[str, Any]) -> str:
    names = w.get("models")
    if not isinstance(names, list) or not names:
        return "-"
    return ",".join(str(m) for m in names)


def row(w: dict[str, Any]) -> list[str]:
    return [_text(w.get("name")), _text(w.get("kind")), _text(w.get("source")), health(w),
            breaker(w), models(w), slots(w), vram(w), _text(w.get("in_flight")), latency(w)]


def render_table(workers: list[dict[str, Any]]) -> str:
    if not workers:
        return "no workers registered\n"
    rows = [list(COLUMNS), *(row(w) for w in workers)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True))
             .rstrip() for r in rows]
    up = sum(1 for w in workers if w.get("healthy"))
    summary = f"{len(workers)} worker{'s' if len(workers) != 1 else ''}: {up} up, " \
              f"{len(workers) - up} down"
    draining = sum(1 for w in workers if w.get("draining"))
    if draining:
        summary += f", {draining} draining"
    lines += ["", summary]
    for w in workers:
        if not w.get("healthy") and w.get("detail"):
            lines.append(f"  {_text(w.get('name'))}: {_text(w.get('detail'))}")
    return "\n".join(lines) + "\n"


# -- commands ------------------------------------------------------------------------------


def _list(args: argparse.Namespace, url: str, tok: str | None, limit: float) -> str:
    doc = request(url, "GET", "/admin/workers", tok, limit)
    workers = doc.get("workers") if isinstance(doc, dict) else None
    if not isinstance(workers, list) or not all(isinstance(w, dict) for w in workers):
        raise HubFailure(f"{url}/admin/workers: unexpected answer (no worker list)")
    if getattr(args, "json", False):
        return json.dumps(doc, indent=2) + "\n"
    return render_table(workers)


def _drain(args: argparse.Namespace, url: str, tok: str | None, limit: float) -> str:
    action: str = args.workers_command
    name: str = args.name
    if not name:
        raise UsageError("NAME: must not be empty")
    doc = request(url, "POST", f"/admin/workers/{quote(name, safe='')}/{action}", tok, limit)
    if getattr(args, "json", False):
        return json.dumps(doc, indent=2) + "\n"
    if not isinstance(doc, dict):
        raise HubFailure(f"{url}: unexpected answer to {action}")
    if action == "drain":
        return (f"worker {name}: draining (no new requests; "
                f"{_text(doc.get('in_flight'))} in flight will finish)\n")
    return f"worker {name}: back in rotation\n"


def _write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `spokehub workers | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def run(args: argparse.Namespace) -> int:
    command: Callable[[argparse.Namespace, str, str | None, float], str] = (
        _drain if getattr(args, "workers_command", None) in ("drain", "undrain") else _list)
    try:
        url, tok, limit = hub_url(args, os.environ), token(args, os.environ), timeout(args)
        out = command(args, url, tok, limit)
    except UsageError as exc:
        print(f"spokehub workers: {exc}", file=sys.stderr)
        return 2
    except HubFailure as exc:
        print(f"spokehub workers: {exc}", file=sys.stderr)
        return 1
    _write(out)
    return 0


def add_workers_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # The options are accepted before and after the drain/undrain word.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--hub", metavar="URL", default=argparse.SUPPRESS,
                        help=f"hub base URL (default ${ENV_HUB_URL}, else {DEFAULT_HUB_URL})")
    common.add_argument("--token-file", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"file holding an admin-scoped token (default ${ENV_TOKEN})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the hub's JSON answer instead of a table")
    common.add_argument("--timeout", type=float, metavar="SECONDS",
                        default=argparse.SUPPRESS,
                        help=f"give up after this long (default {DEFAULT_TIMEOUT_S:g})")
    p = sub.add_parser("workers", parents=[common], help="list the hub's workers; drain or "
                       "undrain one",
                       description="List the hub's workers (GET /admin/workers), or take one "
                                   "out of rotation and put it back.",
                       epilog="Exit codes: 0 ok, 1 the hub refused or is unreachable, "
                              "2 usage or configuration error.")
    p.set_defaults(func=run)
    wsub = p.add_subparsers(dest="workers_command", metavar="{drain,undrain}")
    d = wsub.add_parser("drain", parents=[common],
                        help="send no new requests to a worker (in-flight ones finish)")
    d.add_argument("name", metavar="NAME", help="worker name, as listed")
    u = wsub.add_parser("undrain", parents=[common], help="put a drained worker back")
    u.add_argument("name", metavar="NAME", help="worker name, as listed")
