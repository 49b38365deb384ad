"""The fix model: what one GPS epoch tells us, and one sensor reading.

Plain frozen dataclasses, shared by the decoder, the store, the export and the senders.
Units are SI and the rider's: metres, metres per second, degrees, UTC unix seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")

# GGA fix quality values (NMEA 0183 4.x), for logs and status.
QUALITY_NAMES = {
    0: "invalid",
    1: "gps",
    2: "dgps",
    3: "pps",
    4: "rtk",
    5: "float-rtk",
    6: "estimated",
    7: "manual",
    8: "simulation",
}


@dataclass(frozen=True, slots=True)
class Fix:
    """One valid position epoch, merged from the sentences the receiver sent for it.

    `time` is UTC unix seconds taken from the receiver (never the system clock), with the
    fraction the receiver sent. Everything but time and position is optional: a receiver that
    sends only RMC gives no altitude or DOPs, one that sends only GGA gives no speed.
    """

    time: float
    lat: float
    lon: float
    alt: float | None = None  # metres above mean sea level (GGA)
    speed: float | None = None  # metres per second over ground
    course: float | None = None  # degrees true
    quality: int | None = None  # GGA quality, see QUALITY_NAMES; None when no GGA was sent
    sats: int | None = None  # satellites used in the solution
    hdop: float | None = None
    vdop: float | None = None
    pdop: float | None = None
    err_lat: float | None = None  # GST 1-sigma error, metres
    err_lon: float | None = None
    err_alt: float | None = None


# Fitness samples: what a rider's sensors give and the fitness backends (Map My Tracks) send.
SAMPLE_KINDS = ("hr", "cad", "pwr")
# Boat instruments (tracker/instruments.py has the units, docs/boats.md the sentences): stored
# apart from the fitness samples (the store's `instruments` table), never sent as them.
INSTRUMENT_KINDS = (
    "depth", "depth_surface", "depth_keel",
    "wind_angle_app", "wind_speed_app", "wind_angle_true", "wind_speed_true", "wind_dir_true",
    "heading_mag", "heading_true", "water_speed", "log_total", "log_trip",
    "water_temp", "air_temp", "air_pressure", "battery_v", "rudder",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sample:
    """One sensor reading at a GPS UTC time: heart rate (bpm), cadence (rpm) or power (W), or a
    boat instrument's value in SI units (INSTRUMENT_KINDS, tracker/instruments.py)."""

    time: float
    kind: str  # one of SAMPLE_KINDS or INSTRUMENT_KINDS
    value: float
    sensor: str = ""


def builder(cls: type[T]) -> Callable[..., T]:
    """A positional constructor for a frozen slots dataclass, every field given, in order:
    the same object as `cls(...)`, frozen as well, at about half the cost. The generated
    `__init__` of a frozen dataclass goes through `object.__setattr__` once per field; this
    sets each slot through its descriptor instead. For the hot paths only (the decoder emits
    a Fix per epoch, the store reads a StoredFix per row): it does not run `__post_init__`
    and checks nothing, so give it exactly the values `cls` would store."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    args = ", ".join(f"v{i}" for i in range(len(names)))
    setters = ", ".join(f"_s{i}=_cls.{n}.__set__" for i, n in enumerate(names))
    body = "".join(f"    _s{i}(o, v{i})\n" for i in range(len(names)))
    # Setters bound as defaults: locals, not global or attribute lookups, in the hot path.
    src = f"def build({args}, *, _new=object.__new__, _cls=_cls, {setters}):\n"
    src += f"    o = _new(_cls)\n{body}    return o\n"
    namespace: dict[str, Any] = {"_cls": cls}
    exec(src, namespace)  # as dataclasses itself makes __init__
    build = namespace["build"]
    build.__qualname__ = f"builder({cls.__name__})"
    return build


# Fix(...) positionally, every field given, at half the cost: for the decoder's epoch and the
# store's rows (the hot paths). Made once here, shared.
new_fix: Callable[..., Fix] = builder(Fix)
