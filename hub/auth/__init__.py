"""Bearer-token (JWT) authentication and per-tenant authorization."""
