"""What operators read: Prometheus metrics and the one JSON log line per request.
It reads the per-request record and the fleet; nothing on the request path depends
on it except the final ``observe``/``log_call`` at the API layer."""
