"""A ride's running totals: what tracker/rides.py's figures need, summed as fixes are stored,
so that a page poll or `tracker activities` reads one row per activity instead of every fix.

The rules are those of rides.summarize_scan (the full read they replace):
- a fix is usable when its HDOP is unknown or at most `max_hdop`;
- the top speed is the highest finite speed of a usable fix;
- each step from one fix to the next (in id order, within the activity) adds its distance and
  its seconds when the later fix is usable, the step took more than 0 and at most MAX_GAP_S
  seconds, and the later fix's speed (or, without one, the step's) is at least `start_speed`.

So a step needs only the fix before it: the totals keep the activity's newest fix, and adding
fixes costs the same whatever the ride's length. The rules come from `[activity]`
(`max_hdop`, `start_speed_mps`, which the daemon hands to open_store) and each row keeps those
it was summed with, from the activity's start to its end: a reader with other rules (the
config changed since) reads the fixes instead (rides.summarize).

Pruning deletes fixes (tracker/store/prune.py): a trigger takes them off `points`, while the
distance, moving time and top speed stay those of the ride as recorded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tracker.geo import EARTH_RADIUS_M, distance_m

_radians, _sin, _cos, _asin, _sqrt = math.radians, math.sin, math.cos, math.asin, math.sqrt
_INF = math.inf

MAX_GAP_S = 10.0  # a longer step (a tunnel, a restart) counts as not moving: nothing is known


def default_rules(activity_type: str) -> tuple[float, float]:
    """(max_hdop, start_speed) that `[activity]` gives an activity of this type when neither is
    configured (ActivityConfig.rules)."""
    # Here, not at the top: a reader of the store (`tracker status`) never pays for the
    # lifecycle's module.
    from tracker.activity import START_SPEEDS, Rules

    defaults = Rules()
    return defaults.max_hdop, START_SPEEDS.get(activity_type, defaults.start_speed_mps)


@dataclass(slots=True)
class Totals:
    """One activity's running totals (a `ride_totals` row)."""

    max_hdop: float
    start_speed: float
    points: int = 0
    local_points: int = 0
    distance_m: float = 0.0
    moving_s: float = 0.0
    max_speed: float | None = None
    last_id: int | None = None
    last_time: float | None = None
    last_lat: float | None = None
    last_lon: float | None = None

    def rules_match(self, max_hdop: float, start_speed: float) -> bool:
        return self.max_hdop == max_hdop and self.start_speed == start_speed


COLUMNS = ("max_hdop", "start_speed", "points", "local_points", "distance_m", "moving_s",
           "max_speed", "last_id", "last_time", "last_lat", "last_lon")  # fmt: skip


def from_row(row: tuple[Any, ...]) -> Totals:
    return Totals(*row)


def as_row(t: Totals) -> tuple[Any, ...]:
    return (t.max_hdop, t.start_speed, t.points, t.local_points, t.distance_m, t.moving_s,
            t.max_speed, t.last_id, t.last_time, t.last_lat, t.last_lon)  # fmt: skip


def step(t: Totals, time: float, lat: float, lon: float, speed: float | None,
         hdop: float | None) -> tuple[float, float] | None:  # fmt: skip
    """What the step from the totals' newest fix to this one adds: (metres, seconds), or None."""
    if t.last_time is None:
        return None
    good = hdop is None or hdop <= t.max_hdop
    dt = time - t.last_time
    if not (good and 0 < dt <= MAX_GAP_S):
        return None
    if speed is not None and not speed >= t.start_speed:
        return None  # the distance is not needed: a parked unit costs no trigonometry
    assert t.last_lat is not None and t.last_lon is not None
    d = distance_m(t.last_lat, t.last_lon, lat, lon)
    if speed is None and not d / dt >= t.start_speed:
        return None
    return d, dt


def fold(t: Totals, fixes: Iterable[Any], local: bool = False) -> None:
    """Add fixes (anything with time, lat, lon, speed, hdop), oldest first, after the totals'
    newest fix; `local`: they are paused fixes kept on the unit. The caller sets last_id.

    On the write hot path (every commit of the recorder): `step` and activity.distance_m
    inlined, in locals, with the same operations in the same order, so the same bits."""
    max_hdop, start_speed = t.max_hdop, t.start_speed
    distance, moving, top = t.distance_m, t.moving_s, t.max_speed
    last_time, last_lat, last_lon = t.last_time, t.last_lat, t.last_lon
    n = 0
    for f in fixes:
        time, lat, lon, speed, hdop = f.time, f.lat, f.lon, f.speed, f.hdop
        if speed is not None and speed != speed:
            speed = None  # SQLite stores NaN as NULL: sum what a later read will see
        if hdop is not None and hdop != hdop:
            hdop = None
        good = hdop is None or hdop <= max_hdop
        if good and speed is not None and -_INF < speed < _INF:
            top = speed if top is None or speed > top else top
        if last_time is not None and good:
            dt = time - last_time
            if 0 < dt <= MAX_GAP_S and (speed is None or speed >= start_speed):
                # last_time set means last_lat and last_lon are (no assert on this hot path)
                p1, p2 = _radians(last_lat), _radians(lat)  # type: ignore[arg-type]
                a = (_sin((p2 - p1) / 2) ** 2
                     + _cos(p1) * _cos(p2) * _sin(_radians(lon - last_lon) / 2) ** 2)  # fmt: skip
                d = 2 * EARTH_RADIUS_M * _asin(min(1.0, _sqrt(a)))
                if speed is not None or d / dt >= start_speed:
                    distance += d
                    moving += dt
        last_time, last_lat, last_lon = time, lat, lon
        n += 1
    t.distance_m, t.moving_s, t.max_speed = distance, moving, top
    t.last_time, t.last_lat, t.last_lon = last_time, last_lat, last_lon
    t.points += n
    if local:
        t.local_points += n
