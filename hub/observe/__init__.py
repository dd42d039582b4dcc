"""What operators read: Prometheus metrics, the one JSON log line per request, token
accounting, trace context and the status page's 15-minute timeline.

It reads the per-request record and the fleet. The request path calls into it at a
few fixed points only: the trace context when a request arrives (``trace.py``), the
relay's tap and the final read of a worker's token counts (``usage.py``), and the
final ``observe``/``log_call``/``finish`` at the API layer. Span export
(``otlp.py``) is imported only when configured."""
