"""The one loop every thread of the daemon runs: `while not stop: beat, step, wait`.

A thread's work is a `step()` that does one unit (read a chunk, commit a batch, send a request)
and returns how long to wait before the next. The loop around it is the same for the GPS
reader, the inputs, the sensor links (each a source session, tracker/source.py), the recorder
and every sender, so they share one policy:

- the heartbeat (what the systemd watchdog and `tracker status` read) is stamped before every
  step, from an injectable clock;
- every wait is on the shared stop event (never `time.sleep`), capped at `max_wait_s` so the
  heartbeat stays fresh, and shutdown is immediate;
- an exception that escapes a step is a bug or an unforeseen failure: it is logged at the loop
  boundary with its traceback (once a minute per kind, with a count), and the loop goes on after
  `error_wait_s`. A thread of this daemon never ends because of one bad fix, reply or packet:
  the recorder is the only writer, and a dead writer would silently stop the ride.

Tests drive `step()` directly, or inject `clock` and `wait` so nothing sleeps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tracker.logutil import RateLimitedLog

log = logging.getLogger(__name__)

ERROR_WAIT_S = 5.0  # after an unexpected error, before the next step
MAX_WAIT_S = 5.0  # the longest single wait: the heartbeat is at most this stale while idle


def run_loop(
    name: str,
    step: Callable[[], float],
    stop: threading.Event,
    *,
    beat: Callable[[float], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
    wait: Callable[[float], object] | None = None,
    error_wait_s: float = ERROR_WAIT_S,
    max_wait_s: float = MAX_WAIT_S,
    logger: logging.Logger | None = None,
) -> int:
    """Run `step` until `stop` is set; returns how many steps raised.

    `beat(now)` is called before each step (e.g. to update a component's heartbeat). `wait(s)`
    waits up to s seconds or until stop (default `stop.wait`). A step returning 0 or less runs
    again at once (after checking stop).
    """
    logger = logger or log
    pause = wait or stop.wait
    errors = RateLimitedLog(logger, 60.0, clock)
    failures = 0
    while not stop.is_set():
        if beat is not None:
            beat(clock())
        try:
            delay = step()
        except Exception as e:  # the loop boundary: log it, keep the thread
            failures += 1
            delay = _failed(errors, name, e, error_wait_s)
        if delay > 0 and not stop.is_set():
            pause(min(delay, max_wait_s))
    return failures


def _failed(errors: RateLimitedLog, name: str, e: Exception, wait_s: float) -> float:
    """Log an error that escaped a step (with its traceback, once a minute per kind); the
    wait before the next step."""
    errors.log(
        logging.ERROR, type(e).__name__,
        "%s: unexpected error, going on in %g s: %s", name, wait_s, e, exc_info=True,
    )  # fmt: skip
    return wait_s
