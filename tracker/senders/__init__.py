"""Senders: one thread per backend, delivering the store to a live-tracking service.

`base` holds the loop every sender runs (backoff, status, permanent failures); `transport` the
error family and secrets, `http` the HTTP connection (standard library), `retry` the backoff
policy; each protocol is one module (`mapmytracks`, `gpsr`, `traccar`, `mqtt`), listed in
tracker/backends.py.

Threads: a sender opens its own Store in its own thread and reads only from it; it never touches
the GPS or the recorder, so a slow or dead network cannot hold up ingest. It stops when the
shared stop event is set; every wait is on that event, and every blocking network call has a
timeout, so shutdown waits at most one request.
"""
