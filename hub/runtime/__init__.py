"""The live hub: one object that owns the current config and every long-lived part
(registry, agents, admission, verifier, proxy, metrics) and swaps settings on reload.
The API layer reads it per request; it must not import ``hub.api`` or ``hub.server``."""
