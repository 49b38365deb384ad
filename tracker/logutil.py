"""Logging helpers shared by every thread: rate-limited warnings for noisy input."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """Logs a kind of event at most once per `interval_s`, with how many were held back.

    Garbage on a serial line can arrive hundreds of times a second; the journal should get one
    line a minute that says how many, not hundreds. Thread-safe enough for counting (a lost
    increment under a race only changes a log count). `clock` is injectable for tests.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(
        self, level: int, kind: str, msg: str, *args: object, exc_info: bool = False
    ) -> bool:
        """Log `msg` unless `kind` was logged within the interval; returns whether it logged.
        `exc_info`: with the traceback of the exception being handled."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        if held:
            msg = msg + " (%d more like this since the last report)"
            args = (*args, held)
        self._logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, kind: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, kind, msg, *args)

    def error(self, kind: str, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, kind, msg, *args)
