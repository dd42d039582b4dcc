"""Calling the hub's admin API from the command line: where (``--hub``), as whom
(``--token-file``), for how long (``--timeout``), and the one HTTP call.

The hub URL comes from ``--hub``, else ``SPOKEHUB_HUB_URL``, else http://127.0.0.1:8080.
The admin-scoped token comes from ``--token-file`` or ``SPOKEHUB_TOKEN`` (never from the
command line, where ``ps`` would show it); without either nothing is sent, which suits a
hub with auth off.

Only the standard library's HTTP client is used. Redirects are not followed, so the
token is only ever sent to the URL that was given. What the hub answers is text from
the network: messages are stripped of terminal escapes and URL credentials before
they are printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hub import __version__
from hub.fleet.agent_policy import printable, redact_text

ENV_HUB_URL = "SPOKEHUB_HUB_URL"
ENV_TOKEN = "SPOKEHUB_TOKEN"
DEFAULT_HUB_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 16 << 20
_MESSAGE_CHARS = 500


class UsageError(Exception):
    """Bad arguments or local configuration: exit 2."""


class HubFailure(Exception):
    """The hub answered with an error, or could not be reached: exit 1."""


def safe(text: object) -> str:
    """Text from the hub, fit for a terminal: no escapes or control characters, no URL
    credentials."""
    return printable(redact_text(str(text)))


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


# -- the call ------------------------------------------------------------------------------


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
    text = " ".join(safe(text).split())
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
            where = safe(exc.headers.get("Location", "?")) if exc.headers else "?"
            raise HubFailure(f"{url}: redirected (HTTP {exc.code}) to {where}; "
                             f"give --hub the hub's own address") from None
        message = _hub_message(err_body) or safe(exc.reason)
        raise HubFailure(f"hub answered HTTP {exc.code}: {message}{_hint(exc.code)}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise HubFailure(f"no answer from {hub_url} within {timeout_s:g}s") from None
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        raise HubFailure(f"cannot reach the hub at {hub_url}: {safe(text)}") from None
    except TimeoutError:
        raise HubFailure(f"no answer from {hub_url} within {timeout_s:g}s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise HubFailure(f"connection to {hub_url} failed: "
                         f"{exc.__class__.__name__}: {safe(exc)}".rstrip(": ")) from None
    if len(body) > MAX_ANSWER_BYTES:
        raise HubFailure(f"answer from {url} is larger than {MAX_ANSWER_BYTES >> 20} MiB")
    try:
        return json.loads(body)
    except ValueError:
        raise HubFailure(f"{url} did not answer with JSON; is {hub_url} a spokehub hub?"
                         ) from None
