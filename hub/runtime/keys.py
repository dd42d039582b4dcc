"""Typed application state: read as ``app[HUB]``, no module globals."""

from __future__ import annotations

from aiohttp import web

from hub.runtime.hub import Hub

HUB = web.AppKey("hub", Hub)
