"""Adversarial fake upstreams on loopback: raw sockets, one thread per connection.

A :class:`RawUpstream` hands each accepted connection to a script (a plain function
run in its own thread), which reads requests and writes whatever bytes it likes:
answers, half answers, garbage, or a close at the worst moment. Every request read
is recorded with the index of the connection it came on, so tests can count how
many times the worker saw a prompt. Blocking sockets in threads, not the test's
event loop, so a test can hold the loop still while the fake acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


def answer(body: bytes, *, extra_headers: bytes = b"", status: bytes = b"200 OK") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n" % len(body)
            + extra_headers + b"\r\n" + body)


@dataclass
class Request:
    conn: int  # index of the connection it came on (0 = first accepted)
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class RawConn:
    """One accepted connection, as the script sees it."""

    def __init__(self, server: RawUpstream, sock: socket.socket, index: int) -> None:
        self.server = server
        self.sock = sock
        self.index = index
        self._buf = b""

    def read_request(self, timeout: float = 30.0) -> Request | None:
        """The next whole request (recorded), or None if the client closed first."""
        self.sock.settimeout(timeout)
        while b"\r\n\r\n" not in self._buf:
            if not self._recv():
                return None
        head, _, self._buf = self._buf.partition(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self._buf) < length:
            if not self._recv():
                return None
        body, self._buf = self._buf[:length], self._buf[length:]
        request = Request(self.index, method, target, headers, body)
        self.server.record(request)
        return request

    def wait_closed(self, timeout: float = 30.0) -> bool:
        """Wait for the client to close: True on EOF, False if it sent bytes instead."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return True

    def _recv(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return False
        self._buf += data
        return bool(data)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        """An orderly close (FIN)."""
        self.sock.close()

    def reset(self) -> None:
        """An abortive close (RST), as a killed process with unread bytes would do."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


Script = Callable[[RawConn], None]


@dataclass
class RawUpstream:
    """``script(conn)`` runs for every accepted connection; it may also be a list of
    scripts, one per connection in order (the last one repeats)."""

    script: Script | list[Script]
    requests: list[Request] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    port: int = 0
    accepted: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so close() is noticed by the accepting thread
        self.port = self._listener.getsockname()[1]
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def bodies(self) -> list[bytes]:
        with self._lock:
            return [r.body for r in self.requests]

    def _accept(self) -> None:
        while not self._stop:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                index = self.accepted
                self.accepted += 1
                self._conns.append(sock)
            scripts = self.script if isinstance(self.script, list) else [self.script]
            script = scripts[min(index, len(scripts) - 1)]
            thread = threading.Thread(target=self._run, args=(script, sock, index), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, script: Script, sock: socket.socket, index: int) -> None:
        try:
            script(RawConn(self, sock, index))
        except OSError:
            pass  # the client went away: part of the game
        except BaseException as exc:  # a broken script must fail the test, not hang it
            self.errors.append(exc)
        finally:
            sock.close()

    def close(self) -> None:
        self._stop = True
        self._acceptor.join(timeout=10)
        self._listener.close()
        with self._lock:
            for sock in self._conns:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=10)
        assert not self.errors, self.errors


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (letting the loop run) until ``predicate()`` holds; a generous deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def answer_forever(conn: RawConn, reply: bytes = OK) -> None:
    """A well-behaved keep-alive worker."""
    while conn.read_request() is not None:
        conn.send(reply)
