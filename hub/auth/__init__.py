"""Bearer-token (JWT) authentication and per-tenant authorization: keys, verification
with a bounded cache, principals and scopes, and token issuing. It must not import
the request path, the fleet or aiohttp."""
