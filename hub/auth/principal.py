"""Who the caller is (a verified token's claims) and what it may do.

Also the error types of the auth layer: 401s carry a ``WWW-Authenticate: Bearer``
challenge (RFC 6750), 403s name the missing scope or model. No message ever
contains the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hub.errors import AuthError, Forbidden

SCOPES = ("infer", "admin", "agent")
REALM = "spokehub"
_MAX_ECHO = 200


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    tenant: str
    scopes: frozenset[str]
    models: frozenset[str] | None  # None = every model
    priority: str | None = None  # the ``priority`` claim: the class of its requests
    priorities: frozenset[str] | None = frozenset()  # classes it may ask for by header
                                                      # (None = any: auth off)


class Unauthenticated(AuthError):
    """401 with a Bearer challenge. Subclasses only change the code."""

    code = "invalid_api_key"
    challenge: ClassVar[str | None] = "invalid_token"

    def __init__(self, message: str) -> None:
        value = f'Bearer realm="{REALM}"'
        if self.challenge:
            value += f', error="{self.challenge}"'
        super().__init__(message, headers={"WWW-Authenticate": value})


class MissingToken(Unauthenticated):
    code = "missing_api_key"
    challenge = None  # RFC 6750 3.1: no error code when no credentials were sent


class InvalidToken(Unauthenticated):
    code = "invalid_api_key"


class TokenExpired(Unauthenticated):
    code = "token_expired"


class TokenNotYetValid(Unauthenticated):
    code = "token_not_yet_valid"


class InsufficientScope(Forbidden):
    code = "insufficient_scope"


class ModelNotAllowed(Forbidden):
    code = "model_not_allowed"


def _echo(text: str) -> str:
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "..."


def require_scope(p: Principal, scope: str) -> None:
    if scope not in p.scopes:
        raise InsufficientScope(f"This API key lacks the '{scope}' scope "
                                f"required for this endpoint")


def require_model(p: Principal, model: str) -> None:
    if p.models is not None and model not in p.models:
        raise ModelNotAllowed(f"This API key may not use the model {_echo(model)!r}",
                              param="model")
