"""Per-tenant admission control: rate limits, bounded queues, request caps, and the
hub-side queue where requests wait for a free worker slot. Pure decisions over
counters and clocks; it must not import routing, forwarding or the fleet."""
