"""HS256 auth settings and a token for benchmarks that run with auth on."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from hub.auth.config import parse_auth
from hub.auth.issue import issue_token


def bench_auth(tmp: Path) -> tuple[dict[str, Any], str, dict[str, str]]:
    """(auth config section, an infer token, env for the hub process)."""
    secret = secrets.token_hex(32)
    env = {"SPOKEHUB_BENCH_SECRET": secret}
    section: dict[str, Any] = {"enabled": True, "keys": [
        {"kid": "bench", "alg": "HS256", "secret_env": "SPOKEHUB_BENCH_SECRET"}]}
    token = issue_token(parse_auth(section), tenant="bench", scopes=["infer"], ttl_s=3600,
                        environ=env)
    return section, token, env
