"""The fix model: what one GPS epoch tells us, and one sensor reading.

Plain frozen dataclasses, shared by the decoder, the store, the export and the senders.
Units are SI and the rider's: metres, metres per second, degrees, UTC unix seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

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
