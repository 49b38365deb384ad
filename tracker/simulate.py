"""The NMEA simulator behind `tracker simulate`: a route in, timed NMEA 0183 out.

A route (a GPX file, a generated loop, or the bundled demo ride) is followed at a fixed speed and
sampled at a fixed rate; every sample is an `Epoch` holding the sentences a receiver would send
for it and the truth a test needs to judge a decoder (`Epoch.valid`: a fix that a correct decoder
must store). Noise and faults (bad checksums, garbage, truncated and overlong lines, loss of fix,
silence) are injected from seeded random streams, so a given seed always produces the same bytes.

`simulate()` is pure (no I/O, no clock); `run()` paces epochs out to any `write(bytes)` callable
in real time, faster, or as fast as possible; `main()` is the CLI glue (a file, stdout, a serial
port or a pty). Riders use it to test a unit indoors, the demo and the end-to-end tests to feed
the daemon a ride whose every fix is known in advance.
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

from tracker.logutil import RateLimitedLog

log = logging.getLogger(__name__)

SENTENCES = ("GGA", "RMC", "GSA", "GSV", "VTG", "ZDA", "GST", "GLL")
DEFAULT_SENTENCES = ("GGA", "RMC", "GSA", "VTG")
DEMO_ROUTE = "demo-route.gpx"  # in tracker/data/

EARTH_RADIUS_M = 6_371_008.8  # mean radius; plenty for a bicycle's scale
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

    @property
    def unix(self) -> float:
        """`time` as UTC unix seconds, the unit of `tracker.fix.Fix.time`."""
        return self.time.timestamp()


class _Sky:
    """Satellites in view and the DOPs they give: slow drift, updated once a second."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
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
            if not 1.0 <= sat[1] <= 89.0:
                sat[3] = -sat[3]
                sat[1] = min(max(sat[1], 1.0), 89.0)
            sat[2] = (sat[2] + sat[4]) % 360.0
            sat[5] = min(max(sat[5] + rng.uniform(-0.5, 0.5), -4.0), 4.0)
        if rng.random() < 0.05:
            self.used = min(max(self.used + rng.choice((-1, 1)), 7), 14)
        self.jitter = min(max(self.jitter + rng.uniform(-0.03, 0.03), -0.15), 0.15)

    def in_view(self) -> list[tuple[int, int, int, int]]:
        """(prn, elevation, azimuth, snr) of the satellites above 5 degrees, by PRN."""
        return [
            (prn, round(el), round(az) % 360, round(20 + 28 * math.sin(math.radians(el)) + off))
            for prn, el, az, _, _, off in self.sats
            if el >= 5.0
        ]

    def used_prns(self) -> list[int]:
        view = sorted(self.in_view(), key=lambda s: -s[1])
        return sorted(s[0] for s in view[: min(self.used, 12)])

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
    if not rate_hz > 0:
        raise ValueError("rate_hz must be positive")
    if not speed_mps >= 0:
        raise ValueError("speed_mps must not be negative")
    if not noise_m >= 0:
        raise ValueError("noise_m must not be negative")
    if loops < 0:
        raise ValueError("loops must be 0 (endless) or more")
    if start_time.tzinfo is None:
        raise ValueError("start_time must be timezone-aware (UTC)")
    if not re.fullmatch(r"[A-Z]{2}", talker):
        raise ValueError(f"talker must be two capital letters, not {talker!r}")
    kinds = [s.upper() for s in sentences]
    unknown = [s for s in kinds if s not in SENTENCES]
    if unknown or not kinds:
        raise ValueError(f"unknown sentence {unknown[0]!r}" if unknown else "no sentence chosen")
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
    return _epochs(
        path, count, rate_hz, speed_mps, start_time, noise_m, talker, kinds, faults, seed
    )


def _epochs(
    path: _Path,
    count: int | None,
    rate_hz: float,
    speed_mps: float,
    start_time: datetime,
    noise_m: float,
    talker: str,
    kinds: list[str],
    faults: Faults,
    seed: int,
) -> Iterator[Epoch]:
    start_us = round(start_time.astimezone(UTC).timestamp() * 100) * 10_000
    epoch0 = datetime(1970, 1, 1, tzinfo=UTC)
    motion = random.Random(f"{seed}:motion")
    sky = _Sky(random.Random(f"{seed}:sky"))
    injector = _Injector(faults, seed, talker)
    outage_rng, silence_rng = injector.rngs["outage"], injector.rngs["silence"]
    # Per-second start probabilities as per-epoch ones: 1 - (1 - p) ** (1 / rate).
    p_outage = 1.0 - (1.0 - faults.outage) ** (1.0 / rate_hz)
    p_silence = 1.0 - (1.0 - faults.silence) ** (1.0 / rate_hz)
    decay = math.exp(-1.0 / (rate_hz * NOISE_TAU_S))
    kick = math.sqrt(1.0 - decay * decay)
    err = [motion.gauss(0.0, 1.0) for _ in range(3)]  # east, north, up; in units of sigma
    outage_left = silence_left = 0
    glued = False  # the previous output ended mid-line: our first line is glued to it
    has_position = any(k in ("GGA", "RMC", "GLL") for k in kinds)
    second = 0
    for i in itertools.count() if count is None else range(count):
        offset = i / rate_hz
        # Centiseconds from an integer count, so no float drift after hours at 25 Hz.
        t = epoch0 + timedelta(microseconds=start_us + round(i * 100 / rate_hz) * 10_000)
        while second < int(offset):
            sky.step()
            second += 1
        if i:
            err = [decay * e + kick * motion.gauss(0.0, 1.0) for e in err]

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

        lat, lon, ele, course = path.at(speed_mps * offset)
        if noise_m > 0:
            lat, lon = _offset(lat, lon, err[0] * noise_m, err[1] * noise_m)
            ele += err[2] * noise_m * 1.5
        lat_s, lat_q = _angle(lat, 2)
        lon_s, lon_q = _angle(lon, 3)
        sats, hdop, vdop, pdop = sky.dops()
        knots = round(speed_mps * KNOTS_PER_MPS, 3)
        now = _Now(
            time=t,
            fix=fix,
            lat=math.copysign(lat_q, lat),
            lon=math.copysign(lon_q, lon),
            lat_s=lat_s,
            ns="N" if lat >= 0 else "S",
            lon_s=lon_s,
            ew="E" if lon >= 0 else "W",
            alt=round(ele, 1),
            speed=speed_mps,
            knots=knots,
            course=round(course, 2) % 360.0,
            sats=sats,
            hdop=hdop,
            vdop=vdop,
            pdop=pdop,
            err_h=noise_m if noise_m > 0 else 0.8 * hdop,
            used=sky.used_prns(),
            view=sky.in_view(),
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
        )


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
        default=0.0,
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
    nmea.add_argument("--loops", type=int, default=1, help="times round the route, 0 = forever")
    nmea.add_argument("--duration", type=float, metavar="S", help="ride this long instead")
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
    for name, ok in (
        ("--rate", args.rate > 0),
        ("--speed", args.speed >= 0),
        ("--noise", args.noise >= 0),
        ("--loops", args.loops >= 0),
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
        return simulate(
            route,
            rate_hz=args.rate,
            speed_mps=args.speed,
            start_time=start,
            noise_m=args.noise,
            talker=args.talker,
            sentences=sentences,
            faults=faults,
            seed=args.seed,
            loops=args.loops,
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
