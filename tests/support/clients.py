"""A hub with JWT auth on, for tests that drive it with real client libraries."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from hub.auth.config import parse_auth
from hub.auth.issue import issue_token
from tests.support.hubproc import HubProcess

JWT_ENV = "SPOKEHUB_TEST_JWT_SECRET"


class AuthHub:
    """A started hub process with auth on, and a way to mint its tokens."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.secret = secrets.token_hex(32)
        self.env = {JWT_ENV: self.secret}
        self.auth = {"enabled": True, "keys": [{"kid": "k", "alg": "HS256",
                                                 "secret_env": JWT_ENV}]}
        self.hub = HubProcess({**config, "auth": self.auth}, workdir, self.env)

    def start(self) -> AuthHub:
        self.hub.start()
        return self

    def stop(self) -> None:
        self.hub.stop()

    @property
    def url(self) -> str:
        return self.hub.url

    def token(self, *scopes: str, tenant: str = "clients",
              models: list[str] | None = None) -> str:
        return issue_token(parse_auth(self.auth), tenant=tenant, scopes=list(scopes or ["infer"]),
                           ttl_s=3600, models=models, environ=self.env)

