"""The operator status page: ``GET /status`` (``/`` redirects there), its static files,
and ``GET /admin/timeline`` (admin scope), the last 15 minutes of traffic it plots.

The page is plain HTML, CSS and JavaScript from ``hub/static`` with no build step
and nothing loaded from elsewhere, so it works on air-gapped hosts. It is served
without a token: it holds no data. Its script reads ``GET /admin/workers`` and
``GET /admin/timeline`` (requests, errors by kind, time to first token and tokens per
10-second bucket, and per worker token rates and prompt cache hits; see
``hub.observe.timeline``), draws the charts as inline SVG, and calls drain / undrain
with an admin token the operator types in, which the page keeps in ``sessionStorage``
and sends as ``Authorization: Bearer``.

Every response carries ``Content-Security-Policy: default-src 'self'`` (plus
directives that forbid framing and ``<base>`` tricks), so the page runs only
same-origin scripts and styles and talks only to this hub.

Caching: the files are read once, at startup. The HTML is ``no-cache`` (always
revalidated with its ETag, so an upgraded hub is picked up at once) and names the
CSS and JS with a content hash, ``static/status.js?v=<hash>``; a request carrying
the current hash is cached for a year as immutable, any other is ``no-cache``.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from hub.errors import NotFound
from hub.runtime.keys import HUB

CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
PAGE = "status.html"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    version: str  # content hash: the ETag, and the ?v= of fingerprinted URLs

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def _asset(body: bytes, content_type: str) -> Asset:
    return Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16])


def load_assets() -> dict[str, Asset]:
    """Every file of ``hub/static`` by name, the page's asset URLs fingerprinted."""
    assets: dict[str, Asset] = {}
    for entry in resources.files("hub").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            assets[entry.name] = _asset(entry.read_bytes(), _TYPES[suffix])
    page = assets[PAGE].body.decode()
    for name, asset in assets.items():
        page = page.replace(f'"static/{name}"', f'"static/{name}?v={asset.version}"')
    assets[PAGE] = _asset(page.encode(), _TYPES[".html"])
    return assets


def _respond(request: web.Request, asset: Asset, cache_control: str) -> web.Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": asset.etag}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


def add_status_routes(app: web.Application) -> None:
    assets = load_assets()

    async def index(request: web.Request) -> web.Response:
        # Relative, so the page also works behind a proxy that mounts the hub on a prefix.
        raise web.HTTPFound("status", headers={"Cache-Control": REVALIDATE})

    async def status_page(request: web.Request) -> web.Response:
        return _respond(request, assets[PAGE], REVALIDATE)

    async def static_file(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        asset = assets.get(name)
        if asset is None or name == PAGE:
            raise NotFound("No such static file")
        fresh = request.query.get("v") == asset.version
        return _respond(request, asset, IMMUTABLE if fresh else REVALIDATE)

    app.router.add_get("/", index)
    app.router.add_get("/status", status_page)
    app.router.add_get("/static/{name}", static_file)
    app.router.add_get("/admin/timeline", timeline)


async def timeline(request: web.Request) -> web.Response:
    """The status page's charts: the hub's last 15 minutes (admin scope)."""
    hub = request.app[HUB]
    hub.authorize(request.headers.get("Authorization"), "admin")
    now = asyncio.get_running_loop().time()
    return web.json_response(hub.metrics.timeline.snapshot(now),
                             headers={"Cache-Control": "no-store"})
