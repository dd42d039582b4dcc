"""``spokehub token issue|inspect``: mint and check API keys offline.

Both read the ``auth:`` section of the hub's YAML config (and the secrets or key
files it names). Errors go to stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from hub.admission.priority import CLASSES
from hub.auth.config import AuthConfig, parse_auth
from hub.auth.issue import TokenError, inspect_token, issue_token, parse_ttl
from hub.auth.principal import SCOPES
from hub.config.kit import ConfigError


def _load_auth(path: str) -> AuthConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{p}: not valid YAML") from None
    if doc is not None and not isinstance(doc, dict):
        raise ConfigError(f"{p}: must be a mapping")
    return parse_auth((doc or {}).get("auth"))


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def _fail(message: str) -> int:
    print(f"spokehub token: {message}", file=sys.stderr)
    return 2


def _cmd_issue(args: argparse.Namespace) -> int:
    try:
        cfg = _load_auth(args.config)
        models = _split(args.models) if args.models else None
        token = issue_token(cfg, tenant=args.tenant, scopes=_split(args.scope),
                            ttl_s=parse_ttl(args.ttl), sub=args.sub, models=models,
                            kid=args.kid, priority=args.priority,
                            priorities=_split(args.allow_priority) or None)
    except ConfigError as exc:
        return _fail(f"config error: {exc}")
    except TokenError as exc:
        return _fail(str(exc))
    print(token)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    token: str = args.token
    if token == "-":
        token = sys.stdin.readline()
    try:
        cfg = _load_auth(args.config)
        report: dict[str, Any] = inspect_token(cfg, token)
    except ConfigError as exc:
        return _fail(f"config error: {exc}")
    print(json.dumps(report, indent=2, sort_keys=True, default=str))
    return 0 if report["valid"] else 1


def add_token_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tp = sub.add_parser("token", help="issue or inspect API keys (JWTs)")
    tsub = tp.add_subparsers(dest="token_command", required=True)

    p = tsub.add_parser("issue", help="print a new signed token")
    p.add_argument("--config", "-c", required=True, help="hub YAML config with an auth: section")
    p.add_argument("--tenant", required=True, help="tenant the token belongs to")
    p.add_argument("--scope", action="append", required=True,
                   help=f"comma-separated scopes ({', '.join(SCOPES)}); repeatable")
    p.add_argument("--ttl", default="30d", help="lifetime: 3600, 15m, 12h, 30d (default 30d)")
    p.add_argument("--models", action="append",
                   help="comma-separated models the token may use (default: all)")
    p.add_argument("--sub", help="subject (default: the tenant)")
    p.add_argument("--kid", help="signing key id (needed when several keys can sign)")
    p.add_argument("--priority", choices=CLASSES,
                   help="class of the token's requests in the worker queue "
                        "(default: the tenant's admission setting)")
    p.add_argument("--allow-priority", action="append", metavar="CLASSES",
                   help="comma-separated classes the token may ask for with the "
                        "X-Spokehub-Priority header (its own class and lower ones "
                        "need no listing); repeatable")
    p.set_defaults(func=_cmd_issue)

    p = tsub.add_parser("inspect", help="decode a token and check it against the config; "
                                        "exit 0 if valid, 1 if not")
    p.add_argument("--config", "-c", required=True, help="hub YAML config with an auth: section")
    p.add_argument("token", help="the token, or - to read it from stdin")
    p.set_defaults(func=_cmd_inspect)
