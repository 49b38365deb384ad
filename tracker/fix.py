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


SAMPLE_KINDS = ("hr", "cad", "pwr")


@dataclass(frozen=True, slots=True)
class Sample:
    """One sensor reading: heart rate (bpm), cadence (rpm) or power (W) at a GPS UTC time."""

    time: float
    kind: str  # one of SAMPLE_KINDS
    value: float
    sensor: str = ""
