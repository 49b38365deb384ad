"""Sensor time: monotonic arrival times converted to GPS UTC.

A Pi without a real-time clock may boot with a system clock years off, so sensor readings are
never stamped with `time.time()`. Each reading is stamped with `time.monotonic()` when it
arrives, and converted with the offset the GPS reader keeps (`GpsReader.clock_offset`: GPS UTC
minus monotonic, from the newest fix).

That offset is measured when a fix is handed over, a little after the epoch it describes (the
sentences take time on the wire), so each measurement is a slight underestimate. The clock uses
the largest offset seen over the last `WINDOW_S` seconds: the measurement with the least delay.
A GPS time jump forward is taken at once, and so is a jump back of more than `JUMP_S`.

Readings that arrive before the first fix are held (at most `max_held`, the oldest dropped and
counted beyond that) and converted as soon as the offset is known: monotonic time is continuous,
so an offset learned later is as right for them as for new ones.

Thread-safe: every sensor thread converts through the one clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tracker.fix import Sample

log = logging.getLogger(__name__)

WINDOW_S = 30.0
JUMP_S = 2.0  # a new offset this much below the window's maximum is a time step, not delay
MAX_HELD = 4 * 3 * 600  # ten minutes of three kinds at 4 Hz before the first fix


@dataclass(frozen=True, slots=True)
class Reading:
    """One value as it arrived: monotonic time, kind (`hr`, `cad`, `pwr`), value, sensor name."""

    mono: float
    kind: str
    value: float
    sensor: str = ""


class SensorClock:
    def __init__(
        self,
        offset: Callable[[], float | None],
        *,
        max_held: int = MAX_HELD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._offset = offset
        self._clock = clock
        self._lock = threading.Lock()
        self._held: deque[Reading] = deque()
        self._max_held = max_held
        self._seen: deque[tuple[float, float]] = deque()  # (monotonic, offset), newest last
        self.dropped = 0

    @property
    def held(self) -> int:
        return len(self._held)

    def current_offset(self) -> float | None:
        """The offset to use now (windowed maximum), or None before the first fix."""
        with self._lock:
            return self._current()

    def _current(self) -> float | None:
        now = self._clock()
        offset = self._offset()
        if offset is not None and (not self._seen or self._seen[-1][1] != offset):
            if self._seen and self._seen[0][1] - offset > JUMP_S:
                self._seen.clear()  # GPS time stepped back (a receiver reset): follow it now
            while self._seen and self._seen[-1][1] <= offset:
                self._seen.pop()  # a larger offset makes the smaller ones before it useless
            self._seen.append((now, offset))
        while len(self._seen) > 1 and now - self._seen[0][0] > WINDOW_S:
            self._seen.popleft()
        return self._seen[0][1] if self._seen else None

    def to_gps(self, mono: float) -> float | None:
        offset = self.current_offset()
        return None if offset is None else mono + offset

    def convert(self, readings: list[Reading]) -> list[Sample]:
        """Samples in GPS UTC for `readings` and any held ones; holds them all before a fix."""
        with self._lock:
            offset = self._current()
            if offset is None:
                self._held.extend(readings)
                overflow = len(self._held) - self._max_held
                if overflow > 0:
                    for _ in range(overflow):
                        self._held.popleft()
                    if self.dropped == 0:
                        log.warning(
                            "no GPS fix yet: holding at most %d sensor readings, dropping the "
                            "oldest", self._max_held,
                        )  # fmt: skip
                    self.dropped += overflow
                return []
            todo = [*self._held, *readings] if self._held else readings
            self._held.clear()
        return [Sample(r.mono + offset, r.kind, r.value, r.sensor) for r in todo]
