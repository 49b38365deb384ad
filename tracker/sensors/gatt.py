"""Pure decoders for the three Bluetooth GATT measurements we use, and crank cadence.

No I/O, no threads, no clock of their own (the caller passes monotonic time in). Every decoder
raises `MalformedPacket` (a ValueError) on input it cannot use, and nothing else: the driver
counts it and carries on, so a sensor sending garbage never kills its thread.

Heart Rate Measurement (0x2A37), Heart Rate Service 1.0, little-endian:
  flags u8: bit0 value is u16 (else u8); bits1-2 sensor contact (0b10 supported, not detected;
  0b11 supported and detected); bit3 Energy Expended u16 present (kJ); bit4 RR-Intervals
  present (u16 each, 1/1024 s, as many as fit in the rest of the packet).

Cycling Speed and Cadence Measurement (0x2A5B), CSCS 1.0:
  flags u8: bit0 wheel data present (cumulative wheel revolutions u32, last wheel event time
  u16 in 1/1024 s); bit1 crank data present (cumulative crank revolutions u16, last crank
  event time u16 in 1/1024 s).

Cycling Power Measurement (0x2A63), CPS 1.1:
  flags u16, instantaneous power s16 (W), then the optional fields in this order: bit0 pedal
  power balance u8 (bit1 is its reference, no field); bit2 accumulated torque u16 (bit3 its
  source, no field); bit4 wheel data (u32 revolutions, u16 event time in 1/2048 s); bit5 crank
  data (u16 revolutions, u16 event time in 1/1024 s); bit6 extreme force magnitudes (s16 max,
  s16 min); bit7 extreme torque magnitudes (s16 max, s16 min); bit8 extreme angles (two u12
  packed in 3 bytes); bit9 top dead spot angle u16; bit10 bottom dead spot angle u16; bit11
  accumulated energy u16 (kJ); bit12 offset compensation indicator (no field). Bits 13-15 are
  reserved for future use: we ignore them, and bytes after the last field we know.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEART_RATE_MEASUREMENT = "00002a37-0000-1000-8000-00805f9b34fb"
CSC_MEASUREMENT = "00002a5b-0000-1000-8000-00805f9b34fb"
CYCLING_POWER_MEASUREMENT = "00002a63-0000-1000-8000-00805f9b34fb"
HEART_RATE_SERVICE = "0000180d-0000-1000-8000-00805f9b34fb"
CSC_SERVICE = "00001816-0000-1000-8000-00805f9b34fb"
CYCLING_POWER_SERVICE = "00001818-0000-1000-8000-00805f9b34fb"
SERVICE_NAMES = {
    HEART_RATE_SERVICE: "heart rate",
    CSC_SERVICE: "speed and cadence",
    CYCLING_POWER_SERVICE: "cycling power",
}

MAX_CADENCE_RPM = 250.0  # above this a computed cadence is a glitch, not a rider
CRANK_STOPPED_S = 3.0  # no new crank event for this long (monotonic): cadence is zero
CRANK_STALE_S = 60.0  # the 1/1024 s event time rolls over every 64 s: older deltas are ambiguous


class MalformedPacket(ValueError):
    """A packet too short for what its flags announce, or otherwise unusable."""


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise MalformedPacket(f"{what}: {len(data)} bytes, flags announce at least {size}")


@dataclass(frozen=True, slots=True)
class HeartRate:
    bpm: int
    contact: bool | None  # None when the strap does not report skin contact
    energy_kj: int | None = None
    rr_s: tuple[float, ...] = ()


def decode_heart_rate(data: bytes) -> HeartRate:
    """Decode one Heart Rate Measurement notification."""
    data = bytes(data)
    _need(data, 2, "heart rate")
    flags = data[0]
    if flags & 0x01:
        _need(data, 3, "heart rate")
        bpm = data[1] | data[2] << 8
        pos = 3
    else:
        bpm = data[1]
        pos = 2
    contact_bits = (flags >> 1) & 0x03
    contact = None if contact_bits < 2 else contact_bits == 3
    energy = None
    if flags & 0x08:
        _need(data, pos + 2, "heart rate")
        energy = data[pos] | data[pos + 1] << 8
        pos += 2
    rr: tuple[float, ...] = ()
    if flags & 0x10:
        rest = data[pos:]
        if len(rest) % 2:
            raise MalformedPacket(f"heart rate: odd RR-interval bytes ({len(rest)})")
        rr = tuple(v / 1024 for (v,) in struct.iter_unpack("<H", rest))
    return HeartRate(bpm, contact, energy, rr)


@dataclass(frozen=True, slots=True)
class CrankData:
    """Cumulative crank revolutions (u16) and the time of the last crank event (u16, 1/1024 s)."""

    revolutions: int
    event_time: int


@dataclass(frozen=True, slots=True)
class WheelData:
    revolutions: int  # u32 cumulative
    event_time: int  # u16; 1/1024 s in CSC, 1/2048 s in Cycling Power


@dataclass(frozen=True, slots=True)
class CscMeasurement:
    wheel: WheelData | None
    crank: CrankData | None


def decode_csc(data: bytes) -> CscMeasurement:
    """Decode one CSC Measurement notification."""
    data = bytes(data)
    _need(data, 1, "speed/cadence")
    flags = data[0]
    size = 1 + (6 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
    _need(data, size, "speed/cadence")
    pos = 1
    wheel = crank = None
    if flags & 0x01:
        revs, t = struct.unpack_from("<IH", data, pos)
        wheel = WheelData(revs, t)
        pos += 6
    if flags & 0x02:
        revs, t = struct.unpack_from("<HH", data, pos)
        crank = CrankData(revs, t)
    return CscMeasurement(wheel, crank)


@dataclass(frozen=True, slots=True)
class PowerMeasurement:
    watts: int
    crank: CrankData | None = None
    wheel: WheelData | None = None  # event time in 1/2048 s
    balance_pct: float | None = None  # pedal power balance, percent
    energy_kj: int | None = None


# Cycling Power Measurement optional fields: (flag bit, size in bytes), in packet order.
_CP_FIELDS = ((0, 1), (2, 2), (4, 6), (5, 4), (6, 4), (7, 4), (8, 3), (9, 2), (10, 2), (11, 2))


def decode_cycling_power(data: bytes) -> PowerMeasurement:
    """Decode one Cycling Power Measurement notification."""
    data = bytes(data)
    _need(data, 4, "cycling power")
    flags, watts = struct.unpack_from("<Hh", data, 0)
    offsets: dict[int, int] = {}
    pos = 4
    for bit, size in _CP_FIELDS:
        if flags & (1 << bit):
            offsets[bit] = pos
            pos += size
    _need(data, pos, "cycling power")
    balance = energy = None
    wheel = crank = None
    if 0 in offsets:
        balance = data[offsets[0]] / 2  # unit is 1/2 percent
    if 4 in offsets:
        revs, t = struct.unpack_from("<IH", data, offsets[4])
        wheel = WheelData(revs, t)
    if 5 in offsets:
        revs, t = struct.unpack_from("<HH", data, offsets[5])
        crank = CrankData(revs, t)
    if 11 in offsets:
        (energy,) = struct.unpack_from("<H", data, offsets[11])
    return PowerMeasurement(watts, crank, wheel, balance, energy)


class CrankCadence:
    """Cadence in rpm from successive cumulative crank data: a small state machine.

    `update(crank, now)` takes one packet's crank data and the monotonic time it arrived, and
    returns the cadence to report, or None when there is nothing to say yet (first packet,
    after a reset, a glitch). Both u16 counters roll over (revolutions at 65536, event time
    every 64 s); differences are taken modulo 2**16, which is right as long as less than 64 s
    of event time passed between packets we compare: a longer gap (the crank stood still, the
    link was down) makes the delta ambiguous, so the next event only sets a new baseline.

    Sensors repeat the last event when the crank has not turned since: the last cadence is
    repeated until `CRANK_STOPPED_S` passed without a new event, then it is 0 (the rider
    stopped pedalling). `resolution` is ticks per second of the event time (1024 for CSC and
    Cycling Power crank data, also the ANT+ speed/cadence profiles). Not thread-safe: one per
    sensor link. `glitches` counts deltas rejected as impossible.
    """

    def __init__(self, resolution: int = 1024) -> None:
        self.resolution = resolution
        self.glitches = 0
        self._last: CrankData | None = None
        self._last_event_at: float | None = None  # monotonic arrival of the last new event
        self._cadence: float | None = None

    def reset(self) -> None:
        """Forget the baseline (after a reconnect: the sensor may have restarted its counters)."""
        self._last = None
        self._last_event_at = None
        self._cadence = None

    def update(self, crank: CrankData, now: float) -> float | None:
        last, self._last = self._last, crank
        if last is None or self._last_event_at is None:
            self._last_event_at = now
            return None
        d_revs = (crank.revolutions - last.revolutions) & 0xFFFF
        d_ticks = (crank.event_time - last.event_time) & 0xFFFF
        if d_revs == 0 and d_ticks == 0:  # no new crank event since the last packet
            if now - self._last_event_at >= CRANK_STOPPED_S:
                self._cadence = 0.0
            return self._cadence
        gap = now - self._last_event_at
        self._last_event_at = now
        if gap >= CRANK_STALE_S or d_revs == 0 or d_ticks == 0:
            # Time moved without revolutions (or the reverse), or too long ago to tell: the
            # new event is only a baseline. The rider had stopped; they are starting again.
            if gap < CRANK_STALE_S:
                self.glitches += 1
            return None
        rpm = d_revs * 60.0 * self.resolution / d_ticks
        if rpm > MAX_CADENCE_RPM:
            self.glitches += 1
            return None
        self._cadence = rpm
        return rpm
