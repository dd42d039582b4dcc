"""Typed, key-checked reading of parsed YAML mappings, shared by every config section.

Each section of the hub config (auth, admission, resilience, ...) is parsed by the
module that owns it, with a :class:`Section`: values come out typed, bounds are
checked, unknown keys are errors, and every message names the full key
(``resilience.breaker.cooldown_s: must be > 0``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from hub.upstream.url import check_url as check_upstream_url


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


class Section:
    """Typed, key-checked access to one mapping of the YAML document."""

    def __init__(self, data: object, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path or 'config'}: must be a mapping")
        self.data: dict[str, Any] = data
        self.path = path
        self.seen: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key)

    def text(self, key: str, default: str | None = None, *, required: bool = False,
            choices: tuple[str, ...] | None = None) -> Any:
        value = self.get(key)
        if value is None:
            if required:
                raise ConfigError(f"{self.key(key)}: is required")
            return default
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.key(key)}: must be a non-empty string")
        if choices and value not in choices:
            raise ConfigError(f"{self.key(key)}: must be one of {', '.join(choices)}, "
                              f"got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.key(key)}: must be true or false")
        return value

    def integer(self, key: str, default: int, *, lo: int = 0, hi: int | None = None) -> int:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.key(key)}: must be an integer")
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise ConfigError(f"{self.key(key)}: must be {bound}, got {value}")
        return value

    def number(self, key: str, default: float, *, lo: float = 0.0,
              exclusive_lo: bool = True) -> float:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self.key(key)}: must be a number")
        value = float(value)
        if not math.isfinite(value) or value < lo or (exclusive_lo and value == lo):
            op = ">" if exclusive_lo else ">="
            raise ConfigError(f"{self.key(key)}: must be {op} {lo}, got {value}")
        return value

    def section(self, key: str) -> Section:
        return Section(self.get(key), self.key(key))

    def items(self, key: str) -> list[Any]:
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(f"{self.key(key)}: must be a list")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown key")


def check_url(url: str, where: str) -> str:
    """An http(s) base URL the upstream client can send to, normalised (see
    :func:`hub.upstream.url.check_url`); the error names the key, never the URL, which
    may carry credentials."""
    try:
        return check_upstream_url(url)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def read_yaml(path: Path, *, missing_ok: bool = False) -> object:
    """The parsed YAML document of ``path``; every failure is a ConfigError naming it.

    With ``missing_ok`` a missing file reads as an empty document (None).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return None
        raise ConfigError(f"{path}: cannot read: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
