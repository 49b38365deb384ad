"""Boat instruments: the NMEA 0183 sentences of depth sounders, wind, compasses, logs and
transducers, decoded into readings in SI units. Pure: no I/O, no state.

`decode(sentence_type, fields)` takes a sentence's type ("DPT", any talker stripped) and its
fields (after the sentence id, checksum removed) and returns its readings, `(kind, value)`
pairs in the sentence's order; `[]` when the sentence carries nothing valid (an empty field,
a status flag V). ValueError when a field is malformed (not a number, not finite, out of
range, a missing field): the decoder counts the sentence as unparsable. The NMEA decoder
(`tracker/nmea.py`) checks the checksum before it calls this, for any talker (II, IN, SD, WI,
HC, YX, GP...).

The kinds (`tracker.fix.INSTRUMENT_KINDS`, stored as samples apart from the fitness ones: see
docs/boats.md) and their units:

  depth            m    below the transducer (DBT, DPT)
  depth_surface    m    below the waterline: DPT with a positive offset (transducer to waterline)
  depth_keel       m    below the keel: DPT with a negative offset (transducer to keel)
  wind_angle_app   deg  apparent wind angle off the bow, clockwise 0..360 (MWV R)
  wind_speed_app   m/s  apparent wind speed (MWV R)
  wind_angle_true  deg  true wind angle off the bow, clockwise 0..360 (MWV T)
  wind_speed_true  m/s  true wind speed (MWV T, MWD)
  wind_dir_true    deg  true wind direction, where it blows from, from true north (MWD)
  heading_mag      deg  magnetic heading (HDG with its deviation applied, HDM)
  heading_true     deg  true heading (HDT, HDG with a variation)
  water_speed      m/s  speed through the water (VHW)
  log_total        m    distance through the water since installation (VLW)
  log_trip         m    distance through the water since reset (VLW)
  water_temp       degC water temperature (MTW; XDR C with a WATER id)
  air_temp         degC air temperature (XDR C, an empty id or one naming AIR or OUTSIDE)
  air_pressure     Pa   barometric pressure (XDR P, an empty id or one naming BARO, ATMOS, STNP
                        or AIR)
  battery_v        V    battery voltage (XDR U, an empty id or one naming BAT)
  rudder           deg  rudder angle, starboard (or single) sensor, negative to port (RSA)

Temperatures are in degrees Celsius, not kelvin: it is what every sentence sends and every
marine display shows, and a kelvin column would only be converted back by every reader.
"""

from __future__ import annotations

import math

from tracker.fix import INSTRUMENT_KINDS

INSTRUMENT_TYPES = frozenset(
    ("DBT", "DPT", "MWV", "MWD", "HDG", "HDT", "HDM", "VHW", "VLW", "MTW", "XDR", "RSA")
)

# Fields (after the sentence id) of a complete sentence of each type: a sentence without a
# checksum must have them (the decoder's truncation guard, as for the GPS sentences).
MIN_FIELDS = {
    "DBT": 6, "DPT": 2, "MWV": 5, "MWD": 8, "HDG": 5, "HDT": 2, "HDM": 2, "VHW": 8,
    "VLW": 4, "MTW": 2, "XDR": 4, "RSA": 4,
}  # fmt: skip

UNITS = {
    "depth": "m", "depth_surface": "m", "depth_keel": "m",
    "wind_angle_app": "deg", "wind_speed_app": "m/s",
    "wind_angle_true": "deg", "wind_speed_true": "m/s", "wind_dir_true": "deg",
    "heading_mag": "deg", "heading_true": "deg",
    "water_speed": "m/s", "log_total": "m", "log_trip": "m",
    "water_temp": "degC", "air_temp": "degC", "air_pressure": "Pa", "battery_v": "V",
    "rudder": "deg",
}  # fmt: skip
assert tuple(UNITS) == INSTRUMENT_KINDS

KNOT = 1852.0 / 3600.0  # m/s
NAUTICAL_MILE = 1852.0  # m
FOOT = 0.3048  # m
FATHOM = 1.8288  # m
# Speed unit letters of MWV/MWD: knots, km/h, m/s, statute miles per hour.
_SPEED_UNITS = {"N": KNOT, "K": 1 / 3.6, "M": 1.0, "S": 1609.344 / 3600.0}
# XDR pressure units: bar, pascal.
_PRESSURE_UNITS = {"B": 1e5, "P": 1.0}


def _num(s: str) -> float | None:
    """A field as a finite float; None when empty. ValueError when malformed."""
    if not s:
        return None
    v = float(s)
    if not math.isfinite(v):
        raise ValueError(f"not a finite number: {s!r}")
    return v


def _angle(s: str) -> float | None:
    """A direction 0..360 (360 read as 0)."""
    v = _num(s)
    if v is None:
        return None
    if not 0.0 <= v <= 360.0:
        raise ValueError(f"angle out of range: {s!r}")
    return v % 360.0


def _nonneg(s: str) -> float | None:
    v = _num(s)
    if v is not None and v < 0.0:
        raise ValueError(f"negative: {s!r}")
    return v


def _speed(value: str, unit: str) -> float | None:
    v = _nonneg(value)
    if v is None:
        return None
    factor = _SPEED_UNITS.get(unit)
    if factor is None:
        raise ValueError(f"unknown speed unit {unit!r}")
    return v * factor


def _east(value: str, hemi: str) -> float | None:
    """A deviation or variation, east positive; None when absent."""
    v = _num(value)
    if v is None:
        return None
    if hemi == "E":
        return v
    if hemi == "W":
        return -v
    raise ValueError(f"not E or W: {hemi!r}")


def _dbt(f: list[str]) -> list[tuple[str, float]]:
    # feet,f,metres,M,fathoms,F: the metres if sent, else feet, else fathoms.
    for i, factor in ((2, 1.0), (0, FOOT), (4, FATHOM)):
        v = _nonneg(f[i])
        if v is not None:
            return [("depth", v * factor)]
    return []


def _dpt(f: list[str]) -> list[tuple[str, float]]:
    # depth below transducer (m), offset (m: positive transducer to waterline, negative
    # transducer to keel)[, maximum range (NMEA 3.0)]
    depth = _nonneg(f[0])
    offset = _num(f[1]) if len(f) > 1 else None
    if depth is None:
        return []
    out = [("depth", depth)]
    if offset is not None and offset > 0.0:
        out.append(("depth_surface", depth + offset))
    elif offset is not None and offset < 0.0:
        out.append(("depth_keel", depth + offset))
    return out


def _mwv(f: list[str]) -> list[tuple[str, float]]:
    # angle, R (relative: apparent) or T (theoretical: true), speed, unit, status
    if f[4] != "A":
        return []
    ref = f[1]
    if ref == "R":
        names = ("wind_angle_app", "wind_speed_app")
    elif ref == "T":
        names = ("wind_angle_true", "wind_speed_true")
    else:
        raise ValueError(f"MWV reference not R or T: {ref!r}")
    angle = _angle(f[0])
    speed = _speed(f[2], f[3])
    out = []
    if angle is not None:
        out.append((names[0], angle))
    if speed is not None:
        out.append((names[1], speed))
    return out


def _mwd(f: list[str]) -> list[tuple[str, float]]:
    # direction true, T, direction magnetic, M, knots, N, m/s, M. The magnetic direction is
    # not kept: the true one is what wind is reported in, and a boat that sends only the
    # magnetic one sends MWV too.
    out = []
    d = _angle(f[0])
    if d is not None:
        out.append(("wind_dir_true", d))
    speed = _speed(f[6], "M")
    if speed is None:
        speed = _speed(f[4], "N")
    if speed is not None:
        out.append(("wind_speed_true", speed))
    return out


def _hdg(f: list[str]) -> list[tuple[str, float]]:
    # sensor heading, deviation, E/W, variation, E/W. Magnetic heading = sensor + deviation
    # (a compass already compensated sends none: its heading is the magnetic one), true
    # heading = magnetic + variation.
    h = _angle(f[0])
    if h is None:
        return []
    dev = _east(f[1], f[2])
    var = _east(f[3], f[4])
    mag = (h + (dev or 0.0)) % 360.0
    out = [("heading_mag", mag)]
    if var is not None:
        out.append(("heading_true", (mag + var) % 360.0))
    return out


def _hdt(f: list[str]) -> list[tuple[str, float]]:
    h = _angle(f[0])
    return [] if h is None else [("heading_true", h)]


def _hdm(f: list[str]) -> list[tuple[str, float]]:
    h = _angle(f[0])
    return [] if h is None else [("heading_mag", h)]


def _vhw(f: list[str]) -> list[tuple[str, float]]:
    # heading true, T, heading magnetic, M, knots, N, km/h, K: the speed only (the headings,
    # mostly empty, come from HDG/HDT/HDM when the boat has a compass).
    speed = _speed(f[4], "N")
    if speed is None:
        speed = _speed(f[6], "K")
    return [] if speed is None else [("water_speed", speed)]


def _vlw(f: list[str]) -> list[tuple[str, float]]:
    # total (nm), N, since reset (nm), N[, the same over ground (NMEA 4): not kept, the GPS
    # track is that]
    out = []
    total = _nonneg(f[0])
    trip = _nonneg(f[2])
    if total is not None:
        out.append(("log_total", total * NAUTICAL_MILE))
    if trip is not None:
        out.append(("log_trip", trip * NAUTICAL_MILE))
    return out


def _mtw(f: list[str]) -> list[tuple[str, float]]:
    t = _num(f[0])
    if t is None:
        return []
    if f[1] not in ("C", ""):
        raise ValueError(f"MTW unit not C: {f[1]!r}")
    return [("water_temp", t)]


def _xdr_kind(type_: str, unit: str, ident: str) -> tuple[str, float] | None:
    """(kind, factor to SI) of one XDR measurement, or None for one we do not keep."""
    name = ident.upper()
    if type_ == "C" and unit == "C":
        if "WATER" in name:
            return "water_temp", 1.0
        if not name or "AIR" in name or "OUTSIDE" in name:
            return "air_temp", 1.0
    elif type_ == "P" and unit in _PRESSURE_UNITS:
        if not name or any(w in name for w in ("BARO", "ATMOS", "STNP", "AIR")):
            return "air_pressure", _PRESSURE_UNITS[unit]
    elif type_ == "U" and unit == "V" and (not name or "BAT" in name):
        return "battery_v", 1.0
    return None


def _xdr(f: list[str]) -> list[tuple[str, float]]:
    # Quadruples: transducer type, value, unit, id. Kept: temperature (C), pressure (P) and
    # voltage (U) with an id that names what they measure (see _xdr_kind); the first of each
    # kind in a sentence. Angles (pitch, roll), humidity, engine data...: not kept.
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    for i in range(0, len(f) - 3, 4):
        which = _xdr_kind(f[i], f[i + 2], f[i + 3])
        if which is None or which[0] in seen:
            continue
        v = _num(f[i + 1])
        if v is None:
            continue
        seen.add(which[0])
        out.append((which[0], v * which[1]))
    return out


def _rsa(f: list[str]) -> list[tuple[str, float]]:
    # starboard (or single) rudder angle, status, port rudder angle, status. Negative: to port.
    if f[1] != "A":
        return []
    v = _num(f[0])
    if v is None:
        return []
    if not -180.0 <= v <= 180.0:
        raise ValueError(f"rudder angle out of range: {f[0]!r}")
    return [("rudder", v)]


_DECODERS = {
    "DBT": _dbt, "DPT": _dpt, "MWV": _mwv, "MWD": _mwd, "HDG": _hdg, "HDT": _hdt,
    "HDM": _hdm, "VHW": _vhw, "VLW": _vlw, "MTW": _mtw, "XDR": _xdr, "RSA": _rsa,
}  # fmt: skip
assert set(_DECODERS) == INSTRUMENT_TYPES


def decode(sentence_type: str, fields: list[str]) -> list[tuple[str, float]]:
    """The readings of one instrument sentence, `(kind, value)` in SI (see the module
    docstring); ValueError when it is malformed. KeyError for a type not in INSTRUMENT_TYPES."""
    try:
        out = _DECODERS[sentence_type](fields)
    except IndexError:
        raise ValueError(f"{sentence_type} with too few fields ({len(fields)})") from None
    for kind, value in out:
        if not math.isfinite(value):  # a huge number that a conversion took past float
            raise ValueError(f"{kind} out of range: {value}")
    return out


# -- showing them ---------------------------------------------------------------------------

LABELS = {
    "depth": "depth", "depth_surface": "depth below surface", "depth_keel": "depth below keel",
    "wind_angle_app": "apparent wind angle", "wind_speed_app": "apparent wind",
    "wind_angle_true": "true wind angle", "wind_speed_true": "true wind",
    "wind_dir_true": "true wind from", "heading_mag": "heading (mag)",
    "heading_true": "heading (true)", "water_speed": "speed through water",
    "log_total": "log", "log_trip": "trip log", "water_temp": "water", "air_temp": "air",
    "air_pressure": "pressure", "battery_v": "battery", "rudder": "rudder",
}  # fmt: skip
assert set(LABELS) == set(INSTRUMENT_KINDS)


def display(kind: str, value: float) -> str:
    """A value as a skipper reads it: speeds in knots, logs in nautical miles, pressure in hPa,
    angles in whole degrees, the rest in its stored unit."""
    unit = UNITS[kind]
    if unit == "m/s":
        return f"{value / KNOT:.1f} kn"
    if kind in ("log_total", "log_trip"):
        return f"{value / NAUTICAL_MILE:.1f} nm"
    if unit == "Pa":
        return f"{value / 100.0:.0f} hPa"
    if unit == "deg":
        return f"{value:.0f}°"
    if unit == "degC":
        return f"{value:.1f} °C"
    if unit == "V":
        return f"{value:.2f} V"
    return f"{value:.1f} {unit}"
