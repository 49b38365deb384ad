"""Routes the simulated rider follows: a GPX file, a generated loop or the bundled demo ride,
and `RoutePath`, the route as a path parametrised by the distance ridden."""

from __future__ import annotations

import bisect
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import gpxpy
import gpxpy.gpx

from tracker.geo import EARTH_RADIUS_M
from tracker.geo import distance_m as haversine_m

DEMO_ROUTE = "demo-route.gpx"  # in tracker/data/

__all__ = [
    "DEMO_ROUTE",
    "RoutePath",
    "RoutePoint",
    "bearing_deg",
    "demo_route",
    "generated_loop",
    "haversine_m",
    "load_route",
    "offset_position",
]


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
        plat, plon = offset_position(lat, lon, r * math.sin(theta), r * math.cos(theta))
        out.append(RoutePoint(plat, plon, round(ele, 1)))
    out.append(out[0])
    return out


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial great-circle bearing from point 1 to point 2, degrees true in [0, 360)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def offset_position(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    """(lat, lon) moved `east_m` and `north_m`: a flat-earth offset, exact enough over the
    metres of noise and the kilometres of a loop."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * max(1e-9, math.cos(math.radians(lat)))))
    return lat + dlat, _wrap_lon(lon + dlon)


def _wrap_lon(lon: float) -> float:
    return (lon + 180.0) % 360.0 - 180.0


class RoutePath:
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
