"""The ``auth:`` section of the hub config.

Schema::

    auth:
      enabled: false            # true: every non-public path needs a Bearer token
      audience: null            # expected "aud" claim (tokens carrying an "aud" are
                                # rejected when this is null)
      issuer: null              # expected "iss" claim
      leeway_s: 30              # clock skew allowed on exp / nbf / iat (0..3600)
      public_paths: [/healthz, /readyz, /metrics]   # served without a token
      cache_size: 10000         # verified tokens remembered until their exp (0 = off)
      keys:                     # at least one when enabled
        - kid: hub-2024         # HMAC: the secret comes from the environment or a file
          alg: HS256            # HS256 | HS384 | HS512
          secret_env: SPOKEHUB_JWT_SECRET   # or secret_file: /run/secrets/jwt
        - kid: ops-rsa          # RSA / EC / EdDSA public key in a PEM file
          alg: RS256            # RS256..RS512 | PS256..PS512 | ES256 | ES384 | ES512 | EdDSA
          public_key_file: /etc/spokehub/ops-rsa.pub.pem
          private_key_file: /secure/ops-rsa.pem   # optional; only `spokehub token issue`
        - jwks_file: /etc/spokehub/idp.jwks.json  # every key of a JWK Set; each JWK
          alg: ES256            # optional: needs a "kid", and an "alg" unless set here

Each entry uses exactly one of ``secret_env``, ``secret_file``, ``public_key_file``
and ``jwks_file``. Secrets never appear inline in the YAML. A ``secret_file`` has
trailing CR/LF stripped. HMAC secrets must be at least as long as the hash (32
bytes for HS256, 48 for HS384, 64 for HS512) and RSA keys at least 2048 bits.
Relative file paths are relative to the working directory.

Parsing here checks the shape only; :mod:`hub.auth.keys` reads the secrets and
key files (and reports problems under the same ``auth.keys[i]`` names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hub.config.kit import ConfigError, Section

# hub.config.schema embeds AuthConfig, so this module must import without it:
# the parsers below import it when called.

HMAC_ALGS = ("HS256", "HS384", "HS512")
RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGS = ("ES256", "ES384", "ES512")
OKP_ALGS = ("EdDSA",)
ALGORITHMS = HMAC_ALGS + RSA_ALGS + EC_ALGS + OKP_ALGS
ASYMMETRIC_ALGS = RSA_ALGS + EC_ALGS + OKP_ALGS

DEFAULT_PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics")
_KID_RE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SOURCES = ("secret_env", "secret_file", "public_key_file", "jwks_file")
_INLINE = {
    "secret": "inline secrets are not allowed; name an environment variable "
              "(secret_env) or a file (secret_file) instead",
    "key": "inline keys are not allowed; use secret_env, secret_file, public_key_file "
           "or jwks_file",
    "private_key": "inline private keys are not allowed; use private_key_file",
    "public_key": "inline keys are not allowed; use public_key_file",
}


@dataclass(frozen=True, slots=True)
class KeySpec:
    """Where one configured key lives; nothing secret is held here."""

    path: str  # "auth.keys[0]", used in error messages
    kid: str | None
    alg: str | None  # None only for a jwks_file entry whose JWKs carry their own alg
    secret_env: str | None = None
    secret_file: str | None = None
    public_key_file: str | None = None
    jwks_file: str | None = None
    private_key_file: str | None = None

    @property
    def symmetric(self) -> bool:
        return self.alg in HMAC_ALGS

    @property
    def can_sign(self) -> bool:
        return self.symmetric or self.private_key_file is not None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    enabled: bool = False
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 30.0
    public_paths: tuple[str, ...] = DEFAULT_PUBLIC_PATHS
    cache_size: int = 10_000
    keys: tuple[KeySpec, ...] = ()


def _parse_key(raw: object, path: str) -> KeySpec:

    s = Section(raw, path)
    for name, why in _INLINE.items():
        if name in s.data:
            raise ConfigError(f"{path}.{name}: {why}")
    sources = [k for k in _SOURCES if s.data.get(k) is not None]
    if len(sources) != 1:
        found = f"got {', '.join(sources)}" if sources else "got none"
        raise ConfigError(f"{path}: needs exactly one of {', '.join(_SOURCES)} ({found})")
    source = sources[0]
    jwks = source == "jwks_file"
    kid = s.text("kid", required=not jwks)
    if kid is not None and not _KID_RE.match(kid):
        raise ConfigError(f"{path}.kid: use 1-128 letters, digits and ._:/+=-, got {kid!r}")
    alg = s.text("alg", required=not jwks, choices=ALGORITHMS)
    if jwks and kid is not None:
        raise ConfigError(f"{path}.kid: a jwks_file entry takes its kids from the file")
    secret_env = s.text("secret_env")
    if secret_env is not None and not _ENV_RE.match(secret_env):
        raise ConfigError(f"{path}.secret_env: must be an environment variable name, "
                          f"got {secret_env!r}")
    spec = KeySpec(path=path, kid=kid, alg=alg, secret_env=secret_env,
                   secret_file=s.text("secret_file"),
                   public_key_file=s.text("public_key_file"),
                   jwks_file=s.text("jwks_file"),
                   private_key_file=s.text("private_key_file"))
    s.done()
    hmac = alg in HMAC_ALGS
    if source in ("secret_env", "secret_file") and not hmac:
        raise ConfigError(f"{path}.{source}: only for HMAC keys (HS256/HS384/HS512); "
                          f"an {alg} key needs public_key_file or jwks_file")
    if source in ("public_key_file", "jwks_file") and hmac:
        raise ConfigError(f"{path}.{source}: an {alg} key is a shared secret; "
                          f"use secret_env or secret_file")
    if spec.private_key_file is not None and source != "public_key_file":
        raise ConfigError(f"{path}.private_key_file: only allowed next to public_key_file")
    return spec


def _public_paths(s: Section) -> tuple[str, ...]:

    if s.get("public_paths") is None:
        return DEFAULT_PUBLIC_PATHS
    out: list[str] = []
    for i, p in enumerate(s.items("public_paths")):
        if not isinstance(p, str) or not p.startswith("/"):
            raise ConfigError(f"{s.path}.public_paths[{i}]: must be a path "
                              f"starting with '/'")
        out.append(p)
    return tuple(out)


def parse_auth(raw: object, path: str = "auth") -> AuthConfig:
    """Check the ``auth:`` mapping; raises hub.config.kit.ConfigError naming the key."""

    s = Section(raw, path)
    leeway = s.number("leeway_s", 30.0, lo=0.0, exclusive_lo=False)
    if leeway > 3600:
        raise ConfigError(f"{path}.leeway_s: must be <= 3600, got {leeway}")
    keys: list[KeySpec] = []
    kids: set[str] = set()
    for i, item in enumerate(s.items("keys")):
        spec = _parse_key(item, f"{path}.keys[{i}]")
        if spec.kid is not None:
            if spec.kid in kids:
                raise ConfigError(f"{spec.path}.kid: duplicate kid {spec.kid!r}")
            kids.add(spec.kid)
        keys.append(spec)
    cfg = AuthConfig(enabled=s.flag("enabled", False),
                     audience=s.text("audience"),
                     issuer=s.text("issuer"),
                     leeway_s=leeway,
                     public_paths=_public_paths(s),
                     cache_size=s.integer("cache_size", 10_000, lo=0, hi=10_000_000),
                     keys=tuple(keys))
    s.done()
    if cfg.enabled and not cfg.keys:
        raise ConfigError(f"{path}.keys: at least one key is required when "
                          f"{path}.enabled is true")
    return cfg
