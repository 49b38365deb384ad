"""Export as GPX 1.1, CSV or GeoJSON: one track per activity, streamed so a 10-hour ride fits a
Pi Zero.

Each point carries its GPS time to the receiver's precision (fractions kept to the microsecond),
its elevation, and heart rate and cadence as Garmin TrackPointExtension v1 (`gpxtpx:hr`,
`gpxtpx:cad`) and power as Garmin PowerExtension v1 (`pwr:PowerInWatts`) where a sample lies
within PAIR_WINDOW_S of the point. TrackPointExtension has no power field; PowerExtension is what
Garmin devices write and what Strava and Garmin Connect read.

gpxpy serialises every point and track (escaping, number and time formats). Only the envelope is
written here, because building a whole gpxpy document costs about 400 bytes a point in memory:
150 MB for a 10-hour ride at 10 Hz.

CSV (one row per fix) and GeoJSON (one LineString Feature per activity, with per-point arrays of
times and sensor values) are written with the csv and json modules, a page of fixes at a time.
Their sensor columns follow the same rule: the nearest sample of each kind within PAIR_WINDOW_S
of the fix, else empty. One rule for every format, so the same ride has the same heart rate on
the same points whichever way it is exported.

Boat instruments (depth, wind, heading...: tracker/instruments.py) are exported the same way,
the nearest reading of each kind: in CSV as columns after CSV_COLUMNS, in GeoJSON as arrays
beside `hr`, both named by the kind and only for the kinds the exported activities have; in
GPX as our own extension, `<inst:instruments>` in the namespace INSTRUMENTS_NS, one child
element per kind (`<inst:depth>2.3</inst:depth>`). Values in SI units as stored (temperatures
in Celsius), to 4 decimals. docs/boats.md lists the kinds. An upload to a backend (`sent_only`)
carries none: the fitness backends get fitness data only.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import json
import math
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import IO, Literal, cast, overload

import gpxpy.gpx
from gpxpy.gpxfield import gpx_fields_to_xml

from tracker import __version__
from tracker.fix import INSTRUMENT_KINDS, SAMPLE_KINDS
from tracker.plausible import finite_fix
from tracker.store import Activity, Ledger, Store, StoredFix

NS = {
    "gpxtpx": "http://www.garmin.com/xmlschemas/TrackPointExtension/v1",
    "pwr": "http://www.garmin.com/xmlschemas/PowerExtension/v1",
}
INSTRUMENTS_NS = "urn:pi-live-tracker:gpx:instruments:v1"  # ours; prefix "inst"
# A sample further than this from a point is not that point's value. 1.5 s: a strap or power
# meter that reports once a second (BLE notifications, ANT+ pages, with their jitter) pairs
# with every point of a 1 Hz track, and one that skips a report leaves no hole.
PAIR_WINDOW_S = 1.5
CHUNK = 1000  # points read and serialised at a time
CSV_COLUMNS = (
    "activity", "time", "lat", "lon", "alt", "speed", "course", "hdop", "sats", "quality",
    "hr", "cad", "pwr", "poi",
)  # fmt: skip
# A GeoJSON feature's per-point arrays wait in these until its coordinates are written; past
# this size they go to a temporary file rather than memory.
SPOOL_BYTES = 1 << 20
PROGRESS_AFTER_S = 1.0  # a shorter export shows no progress line
PROGRESS_EVERY_S = 0.25

Progress = Callable[[int], None]  # told how many more fixes were written, a page at a time


def _time(t: float) -> datetime:
    return datetime.fromtimestamp(round(t, 6), UTC)


def _extensions(values: dict[str, float]) -> list[ET.Element]:
    out = []
    if "hr" in values or "cad" in values:
        tpx = ET.Element("gpxtpx:TrackPointExtension")
        for kind in ("hr", "cad"):  # the schema's order
            if kind in values:
                ET.SubElement(tpx, f"gpxtpx:{kind}").text = str(round(values[kind]))
        out.append(tpx)
    if "pwr" in values:
        pwr = ET.Element("pwr:PowerInWatts")
        pwr.text = str(round(values["pwr"]))
        out.append(pwr)
    kinds = [k for k in INSTRUMENT_KINDS if k in values]
    if kinds:
        inst = ET.Element("inst:instruments")
        for kind in kinds:
            ET.SubElement(inst, f"inst:{kind}").text = str(_instrument_value(values[kind]))
        out.append(inst)
    return out


def _instrument_value(value: float) -> float | int:
    """SI to 4 decimals (0.1 mm, 0.1 mm/s: below what any sentence carries), a whole number
    without ".0"."""
    v = round(value, 4)
    return int(v) if v.is_integer() else v


def _instrument_kinds(store: Store, activities: Iterable[Activity], window: float) -> list[str]:
    """The instrument kinds with a reading within `window` of these activities, in the order
    of INSTRUMENT_KINDS."""
    found: set[str] = set()
    for a in activities:
        end = a.ended_at if a.ended_at is not None else float("inf")
        found.update(store.instrument_kinds(a.started_at - window, end + window))
    return [k for k in INSTRUMENT_KINDS if k in found]


class _Samples:
    """Nearest sample of each kind to a time, over one chunk of points; with `instruments`,
    the instrument readings too (their kinds are names of their own)."""

    def __init__(
        self,
        store: Store,
        t0: float,
        t1: float,
        window: float = PAIR_WINDOW_S,
        *,
        instruments: bool = False,
    ) -> None:
        self.window = window
        self.times: dict[str, list[float]] = {}
        self.values: dict[str, list[float]] = {}
        samples = store.samples_between(t0 - window, t1 + window)
        if instruments:
            samples += store.instruments_between(t0 - window, t1 + window)
        for s in samples:
            if not math.isfinite(s.value):  # an older release's value: no output can hold it
                continue
            self.times.setdefault(s.kind, []).append(s.time)
            self.values.setdefault(s.kind, []).append(s.value)

    def at(self, t: float) -> dict[str, float]:
        found = {}
        for kind, times in self.times.items():
            i = bisect.bisect_left(times, t)
            best = min(
                (j for j in (i - 1, i) if 0 <= j < len(times)),
                key=lambda j: abs(times[j] - t),
                default=None,
            )
            if best is not None and abs(times[best] - t) <= self.window:
                found[kind] = self.values[kind][best]
        return found


def _chunks(fixes: Iterable[StoredFix]) -> Iterator[list[StoredFix]]:
    """Pages of CHUNK fixes, each with its non-finite values as None and without the fixes
    whose time or position is not finite: a database written by an older release may hold
    an `inf` altitude, which no output format can carry (`<ele>inf</ele>`, `Infinity`)."""
    chunk: list[StoredFix] = []
    for stored in fixes:
        fix = finite_fix(stored)
        if fix is None:
            continue
        chunk.append(fix)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _track_xml(
    store: Store,
    activity: Activity,
    sent_only: bool = False,
    progress: Progress | None = None,
    instruments: bool = False,
) -> Iterator[str]:
    track = gpxpy.gpx.GPXTrack(name=activity.title)
    track.type = activity.type  # type: ignore[assignment]  # gpxpy declares it as None
    track.description = f"tracker activity {activity.id}"
    head = gpx_fields_to_xml(track, "trk", version="1.1", prettyprint=True, indent="  ")
    # The empty track renders as "<trk>…</trk>"; the segment goes in before the closing tag.
    yield head[: head.rindex("</trk>")] + "    <trkseg>\n"
    fixes = store.iter_fixes(activity.id)
    if sent_only:
        fixes = (f for f in fixes if not f.local)
    for chunk in _chunks(fixes):
        samples = _Samples(store, chunk[0].time, chunk[-1].time, instruments=instruments)
        for fix in chunk:
            point = gpxpy.gpx.GPXTrackPoint(
                fix.lat, fix.lon, elevation=fix.alt, time=_time(fix.time), name=fix.poi
            )
            if fix.hdop is not None:
                point.horizontal_dilution = fix.hdop
            if fix.vdop is not None:
                point.vertical_dilution = fix.vdop
            if fix.pdop is not None:
                point.position_dilution = fix.pdop
            if fix.sats is not None:
                point.satellites = fix.sats
            point.extensions = _extensions(samples.at(fix.time))
            yield gpx_fields_to_xml(
                point, "trkpt", version="1.1", prettyprint=True, indent="      "
            )
        if progress is not None:
            progress(len(chunk))
    yield "\n    </trkseg>\n  </trk>\n"


def select_activities(
    store: Store,
    activity_ids: list[int] | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[Activity]:
    """The activities with these ids in that order (all, oldest first, when None), keeping those
    that overlap [since, until] (unix seconds; the current activity runs on). KeyError names the
    ids that are not stored."""
    activities = store.activities()
    if activity_ids is not None:
        known = {a.id: a for a in activities}
        missing = [i for i in activity_ids if i not in known]
        if missing:
            raise KeyError(f"no activity with id {', '.join(map(str, missing))}")
        activities = [known[i] for i in activity_ids]
    return [
        a
        for a in activities
        if (until is None or a.started_at <= until)
        and (since is None or a.ended_at is None or a.ended_at >= since)
    ]


def parse_time(text: str, *, end_of_day: bool = False) -> float:
    """An ISO 8601 date or date and time as unix seconds, UTC unless it carries an offset. A date
    alone is its midnight, or with `end_of_day` the next one (`--until 2026-06-01` takes in the
    rides of that day). ValueError says what was wrong."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        when = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return (when + timedelta(days=1) if end_of_day else when).timestamp()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date or time: {text!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def iso_time(t: float) -> str:
    """UTC ISO 8601 to the receiver's precision: the fraction it sent (to the microsecond,
    trailing zeros dropped), none for a whole second."""
    text = _time(t).replace(tzinfo=None).isoformat(timespec="microseconds")
    return text.rstrip("0").rstrip(".") + "Z"


def _sample_value(value: float | None) -> float | int | None:
    # Sensors send whole bpm, rpm and watts, stored as REAL: written as "122", not "122.0".
    if value is None or not float(value).is_integer():
        return value
    return int(value)


@dataclass
class TerminalProgress:
    """A Progress that counts fixes and, on `stream` (None: count only), shows
    "exporting: 12,345 fixes" once the export has taken PROGRESS_AFTER_S, refreshed in place at
    most every PROGRESS_EVERY_S. `done()` ends the line if one was shown."""

    stream: IO[str] | None
    clock: Callable[[], float] = time.monotonic
    fixes: int = 0
    shown_at: float | None = None
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def __call__(self, n: int) -> None:
        self.fixes += n
        if self.stream is None:
            return
        now = self.clock()
        if now - self.started < PROGRESS_AFTER_S:
            return
        if self.shown_at is not None and now - self.shown_at < PROGRESS_EVERY_S:
            return
        self.shown_at = now
        self.stream.write(f"\rexporting: {self.fixes:,} fixes")
        self.stream.flush()

    def done(self) -> None:
        if self.stream is not None and self.shown_at is not None:
            self.stream.write(f"\rexporting: {self.fixes:,} fixes\n")
            self.stream.flush()
            self.shown_at = None


def write_csv(
    store: Store,
    out: IO[str],
    activity_ids: list[int] | None = None,
    *,
    progress: Progress | None = None,
) -> int:
    """Write one row per fix of the activities (all when `activity_ids` is None) under a header
    of CSV_COLUMNS, then one column per instrument kind these activities have; return the
    activity count. `out` should be opened with newline=""."""
    activities = select_activities(store, activity_ids)
    kinds = _instrument_kinds(store, activities, PAIR_WINDOW_S)
    writer = csv.writer(out, lineterminator="\n")  # "\r\n" would end up in the poi column
    writer.writerow((*CSV_COLUMNS, *kinds))
    for activity in activities:
        for chunk in _chunks(store.iter_fixes(activity.id)):
            samples = _Samples(
                store, chunk[0].time, chunk[-1].time, PAIR_WINDOW_S, instruments=bool(kinds)
            )
            rows = []
            for fix in chunk:
                values = samples.at(fix.time)
                rows.append(
                    (activity.id, iso_time(fix.time), fix.lat, fix.lon, fix.alt, fix.speed,
                     fix.course, fix.hdop, fix.sats, fix.quality,
                     *(_sample_value(values.get(kind)) for kind in SAMPLE_KINDS), fix.poi,
                     *(_instrument_value(values[k]) if k in values else None for k in kinds))
                )  # fmt: skip
            writer.writerows(rows)
            if progress is not None:
                progress(len(chunk))
    return len(activities)


def _position(fix: StoredFix) -> list[float]:
    # A GeoJSON position has no null: a fix without altitude is [lon, lat].
    return [fix.lon, fix.lat] if fix.alt is None else [fix.lon, fix.lat, fix.alt]


def _write_feature(
    store: Store, out: IO[str], activity: Activity, progress: Progress | None
) -> None:
    # Coordinates go straight to `out`; the per-point arrays, which follow them in the
    # properties, wait in spools, so one pass over the fixes keeps them all aligned.
    kinds = _instrument_kinds(store, [activity], PAIR_WINDOW_S)
    with contextlib.ExitStack() as stack:
        arrays = {
            name: stack.enter_context(
                tempfile.SpooledTemporaryFile(SPOOL_BYTES, mode="w+", encoding="utf-8")
            )
            for name in ("times", *SAMPLE_KINDS, *kinds)
        }
        out.write('{"type": "Feature", "geometry": {"type": "LineString", "coordinates": [')
        n = 0
        for chunk in _chunks(store.iter_fixes(activity.id)):
            samples = _Samples(
                store, chunk[0].time, chunk[-1].time, PAIR_WINDOW_S, instruments=bool(kinds)
            )
            values = [samples.at(fix.time) for fix in chunk]
            sep = "," if n else ""
            out.write(sep + ",".join(json.dumps(_position(fix)) for fix in chunk))
            arrays["times"].write(sep + ",".join(f'"{iso_time(fix.time)}"' for fix in chunk))
            for kind in SAMPLE_KINDS:
                arrays[kind].write(
                    sep + ",".join(json.dumps(_sample_value(v.get(kind))) for v in values)
                )
            for kind in kinds:
                arrays[kind].write(
                    sep
                    + ",".join(
                        json.dumps(_instrument_value(v[kind]) if kind in v else None)
                        for v in values
                    )
                )
            n += len(chunk)
            if progress is not None:
                progress(len(chunk))
        end = None if activity.ended_at is None else iso_time(activity.ended_at)
        properties = {
            "id": activity.id,
            "title": activity.title,
            "type": activity.type,
            "start": iso_time(activity.started_at),
            "end": end,
            "points": n,
        }
        out.write(']}, "properties": ' + json.dumps(properties)[:-1])  # the arrays go on
        for name, spool in arrays.items():
            out.write(f', "{name}": [')
            spool.seek(0)
            shutil.copyfileobj(spool, out)
            out.write("]")
        out.write("}}")


def write_geojson(
    store: Store,
    out: IO[str],
    activity_ids: list[int] | None = None,
    *,
    progress: Progress | None = None,
) -> int:
    """Write the activities (all when `activity_ids` is None) as a GeoJSON FeatureCollection, one
    LineString Feature each, with `times`, `hr`, `cad` and `pwr` arrays aligned with the
    coordinates in its properties, and one for each instrument kind the activity has; return
    the count."""
    activities = select_activities(store, activity_ids)
    out.write('{"type": "FeatureCollection", "features": [')
    for i, activity in enumerate(activities):
        out.write(",\n" if i else "\n")
        _write_feature(store, out, activity, progress)
    out.write("\n]}\n")
    return len(activities)


@overload
def write_gpx(
    store: Ledger,
    out: IO[str],
    activity_ids: list[int] | None = None,
    *,
    sent_only: Literal[True],
    progress: Progress | None = None,
    instruments: Literal[False] | None = None,
) -> int: ...


@overload
def write_gpx(
    store: Store,
    out: IO[str],
    activity_ids: list[int] | None = None,
    *,
    sent_only: bool = False,
    progress: Progress | None = None,
    instruments: bool | None = None,
) -> int: ...


def write_gpx(
    store: Ledger,
    out: IO[str],
    activity_ids: list[int] | None = None,
    *,
    sent_only: bool = False,
    progress: Progress | None = None,
    instruments: bool | None = None,
) -> int:
    """Write the activities (all when `activity_ids` is None) as GPX 1.1; return the count.
    `sent_only`: without the paused fixes kept on the unit (an upload to a backend).
    `instruments`: with the boat instruments' readings (`inst:instruments`); by default unless
    `sent_only` (a fitness backend gets none, and its store is read through the Ledger only:
    the overloads take a sender's Ledger only so, and a whole Store otherwise)."""
    if instruments is None:
        instruments = not sent_only
    store = cast(Store, store)  # a Ledger only when no instrument is read (the overloads)
    activities = select_activities(store, activity_ids)
    namespaces = {**NS, "inst": INSTRUMENTS_NS} if instruments else NS
    ns = " ".join(f'xmlns:{k}="{v}"' for k, v in namespaces.items())
    out.write(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<gpx xmlns="http://www.topografix.com/GPX/1/1" {ns} '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="'
        "http://www.topografix.com/GPX/1/1 http://www.topografix.com/GPX/1/1/gpx.xsd "
        "http://www.garmin.com/xmlschemas/TrackPointExtension/v1 "
        "http://www.garmin.com/xmlschemas/TrackPointExtensionv1.xsd "
        "http://www.garmin.com/xmlschemas/PowerExtension/v1 "
        'http://www.garmin.com/xmlschemas/PowerExtensionv1.xsd" '
        f'version="1.1" creator="tracker {__version__}">\n'
    )
    for activity in activities:
        with_inst = instruments and bool(_instrument_kinds(store, [activity], PAIR_WINDOW_S))
        for text in _track_xml(store, activity, sent_only, progress, with_inst):
            out.write(text)
    out.write("</gpx>\n")
    return len(activities)
