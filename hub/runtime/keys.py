"""Typed application state: read as ``app[HUB]``, no module globals."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from hub.runtime.hub import Hub

HUB = web.AppKey("hub", Hub)
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
