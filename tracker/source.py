"""One source session: open, read one chunk a step, back off, close, and open again.

Every source of the daemon is a line that comes and goes: the GPS (a serial device, a pty, a
pyserial URL, `i2c:`, `gpsd://`), each `[[inputs]]` stream (TCP, UDP, serial) and each sensor
link (BLE, ANT+, I2C, simulated). What they share runs here, once; each keeps only what is its
own: how to open, how to read one chunk, what to do with what it read.

`Session.step()` is one unit of `tracker/worker.py`'s `run_loop` (its clock, its heartbeat,
its stop event and its error boundary):

- no line: open it, unless the backoff says to wait (then the wait is the step's delay, so the
  loop's heartbeat stays fresh through a long outage);
- a line: read one chunk (the read blocks at most its own timeout) and hand it to `got` with
  its arrival time, taken from the loop's clock **after** the read returns: a sentence that
  ends an idle wait is stamped when it came, not when the wait began (docs/boats.md);
- a read that fails is a lost line: closed at once (`ended` runs first, to complete what was
  pending), and opened again at once; opens that fail wait as `RetryPolicy` (tracker/retry.py)
  says: full jitter, doubling from `base_s` to `cap_s`. The policy is reset by a good read (one
  that returned something), not by an open: a line that opens and drops at once backs off too.

An outage is one WARNING line when it starts ("not available" or "lost") and one INFO line when
the line is back. The counters (`connects`, `attempts`) and the state and reason a status page
shows are written into the source's own status object (`Status`).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from tracker.retry import RetryPolicy
from tracker.worker import run_loop

P = TypeVar("P")  # an open line: a port, a socket, a link
T = TypeVar("T")  # what one read returns: bytes, readings


class Status(Protocol):
    """What a session writes into its source's status: `state` is "connecting" (never open
    yet), the `up` word ("open", "connected"), "lost" or "stopped"; `error` the outage's
    reason."""

    state: str
    connects: int
    error: str | None


@dataclass
class LineStatus:
    """A `Status` for a source that has no status record of its own (the GPS)."""

    state: str = "connecting"
    connects: int = 0
    error: str | None = None


def reason(e: BaseException) -> str:
    """The cause in a few words: pyserial repeats the device path twice in its messages."""
    errno = getattr(e, "errno", None)
    if isinstance(errno, int):
        return os.strerror(errno)
    return str(e).splitlines()[0] if str(e) else type(e).__name__


class Session(Generic[P, T]):
    """One source's line (see the module docstring). Run `run(stop)` in the source's thread,
    or drive `step()` directly."""

    def __init__(
        self,
        who: str,
        *,
        open: Callable[[], P],
        read: Callable[[P], T],
        got: Callable[[T, float], object],
        close: Callable[[P], object],
        status: Status,
        log: logging.Logger,
        retry: RetryPolicy,
        ended: Callable[[float], object] | None = None,
        opened: str = "open",
        up: str = "open",
        expected: tuple[type[BaseException], ...] = (OSError, ValueError),
        why: Callable[[BaseException], str] = reason,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.who = who
        self.status = status
        self.retry = retry
        self.attempts = 0  # tries to open, successful or not
        self.tried = threading.Event()  # set once the first try to open is over
        self.clock = clock
        self._open, self._read, self._got, self._close = open, read, got, close
        self._ended = ended
        self._log = log
        self._opened, self._up = opened, up
        self._expected = expected
        self._why = why
        self._rand = rand
        self._line: P | None = None
        self._next_try = 0.0
        self._outage: float | None = None  # when the current outage started
        self._good = False  # a read returned something since the line was opened
        self._stop: threading.Event | None = None  # set by run(): a failure while stopping is quiet

    def run(
        self, name: str, stop: threading.Event, beat: Callable[[float], object] | None = None
    ) -> None:
        """The source's thread: `step()` in the worker loop until `stop`, then close."""
        self._stop = stop
        try:
            run_loop(name, self.step, stop, beat=beat, clock=self.clock, error_wait_s=1.0)
        finally:
            self.close()
            self.status.state = "stopped"

    def step(self) -> float:
        """Open the line or read one chunk from it; the wait before the next step."""
        if self._line is None:
            return self._connect()
        line = self._line
        try:
            chunk = self._read(line)
        except self._expected as e:
            self._lost(self._why(e))
            return 0.0
        except BaseException:  # a bug: the line is closed, the worker loop logs it
            self._lost(None)
            raise
        now = self.clock()  # the arrival: after the read returned, never before it waited
        if chunk and not self._good:
            self._good = True
            self.retry = self.retry.succeeded()
        self._got(chunk, now)
        return 0.0

    def close(self) -> None:
        """Close the line if it is open (what was pending is completed first)."""
        line, self._line = self._line, None
        if line is None:
            return
        if self._ended is not None:
            self._ended(self.clock())
        try:
            self._close(line)
        except Exception as e:  # it is gone either way
            self._log.debug("%s: close failed: %s", self.who, e)

    def _connect(self) -> float:
        wait = self._next_try - self.clock()
        if wait > 0:
            return wait
        self.attempts += 1
        st = self.status
        try:
            self._line = self._open()
        except self._expected as e:
            st.error = self._why(e)
            st.state = "lost" if st.connects else "connecting"
            if self._outage is None and not self._stopping():
                self._outage = self.clock()
                self._log.warning(
                    "%s not available (%s); retrying every %g s at most until it is back",
                    self.who, st.error, self.retry.cap_s,
                )  # fmt: skip
            return self._back_off()
        finally:
            self.tried.set()
        st.connects += 1
        st.state, st.error = self._up, None
        self._good = False
        if self._outage is None:
            self._log.info("%s %s", self.who, self._opened)
        else:
            self._log.info("%s back after %.0f s", self.who, self.clock() - self._outage)
        self._outage = None
        return 0.0

    def _lost(self, why: str | None) -> None:
        """The line failed while open: close it; reconnect at once after good reads, else
        after the backoff (a line that opens and drops at once must not spin)."""
        st = self.status
        st.state = "lost"
        if why is not None:
            st.error = why
            if not self._stopping():
                self._log.warning("%s lost (%s); reconnecting", self.who, why)
        self._outage = self.clock()
        self.close()
        if not self._good:
            self._back_off()

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _back_off(self) -> float:
        self.retry = self.retry.failed(rand=self._rand)
        self._next_try = self.clock() + self.retry.delay_s
        return self.retry.delay_s
