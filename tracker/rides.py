"""What a ride was: distance, elapsed and moving time, speeds, points and samples, and how far
each backend got with it. Read from the store, for `tracker activities` (and the status page).

Distance and moving time count only movement (tracker/activity.py's evidence: a speed of at
least the activity's start speed at a usable HDOP), so a parked unit's drift at the cafe adds
neither metres nor minutes; gaps longer than MAX_GAP_S (no fix: a tunnel, a restart) count as
not moving, since nothing is known of them.

The store keeps these figures as running totals while it stores the fixes
(tracker/store/totals.py), so listing a ten-hour ride reads a few rows, not its 360,000 fixes.

A boat's ride also has its instruments' latest readings (depth, wind, heading...: the newest
of each kind within the activity, tracker/instruments.py), in SI units in the JSON and as a
skipper reads them in the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tracker import instruments as inst
from tracker.activity import Rules, distance_m
from tracker.store import Activity, Store
from tracker.store.totals import MAX_GAP_S


@dataclass(frozen=True)
class BackendProgress:
    to_send: int  # fixes of this activity the backend has still to send
    finished: bool | None  # the backend is done with it (Map My Tracks: stopped or uploaded);
    # None: the protocol has no such notion (json-gpsr takes fixes, not activities)

    @property
    def delivered(self) -> bool:
        return self.to_send == 0


@dataclass(frozen=True)
class Ride:
    activity: Activity
    distance_m: float = 0.0
    elapsed_s: float = 0.0
    moving_s: float = 0.0
    max_speed_mps: float | None = None
    points: int = 0
    samples: int = 0
    backends: dict[str, BackendProgress] = field(default_factory=dict)
    # The newest reading of each instrument kind in the activity, with its GPS time.
    instruments: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def avg_speed_mps(self) -> float | None:
        """Over the moving time, as cycling computers show it."""
        return self.distance_m / self.moving_s if self.moving_s > 0 else None


def summarize(store: Store, activity: Activity, rules: Rules) -> Ride:
    """One activity's figures, from its running totals (tracker/store/totals.py: a few rows
    however long the ride). Totals summed with other rules (`[activity]` max_hdop or
    start_speed_mps changed since the ride was recorded) are not these figures: then the
    fixes are read (summarize_scan), as slow as the ride is long, and as exact."""
    t = store.ride_totals(activity.id)
    if t is None or not t.rules_match(rules.max_hdop, rules.start_speed_mps):
        return summarize_scan(store, activity, rules)
    last_time = t.last_time if t.last_time is not None else activity.started_at
    end = activity.ended_at if activity.ended_at is not None else last_time
    samples = store.sample_count(activity.started_at, end)
    return Ride(activity, t.distance_m, max(0.0, end - activity.started_at), t.moving_s,
                t.max_speed, t.points, samples, backend_progress(store, activity.id),
                latest_instruments(store, activity))  # fmt: skip


def summarize_scan(store: Store, activity: Activity, rules: Rules) -> Ride:
    """One activity's figures, reading its fixes a page at a time: what the running totals
    keep, computed from scratch (and the figures for rules other than the totals')."""
    distance = moving = 0.0
    max_speed: float | None = None
    points = 0
    prev = None
    last_time = activity.started_at
    for f in store.iter_fixes(activity.id):
        points += 1
        last_time = f.time
        good = f.hdop is None or f.hdop <= rules.max_hdop
        if good and f.speed is not None and math.isfinite(f.speed):
            max_speed = f.speed if max_speed is None else max(max_speed, f.speed)
        if prev is not None:
            dt = f.time - prev.time
            d = distance_m(prev.lat, prev.lon, f.lat, f.lon)
            speed = f.speed if f.speed is not None else (d / dt if dt > 0 else 0.0)
            if good and 0 < dt <= MAX_GAP_S and speed >= rules.start_speed_mps:
                distance += d
                moving += dt
        prev = f
    end = activity.ended_at if activity.ended_at is not None else last_time
    samples = len(store.samples_between(activity.started_at, end))
    return Ride(activity, distance, max(0.0, end - activity.started_at), moving, max_speed,
                points, samples, backend_progress(store, activity.id),
                latest_instruments(store, activity))  # fmt: skip


def latest_instruments(store: Store, activity: Activity) -> dict[str, tuple[float, float]]:
    """kind -> (GPS time, value) of the newest instrument reading of each kind in the
    activity (the current one: up to now)."""
    end = activity.ended_at if activity.ended_at is not None else math.inf
    got = store.latest_instruments(activity.started_at, end)
    return {k: (s.time, s.value) for k, s in got.items()}


def instruments_json(latest: dict[str, tuple[float, float]]) -> list[dict[str, Any]]:
    """The readings for a page: kind, label, SI value and unit, the text a skipper reads, and
    the GPS time (ISO 8601 UTC)."""
    from datetime import UTC, datetime

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")[:-6] + "Z"

    return [
        {"kind": k, "label": inst.LABELS[k], "value": round(v, 4), "unit": inst.UNITS[k],
         "text": inst.display(k, v), "time": iso(t)}
        for k, (t, v) in latest.items()
    ]  # fmt: skip


def backend_progress(store: Store, activity_id: int) -> dict[str, BackendProgress]:
    """Per registered backend: what of this activity is left to send, and whether it is done
    with it (tracker/backends.py's `activity_done`, for a backend that has the notion)."""
    from tracker.backends import activity_done

    return {
        name: BackendProgress(store.pending_in(name, activity_id),
                              activity_done(name, store.get_state(name), activity_id))
        for name in store.backends()
    }  # fmt: skip


def rides(store: Store, rules: Rules) -> list[Ride]:
    """Every stored activity, oldest first."""
    return [summarize(store, a, rules) for a in store.activities()]


def as_json(ride: Ride, tz: Any) -> dict[str, Any]:
    a = ride.activity
    return {
        "id": a.id,
        "title": a.title,
        "type": a.type,
        "start": _local(a.started_at, tz),
        "end": _local(a.ended_at, tz) if a.ended_at is not None else None,
        "end_reason": a.end_reason,
        "distance_m": round(ride.distance_m, 1),
        "elapsed_s": round(ride.elapsed_s),
        "moving_s": round(ride.moving_s),
        "avg_speed_mps": _round(ride.avg_speed_mps),
        "max_speed_mps": _round(ride.max_speed_mps),
        "points": ride.points,
        "samples": ride.samples,
        "instruments": {k: round(v, 4) for k, (_, v) in ride.instruments.items()},
        "backends": {
            name: {"to_send": p.to_send, "delivered": p.delivered, "finished": p.finished}
            for name, p in ride.backends.items()
        },
    }


def render(items: list[Ride], tz: Any) -> str:
    """A table a rider reads: one line a ride, then how each backend stands with it."""
    if not items:
        return "no activities stored yet"
    lines = [f"{'id':>4}  {'start':16}  {'end':5}  {'km':>7}  {'elapsed':>7}  {'moving':>7}  "
             f"{'avg km/h':>8}  {'max km/h':>8}  {'points':>6}  {'samples':>7}  title"]  # fmt: skip
    for r in items:
        a = r.activity
        end = _local(a.ended_at, tz)[11:16] if a.ended_at is not None else "now"
        lines.append(
            f"{a.id:>4}  {_local(a.started_at, tz)[:16].replace('T', ' '):16}  {end:5}  "
            f"{r.distance_m / 1000:7.2f}  {_hm(r.elapsed_s):>7}  {_hm(r.moving_s):>7}  "
            f"{_kmh(r.avg_speed_mps):>8}  {_kmh(r.max_speed_mps):>8}  {r.points:>6}  "
            f"{r.samples:>7}  {a.title}"
        )
        if r.instruments:
            lines.append(f"{'':>6}" + ", ".join(
                f"{inst.LABELS[k]} {inst.display(k, v)}" for k, (_, v) in r.instruments.items()
            ))  # fmt: skip
        states = []
        for name, p in r.backends.items():
            what = "sent" if p.delivered else f"{p.to_send} to send"
            if p.finished is not None:
                what += ", finished" if p.finished else ", not finished"
            states.append(f"{name}: {what}")
        if states:
            lines.append(f"{'':>6}{'; '.join(states)}")
    return "\n".join(lines)


def _local(t: float | None, tz: Any) -> str:
    from datetime import UTC, datetime

    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).astimezone(tz).isoformat(timespec="seconds")


def _hm(seconds: float) -> str:
    m = int(round(seconds / 60))
    return f"{m // 60}:{m % 60:02d}"


def _kmh(mps: float | None) -> str:
    return "-" if mps is None else f"{mps * 3.6:.1f}"


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
