"""NMEA 0183 sentence encoding: one epoch's rounded values in, sentence lines out.

Written independently of tracker/nmea.py (the decoder under test), so the two cannot share a
mistake; tests check these sentences with pynmea2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

SENTENCES = ("GGA", "RMC", "GSA", "GSV", "VTG", "ZDA", "GST", "GLL")
DEFAULT_SENTENCES = ("GGA", "RMC", "GSA", "VTG")

KNOTS_PER_MPS = 3600.0 / 1852.0
GEOID_SEPARATION_M = 47.0  # a constant, plausible for central Europe; GGA wants some value
MAX_NMEA_LINE = 82  # NMEA 0183: at most 82 characters including '$' and CRLF


@dataclass(slots=True)
class SentenceValues:
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
    glonass: bool = False  # split `used` and `view` into GPS and GLONASS (see split_glonass)


GLONASS_PRN = 64  # NMEA numbers GLONASS satellites 65-96, GPS 1-32


def split_glonass(
    used: list[int], view: list[tuple[int, int, int, int]]
) -> list[tuple[str, list[int], list[tuple[int, int, int, int]]]]:
    """The satellites as a GPS + GLONASS receiver reports them: every second one in view (by
    PRN) becomes a GLONASS satellite, numbered 64 higher. So the sky, the DOPs and GGA's count
    stay those of the single-constellation ride, and only the GSA and GSV lines change: one GSA
    and one GSV group per constellation, as (GSV talker, used, in view)."""
    glonass = {s[0] for s in view[1::2]}  # `used` is always among those in view
    return [
        ("GP", [p for p in used if p not in glonass], [s for s in view if s[0] not in glonass]),
        (
            "GL",
            [p + GLONASS_PRN for p in used if p in glonass],
            [(s[0] + GLONASS_PRN, *s[1:]) for s in view if s[0] in glonass],
        ),
    ]


def nmea_checksum(body: str | bytes) -> int:
    """XOR of the bytes between '$' and '*'."""
    data = body.encode("ascii") if isinstance(body, str) else body
    cs = 0
    for b in data:
        cs ^= b
    return cs


def sentence_line(body: str) -> bytes:
    return f"${body}*{nmea_checksum(body):02X}".encode("ascii")


def nmea_angle(value: float, width: int) -> tuple[str, float]:
    """NMEA ddmm.mmmmm (width 2) or dddmm.mmmmm (width 3) of |value|, and the degrees it says."""
    deg = int(abs(value))
    minutes = round((abs(value) - deg) * 60.0, 5)
    if minutes >= 60.0:
        deg, minutes = deg + 1, 0.0
    return f"{deg:0{width}d}{minutes:08.5f}", deg + minutes / 60.0


def _hms(t: datetime) -> str:
    return f"{t:%H%M%S}.{t.microsecond // 10000:02d}"


def bodies(kind: str, talker: str, n: SentenceValues) -> list[str]:
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
        out = []
        for _, used, _ in _constellations(talker, n):
            if not fix:
                out.append(f"{talker}GSA,A,1" + "," * 12 + ",99.99,99.99,99.99")
                continue
            prns = [f"{p:02d}" for p in used] + [""] * (12 - len(used))
            out.append(f"{talker}GSA,A,3,{','.join(prns)},{n.pdop:.2f},{n.hdop:.2f},{n.vdop:.2f}")
        return out
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
        out = []
        for gsv, _, view in _constellations(talker, n):
            total = max(1, math.ceil(len(view) / 4))
            for k in range(total):
                group = view[4 * k : 4 * k + 4]
                # In a tunnel the satellites are still predicted in view, but none is heard.
                sats = ",".join(
                    f"{prn:02d},{el:02d},{az:03d}," + (f"{snr:02d}" if fix else "")
                    for prn, el, az, snr in group
                )
                head = f"{gsv}GSV,{total},{k + 1},{len(view):02d}"
                out.append(head + (f",{sats}" if sats else ""))
        return out
    raise ValueError(f"unknown sentence {kind!r}")


def _constellations(
    talker: str, n: SentenceValues
) -> list[tuple[str, list[int], list[tuple[int, int, int, int]]]]:
    """(GSV talker, used, in view) for each constellation the receiver reports."""
    if n.glonass:
        return split_glonass(n.used, n.view)
    # GSV is per constellation: a multi-GNSS receiver never says GNGSV, it says GPGSV.
    return [("GP" if talker == "GN" else talker, n.used, n.view)]
