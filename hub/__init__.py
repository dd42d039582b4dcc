"""spokehub: a hub-and-spoke load balancer for self-hosted LLM inference."""

__version__ = "0.1.0"
