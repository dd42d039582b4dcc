"""Per-tenant admission control: rate limits, bounded queues, request caps."""
