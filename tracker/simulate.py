"""The NMEA simulator behind `tracker simulate`: a route in, timed NMEA 0183 out.

A route (a GPX file, a generated loop, or the bundled demo ride) is followed at a fixed speed and
sampled at a fixed rate; every sample is an `Epoch` holding the sentences a receiver would send
for it and the truth a test needs to judge a decoder (`Epoch.valid`: a fix that a correct decoder
must store). Noise and faults (bad checksums, garbage, truncated and overlong lines, loss of fix,
silence) are injected from seeded random streams, so a given seed always produces the same bytes.

`simulate_phases()` rides in phases instead (parked, riding, parked under a poor sky: see
PHASES_HELP), with the noise, speed spikes and phantom walks a detector of ride start, pause
and end has to see through; `Epoch.phase` and `Epoch.moving` say what really happened.

`simulate()` and `simulate_phases()` are pure (no I/O, no clock); `run()` paces epochs out to
any `write(bytes)` callable in real time, faster, or as fast as possible; `main()` is the CLI
glue (a file, stdout, a serial port or a pty). Riders use it to test a unit indoors, the demo
and the end-to-end tests to feed the daemon a ride whose every fix is known in advance.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import logging
import math
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import gpxpy
import gpxpy.gpx

from tracker.geo import EARTH_RADIUS_M
from tracker.logutil import RateLimitedLog

log = logging.getLogger(__name__)

SENTENCES = ("GGA", "RMC", "GSA", "GSV", "VTG", "ZDA", "GST", "GLL")
DEFAULT_SENTENCES = ("GGA", "RMC", "GSA", "VTG")
DEMO_ROUTE = "demo-route.gpx"  # in tracker/data/

KNOTS_PER_MPS = 3600.0 / 1852.0
GEOID_SEPARATION_M = 47.0  # a constant, plausible for central Europe; GGA wants some value
NOISE_TAU_S = 30.0  # correlation time of the position error: GPS error wanders, it does not jump
MAX_NMEA_LINE = 82  # NMEA 0183: at most 82 characters including '$' and CRLF


# --- routes -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoutePoint:
    """A point of a route: degrees WGS84, elevation in metres (None when the source has none)."""

    lat: float
    lon: float
    ele: float | None = None


def load_route(path: str | os.PathLike[str]) -> list[RoutePoint]:
    """Read a route from a GPX file: its track points, else its route points, else its waypoints.

    All tracks and segments are joined in file order. Raises ValueError when the file is not GPX
    or holds no point, OSError when it cannot be read.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return _route_from_gpx(text, str(path))


def demo_route() -> list[RoutePoint]:
    """The bundled demo ride (tracker/data/demo-route.gpx): a ~20 km loop, see its <desc>."""
    text = resources.files("tracker").joinpath("data", DEMO_ROUTE).read_text(encoding="utf-8")
    return _route_from_gpx(text, DEMO_ROUTE)


def _route_from_gpx(text: str, name: str) -> list[RoutePoint]:
    try:
        gpx = gpxpy.parse(text)
    except gpxpy.gpx.GPXException as e:
        raise ValueError(f"{name}: not a GPX file: {e}") from e
    sources: list[list[gpxpy.gpx.GPXTrackPoint | gpxpy.gpx.GPXRoutePoint | gpxpy.gpx.GPXWaypoint]]
    sources = [
        [p for track in gpx.tracks for seg in track.segments for p in seg.points],
        [p for route in gpx.routes for p in route.points],
        list(gpx.waypoints),
    ]
    for points in sources:
        if points:
            return [RoutePoint(p.latitude, p.longitude, p.elevation) for p in points]
    raise ValueError(f"{name}: no track, route or waypoint in the GPX file")


def generated_loop(
    lat: float,
    lon: float,
    radius_m: float = 1000.0,
    points: int = 180,
    *,
    base_ele: float = 100.0,
) -> list[RoutePoint]:
    """A closed loop around (lat, lon), for riders who have no GPX at hand.

    Not a circle: the radius swells and shrinks by up to ~18 % so the course keeps changing like a
    road's, and the elevation rolls gently (about +-2 % of the radius around `base_ele`, grades
    of a few per cent). Deterministic; the last point repeats the first, so the loop is closed.
    """
    if radius_m <= 0 or points < 3:
        raise ValueError("a loop needs a positive radius and at least 3 points")
    out = []
    for i in range(points):
        theta = 2 * math.pi * i / points
        r = radius_m * (1 + 0.12 * math.sin(2 * theta + 0.7) + 0.06 * math.sin(3 * theta + 2.1))
        ele = base_ele + radius_m * (0.015 * math.sin(theta) + 0.005 * math.sin(3 * theta + 1.0))
        plat, plon = _offset(lat, lon, r * math.sin(theta), r * math.cos(theta))
        out.append(RoutePoint(plat, plon, round(ele, 1)))
    out.append(out[0])
    return out


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial great-circle bearing from point 1 to point 2, degrees true in [0, 360)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def _offset(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    # Flat-earth offset: exact enough over the metres of noise and kilometres of a loop.
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * max(1e-9, math.cos(math.radians(lat)))))
    return lat + dlat, _wrap_lon(lon + dlon)


def _wrap_lon(lon: float) -> float:
    return (lon + 180.0) % 360.0 - 180.0


class _Path:
    """A route as a distance-parametrised path: where a rider is after s metres.

    A closed route (its ends within max(50 m, 2 % of its length) of each other) is ridden round
    and round; an open one is ridden out and back, so no loop ever teleports the rider.
    """

    def __init__(self, route: Sequence[RoutePoint]) -> None:
        pts: list[RoutePoint] = []
        for p in route:
            if not (-90.0 <= p.lat <= 90.0 and -180.0 <= p.lon <= 180.0):
                raise ValueError(f"route point out of range: {p.lat}, {p.lon}")
            if not pts or (p.lat, p.lon) != (pts[-1].lat, pts[-1].lon):
                pts.append(p)
        if not pts:
            raise ValueError("the route has no point")
        cum = [0.0]
        for a, b in itertools.pairwise(pts):
            cum.append(cum[-1] + haversine_m(a.lat, a.lon, b.lat, b.lon))
        gap = haversine_m(pts[0].lat, pts[0].lon, pts[-1].lat, pts[-1].lon)
        self.closed = len(pts) > 2 and gap <= max(50.0, 0.02 * cum[-1])
        if self.closed and gap > 0:
            pts.append(pts[0])
            cum.append(cum[-1] + gap)
        self.points = pts
        self.cum = cum
        self.length = cum[-1]
        self.eles = _fill_elevations([p.ele for p in pts])

    def at(self, s: float) -> tuple[float, float, float, float]:
        """(lat, lon, ele, course) after riding s >= 0 metres."""
        pts = self.points
        if self.length <= 0 or len(pts) < 2:
            return pts[0].lat, pts[0].lon, self.eles[0], 0.0
        k, r = divmod(s, self.length)
        reverse = not self.closed and int(k) % 2 == 1
        if reverse:
            r = self.length - r
        j = min(max(bisect.bisect_right(self.cum, r) - 1, 0), len(pts) - 2)
        a, b = pts[j], pts[j + 1]
        seg = self.cum[j + 1] - self.cum[j]
        f = min(max((r - self.cum[j]) / seg, 0.0), 1.0) if seg > 0 else 0.0
        dlon = (b.lon - a.lon + 540.0) % 360.0 - 180.0  # the short way across the antimeridian
        lat = a.lat + f * (b.lat - a.lat)
        lon = _wrap_lon(a.lon + f * dlon)
        ele = self.eles[j] + f * (self.eles[j + 1] - self.eles[j])
        course = (
            bearing_deg(b.lat, b.lon, a.lat, a.lon)
            if reverse
            else bearing_deg(a.lat, a.lon, b.lat, b.lon)
        )
        return lat, lon, ele, course


def _fill_elevations(eles: list[float | None]) -> list[float]:
    """Missing elevations take the nearest known one before (else after) them; none known: 0."""
    known = [e for e in eles if e is not None]
    if not known:
        return [0.0] * len(eles)
    out: list[float] = []
    last = known[0]
    for e in eles:
        last = e if e is not None else last
        out.append(last)
    return out


# --- faults -------------------------------------------------------------------------------------

_LINE_FAULTS = ("checksum", "garbage", "truncate", "overlong")  # per sentence (per line)
_RUN_FAULTS = ("outage", "silence")  # per second: the start of a run
FAULT_KINDS = _LINE_FAULTS + _RUN_FAULTS

FAULTS_HELP = """\
comma-separated KEY=VALUE. Probabilities in [0, 1], per sentence: checksum (a character of the
sentence changed, checksum kept, so it no longer matches), garbage (1-40 random bytes, some not
UTF-8, before the sentence, sometimes on their own line), truncate (the sentence cut mid-line,
no newline: the next sentence follows on the same line), overlong (a 200-4000 byte line before
the sentence); per second, whatever the rate: outage (a loss of fix starts: RMC status V, GGA
quality 0, like a tunnel), silence (the receiver stops talking, like a pulled cable).
Durations in seconds, N or MIN-MAX: outage_s (default 5-30), silence_s (default 2-10). Example:
checksum=0.01,garbage=0.01,truncate=0.01,overlong=0.001,outage=0.002,silence=0.001"""


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong, and how often. All zero: a perfect receiver on a perfect line.

    The line faults (checksum, garbage, truncate, overlong) are probabilities per sentence line
    written (each GSV message is a line); outage and silence are the probability that a run of
    them starts in a given second (so the same numbers mean the same ride at 1 Hz and at 25 Hz;
    at 1 Hz that is per epoch), with a duration drawn uniformly from `outage_s` / `silence_s`
    seconds. See FAULTS_HELP for what each one does to the bytes.
    """

    checksum: float = 0.0
    garbage: float = 0.0
    truncate: float = 0.0
    overlong: float = 0.0
    outage: float = 0.0
    silence: float = 0.0
    outage_s: tuple[float, float] = (5.0, 30.0)
    silence_s: tuple[float, float] = (2.0, 10.0)

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            p = getattr(self, kind)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fault {kind!r}: {p!r} is not a probability between 0 and 1")
        for name in ("outage_s", "silence_s"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi:
                raise ValueError(f"fault {name!r}: needs 0 < MIN <= MAX seconds, got {lo}-{hi}")

    @property
    def any(self) -> bool:
        """Whether any fault can happen at all."""
        return any(getattr(self, kind) > 0 for kind in FAULT_KINDS)

    def to_spec(self) -> str:
        """The `--faults` text that gives back these faults (non-default values only)."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if isinstance(value, tuple):
                lo, hi = value
                parts.append(f"{f.name}={lo:g}" if lo == hi else f"{f.name}={lo:g}-{hi:g}")
            else:
                parts.append(f"{f.name}={value:g}")
        return ",".join(parts)


def parse_faults(spec: str) -> Faults:
    """Parse the `--faults` syntax (see FAULTS_HELP); "" or "none" means no fault.

    Raises ValueError with a one-line message naming the offending key or value.
    """
    spec = spec.strip()
    if not spec or spec.lower() == "none":
        return Faults()
    values: dict[str, object] = {}
    known = FAULT_KINDS + ("outage_s", "silence_s")
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = (s.strip() for s in item.partition("="))
        key = key.lower()
        if key not in known:
            raise ValueError(f"unknown fault {key!r} (known: {', '.join(known)})")
        if not sep or not raw:
            raise ValueError(f"fault {key!r} needs a value: {key}=VALUE")
        if key in values:
            raise ValueError(f"fault {key!r} given twice")
        if key in FAULT_KINDS:
            try:
                p = float(raw)
            except ValueError:
                p = math.nan
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fault {key!r}: {raw!r} is not a probability between 0 and 1")
            values[key] = p
        else:
            m = re.fullmatch(r"(\d+(?:\.\d*)?)(?:-(\d+(?:\.\d*)?))?", raw)
            lo = float(m.group(1)) if m else 0.0
            hi = float(m.group(2)) if m and m.group(2) else lo
            if not m or not 0.0 < lo <= hi:
                raise ValueError(f"fault {key!r}: {raw!r} is not SECONDS or MIN-MAX seconds")
            values[key] = (lo, hi)
    return replace(Faults(), **values)  # type: ignore[arg-type]


# --- epochs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Epoch:
    """One epoch of the simulated receiver: what it wrote, and the truth behind it.

    `offset_s` is when to write `data`, in seconds after the first epoch (index / rate);
    `time` is the UTC GPS time in the sentences (to the centisecond they carry; it may differ
    from start + offset_s by under 5 ms at rates that do not divide 100 Hz). Position, altitude
    (m above MSL), speed (m/s) and course (degrees true) are what the sentences say, to their
    resolution (position 1e-5 arc-minutes, about 2 cm), noise included; in an outage, when the
    sentences carry no position, they are where the rider really was. `sats` and the DOPs are
    GGA's and GSA's (GSA lists at most 12 of the satellites used).

    `fix`: the receiver had a position fix (not in an outage); its position sentences carry it.
    `faults`: the faults injected into this epoch, one entry per occurrence ("outage" /
    "silence" on every epoch of such a run). `valid`: a fix whose every byte reaches the reader
    intact: no fault in this epoch, not silent, and not glued to a line the previous epoch left
    truncated. A correct decoder must store every valid epoch, must store no epoch without
    `fix`, and may store a faulted one (e.g. from its intact RMC when its GSA was corrupted).
    Without GGA, RMC or GLL among the sentences no epoch is valid: there is no position to store.
    `data` is b"" while silent.

    `phase`: the kind of phase the epoch belongs to (`simulate_phases`), "" from `simulate()`.
    `moving`: the truth a ride detector must find, whatever the sentences say: the unit really
    moves (its true speed is above 0). From `simulate()` whenever speed and route length are not
    0; in a phased ride only in ride phases, from their second epoch to their last.
    """

    index: int
    offset_s: float
    time: datetime
    lat: float
    lon: float
    alt: float
    speed: float
    course: float
    valid: bool
    data: bytes
    fix: bool = True
    faults: tuple[str, ...] = ()
    sats: int = 0
    hdop: float = 0.0
    vdop: float = 0.0
    pdop: float = 0.0
    phase: str = ""
    moving: bool = False

    @property
    def unix(self) -> float:
        """`time` as UTC unix seconds, the unit of `tracker.fix.Fix.time`."""
        return self.time.timestamp()


class _Sky:
    """Satellites in view and the DOPs they give: slow drift, updated once a second.

    `used` bounds the satellites used in the solution, `floor` the elevation (degrees) a
    satellite turns back up at: a floor of 5 or more keeps all 14 in view, for a sky that must
    stay good for hours.
    """

    def __init__(
        self, rng: random.Random, *, used: tuple[int, int] = (7, 14), floor: float = 1.0
    ) -> None:
        self.rng = rng
        self.used_range = used
        self.floor = floor
        # [prn, elevation, azimuth, elevation rate, azimuth rate, snr offset]
        self.sats = [
            [
                prn,
                rng.uniform(5.0, 85.0),
                rng.uniform(0.0, 360.0),
                rng.uniform(-0.008, 0.008),  # degrees per second: a GPS satellite crawls
                rng.uniform(-0.01, 0.01),
                rng.uniform(-3.0, 3.0),
            ]
            for prn in sorted(rng.sample(range(1, 33), 14))
        ]
        self.used = rng.randint(9, 12)
        self.jitter = 0.0

    def step(self) -> None:
        rng = self.rng
        for sat in self.sats:
            sat[1] += sat[3]
            if not self.floor <= sat[1] <= 89.0:
                sat[3] = -sat[3]
                sat[1] = min(max(sat[1], self.floor), 89.0)
            sat[2] = (sat[2] + sat[4]) % 360.0
            sat[5] = min(max(sat[5] + rng.uniform(-0.5, 0.5), -4.0), 4.0)
        if rng.random() < 0.05:
            lo, hi = self.used_range
            self.used = min(max(self.used + rng.choice((-1, 1)), lo), hi)
        self.jitter = min(max(self.jitter + rng.uniform(-0.03, 0.03), -0.15), 0.15)

    def in_view(self) -> list[tuple[int, int, int, int]]:
        """(prn, elevation, azimuth, snr) of the satellites above 5 degrees, by PRN."""
        return [
            (prn, round(el), round(az) % 360, round(20 + 28 * math.sin(math.radians(el)) + off))
            for prn, el, az, _, _, off in self.sats
            if el >= 5.0
        ]

    def used_prns(self, n: int | None = None) -> list[int]:
        """The highest `n` (default: all used, at most 12) satellites in view, by PRN."""
        view = sorted(self.in_view(), key=lambda s: -s[1])
        return sorted(s[0] for s in view[: min(self.used if n is None else n, 12)])

    def dops(self) -> tuple[int, float, float, float]:
        sats = min(self.used, len(self.in_view()))
        hdop = round(max(0.5, 0.45 + 5.5 / max(sats, 1) + self.jitter), 2)
        vdop = round(hdop * 1.45 + self.jitter / 2, 2)
        pdop = round(math.hypot(hdop, vdop), 2)
        return sats, hdop, vdop, pdop


@dataclass(slots=True)
class _Now:
    """One epoch's values, already rounded as the sentences will carry them."""

    time: datetime
    fix: bool
    lat: float = 0.0
    lon: float = 0.0
    lat_s: str = ""
    ns: str = ""
    lon_s: str = ""
    ew: str = ""
    alt: float = 0.0
    speed: float = 0.0
    knots: float = 0.0
    course: float = 0.0
    sats: int = 0
    hdop: float = 0.0
    vdop: float = 0.0
    pdop: float = 0.0
    err_h: float = 0.0
    used: list[int] = field(default_factory=list)
    view: list[tuple[int, int, int, int]] = field(default_factory=list)


def nmea_checksum(body: str | bytes) -> int:
    """XOR of the bytes between '$' and '*'."""
    data = body.encode("ascii") if isinstance(body, str) else body
    cs = 0
    for b in data:
        cs ^= b
    return cs


def _sentence(body: str) -> bytes:
    return f"${body}*{nmea_checksum(body):02X}".encode("ascii")


def _angle(value: float, width: int) -> tuple[str, float]:
    """NMEA ddmm.mmmmm (width 2) or dddmm.mmmmm (width 3) of |value|, and the degrees it says."""
    deg = int(abs(value))
    minutes = round((abs(value) - deg) * 60.0, 5)
    if minutes >= 60.0:
        deg, minutes = deg + 1, 0.0
    return f"{deg:0{width}d}{minutes:08.5f}", deg + minutes / 60.0


def _hms(t: datetime) -> str:
    return f"{t:%H%M%S}.{t.microsecond // 10000:02d}"


def _bodies(kind: str, talker: str, n: _Now) -> list[str]:
    t = _hms(n.time)
    fix = n.fix
    if kind == "GGA":
        if not fix:
            return [f"{talker}GGA,{t},,,,,0,00,99.99,,,,,,"]
        return [
            f"{talker}GGA,{t},{n.lat_s},{n.ns},{n.lon_s},{n.ew},1,{n.sats:02d},{n.hdop:.2f},"
            f"{n.alt:.1f},M,{GEOID_SEPARATION_M:.1f},M,,"
        ]
    if kind == "RMC":
        date = f"{n.time:%d%m%y}"
        if not fix:
            return [f"{talker}RMC,{t},V,,,,,,,{date},,,N"]
        return [
            f"{talker}RMC,{t},A,{n.lat_s},{n.ns},{n.lon_s},{n.ew},{n.knots:.3f},{n.course:.2f},"
            f"{date},,,A"
        ]
    if kind == "GSA":
        if not fix:
            return [f"{talker}GSA,A,1" + "," * 12 + ",99.99,99.99,99.99"]
        prns = [f"{p:02d}" for p in n.used] + [""] * (12 - len(n.used))
        return [f"{talker}GSA,A,3,{','.join(prns)},{n.pdop:.2f},{n.hdop:.2f},{n.vdop:.2f}"]
    if kind == "VTG":
        if not fix:
            return [f"{talker}VTG,,T,,M,,N,,K,N"]
        return [f"{talker}VTG,{n.course:.2f},T,,M,{n.knots:.3f},N,{n.speed * 3.6:.3f},K,A"]
    if kind == "ZDA":
        return [f"{talker}ZDA,{t},{n.time:%d},{n.time:%m},{n.time:%Y},00,00"]
    if kind == "GST":
        if not fix:
            return [f"{talker}GST,{t}" + "," * 7]
        e = n.err_h
        return [
            f"{talker}GST,{t},{e * 1.3:.1f},{e * 1.1:.1f},{e * 0.9:.1f},0.0,"
            f"{e:.1f},{e:.1f},{e * 1.5:.1f}"
        ]
    if kind == "GLL":
        if not fix:
            return [f"{talker}GLL,,,,,{t},V,N"]
        return [f"{talker}GLL,{n.lat_s},{n.ns},{n.lon_s},{n.ew},{t},A,A"]
    if kind == "GSV":
        # GSV is per constellation: a multi-GNSS receiver never says GNGSV, it says GPGSV.
        gsv = "GP" if talker == "GN" else talker
        view = n.view
        total = max(1, math.ceil(len(view) / 4))
        out = []
        for k in range(total):
            group = view[4 * k : 4 * k + 4]
            # In a tunnel the satellites are still predicted in view, but none is heard.
            sats = ",".join(
                f"{prn:02d},{el:02d},{az:03d}," + (f"{snr:02d}" if fix else "")
                for prn, el, az, snr in group
            )
            out.append(f"{gsv}GSV,{total},{k + 1},{len(view):02d}" + (f",{sats}" if sats else ""))
        return out
    raise ValueError(f"unknown sentence {kind!r}")


class _Injector:
    """Applies the line faults to an epoch's lines; one random stream per kind, so turning one
    fault on or off never moves where the others land."""

    def __init__(self, faults: Faults, seed: int, talker: str) -> None:
        self.faults = faults
        self.talker = talker
        self.rngs = {kind: random.Random(f"{seed}:fault:{kind}") for kind in FAULT_KINDS}

    def lines(self, lines: list[bytes], injected: list[str]) -> bytes:
        f, rngs = self.faults, self.rngs
        out = bytearray()
        for line in lines:
            if rngs["garbage"].random() < f.garbage:
                out += self._garbage(rngs["garbage"])
                injected.append("garbage")
            if rngs["overlong"].random() < f.overlong:
                out += self._overlong(rngs["overlong"])
                injected.append("overlong")
            if rngs["checksum"].random() < f.checksum:
                line = _corrupt(line, rngs["checksum"])
                injected.append("checksum")
            if rngs["truncate"].random() < f.truncate:
                # Cut inside the sentence, before its checksum can be complete; no newline,
                # so the next sentence starts on the same line (a receiver reset mid-write).
                out += line[: rngs["truncate"].randint(1, len(line) - 2)]
                injected.append("truncate")
            else:
                out += line + b"\r\n"
        return bytes(out)

    @staticmethod
    def _garbage(rng: random.Random) -> bytes:
        n = rng.randint(1, 40)
        # Line noise or a wrong baud rate: any byte at all, and at least one that is not UTF-8.
        # (0x80-0xBF cannot start a UTF-8 character, 0xF8-0xFF cannot appear in UTF-8 at all.)
        first = rng.choice((rng.randint(0x80, 0xBF), rng.randint(0xF8, 0xFF)))
        junk = bytes([first]) + rng.randbytes(n - 1)
        return junk + b"\r\n" if rng.random() < 0.5 else junk

    def _overlong(self, rng: random.Random) -> bytes:
        n = rng.randint(200, 4000)
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.-"
        return ("$" + self.talker + "".join(rng.choices(alphabet, k=n)) + "\r\n").encode("ascii")


def _corrupt(line: bytes, rng: random.Random) -> bytes:
    """Change one letter or digit between '$' and '*' to another of its kind: the XOR checksum
    then cannot match (a one-byte change always changes an XOR)."""
    star = line.rindex(b"*")
    positions = [i for i in range(1, star) if chr(line[i]).isalnum()]
    i = rng.choice(positions)
    c = chr(line[i])
    pool = "0123456789" if c.isdigit() else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    new = rng.choice([x for x in pool if x != c])
    return line[:i] + new.encode("ascii") + line[i + 1 :]


def simulate(
    route: Sequence[RoutePoint],
    *,
    rate_hz: float = 1.0,
    speed_mps: float = 6.0,
    start_time: datetime,
    noise_m: float = 0.0,
    talker: str = "GN",
    sentences: Sequence[str] = DEFAULT_SENTENCES,
    faults: Faults = Faults(),  # noqa: B008 - frozen, so a shared default is safe
    seed: int = 0,
    loops: int = 1,
    duration_s: float | None = None,
) -> Iterator[Epoch]:
    """Ride `route` at `speed_mps` and yield one `Epoch` per 1/`rate_hz` seconds.

    The ride covers the route `loops` times (a closed route round and round, an open one out and
    back; `loops=0` never ends) and its last epoch is at the end of the last loop; `duration_s`,
    when given, sets the length instead (epochs at offsets below it), and is required for a
    standing rider (speed 0 or a one-point route). `start_time` (timezone-aware) is the GPS time
    of the first epoch, rounded to the centisecond. Sentences come in the order given; times
    carry centiseconds (hhmmss.ss). `noise_m` is the 1-sigma error per horizontal axis (1.5x
    vertically), a random walk with a 30 s correlation time like a real receiver's, not white
    noise. Deterministic: the same arguments always give the same epochs; the motion, the sky and
    each fault kind draw from their own streams of `seed`. Raises ValueError on bad arguments.
    """
    kinds = _check(rate_hz, speed_mps, start_time, talker, sentences)
    if not noise_m >= 0:
        raise ValueError("noise_m must not be negative")
    if loops < 0:
        raise ValueError("loops must be 0 (endless) or more")
    path = _Path(route)
    if duration_s is not None:
        if duration_s <= 0:
            raise ValueError("duration_s must be positive")
        count: int | None = math.ceil(duration_s * rate_hz - 1e-9)
    elif loops == 0:
        count = None
    elif speed_mps <= 0 or path.length <= 0:
        raise ValueError("a rider who does not move needs duration_s")
    else:
        count = math.floor(loops * path.length / speed_mps * rate_hz + 1e-9) + 1
    truths = _steady(path, count, rate_hz, speed_mps, noise_m, seed)
    return _epochs(truths, rate_hz, start_time, talker, kinds, faults, seed)


def _check(
    rate_hz: float,
    speed_mps: float,
    start_time: datetime,
    talker: str,
    sentences: Sequence[str],
) -> list[str]:
    """Check the arguments simulate() and simulate_phases() share; return the sentence kinds."""
    if not rate_hz > 0:
        raise ValueError("rate_hz must be positive")
    if not speed_mps >= 0:
        raise ValueError("speed_mps must not be negative")
    if start_time.tzinfo is None:
        raise ValueError("start_time must be timezone-aware (UTC)")
    if not re.fullmatch(r"[A-Z]{2}", talker):
        raise ValueError(f"talker must be two capital letters, not {talker!r}")
    kinds = [s.upper() for s in sentences]
    unknown = [s for s in kinds if s not in SENTENCES]
    if unknown or not kinds:
        raise ValueError(f"unknown sentence {unknown[0]!r}" if unknown else "no sentence chosen")
    return kinds


@dataclass(slots=True)
class _Truth:
    """What a rider model hands the receiver for one epoch: the values its sentences will carry
    (noise included, not yet rounded), and the phase and motion truth behind them."""

    lat: float
    lon: float
    ele: float
    speed: float  # m/s over ground, as reported
    course: float  # degrees true, as reported
    sats: int
    hdop: float
    vdop: float
    pdop: float
    err_h: float  # GST's 1-sigma horizontal error, m
    used: list[int]
    view: list[tuple[int, int, int, int]]
    phase: str = ""
    moving: bool = False


def _steady(
    path: _Path,
    count: int | None,
    rate_hz: float,
    speed_mps: float,
    noise_m: float,
    seed: int,
) -> Iterator[_Truth]:
    """simulate()'s rider: constant speed along the path, `count` epochs (None: forever)."""
    motion = random.Random(f"{seed}:motion")
    sky = _Sky(random.Random(f"{seed}:sky"))
    decay = math.exp(-1.0 / (rate_hz * NOISE_TAU_S))
    kick = math.sqrt(1.0 - decay * decay)
    err = [motion.gauss(0.0, 1.0) for _ in range(3)]  # east, north, up; in units of sigma
    moving = speed_mps > 0 and path.length > 0
    second = 0
    for i in itertools.count() if count is None else range(count):
        offset = i / rate_hz
        while second < int(offset):
            sky.step()
            second += 1
        if i:
            err = [decay * e + kick * motion.gauss(0.0, 1.0) for e in err]
        lat, lon, ele, course = path.at(speed_mps * offset)
        if noise_m > 0:
            lat, lon = _offset(lat, lon, err[0] * noise_m, err[1] * noise_m)
            ele += err[2] * noise_m * 1.5
        sats, hdop, vdop, pdop = sky.dops()
        yield _Truth(
            lat=lat,
            lon=lon,
            ele=ele,
            speed=speed_mps,
            course=course,
            sats=sats,
            hdop=hdop,
            vdop=vdop,
            pdop=pdop,
            err_h=noise_m if noise_m > 0 else 0.8 * hdop,
            used=sky.used_prns(),
            view=sky.in_view(),
            moving=moving,
        )


def _epochs(
    truths: Iterable[_Truth],
    rate_hz: float,
    start_time: datetime,
    talker: str,
    kinds: list[str],
    faults: Faults,
    seed: int,
) -> Iterator[Epoch]:
    """The receiver: one epoch per truth, with its time, sentences, faults and validity."""
    start_us = round(start_time.astimezone(UTC).timestamp() * 100) * 10_000
    epoch0 = datetime(1970, 1, 1, tzinfo=UTC)
    injector = _Injector(faults, seed, talker)
    outage_rng, silence_rng = injector.rngs["outage"], injector.rngs["silence"]
    # Per-second start probabilities as per-epoch ones: 1 - (1 - p) ** (1 / rate).
    p_outage = 1.0 - (1.0 - faults.outage) ** (1.0 / rate_hz)
    p_silence = 1.0 - (1.0 - faults.silence) ** (1.0 / rate_hz)
    outage_left = silence_left = 0
    glued = False  # the previous output ended mid-line: our first line is glued to it
    has_position = any(k in ("GGA", "RMC", "GLL") for k in kinds)
    for i, truth in enumerate(truths):
        offset = i / rate_hz
        # Centiseconds from an integer count, so no float drift after hours at 25 Hz.
        t = epoch0 + timedelta(microseconds=start_us + round(i * 100 / rate_hz) * 10_000)

        injected: list[str] = []
        if outage_left == 0 and outage_rng.random() < p_outage:
            outage_left = max(1, round(outage_rng.uniform(*faults.outage_s) * rate_hz))
        if silence_left == 0 and silence_rng.random() < p_silence:
            silence_left = max(1, round(silence_rng.uniform(*faults.silence_s) * rate_hz))
        fix = outage_left == 0
        if not fix:
            outage_left -= 1
            injected.append("outage")
        silent = silence_left > 0
        if silent:
            silence_left -= 1

        lat, lon = truth.lat, truth.lon
        lat_s, lat_q = _angle(lat, 2)
        lon_s, lon_q = _angle(lon, 3)
        sats, hdop, vdop, pdop = truth.sats, truth.hdop, truth.vdop, truth.pdop
        knots = round(truth.speed * KNOTS_PER_MPS, 3)
        now = _Now(
            time=t,
            fix=fix,
            lat=math.copysign(lat_q, lat),
            lon=math.copysign(lon_q, lon),
            lat_s=lat_s,
            ns="N" if lat >= 0 else "S",
            lon_s=lon_s,
            ew="E" if lon >= 0 else "W",
            alt=round(truth.ele, 1),
            speed=truth.speed,
            knots=knots,
            course=round(truth.course, 2) % 360.0,
            sats=sats,
            hdop=hdop,
            vdop=vdop,
            pdop=pdop,
            err_h=truth.err_h,
            used=truth.used,
            view=truth.view,
        )
        lines = [_sentence(body) for kind in kinds for body in _bodies(kind, talker, now)]
        # Roll the line-fault dice even for a silent epoch, so silence never shifts them.
        data = injector.lines(lines, injected)
        if silent:
            data = b""
            injected = [k for k in injected if k == "outage"] + ["silence"]
        valid = has_position and fix and not silent and not injected and not glued
        if data:
            glued = not data.endswith(b"\n")
        yield Epoch(
            index=i,
            offset_s=offset,
            time=t,
            lat=now.lat,
            lon=now.lon,
            alt=now.alt,
            speed=knots / KNOTS_PER_MPS,
            course=now.course,
            valid=valid,
            data=data,
            fix=fix,
            faults=tuple(injected),
            sats=sats if fix else 0,
            hdop=hdop if fix else 99.99,
            vdop=vdop if fix else 99.99,
            pdop=pdop if fix else 99.99,
            phase=truth.phase,
            moving=truth.moving,
        )


# --- phased rides -------------------------------------------------------------------------------

PHASE_KINDS = ("park", "ride", "bad")

PHASES_HELP = """\
ride in phases instead of round the route: comma-separated KIND:DURATION, in order. KIND: park
(standing still under a good sky: the position wanders a few metres, up to ~20 m, speed noise
below 0.4 m/s, and every 3-5 minutes one epoch with a 2-5 m/s speed spike), ride (on along the
route from where the last ride stopped: from standstill up to --speed at 0.3-0.5 m/s2, and down
to standstill at the end of the phase), bad (parked under trees or by a wall: HDOP 4-8, 4-6
satellites, drift up to ~50 m, and every 2-4 minutes a 10-20 s phantom walk at 1-3 m/s on 4
satellites). DURATION in seconds, or with a unit s, m or h: 90, 1.5, 20m, 1h. Replaces --loops
and --duration (the phases set the length) and --noise (each kind has its own). Example:
park:60,ride:20m,park:10m,ride:20m,bad:30m,ride:15m,park:20m"""

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase of a phased ride: what the unit does (one of PHASE_KINDS), for how long."""

    kind: str
    duration_s: float

    def __post_init__(self) -> None:
        if self.kind not in PHASE_KINDS:
            known = ", ".join(PHASE_KINDS)
            raise ValueError(f"unknown phase kind {self.kind!r} (known: {known})")
        if not 0.0 < self.duration_s < math.inf:
            raise ValueError(f"phase {self.kind!r}: {self.duration_s!r} is not a positive duration")


def parse_phases(spec: str) -> list[Phase]:
    """Parse the `--phases` syntax (see PHASES_HELP): KIND:DURATION[,KIND:DURATION...].

    Pure. Raises ValueError with a one-line message naming the offending phase (by position and
    text) and what is wrong with it.
    """
    if not spec.strip():
        raise ValueError("no phase given: expected KIND:SECONDS[,KIND:SECONDS...]")
    phases = []
    for n, item in enumerate(spec.split(","), 1):
        item = item.strip()
        if not item:
            raise ValueError(f"phase {n} is empty (a stray comma?)")
        kind, sep, raw = (s.strip() for s in item.partition(":"))
        kind = kind.lower()
        if kind not in PHASE_KINDS:
            known = ", ".join(PHASE_KINDS)
            raise ValueError(f"phase {n} {item!r}: unknown kind {kind!r} (known: {known})")
        if not sep or not raw:
            raise ValueError(f"phase {n} {item!r}: no duration, expected {kind}:SECONDS")
        m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)", raw.lower())
        if not m:
            raise ValueError(
                f"phase {n} {item!r}: {raw!r} is not a duration (e.g. 90, 1.5, 20m, 1h)"
            )
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if seconds <= 0:
            raise ValueError(f"phase {n} {item!r}: the duration must be more than 0")
        phases.append(Phase(kind, seconds))
    return phases


def simulate_phases(
    route: Sequence[RoutePoint],
    phases: Sequence[Phase] | str,
    *,
    rate_hz: float = 1.0,
    speed_mps: float = 6.0,
    start_time: datetime,
    talker: str = "GN",
    sentences: Sequence[str] = DEFAULT_SENTENCES,
    faults: Faults = Faults(),  # noqa: B008 - frozen, so a shared default is safe
    seed: int = 0,
) -> Iterator[Epoch]:
    """A ride in phases (parked, riding, parked under a poor sky) on `route`: one `Epoch` per
    1/`rate_hz` seconds, for testing what must tell riding from standing from GPS alone.

    `phases` is a list of `Phase` or the text `parse_phases` reads; PHASES_HELP says what each
    kind does. The ride lasts the sum of their durations; an epoch belongs to the phase its
    offset falls in (`Epoch.phase`), and `Epoch.moving` is true only in a ride phase while the
    true speed is above 0 (not at its first epoch, which is at standstill). Reported speeds are
    not the truth: noise, park speed spikes and phantom walks report speed while standing.
    `speed_mps` is the cruise speed of the ride phases. The noise is the phases' own, in metres
    and seconds whatever the rate (phantom walks last 10-20 s, 10-20 epochs at 1 Hz); a park
    speed spike is one epoch at any rate. An error beyond a phase's bound when it begins (a park
    after a bad phase) settles to it within about 10 s rather than jumping. Sentences, times,
    faults and `valid` are as in `simulate()`. Deterministic for a seed. Raises ValueError on
    bad arguments.
    """
    if isinstance(phases, str):
        phases = parse_phases(phases)
    phases = list(phases)
    if not phases:
        raise ValueError("no phase given")
    kinds = _check(rate_hz, speed_mps, start_time, talker, sentences)
    truths = _phased(_Path(route), phases, rate_hz, speed_mps, seed)
    return _epochs(truths, rate_hz, start_time, talker, kinds, faults, seed)


@dataclass(frozen=True, slots=True)
class _Drift:
    """How the position error wanders in a kind of phase (see _Wander)."""

    sigma_v: float  # m/s: 1-sigma per axis of the velocity the error drifts at
    tau_v: float  # s: how long that drift keeps its direction
    tau_p: float  # s: how fast the error is pulled back towards the true spot
    bound_m: float  # the horizontal error stays within this


# The error's 1-sigma per axis comes to about sigma_v * sqrt(tau_v * tau_p): 1.7 m riding,
# 3.9 m parked, 9 m in a bad spot; the bounds cut off only the rare long excursion.
_DRIFT = {
    "ride": _Drift(0.05, 20.0, 60.0, 10.0),
    "park": _Drift(0.08, 20.0, 120.0, 20.0),
    "bad": _Drift(0.25, 15.0, 90.0, 45.0),
}
_SETTLE_S = 3.0  # an error beyond the bound shrinks back to it with this time constant
_UERE_M = 3.0  # GST's 1-sigma horizontal error per unit of HDOP


class _Wander:
    """The receiver's position error, metres east, north and up: a random walk whose steps are
    correlated (its velocity is a Gauss-Markov process), pulled back towards the true spot and
    bounded. Smooth like a real receiver's: metres over minutes, centimetres from one second to
    the next, so standing still does not look like moving."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.p = [rng.gauss(0.0, 1.0) for _ in range(3)]
        self.v = [0.0, 0.0, 0.0]

    def step(self, dt: float, drift: _Drift) -> None:
        p, v = self.p, self.v
        decay = math.exp(-dt / drift.tau_v)
        kick = drift.sigma_v * math.sqrt(1.0 - decay * decay)
        for k in range(3):
            v[k] = decay * v[k] + kick * self.rng.gauss(0.0, 1.0)
            p[k] += (v[k] - p[k] / drift.tau_p) * dt
        bound = drift.bound_m
        r = math.hypot(p[0], p[1])
        if r > bound:
            # Settle back rather than jump (a new phase with a tighter bound), and stop drifting
            # outwards.
            scale = (bound + (r - bound) * math.exp(-dt / _SETTLE_S)) / r
            p[0], p[1] = p[0] * scale, p[1] * scale
            out = (v[0] * p[0] + v[1] * p[1]) / (r * scale)
            if out > 0:
                v[0] -= out * p[0] / (r * scale)
                v[1] -= out * p[1] / (r * scale)
        p[2] = min(max(p[2], -1.5 * bound), 1.5 * bound)


@dataclass(slots=True)
class _Rider:
    """What the phases of a ride share and hand on: the route ridden so far, the sky, the error."""

    path: _Path
    rate_hz: float
    speed_mps: float
    rng: random.Random
    sky: _Sky
    wander: _Wander
    s: float = 0.0  # metres of the route ridden so far
    second: int = 0  # the sky has been stepped up to this second

    def tick(self, i: int) -> float:
        """The offset of epoch i, in seconds; the sky brought up to it."""
        offset = i / self.rate_hz
        while self.second < int(offset):
            self.sky.step()
            self.second += 1
        return offset

    def truth(
        self,
        where: tuple[float, float, float],
        speed: float,
        course: float,
        *,
        phase: str,
        moving: bool = False,
        sky: tuple[int, float] | None = None,
        shift: tuple[float, float] = (0.0, 0.0),
    ) -> _Truth:
        """The epoch at the true spot `where` (lat, lon, ele) plus the error and `shift` (metres
        east, north); `sky` (satellites, HDOP) overrides the good sky's."""
        lat, lon, ele = where
        east, north, up = self.wander.p
        lat, lon = _offset(lat, lon, east + shift[0], north + shift[1])
        if sky is None:
            sats, hdop, vdop, pdop = self.sky.dops()
        else:
            sats, hdop = sky
            vdop = round(hdop * 1.6, 2)
            pdop = round(math.hypot(hdop, vdop), 2)
        return _Truth(
            lat=lat,
            lon=lon,
            ele=ele + up,
            speed=speed,
            course=course % 360.0,
            sats=sats,
            hdop=hdop,
            vdop=vdop,
            pdop=pdop,
            err_h=_UERE_M * hdop,
            used=self.sky.used_prns(sats),
            view=self.sky.in_view(),
            phase=phase,
            moving=moving,
        )


def _phased(
    path: _Path, phases: list[Phase], rate_hz: float, speed_mps: float, seed: int
) -> Iterator[_Truth]:
    rng = random.Random(f"{seed}:phases")
    # A good sky all along (8-12 satellites, HDOP 0.7-1.5); a bad phase overrides it.
    sky = _Sky(random.Random(f"{seed}:sky"), used=(8, 12), floor=5.0)
    rider = _Rider(path, rate_hz, speed_mps, rng, sky, _Wander(rng))
    models = {"park": _park, "ride": _ride, "bad": _bad}
    start, i = 0.0, 0
    for phase in phases:
        end = start + phase.duration_s
        n = math.ceil(end * rate_hz - 1e-9)
        yield from models[phase.kind](rider, range(i, n), start, end)
        start, i = end, n


def _park(r: _Rider, epochs: range, t0: float, t1: float) -> Iterator[_Truth]:
    rng, drift, dt = r.rng, _DRIFT["park"], 1.0 / r.rate_hz
    where = r.path.at(r.s)[:3]
    spike_at = t0 + rng.uniform(30.0, 300.0)
    for i in epochs:
        offset = r.tick(i)
        r.wander.step(dt, drift)
        speed = min(abs(rng.gauss(0.0, 0.12)), 0.4)
        course = rng.uniform(0.0, 360.0)  # a standing receiver's course means nothing
        if offset >= spike_at:
            # What real receivers do now and then at a standstill: one epoch of speed from a
            # bad Doppler measurement, at a good HDOP, the position unmoved.
            speed = rng.uniform(2.0, 5.0)
            spike_at = offset + rng.uniform(180.0, 300.0)
        yield r.truth(where, speed, course, phase="park")


@dataclass(frozen=True, slots=True)
class _Profile:
    """A ride phase's true speed: up from 0 at `accel`, `top` for as long as the phase allows,
    down to 0 at `decel` exactly when it ends (no cruise at all when the phase is too short to
    reach the cruise speed: then `top` is lower)."""

    accel: float
    decel: float
    top: float
    duration: float

    @classmethod
    def make(cls, cruise: float, duration: float, accel: float, decel: float) -> _Profile:
        return cls(accel, decel, min(cruise, duration / (1 / accel + 1 / decel)), duration)

    def at(self, t: float) -> tuple[float, float]:
        """(metres ridden, speed in m/s) t seconds into the phase."""
        a, d, top = self.accel, self.decel, self.top
        t = min(max(t, 0.0), self.duration)
        t1, t2 = top / a, self.duration - top / d
        if t <= t1:
            return 0.5 * a * t * t, a * t
        s1 = 0.5 * top * t1
        if t <= t2:
            return s1 + top * (t - t1), top
        u = t - t2
        return s1 + top * (t2 - t1) + top * u - 0.5 * d * u * u, max(0.0, top - d * u)


def _ride(r: _Rider, epochs: range, t0: float, t1: float) -> Iterator[_Truth]:
    rng, drift, dt = r.rng, _DRIFT["ride"], 1.0 / r.rate_hz
    profile = _Profile.make(r.speed_mps, t1 - t0, rng.uniform(0.3, 0.5), rng.uniform(0.3, 0.5))
    for i in epochs:
        offset = r.tick(i)
        r.wander.step(dt, drift)
        ridden, v = profile.at(offset - t0)
        lat, lon, ele, course = r.path.at(r.s + ridden)
        speed = abs(v + rng.gauss(0.0, 0.08))
        course += rng.gauss(0.0, 1.0)
        yield r.truth((lat, lon, ele), speed, course, phase="ride", moving=v > 0)
    r.s += profile.at(t1 - t0)[0]


def _bad(r: _Rider, epochs: range, t0: float, t1: float) -> Iterator[_Truth]:
    rng, drift, dt = r.rng, _DRIFT["bad"], 1.0 / r.rate_hz
    where = r.path.at(r.s)[:3]
    sats, hdop, change_at = 4, 0.0, t0  # drawn at the first epoch
    walk_at = t0 + rng.uniform(20.0, 240.0)
    walk_left = 0
    walk_speed = walk_course = walk_hdop = 0.0
    east = north = 0.0  # how far the phantom walk has gone
    for i in epochs:
        offset = r.tick(i)
        if not walk_left and offset >= walk_at:
            walk_at = offset + rng.uniform(120.0, 240.0)
            n = round(rng.randint(10, 20) * r.rate_hz)
            if i + n <= epochs.stop:  # only whole walks: a test may count their epochs
                walk_left = n
                walk_speed = rng.uniform(1.2, 2.8)
                walk_course = rng.uniform(0.0, 360.0)
                walk_hdop = rng.uniform(6.3, 7.7)
        if walk_left:
            # A phantom walk: a solution from 4 satellites, one of them reflected, walks off at a
            # steady speed and course, the position following it; the error underneath is held.
            walk_left -= 1
            speed = min(max(walk_speed + rng.gauss(0.0, 0.05), 1.0), 3.0)
            course = (walk_course + rng.gauss(0.0, 1.0)) % 360.0
            east += speed * dt * math.sin(math.radians(course))
            north += speed * dt * math.cos(math.radians(course))
            sky = (4, round(min(max(walk_hdop + rng.gauss(0.0, 0.1), 6.0), 8.0), 2))
            yield r.truth(where, speed, course, phase="bad", sky=sky, shift=(east, north))
            if not walk_left:
                east = north = 0.0  # the reflection is gone: the next epoch snaps back
            continue
        r.wander.step(dt, drift)
        if offset >= change_at:
            last = hdop
            while abs(hdop - last) < 0.5:  # a jump, not a wobble
                hdop = round(rng.uniform(4.0, 8.0), 2)
            sats = rng.randint(4, 6)
            change_at = offset + rng.uniform(2.0, 6.0)
        speed = min(abs(rng.gauss(0.0, 0.2)), 0.9)  # mostly below 0.5, never a walk's 1 m/s
        yield r.truth(where, speed, rng.uniform(0.0, 360.0), phase="bad", sky=(sats, hdop))


# --- writing ------------------------------------------------------------------------------------


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
            if kind in _LINE_FAULTS:
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `tracker simulate` options to `parser` (see `main`)."""
    src = parser.add_argument_group("route").add_mutually_exclusive_group()
    src.add_argument("--route", metavar="FILE.gpx", help="ride this GPX track/route/waypoints")
    src.add_argument(
        "--loop",
        metavar="LAT,LON[,RADIUS_M]",
        help="ride a generated loop around LAT,LON (radius default 1000 m)",
    )
    parser.epilog = (parser.epilog or "") + "Without --route or --loop: the bundled demo ride."
    nmea = parser.add_argument_group("receiver")
    nmea.add_argument(
        "--rate", type=float, default=1.0, metavar="HZ", help="epochs a second (default 1)"
    )
    nmea.add_argument("--speed", type=float, default=6.0, metavar="M/S", help="default 6")
    nmea.add_argument(
        "--noise",
        type=float,
        metavar="M",
        help="1-sigma error per axis, m (default 0)",
    )
    nmea.add_argument("--faults", default="", metavar="SPEC", help=FAULTS_HELP)
    nmea.add_argument(
        "--start",
        metavar="TIME",
        help="GPS time of the first epoch, ISO 8601, e.g. 2026-06-01T08:00:00Z (default: now)",
    )
    nmea.add_argument("--talker", default="GN", help="talker ID (default GN)")
    nmea.add_argument(
        "--sentences",
        default=",".join(DEFAULT_SENTENCES),
        metavar="LIST",
        help=f"comma-separated, in order, of {','.join(SENTENCES)} (default %(default)s)",
    )
    nmea.add_argument("--loops", type=int, help="times round the route, 0 = forever (default 1)")
    nmea.add_argument("--duration", type=float, metavar="S", help="ride this long instead")
    nmea.add_argument("--phases", metavar="SPEC", help=PHASES_HELP)
    nmea.add_argument("--seed", type=int, default=0, help="for noise, sky and faults")
    pace = parser.add_argument_group("pacing")
    pace.add_argument("--fast", action="store_true", help="no real-time pacing")
    pace.add_argument("--speedup", type=float, default=1.0, metavar="X", help="X times real time")
    out = parser.add_argument_group("output").add_mutually_exclusive_group()
    out.add_argument(
        "--out",
        metavar="PATH",
        help="a file, a serial device, a pty slave or a pyserial URL; - = stdout (default)",
    )
    out.add_argument(
        "--pty",
        nargs="?",
        const="",
        metavar="LINK",
        help="create a pty (and a symlink LINK to it), print its path, stream into it",
    )
    parser.add_argument("--baudrate", type=int, default=9600, help="for a real serial port")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="with --pty: start at once instead of waiting for a reader to open it",
    )


def _error(msg: str) -> int:
    print(f"tracker simulate: error: {msg}", file=sys.stderr)
    return 2


def _parse_start(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC).replace(microsecond=0)
    t = datetime.fromisoformat(text.strip())
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _parse_loop(text: str) -> list[RoutePoint]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError("expected LAT,LON[,RADIUS_M]")
    lat, lon = parts[0], parts[1]
    radius = parts[2] if len(parts) == 3 else 1000.0
    if not (-85.0 <= lat <= 85.0 and -180.0 <= lon <= 180.0 and radius > 0):
        raise ValueError("latitude within +-85, longitude within +-180, a positive radius")
    return generated_loop(lat, lon, radius)


def main(args: argparse.Namespace) -> int:
    """Run `tracker simulate` with options from `add_arguments`; return the exit status.

    2 for bad options (one line on stderr), 1 when the output cannot be opened or fails, else 0
    (also when interrupted by SIGINT/SIGTERM, which stop the ride at once). The summary goes to
    stderr at the end.
    """
    try:
        faults = parse_faults(args.faults or "")
    except ValueError as e:
        return _error(f"--faults: {e}")
    try:
        start = _parse_start(args.start)
    except ValueError:
        return _error(f"--start: {args.start!r} is not an ISO 8601 time like 2026-06-01T08:00:00Z")
    sentences = [s.strip().upper() for s in args.sentences.split(",") if s.strip()]
    bad = [s for s in sentences if s not in SENTENCES]
    if bad or not sentences:
        return _error(f"--sentences: unknown sentence {bad[0]!r}" if bad else "--sentences: none")
    if not re.fullmatch(r"[A-Z]{2}", args.talker):
        return _error(f"--talker: {args.talker!r} is not two capital letters")
    phases: list[Phase] | None = None
    if args.phases is not None:
        try:
            phases = parse_phases(args.phases)
        except ValueError as e:
            return _error(f"--phases: {e}")
        for name, value in (("--loops", args.loops), ("--duration", args.duration)):
            if value is not None:
                return _error(f"--phases: not with {name} (the phases set the length)")
        if args.noise is not None:
            return _error("--phases: not with --noise (each kind of phase has its own)")
    noise = args.noise if args.noise is not None else 0.0
    loops = args.loops if args.loops is not None else 1
    for name, ok in (
        ("--rate", args.rate > 0),
        ("--speed", args.speed >= 0),
        ("--noise", noise >= 0),
        ("--loops", loops >= 0),
        ("--speedup", args.speedup > 0),
        ("--duration", args.duration is None or args.duration > 0),
        ("--baudrate", args.baudrate > 0),
    ):
        if not ok:
            return _error(f"{name}: out of range")
    try:
        if args.route:
            route = load_route(args.route)
        elif args.loop:
            route = _parse_loop(args.loop)
        else:
            route = demo_route()
    except (OSError, ValueError) as e:
        what = "--route" if args.route else "--loop" if args.loop else "demo route"
        return _error(f"{what}: {e}")

    def epochs(start: datetime) -> Iterator[Epoch]:
        if phases is not None:
            return simulate_phases(
                route,
                phases,
                rate_hz=args.rate,
                speed_mps=args.speed,
                start_time=start,
                talker=args.talker,
                sentences=sentences,
                faults=faults,
                seed=args.seed,
            )
        return simulate(
            route,
            rate_hz=args.rate,
            speed_mps=args.speed,
            start_time=start,
            noise_m=noise,
            talker=args.talker,
            sentences=sentences,
            faults=faults,
            seed=args.seed,
            loops=loops,
            duration_s=args.duration,
        )

    try:
        epochs(start)  # check the arguments now, before any output is opened
    except ValueError as e:
        return _error(str(e))

    stop = threading.Event()
    with _stop_on_signals(stop):
        if args.pty is not None:
            return _main_pty(args, epochs, start, stop)
        return _main_out(args, epochs(start), stop)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM only set `stop` (the run ends at its next wait); restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, lambda *_: stop.set())
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _report(summary: Summary, extra: str = "") -> None:
    print(f"tracker simulate: {summary.format()}{extra}", file=sys.stderr)


def _main_pty(
    args: argparse.Namespace,
    epochs: Callable[[datetime], Iterator[Epoch]],
    start: datetime,
    stop: threading.Event,
) -> int:
    from tracker.pty import PtyWriter

    try:
        writer = PtyWriter.open(args.pty or None)
    except OSError as e:
        return _error(f"--pty: {e}")
    with writer:
        where = writer.slave_path + (f" (link {writer.link})" if writer.link else "")
        print(f"tracker simulate: NMEA on {where}", file=sys.stderr, flush=True)
        if not args.no_wait:
            print("tracker simulate: waiting for a reader to open it", file=sys.stderr, flush=True)
            if not writer.wait_for_reader(stop=stop):
                return 0
            if not args.start:
                start = _parse_start(None)  # "now" is when the ride really starts
        summary = run(
            epochs(start),
            writer.write,
            realtime=not args.fast,
            speedup=args.speedup,
            stop=stop,
        )
        _report(summary, f"; pty: {writer.dropped} bytes dropped in {writer.drops} writes")
    return 0


def _main_out(args: argparse.Namespace, epochs: Iterator[Epoch], stop: threading.Event) -> int:
    import serial

    target = args.out or "-"
    ratelog = RateLimitedLog(log, interval_s=60.0)
    closer: Callable[[], object]
    try:
        if target == "-":
            stream = sys.stdout.buffer

            def write(data: bytes) -> None:
                stream.write(data)
                stream.flush()

            closer = stream.flush
        elif "://" in target or (os.path.exists(target) and not os.path.isfile(target)):
            port = serial.serial_for_url(target, baudrate=args.baudrate, write_timeout=2.0)

            def write(data: bytes) -> None:
                try:
                    port.write(data)
                except serial.SerialTimeoutException:
                    ratelog.warning("timeout", "%s: write timed out, epoch dropped", target)

            closer = port.close
            first = next(epochs, None)
            if first is not None:
                needed = len(first.data) * args.rate * 10  # 10 bits a byte on a UART
                # A pty ignores the baud rate; a UART that is too slow falls behind.
                real_uart = "://" not in target and not os.path.realpath(target).startswith(
                    "/dev/pts/"
                )
                if needed > args.baudrate and real_uart:
                    log.warning(
                        "%s: %d bit/s needed at %g Hz, more than %d baud",
                        target,
                        needed,
                        args.rate,
                        args.baudrate,
                    )
                epochs = itertools.chain([first], epochs)
        else:
            fh = open(Path(target), "wb")  # noqa: SIM115 - closed in the finally below

            def write(data: bytes) -> None:
                fh.write(data)
                if not args.fast:
                    fh.flush()  # someone may be tailing it

            closer = fh.close
    except (OSError, serial.SerialException) as e:
        print(f"tracker simulate: cannot open {target}: {e}", file=sys.stderr)
        return 1
    summary = Summary()  # filled as we go, so a failed write still reports what went out
    status = 0
    try:
        run(
            epochs,
            write,
            realtime=not args.fast,
            speedup=args.speedup,
            stop=stop,
            progress=summary.add,
        )
    except BrokenPipeError:
        # The reader of stdout went away (| head): stop quietly, and keep Python's exit flush
        # from failing on the same pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, serial.SerialException) as e:
        print(f"tracker simulate: writing to {target} failed: {e}", file=sys.stderr)
        status = 1
    finally:
        with contextlib.suppress(OSError, serial.SerialException):
            closer()
    _report(summary)
    return status
