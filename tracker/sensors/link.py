"""What a sensor link is: the contract the links (ble, ant, i2c, simulated) implement and the
manager runs, and what a link is given.

Its own module so the links need not import the manager (which imports them): a link module
imports this, the clock and its config, never tracker.sensors.manager.

A link opens, polls and closes; `poll` blocks at most its timeout and raises SensorError when
the link is lost (MissingLibrary when the library its type needs is not installed). A link
writes its own counters (`malformed`) into its SensorStatus; the manager writes the rest.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tracker.sensors.clock import Reading, SensorClock


class SensorError(Exception):
    """A link could not be opened or was lost. The message is the reason, in a few words."""


class MissingLibrary(SensorError):
    """The library this sensor type needs is not installed (an optional extra)."""


@dataclass
class SensorStatus:
    """One sensor's state as other threads see it. Counters only grow."""

    label: str
    type: str
    state: str = "connecting"  # connecting, connected, lost, unavailable, stopped
    heartbeat: float = field(default_factory=time.monotonic)
    connects: int = 0
    readings: int = 0
    malformed: int = 0  # packets the decoders refused
    error: str | None = None  # the current outage's reason
    last: dict[str, float] = field(default_factory=dict)  # kind -> last value

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "type": self.type,
            "state": self.state,
            "heartbeat_age_s": round(time.monotonic() - self.heartbeat, 1),
            "connects": self.connects,
            "readings": self.readings,
            "malformed": self.malformed,
            "error": self.error,
            "last": dict(self.last),
        }


class Pacer:
    """Polling at `rate_hz` without drift: `due()` waits (on `stop`, at most `timeout`) for the
    next slot and returns its monotonic time, or None when the slot has not come yet."""

    def __init__(self, rate_hz: float, stop: threading.Event) -> None:
        self.period = 1 / rate_hz
        self.stop = stop
        self.next = 0.0

    def start(self) -> None:
        self.next = time.monotonic()

    def due(self, timeout: float) -> float | None:
        wait = self.next - time.monotonic()
        if wait > 0:
            self.stop.wait(min(wait, timeout))
            if time.monotonic() < self.next:
                return None
        now = time.monotonic()
        self.next = max(self.next + self.period, now)  # a late poll does not make a burst
        return now


class Link(Protocol):
    """A blocking sensor link (i2c, ant, simulated). `poll` raises SensorError when lost."""

    def open(self) -> None: ...
    def poll(self, timeout: float) -> list[Reading]: ...
    def close(self) -> None: ...


class AsyncLink(Protocol):
    """An asyncio sensor link (ble). Same contract as Link."""

    async def open(self) -> None: ...
    async def poll(self, timeout: float) -> list[Reading]: ...
    async def close(self) -> None: ...


@dataclass
class LinkContext:
    """What a link may need besides its config: its status, the clock, a place to remember."""

    status: SensorStatus
    clock: SensorClock
    stop: threading.Event = field(default_factory=threading.Event)  # wait on this, never sleep
    state_dir: Path | None = None
