"""A real redis-server (Debian's package) for tests: a free loopback port, no disk, by PID."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from tests.support.procs import Proc, free_port


def redis_server_bin() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server is not installed (scripts/test.sh installs it "
                           "with apt-get)")
    return path


def _ping(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` on 127.0.0.1:<free port>; ``stop()`` / ``kill()`` then ``start()``
    again on the same port (a restart, as after an outage). Nothing is saved to disk."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> RedisServer:
        argv = [redis_server_bin(), "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no", "--protected-mode", "yes",
                "--dir", str(self.workdir)]
        self.proc = Proc(argv, self.workdir / f"redis-{self.port}.log")
        self.proc.start()
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if not self.proc.alive():
                raise RuntimeError(f"redis-server exited; see {self.proc.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on {self.port} not ready after {timeout}s")
            time.sleep(0.05)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            if self.proc.proc is not None:
                self.proc.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
