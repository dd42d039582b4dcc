"""spokehub-agent: reports a GPU box's workers and capacity to the hub."""

__version__ = "0.1.0"
