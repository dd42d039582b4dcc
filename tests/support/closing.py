"""SDK clients (openai, anthropic, ollama: httpx underneath) closed after the test that
made them, so their pooled sockets are closed there and then instead of reaching the
garbage collector in some later test (the suite fails on ResourceWarning)."""

from __future__ import annotations

from typing import Protocol, TypeVar


class _Closeable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closeable)

_open: list[_Closeable] = []


def closing(client: C) -> C:
    """Return ``client``, to be closed when the current test ends."""
    _open.append(client)
    return client


def close_all() -> None:
    while _open:
        _open.pop().close()
