"""What a GPS receiver can report: the bounds every decoded fix is held to, and the filter that
drops a lone time outlier. docs/values.md gives the reason for each bound.

A receiver, a cable or a multiplexer can hand over a sentence with a valid checksum and an
impossible value (a speed of 5.1e8 knots, an altitude of `inf`, HDOP -1, 999 satellites, a date
in 1999 in the middle of a ride). Both decoders (tracker/nmea.py, tracker/gpsd.py) pass each fix
they complete through `check()`, once per epoch, never per sentence:

- a time or position no receiver can report drops the fix (`implausible_time`,
  `implausible_position`): without them there is no fix;
- any other value out of bounds becomes unknown (None), the fix is kept, and the reason is
  counted (`implausible_speed`...): the position is still the receiver's.

The counts go to the decoder's `DecoderStats.rejected_by`, which `tracker status` and the
status page's `/api/status` show.

`TimeFilter` runs in the GPS reader (tracker/gps.py) on what the decoder emits: a fix whose
time is out of line with the one before (more than REPEAT_S back, or further ahead than the
time that passed since it arrived allows) is held until the next fix tells whether it was a
lone outlier (the next fix is back in line with the old time: dropped, `time_outlier`) or a
jump that lasts (the next fix is in line with it: both passed on, for the recorder to handle as
docs/activity.md says). Fixes in line pass at once: the filter adds no latency to them.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from tracker.fix import Fix

# Bounds, with their reasons in docs/values.md.
TIME_MIN = 315_964_800.0  # 1980-01-06 00:00 UTC, the GPS epoch: no receiver counts from before
TIME_MAX = 4_102_444_800.0  # 2100-01-01 00:00 UTC
SPEED_MAX = 600.0  # m/s; receivers stop reporting at 515 m/s (COCOM: 1,000 knots)
ALT_MIN = -1_000.0  # m; the lowest dry land is 430 m below sea level (the Dead Sea shore)
ALT_MAX = 100_000.0  # m; u-blox's airborne limit is 80 km (COCOM: 18 km)
DOP_MAX = 100.0  # receivers cap DOPs at 99.9 or 99.99; 0 and below are impossible
SATS_MAX = 200  # every GNSS satellite in orbit, all constellations and SBAS together
ERR_MAX = 100_000.0  # m; a 1-sigma error estimate (GST) above 100 km says there is no fix
COURSE_MAX = 360.0  # degrees true

# A fix up to this far behind the one before is a repeat the lifecycle drops itself
# (docs/activity.md); further back is out of line.
REPEAT_S = 5.0
# How far one fix may be ahead of the one before beyond the time that passed between their
# arrivals: a fix completed late, a receiver's burst after a stall. A replay written faster than
# real time is ahead by more at each gap; its fixes are then held one epoch, never lost.
AHEAD_S = 5.0

FIX_REASONS = ("implausible_time", "implausible_position")
FIELD_REASONS = (
    "implausible_alt",
    "implausible_speed",
    "implausible_course",
    "implausible_sats",
    "implausible_dop",
    "implausible_error",
)
REASONS = (*FIX_REASONS, *FIELD_REASONS, "time_outlier")


class Counters(Protocol):
    """The part of a decoder's DecoderStats the checks count in."""

    rejected: int
    rejected_by: dict[str, int]


def _count(stats: Counters, reason: str) -> None:
    stats.rejected += 1
    stats.rejected_by[reason] = stats.rejected_by.get(reason, 0) + 1


def check(fix: Fix, stats: Counters) -> Fix | None:
    """`fix` within the bounds: the same fix when every value is (the usual case, a few
    comparisons), a copy with each implausible value set to None, or None when its time or
    position is impossible. Counts each reason once per fix in `stats`. NaN fails every
    comparison, so it is caught with the rest."""
    if not TIME_MIN <= fix.time < TIME_MAX:
        _count(stats, "implausible_time")
        return None
    if not (-90.0 <= fix.lat <= 90.0 and -180.0 <= fix.lon <= 180.0):
        _count(stats, "implausible_position")
        return None
    alt, speed, course, sats = fix.alt, fix.speed, fix.course, fix.sats
    hdop, vdop, pdop = fix.hdop, fix.vdop, fix.pdop
    if (
        (alt is None or ALT_MIN <= alt <= ALT_MAX)
        and (speed is None or 0.0 <= speed <= SPEED_MAX)
        and (course is None or 0.0 <= course <= COURSE_MAX)
        and (sats is None or 0 <= sats <= SATS_MAX)
        and (hdop is None or 0.0 < hdop <= DOP_MAX)
        and (vdop is None or 0.0 < vdop <= DOP_MAX)
        and (pdop is None or 0.0 < pdop <= DOP_MAX)
        and (fix.err_lat is None or 0.0 <= fix.err_lat <= ERR_MAX)
        and (fix.err_lon is None or 0.0 <= fix.err_lon <= ERR_MAX)
        and (fix.err_alt is None or 0.0 <= fix.err_alt <= ERR_MAX)
    ):
        return fix
    return _clean(fix, stats)


# The slow path's table: field, lowest, highest, whether the lowest itself is out, reason.
_BOUNDS = (
    ("alt", ALT_MIN, ALT_MAX, False, "implausible_alt"),
    ("speed", 0.0, SPEED_MAX, False, "implausible_speed"),
    ("course", 0.0, COURSE_MAX, False, "implausible_course"),
    ("sats", 0, SATS_MAX, False, "implausible_sats"),
    ("hdop", 0.0, DOP_MAX, True, "implausible_dop"),
    ("vdop", 0.0, DOP_MAX, True, "implausible_dop"),
    ("pdop", 0.0, DOP_MAX, True, "implausible_dop"),
    ("err_lat", 0.0, ERR_MAX, False, "implausible_error"),
    ("err_lon", 0.0, ERR_MAX, False, "implausible_error"),
    ("err_alt", 0.0, ERR_MAX, False, "implausible_error"),
)


def _clean(fix: Fix, stats: Counters) -> Fix:
    """The slow path of check(): the values out of bounds set to None, each reason counted
    once."""
    unknown: dict[str, Any] = {}  # Any: each None goes to a field of its own type
    reasons: dict[str, None] = {}  # ordered, once each
    for name, lo, hi, open_low, reason in _BOUNDS:
        x = getattr(fix, name)
        if x is None:
            continue
        if not ((lo < x) if open_low else (lo <= x)) or not x <= hi:  # NaN fails both
            unknown[name] = None
            reasons[reason] = None
    for reason in reasons:
        _count(stats, reason)
    return replace(fix, **unknown) if unknown else fix


def describe(raw: Fix, checked: Fix | None) -> str:
    """What check() did to `raw`, for a log line: the fix dropped and why, or the values set
    to unknown."""
    if checked is None:
        return (f"fix dropped: time {utc_text(raw.time)}, position {raw.lat!r}, {raw.lon!r}: "
                "no receiver reports that time or position")  # fmt: skip
    names = [
        n for n, *_ in _BOUNDS if getattr(raw, n) is not None and getattr(checked, n) is None
    ]
    return ", ".join(f"{n} {getattr(raw, n)!r}" for n in names) + " set to unknown"


def utc_text(t: float) -> str:
    """`t` as ISO 8601 UTC for a log line; its repr when no date can hold it."""
    try:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return repr(t)


def finite(x: float | None) -> float | None:
    """`x`, or None when it is not a finite number: for outputs, which may read values stored
    by a release that did not check them (an `inf` altitude in a database in the field)."""
    return x if x is not None and math.isfinite(x) else None


_OPTIONAL = ("alt", "speed", "course", "hdop", "vdop", "pdop", "err_lat", "err_lon", "err_alt")

F = TypeVar("F", bound=Fix)


def finite_fix(fix: F) -> F | None:
    """For outputs: a stored fix (a Fix or StoredFix) with every non-finite optional value as
    None, or None when its time or position is not finite (there is no point to write). The
    same object when all is finite, the usual case."""
    if not (math.isfinite(fix.time) and math.isfinite(fix.lat) and math.isfinite(fix.lon)):
        return None
    bad = [n for n in _OPTIONAL if (v := getattr(fix, n)) is not None and not math.isfinite(v)]
    unknown: dict[str, Any] = dict.fromkeys(bad)  # Any: each None to a field of its own type
    return replace(fix, **unknown) if bad else fix


def json_text(value: object, indent: int | None = None) -> str:
    """`value` as strict JSON for every output (the page's API, `--json`): a non-finite number
    stored by an older release is `null`, never `Infinity`, which a browser refuses."""
    import json

    return json.dumps(no_nonfinite(value), indent=indent, allow_nan=False)


def no_nonfinite(value: object) -> object:
    """`value` (JSON-ready: dicts, lists, tuples, scalars) with every non-finite float as None,
    so that json.dumps writes `null`, never `Infinity` or `NaN`, which JSON does not have."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: no_nonfinite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [no_nonfinite(v) for v in value]
    return value


class TimeFilter:
    """Drops a lone time outlier (see the module docstring). Owned by the GPS reader thread.

    `__call__(fixes, now)` takes a decoder's output and the monotonic time it arrived, and
    returns the fixes to pass on. The very first fix is held until the second agrees with it:
    with nothing before it, only the next can tell whether it was an outlier. A fix held when
    no other fix ever comes (the receiver goes silent for good, the daemon stops) is dropped
    with it: a lone fix is what the filter cannot vouch for.
    """

    def __init__(self, stats: Counters, *, repeat_s: float = REPEAT_S,
                 ahead_s: float = AHEAD_S) -> None:  # fmt: skip
        self._stats = stats
        self._repeat = repeat_s
        self._back = -repeat_s
        self._ahead = ahead_s
        self._last: float | None = None  # time of the newest fix passed on
        self._last_at = 0.0  # when it arrived (monotonic)
        self._held: Fix | None = None
        self._held_at = 0.0
        self.dropped = 0  # lone outliers dropped (also counted in `stats`)
        self.dropped_at = ""  # the time of the last fix dropped, as UTC text, for a log line

    @property
    def held(self) -> Fix | None:
        """The fix waiting for the next to say whether it was a lone outlier."""
        return self._held

    def _in_line(self, ref: float, ref_at: float, t: float, now: float) -> bool:
        return -self._repeat <= t - ref <= self._ahead + max(0.0, now - ref_at)

    def __call__(self, fixes: list[Fix], now: float) -> list[Fix]:
        if self._held is None and (prev := self._last) is not None:
            # The usual call: every fix in line with the one before, passed as it came. The
            # test of _in_line, inline and without a call: this runs for every fix.
            waited = now - self._last_at
            ahead = self._ahead + waited if waited > 0.0 else self._ahead
            back = self._back
            for f in fixes:
                t = f.time
                if not back <= t - prev <= ahead:
                    break
                prev = t
                ahead = self._ahead  # the next arrived with this one
            else:
                if fixes:
                    self._last = prev
                    self._last_at = now
                return fixes
        out: list[Fix] = []
        for f in fixes:
            self._one(f, now, out)
        return out

    def _one(self, f: Fix, now: float, out: list[Fix]) -> None:
        held = self._held
        if held is None:
            if self._last is not None and self._in_line(self._last, self._last_at, f.time, now):
                self._pass(f, now, out)
            else:
                self._held, self._held_at = f, now
            return
        if self._in_line(held.time, self._held_at, f.time, now):
            # The jump lasts (or the first fix is confirmed): both go on.
            self._held = None
            self._pass(held, self._held_at, out)
            self._pass(f, now, out)
            return
        last = self._last
        if (
            last is not None
            and not self._in_line(last, self._last_at, f.time, now)
            and abs(f.time - held.time) < abs(f.time - last)
        ):
            # In line with neither, but nearer the held one: fixes further apart than their
            # arrivals (a replay written faster than real time, with gaps). The held one is on
            # the way; this one waits for the next in its turn.
            self._pass(held, self._held_at, out)
            self._held, self._held_at = f, now
            return
        _count(self._stats, "time_outlier")
        self.dropped += 1
        self.dropped_at = utc_text(held.time)
        if last is not None and self._in_line(last, self._last_at, f.time, now):
            self._held = None  # back in line: the held one was alone
            self._pass(f, now, out)
        else:
            self._held, self._held_at = f, now  # out of line with both: the next decides

    def _pass(self, f: Fix, at: float, out: list[Fix]) -> None:
        out.append(f)
        self._last, self._last_at = f.time, at
