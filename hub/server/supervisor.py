"""``spokehub serve --processes N``: N hub processes on one port, one per core.

One hub process runs on one core (one event loop). The supervisor starts N children
(``python -m hub serve --config … --child I``), each with its own uvloop, each binding
the same host:port with SO_REUSEPORT so the kernel spreads new connections over
them. It forwards SIGTERM/SIGINT (each child drains) and SIGHUP (each child reloads),
restarts a child that dies unexpectedly (with backoff), and exits when every child
has stopped.

The children share state through Redis. With ``state.backend: memory`` the
supervisor starts a private ``redis-server`` on a Unix socket in a 0700 directory
and hands the children ``state.backend: redis`` (via ``SPOKEHUB_STATE_BACKEND``)
and its ``unix://`` URL (via the variable named by ``state.url_env``): one
shared-state code path, the one that runs against a real Redis in production.

The decisions (how many processes, when to restart) are pure and tested alone;
the process handling around them is plain blocking code, as a supervisor has
nothing to do between signals and child exits.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from hub.config.schema import Config, ConfigError
from hub.state.config import BACKEND_OVERRIDE_ENV

log = logging.getLogger("spokehub.supervisor")

MAX_PROCESSES = 64
POLL_S = 0.1
REDIS_READY_S = 30.0
REDIS_STOP_S = 10.0
REDIS_SLOT = -1  # the private Redis' restart backoff, beside the children's


def parse_processes(value: str, cores: Callable[[], int] | None = None) -> int:
    """``--processes``: a count from 1 to 64, or ``auto`` (the cores this process may
    run on). Raises ValueError with a message for the command line."""
    text = value.strip().lower()
    if text == "auto":
        count = cores() if cores is not None else len(os.sched_getaffinity(0))
        return max(1, min(count, MAX_PROCESSES))
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"--processes: a number or 'auto', got {value!r}") from None
    if not 1 <= count <= MAX_PROCESSES:
        raise ValueError(f"--processes: between 1 and {MAX_PROCESSES}, got {count}")
    return count


def check_listen(config: Config, processes: int) -> None:
    """Several processes must agree on one port: port 0 (any free port) would give
    each child a different one."""
    if processes > 1 and config.listen.port == 0:
        raise ConfigError(f"listen.port: 0 (a random free port) cannot be shared by "
                          f"--processes {processes}; set a fixed port")


def check_bindable(host: str, port: int) -> None:
    """Bind host:port the way the children will (SO_REUSEPORT) and let go: a port held
    by another program is one clear error here, not children dying in a loop."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigError(f"listen.host: cannot resolve {host!r}: {exc}") from None
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                raise ConfigError(f"listen: cannot bind {addr[0]}:{port} for several "
                                  f"processes: {exc.strerror or exc} (another program "
                                  f"holds the port?)") from None


@dataclass
class RestartPolicy:
    """When to restart a child that died: capped exponential backoff per child slot,
    forgiven once the child had run for ``stable_s``. A child that exits 2 (config
    error) will fail again the same way, so the supervisor stops instead."""

    base_s: float = 0.5
    cap_s: float = 30.0
    stable_s: float = 60.0
    failures: dict[int, int] = field(default_factory=dict)

    def delay(self, slot: int, ran_s: float) -> float:
        if ran_s >= self.stable_s:
            self.failures[slot] = 0
        n = self.failures.get(slot, 0)
        self.failures[slot] = n + 1
        return float(min(self.cap_s, self.base_s * 2 ** min(n, 32)))

    @staticmethod
    def fatal(returncode: int) -> bool:
        return returncode == 2


def _die_with_parent() -> None:
    """Children and the private Redis get SIGTERM if the supervisor itself is killed
    (SIGKILL, OOM): nothing keeps serving or holding the port without it. Runs between
    fork and exec, which is safe here: the supervisor has no threads."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class PrivateRedis:
    """A ``redis-server`` reachable only through a Unix socket in a private 0700
    directory, nothing saved to disk; for the children of one supervisor."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(
                "--processes with state.backend: memory shares state through a private "
                "redis-server, which is not installed: install it (apt-get install "
                "redis-server), or run Redis yourself and set state.backend: redis")
        if self.dir is None:  # a restart keeps the directory and the socket path
            self.dir = Path(tempfile.mkdtemp(prefix="spokehub-redis-"))  # mode 0700
        argv = [binary, "--port", "0", "--unixsocket", str(self.socket_path),
                "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--loglevel", "warning"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     start_new_session=True,
                                     preexec_fn=_die_with_parent)  # noqa: PLW1509
        deadline = time.monotonic() + REDIS_READY_S
        while not self._ping():
            if self.proc.poll() is not None:
                raise ConfigError(f"the private redis-server exited with "
                                  f"{self.proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise ConfigError(f"the private redis-server was not ready after "
                                  f"{REDIS_READY_S:.0f}s")
            time.sleep(0.02)
        log.info("private redis-server (pid %d) on %s", self.proc.pid, self.socket_path)

    def died(self) -> int | None:
        """The exit code if the server has exited."""
        return None if self.proc is None else self.proc.poll()

    def _ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(str(self.socket_path))
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(REDIS_STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Child:
    slot: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None  # set while waiting out a backoff


class Supervisor:
    """Starts, watches and stops the children; ``run()`` returns the exit code."""

    def __init__(self, config: Config, config_path: str, processes: int,
                 child_port_base: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.config_path = config_path
        self.processes = processes
        self.child_port_base = child_port_base
        self.clock = clock
        self.policy = RestartPolicy()
        self.children = [Child(i) for i in range(processes)]
        self.redis: PrivateRedis | None = None
        self.env = dict(os.environ)
        self._signals: list[int] = []
        self._stopping = False
        self._fatal: int | None = None
        self._redis_retry_at: float | None = None
        self._redis_started = 0.0

    def argv(self, slot: int) -> list[str]:
        argv = [sys.executable, "-m", "hub", "serve", "--config", self.config_path,
                "--child", str(slot)]
        if self.child_port_base is not None:
            argv += ["--child-port-base", str(self.child_port_base)]
        return argv

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(self.argv(child.slot), env=self.env,
                                      stdin=subprocess.DEVNULL,
                                      preexec_fn=_die_with_parent)  # noqa: PLW1509
        child.started = self.clock()
        child.restart_at = None
        log.warning("started hub process %d (pid %d)", child.slot, child.proc.pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _forward(self, signum: int) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signum)

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                log.warning("%s: reloading the config in %d hub processes", name,
                            sum(1 for c in self.children if c.proc is not None))
            else:
                if not self._stopping:
                    log.warning("%s: stopping %d hub processes", name, self.processes)
                self._stopping = True
                for child in self.children:
                    child.restart_at = None
            self._forward(signum)

    def _reap(self) -> None:
        now = self.clock()
        for child in self.children:
            if child.proc is None or child.proc.poll() is None:
                continue
            code = child.proc.returncode
            child.proc = None
            if self._stopping:
                log.info("hub process %d exited with %d", child.slot, code)
                continue
            if RestartPolicy.fatal(code):
                log.error("hub process %d exited with %d (config error); stopping",
                          child.slot, code)
                self._fatal = code
                self._stopping = True
                self._forward(signal.SIGTERM)
                continue
            delay = self.policy.delay(child.slot, now - child.started)
            log.error("hub process %d died unexpectedly (exit %d); restarting in %.1fs",
                      child.slot, code, delay)
            child.restart_at = now + delay

    def _restart_due(self) -> None:
        now = self.clock()
        for child in self.children:
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                self._spawn(child)

    def _watch_redis(self) -> None:
        """A private Redis that died is started again on the same socket: until then
        the hub processes run on their own state, as with any Redis outage."""
        if self.redis is None or (code := self.redis.died()) is None:
            return
        now = self.clock()
        if self._redis_retry_at is None:
            delay = self.policy.delay(REDIS_SLOT, now - self._redis_started)
            log.error("the private redis-server exited with %d; starting it again in %.1fs",
                      code, delay)
            self._redis_retry_at = now + delay
        if now < self._redis_retry_at:
            return
        self._redis_retry_at = None
        self._redis_started = now
        try:
            self.redis.start()
        except ConfigError as exc:
            log.error("%s", exc)

    def _start_redis(self) -> None:
        if self.config.state.shared:
            return  # the operator's Redis, from the environment the children inherit
        self.redis = PrivateRedis()
        self.redis.start()
        self._redis_started = self.clock()
        self.env[self.config.state.url_env] = self.redis.url
        self.env[BACKEND_OVERRIDE_ENV] = "redis"

    def run(self) -> int:
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            self._start_redis()
            log.warning("spokehub supervisor (pid %d): %d hub processes on %s:%d",
                        os.getpid(), self.processes, self.config.listen.host,
                        self.config.listen.port)
            for child in self.children:  # signals that came meanwhile are forwarded below
                self._spawn(child)
            while True:
                self._handle_signals()
                self._reap()
                if self._stopping and all(c.proc is None for c in self.children):
                    break
                if not self._stopping:
                    self._restart_due()
                    self._watch_redis()
                time.sleep(POLL_S)
        finally:
            self._stopping = True
            self._forward(signal.SIGTERM)
            for child in self.children:
                if child.proc is not None:
                    child.proc.wait()
            if self.redis is not None:
                self.redis.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.warning("spokehub supervisor stopped")
        return self._fatal if self._fatal is not None else 0


def supervise(config: Config, config_path: str, processes: int,
              child_port_base: int | None = None) -> int:
    check_listen(config, processes)
    check_bindable(config.listen.host, config.listen.port)
    return Supervisor(config, config_path, processes, child_port_base).run()


def child_ports(base: int | None, slot: int) -> Sequence[int]:
    """The extra port of child ``slot`` (for per-process scrapes), if any."""
    return () if base is None else (base + slot,)
