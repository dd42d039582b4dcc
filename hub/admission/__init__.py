"""Per-tenant admission control: rate limits, bounded queues, request caps, and the
hub-side queue where requests wait for a free worker slot, in priority-class order
and fair between tenants by tokens (``priority.py``, ``fair_order.py``,
``worker_queue.py``). Pure decisions over counters and clocks; it must not import
routing, forwarding or the fleet."""
