"""Steady rides: round (or out and back along) a route at a constant speed: `simulate()`."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence
from datetime import datetime

from tracker.simulate.faults import FaultRates
from tracker.simulate.receiver import Epoch, Truth, check_arguments, receive
from tracker.simulate.routes import RoutePath, RoutePoint, offset_position
from tracker.simulate.sentences import DEFAULT_SENTENCES
from tracker.simulate.sky import Sky

NOISE_TAU_S = 30.0  # correlation time of the position error: GPS error wanders, it does not jump


def simulate(
    route: Sequence[RoutePoint],
    *,
    rate_hz: float = 1.0,
    speed_mps: float = 6.0,
    start_time: datetime,
    noise_m: float = 0.0,
    talker: str = "GN",
    sentences: Sequence[str] = DEFAULT_SENTENCES,
    faults: FaultRates = FaultRates(),  # noqa: B008 - frozen, so a shared default is safe
    seed: int = 0,
    glonass: bool = False,
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
    each fault kind draw from their own streams of `seed`. `glonass` (talker GN only): a GPS +
    GLONASS receiver, one GSA and one GSV group per constellation (the same satellites, split
    between the two). Raises ValueError on bad arguments.
    """
    kinds = check_arguments(rate_hz, speed_mps, start_time, talker, sentences, glonass)
    if not noise_m >= 0:
        raise ValueError("noise_m must not be negative")
    if loops < 0:
        raise ValueError("loops must be 0 (endless) or more")
    path = RoutePath(route)
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
    return receive(truths, rate_hz, start_time, talker, kinds, faults, seed, glonass)


def _steady(
    path: RoutePath,
    count: int | None,
    rate_hz: float,
    speed_mps: float,
    noise_m: float,
    seed: int,
) -> Iterator[Truth]:
    """simulate()'s rider: constant speed along the path, `count` epochs (None: forever)."""
    motion = random.Random(f"{seed}:motion")
    sky = Sky(random.Random(f"{seed}:sky"))
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
            lat, lon = offset_position(lat, lon, err[0] * noise_m, err[1] * noise_m)
            ele += err[2] * noise_m * 1.5
        sats, hdop, vdop, pdop = sky.dops()
        yield Truth(
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
