"""Typed application state: read as ``app[REGISTRY]``, no module globals."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from hub.config import Config
from hub.metrics import Metrics
from hub.proxy import Proxy
from hub.registry import Registry

CONFIG = web.AppKey("config", Config)
REGISTRY = web.AppKey("registry", Registry)
METRICS = web.AppKey("metrics", Metrics)
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
PROXY = web.AppKey("proxy", Proxy)
