"""Senders: one thread per backend, delivering the store to a live-tracking service.

`base` holds the loop every sender runs (backoff, status, permanent failures) and the whole
exactly-once cycle (mark, send, settle, reconcile, narrow, quarantine); `state` the versioned
delivery state and its markers; `wire` what every protocol encodes the same way (times,
numbers, thinning); `transport` the error family and secrets, `http` the HTTP connection
(standard library), `retry` the backoff policy; each protocol is one module (`mapmytracks`,
`gpsr`, `traccar`, `mqtt`), listed in tracker/backends.py, which builds their senders.

Threads: a sender opens its own Store in its own thread and reads only from it; it never touches
the GPS or the recorder, so a slow or dead network cannot hold up ingest. It stops when the
shared stop event is set; every wait is on that event, and every blocking network call has a
timeout, so shutdown waits at most one request.
"""
