"""Pacing: epochs written out to any `write(bytes)` in real time, faster, or as fast as
possible (`run()`), and the `Summary` of what went out."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tracker.logutil import RateLimitedLog
from tracker.simulate.faults import FAULT_KINDS, LINE_FAULTS
from tracker.simulate.receiver import Epoch

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Summary:
    """What a run wrote: epochs, fixes, bytes, and faults by kind.

    `faults` counts occurrences for the line faults and runs (not epochs) for outage and
    silence; `outage_epochs` / `silent_epochs` count the epochs those runs covered.
    """

    epochs: int = 0
    valid: int = 0
    fixes: int = 0
    bytes: int = 0
    outage_epochs: int = 0
    silent_epochs: int = 0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    _outage: bool = field(default=False, repr=False)
    _silent: bool = field(default=False, repr=False)

    def add(self, epoch: Epoch) -> None:
        self.epochs += 1
        self.valid += epoch.valid
        self.fixes += epoch.fix
        self.bytes += len(epoch.data)
        outage, silent = "outage" in epoch.faults, "silence" in epoch.faults
        for kind in epoch.faults:
            if kind in LINE_FAULTS:
                self.faults[kind] += 1
        self.faults["outage"] += outage and not self._outage
        self.faults["silence"] += silent and not self._silent
        self.outage_epochs += outage
        self.silent_epochs += silent
        self._outage, self._silent = outage, silent

    def format(self) -> str:
        kinds = ", ".join(
            f"{k} {n}"
            + (f" ({self.outage_epochs} epochs)" if k == "outage" and n else "")
            + (f" ({self.silent_epochs} epochs)" if k == "silence" and n else "")
            for k, n in self.faults.items()
        )
        return (
            f"{self.epochs} epochs, {self.valid} valid fixes ({self.fixes} with a fix), "
            f"{self.bytes} bytes; faults: {kinds}"
        )


def run(
    epochs: Iterable[Epoch],
    write: Callable[[bytes], object],
    *,
    realtime: bool = True,
    speedup: float = 1.0,
    stop: threading.Event | None = None,
    progress: Callable[[Epoch], object] | None = None,
) -> Summary:
    """Write each epoch's data at its offset (divided by `speedup`); return what was written.

    The first epoch goes out at once. Waits use `stop.wait()`, so setting `stop` ends the run
    within a moment, before the next write. `realtime=False` writes as fast as `write` accepts.
    A writer that falls more than a second behind (a slow serial line) is re-anchored instead
    of bursting to catch up, with a warning. `progress(epoch)` is called after each epoch.
    Exceptions from `write` propagate. Silent epochs write nothing but are counted.
    """
    if not speedup > 0:
        raise ValueError("speedup must be positive")
    waiter = stop or threading.Event()
    ratelog = RateLimitedLog(log, interval_s=60.0)
    summary = Summary()
    anchor = time.monotonic()
    first: float | None = None
    for epoch in epochs:
        if waiter.is_set():
            break
        if realtime:
            if first is None:
                first = epoch.offset_s
            due = anchor + (epoch.offset_s - first) / speedup
            delay = due - time.monotonic()
            if delay > 0:
                if waiter.wait(delay):
                    break
            elif delay < -1.0:
                anchor -= delay
                ratelog.warning(
                    "behind", "output is %.1f s behind the epochs: is the line too slow?", -delay
                )
        if epoch.data:
            write(epoch.data)
        summary.add(epoch)
        if progress is not None:
            progress(epoch)
    return summary


# --- CLI ----------------------------------------------------------------------------------------
