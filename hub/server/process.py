"""Run the hub on uvloop: SIGHUP reloads the config, SIGTERM/SIGINT drain and exit 0.

As one of several processes on one port (``spokehub serve --processes N``) it binds
with SO_REUSEPORT, names itself in an ``X-Spokehub-Process`` response header and may
also listen on a port of its own, so a scrape of /metrics can reach each process."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import uvloop
from aiohttp import web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError

from hub.api.admin import reload_config
from hub.config.schema import Config, ConfigError
from hub.errors import error_response
from hub.runtime.keys import HUB
from hub.server.app import build_app
from hub.server.conn_guard import ConnectionGuard

log = logging.getLogger("spokehub")

KEEPALIVE_S = 75.0
CANCEL_WAIT_S = 2.0  # after the grace period: for cancelled handlers to end their streams
HEADER_TIMEOUT_S = 10.0  # a new connection must send a complete request head by then


_aiohttp_handle_error = web_protocol.RequestHandler.handle_error


def _handle_error(self: web_protocol.RequestHandler, request: web.BaseRequest,
                  status: int = 500, exc: BaseException | None = None,
                  message: str | None = None) -> web.StreamResponse:
    """A request head aiohttp cannot parse: answer OpenAI-style JSON that quotes nothing
    back (aiohttp's text answer echoes up to 100 bytes of the offending line, e.g. the
    start of an over-long bearer token) and log one line without it. aiohttp has no
    public hook for this answer; the suite's server-limit tests pin the behaviour."""
    if not isinstance(exc, HttpProcessingError) or not 400 <= status < 500:
        return _aiohttp_handle_error(self, request, status, exc, message)
    log.info("rejected a malformed request: %s (HTTP %s)", type(exc).__name__, status)
    resp = error_response(status, {"error": {
        "message": f"Malformed HTTP request ({type(exc).__name__})",
        "type": "invalid_request_error", "param": None, "code": "malformed_request"}})
    resp.force_close()
    return resp


web_protocol.RequestHandler.handle_error = _handle_error  # type: ignore[method-assign]


def _on_sighup(app: web.Application) -> None:
    try:
        reload_config(app[HUB])
    except ConfigError as exc:
        log.error("config reload rejected, keeping the old config: %s", exc)


PROCESS_HEADER = "X-Spokehub-Process"


@dataclass(frozen=True, slots=True)
class ProcessRole:
    """This process among the supervisor's children (``slot`` None: the only one)."""

    slot: int | None = None
    own_ports: tuple[int, ...] = ()

    @property
    def shared_port(self) -> bool:
        return self.slot is not None


def _tag_responses(app: web.Application, slot: int) -> None:
    value = str(slot)

    async def tag(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers[PROCESS_HEADER] = value

    app.on_response_prepare.append(tag)


async def serve(config: Config, config_path: str | None = None,
                role: ProcessRole = ProcessRole()) -> None:
    app = build_app(config, config_path)
    if role.slot is not None:
        _tag_responses(app, role.slot)
    # shutdown_timeout: aiohttp waits it twice (before and after cancelling handlers), so
    # the grace period is run below (Proxy.drain) and aiohttp only gets what is left.
    # keepalive_timeout: idle client connections (aiohttp's default is an hour).
    # auto_decompress off: a compressed body is not JSON to us (400), never a zip bomb.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=CANCEL_WAIT_S,
                           keepalive_timeout=KEEPALIVE_S, auto_decompress=False,
                           max_line_size=16384, max_field_size=16384, max_headers=128)
    await runner.setup()
    assert runner.server is not None
    guard = ConnectionGuard(runner.server, HEADER_TIMEOUT_S)
    guard_task = asyncio.create_task(guard.run(), name="spokehub-connection-guard")
    site = web.TCPSite(runner, config.listen.host, config.listen.port, backlog=1024,
                       reuse_address=True, reuse_port=role.shared_port or None)
    await site.start()
    own_sites = [web.TCPSite(runner, config.listen.host, port, backlog=128,
                             reuse_address=True) for port in role.own_ports]
    for own in own_sites:
        await own.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _on_sighup, app)
    who = "" if role.slot is None else f", process {role.slot}"
    for addr in runner.addresses:
        log.warning("spokehub listening on http://%s:%s (%d workers%s)", addr[0], addr[1],
                    len(config.workers), who)
    try:
        await stop.wait()
    finally:
        hub = app[HUB]
        in_flight = sum(w.in_flight for w in hub.registry)
        log.warning("spokehub shutting down: no new connections, waiting up to %.0fs for "
                    "%d in-flight requests", hub.config.shutdown_grace_s, in_flight)
        guard_task.cancel()
        await site.stop()  # refuse new connections now
        for own in own_sites:
            await own.stop()
        runner.server.pre_shutdown()  # and close idle keep-alive ones
        await hub.proxy.drain(hub.config.shutdown_grace_s)
        await runner.cleanup()
        log.warning("spokehub stopped")


def run(config: Config, config_path: str | None = None,
        role: ProcessRole = ProcessRole()) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config, config_path, role))
