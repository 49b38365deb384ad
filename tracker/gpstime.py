"""GPS time: the authority for every stored time, with its week roll-over corrected.

A Pi has no battery-backed clock, so after a cold boot without network its system clock is
whatever fake-hwclock saved, and every time this daemon stores comes from the receiver. GPS
counts weeks in 10 bits on the legacy navigation message, so some receivers report dates whole
1024-week eras in the past (2026 shown as 2006). That is corrected only when a trusted clock (an
NTP-synchronised system clock, a server's clock) agrees that the receiver is whole eras behind,
within seconds: never from a build date alone, so a replayed old capture stays old.

`TimeKeeper` holds the decision for one process; `ntp_synchronized`, `system_clock_if_synced`
and `server_now` are the pieces the daemon builds its `trusted_now` from. Nothing here reads or
sets the clock except through the callables it is given (tests inject them all).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import math
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

log = logging.getLogger(__name__)

#: One GPS week-number era: 1024 weeks.
ERA_S = 1024 * 7 * 86400
#: A GPS time before this (the release date) is never used to set the system clock: a
#: rolled-over receiver reports dates about 19.6 years back, far below it.
RELEASE_FLOOR = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
#: The system clock is set only when it is further than this from GPS time.
SET_CLOCK_THRESHOLD_S = 60.0
#: While no trusted clock answers, ask again at most this often (asking may start a process).
ASK_EVERY_S = 60.0
DEFAULT_TOLERANCE_S = 10.0

# adjtimex(2): return value and status bit, from <sys/timex.h>.
TIME_ERROR = 5
STA_UNSYNC = 0x0040


def rollover_eras(
    gps_time: float, trusted_now: float, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> int:
    """k >= 1 when `gps_time` is k whole eras behind `trusted_now` within `tolerance_s`, else 0.

    Total: any input (negative, NaN, infinite, not a number) gives 0, never an exception.
    """
    try:
        behind = float(trusted_now) - float(gps_time)
        tolerance = float(tolerance_s)
    except (TypeError, ValueError, OverflowError):
        return 0
    if not (math.isfinite(behind) and math.isfinite(tolerance)) or tolerance < 0:
        return 0
    k = round(behind / ERA_S)
    if k < 1 or abs(behind - k * ERA_S) > tolerance:
        return 0
    return int(k)


def utc(t: float) -> str:
    """`t` as an ISO 8601 UTC string for log lines; the repr for values no date can hold."""
    try:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return repr(t)


class TimeKeeper:
    """The roll-over decision and the one-time system clock set for one process.

    `trusted_now()` returns a trusted current UTC time or None; it may be slow (it may start
    `timedatectl`), so it is called at most once per `ask_every_s` of `wall` time until it has
    answered in agreement with the receiver. Thread-safe: the GPS reader and the sensor threads
    may share one keeper.
    """

    def __init__(
        self,
        trusted_now: Callable[[], float | None],
        *,
        set_system_clock: bool = False,
        setter: Callable[[float], None] | None = None,
        wall: Callable[[], float] = time.time,
        floor: float = RELEASE_FLOOR,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        ask_every_s: float = ASK_EVERY_S,
    ) -> None:
        self._trusted_now = trusted_now
        self._ask_every = ask_every_s
        self._set_system_clock = set_system_clock
        self._setter = setter if setter is not None else default_setter
        self._wall = wall
        self._floor = floor
        self._tolerance = tolerance_s
        self._lock = threading.Lock()
        self._shift: float | None = None  # None until decided, then latched
        self._asked_at: float | None = None
        self._trusted_failed = False
        self._disagreed = False  # the latest trusted answer matched no whole number of eras
        self._disagree_logged = False
        self._clock_done = False
        self._below_floor_logged = False

    @property
    def decided(self) -> bool:
        """Whether a trusted clock has agreed with the receiver (the shift is then final)."""
        return self._shift is not None

    def shift_s(self, gps_time: float) -> float:
        """Seconds to add to a receiver time: 0.0, or k * ERA_S once a trusted clock agreed.

        The decision is latched once a trusted clock agrees with `gps_time` at a whole number
        of eras (0 included). A trusted clock that agrees at none (a replayed capture, a
        receiver's garbage time before its first fix) decides nothing: 0.0, asked again later.
        """
        with self._lock:
            if self._shift is not None:
                return self._shift
            if not math.isfinite(gps_time):
                return 0.0
            wall = self._wall()
            # abs(): the wall clock may have been stepped back (by us, by NTP) since the last ask.
            if self._asked_at is not None and abs(wall - self._asked_at) < self._ask_every:
                return 0.0
            self._asked_at = wall
            now = self._ask()
            if now is None:
                return 0.0
            k = rollover_eras(gps_time, now, self._tolerance)
            if k == 0 and not abs(now - gps_time) <= self._tolerance:
                self._disagreed = True
                if not self._disagree_logged:
                    self._disagree_logged = True
                    log.warning(
                        "GPS time %s is %+.0f s from the trusted clock (%s), not whole "
                        "1024-week eras: not corrected (a replayed capture?)",
                        utc(gps_time), now - gps_time, utc(now),
                    )  # fmt: skip
                return 0.0
            self._shift = float(k * ERA_S)
            self._disagreed = False
            if k:
                log.warning(
                    "GPS week roll-over: the receiver is %d era(s) (%d weeks) behind the trusted "
                    "clock (%s); every receiver time is corrected, %s becomes %s",
                    k, k * 1024, utc(now), utc(gps_time), utc(gps_time + self._shift),
                )  # fmt: skip
            else:
                log.info("GPS time agrees with the trusted clock: no week roll-over")
            return self._shift

    def _ask(self) -> float | None:
        try:
            now = self._trusted_now()
        except Exception:  # the daemon's callable: a bug there must not stop the GPS thread
            if not self._trusted_failed:
                self._trusted_failed = True
                log.warning("trusted clock failed; treated as unavailable", exc_info=True)
            return None
        if now is None or not math.isfinite(now):
            return None
        return float(now)

    def observe(self, gps_time: float) -> None:
        """With `set_system_clock`: set the system clock once to `gps_time` (a corrected time,
        receiver time + `shift_s`) when it is more than 60 s from `wall()`.

        Never below `floor`: a rolled-over receiver with no trusted clock must not set the
        clock to 2006. Never while the latest trusted answer disagreed with the receiver. The
        setter is called at most once per process; its failure is one log line, never an
        exception.
        """
        if not self._set_system_clock or self._clock_done:
            return
        with self._lock:
            if self._clock_done or not math.isfinite(gps_time) or self._disagreed:
                return
            if gps_time < self._floor:
                if not self._below_floor_logged:
                    self._below_floor_logged = True
                    log.warning(
                        "GPS time %s is before %s: not setting the system clock from it "
                        "(a week roll-over no trusted clock has confirmed yet?)",
                        utc(gps_time), utc(self._floor),
                    )  # fmt: skip
                return
            off = gps_time - self._wall()
            if abs(off) <= SET_CLOCK_THRESHOLD_S:
                return
            self._clock_done = True
            try:
                self._setter(gps_time)
            except OSError as e:  # PermissionError included: no CAP_SYS_TIME, or seccomp
                log.error(
                    "[time] set_system_clock: cannot set the system clock (%s); the service "
                    "needs CAP_SYS_TIME and the @clock system calls, see the comments in "
                    "systemd/tracker.service (or feed chrony from gpsd instead: docs/time.md)",
                    e,
                )  # fmt: skip
                return
            log.warning("system clock was %+.0f s off GPS time: set to %s", -off, utc(gps_time))


def default_setter(t: float) -> None:
    """Set the system clock (CLOCK_REALTIME) to `t`; needs CAP_SYS_TIME."""
    time.clock_settime(time.CLOCK_REALTIME, t)


# -- trusted clocks -----------------------------------------------------------------------------


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """glibc's `struct timex` (<bits/timex.h>): every __syscall_slong_t a C long, which holds on
    64-bit Linux (208 bytes) and on 32-bit ARM with the `adjtimex` symbol's 32-bit time_t."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


def _adjtimex_synced() -> bool | None:
    """The kernel's NTP state through a read-only adjtimex(2) (modes 0); None if it failed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    adjtimex.argtypes = [ctypes.POINTER(_Timex)]
    adjtimex.restype = ctypes.c_int
    tx = _Timex()
    state = adjtimex(ctypes.byref(tx))
    if state == -1:
        # EPERM under the unit's seccomp filter: ProtectClock= blocks even a read-only call.
        log.debug("adjtimex failed: %s", errno.errorcode.get(ctypes.get_errno(), "?"))
        return None
    return state != TIME_ERROR and not tx.status & STA_UNSYNC


def _timedatectl_synced(
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> bool | None:
    """systemd-timedated's view (it calls adjtimex outside our sandbox); None if unavailable."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        done = run(
            [exe, "show", "--property=NTPSynchronized", "--value"],
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip()
    if done.returncode != 0 or value not in ("yes", "no"):
        return None
    return value == "yes"


def ntp_synchronized() -> bool | None:
    """Whether the kernel says the system clock is NTP-synchronised; None when it cannot tell.

    adjtimex(2) first; `timedatectl` only when that fails (the service's seccomp filter denies
    adjtimex). May take up to 5 s in that case: call it rarely (TimeKeeper asks once a minute).
    """
    if not sys.platform.startswith("linux"):
        return None
    synced = _adjtimex_synced()
    return synced if synced is not None else _timedatectl_synced()


def system_clock_if_synced(
    wall: Callable[[], float] = time.time,
    synced: Callable[[], bool | None] = ntp_synchronized,
) -> float | None:
    """`wall()` when the system clock is NTP-synchronised, else None (unknown counts as not)."""
    return wall() if synced() is True else None


def server_now(offset_s: float | None, wall: Callable[[], float] = time.time) -> float | None:
    """A server's current time from its `server - wall` offset (a backend's get_time, e.g. Map
    My Tracks' `clock_offset_system_s` status): `wall() + offset_s`, None without an offset.

    The offset is only as good as its request's latency (whole seconds for Map My Tracks), and
    it is stale once the system clock has been stepped after it was measured.
    """
    if offset_s is None:
        return None
    try:
        offset = float(offset_s)
    except (TypeError, ValueError):
        return None
    return wall() + offset if math.isfinite(offset) else None
