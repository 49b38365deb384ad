"""The simulated receiver: a rider model's truths in, `Epoch`s out, with their time,
sentences, faults and validity. Shared by the steady and the phased rides."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tracker.simulate.faults import FaultRates, Injector
from tracker.simulate.sentences import (
    KNOTS_PER_MPS,
    SENTENCES,
    SentenceValues,
    bodies,
    nmea_angle,
    sentence_line,
)


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


def check_arguments(
    rate_hz: float,
    speed_mps: float,
    start_time: datetime,
    talker: str,
    sentences: Sequence[str],
    glonass: bool = False,
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
    if glonass and talker != "GN":
        raise ValueError(f"glonass needs the multi-GNSS talker GN, not {talker!r}")
    kinds = [s.upper() for s in sentences]
    unknown = [s for s in kinds if s not in SENTENCES]
    if unknown or not kinds:
        raise ValueError(f"unknown sentence {unknown[0]!r}" if unknown else "no sentence chosen")
    return kinds


@dataclass(slots=True)
class Truth:
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


def receive(
    truths: Iterable[Truth],
    rate_hz: float,
    start_time: datetime,
    talker: str,
    kinds: list[str],
    faults: FaultRates,
    seed: int,
    glonass: bool = False,
) -> Iterator[Epoch]:
    """The receiver: one epoch per truth, with its time, sentences, faults and validity;
    `glonass`: it reports GPS and GLONASS (sentences.split_glonass)."""
    start_us = round(start_time.astimezone(UTC).timestamp() * 100) * 10_000
    epoch0 = datetime(1970, 1, 1, tzinfo=UTC)
    injector = Injector(faults, seed, talker)
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
        lat_s, lat_q = nmea_angle(lat, 2)
        lon_s, lon_q = nmea_angle(lon, 3)
        sats, hdop, vdop, pdop = truth.sats, truth.hdop, truth.vdop, truth.pdop
        knots = round(truth.speed * KNOTS_PER_MPS, 3)
        now = SentenceValues(
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
            glonass=glonass,
        )
        lines = [sentence_line(body) for kind in kinds for body in bodies(kind, talker, now)]
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
