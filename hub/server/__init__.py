"""The process: the aiohttp app and its resources (started in order, closed in reverse),
connection guards against slow or malformed clients, signals, reload and graceful
shutdown. It builds the app from ``hub.api`` and the live state in ``hub.runtime``;
nothing below it imports it."""
