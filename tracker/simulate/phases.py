"""Phased rides: parked, riding, parked under a poor sky, with the noise, speed spikes and
phantom walks a detector of ride start, pause and end has to see through: `simulate_phases()`."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from tracker.simulate.faults import FaultRates
from tracker.simulate.receiver import Epoch, Truth, check_arguments, receive
from tracker.simulate.routes import RoutePath, RoutePoint, offset_position
from tracker.simulate.sentences import DEFAULT_SENTENCES
from tracker.simulate.sky import Sky

PHASE_KINDS = ("park", "ride", "bad")

PHASES_HELP = """\
ride in phases instead of round the route: comma-separated KIND:DURATION, in order. KIND: park
(standing still under a good sky: the position wanders a few metres, up to ~20 m, speed noise
below 0.4 m/s, and every 3-5 minutes one epoch with a 2-5 m/s speed spike), ride (on along the
route from where the last ride stopped: from standstill up to --speed at 0.3-0.5 m/s2, and down
to standstill at the end of the phase), bad (parked under trees or by a wall: HDOP 4-8, 4-6
satellites, drift up to ~50 m, and every 2-4 minutes a 10-20 s phantom walk at 1-3 m/s on 4
satellites). DURATION in seconds, or with a unit s, m or h: 90, 1.5, 20m, 1h. Replaces --loops
and --duration (the phases set the length) and --noise (each kind has its own). Example:
park:60,ride:20m,park:10m,ride:20m,bad:30m,ride:15m,park:20m"""

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase of a phased ride: what the unit does (one of PHASE_KINDS), for how long."""

    kind: str
    duration_s: float

    def __post_init__(self) -> None:
        if self.kind not in PHASE_KINDS:
            known = ", ".join(PHASE_KINDS)
            raise ValueError(f"unknown phase kind {self.kind!r} (known: {known})")
        if not 0.0 < self.duration_s < math.inf:
            raise ValueError(f"phase {self.kind!r}: {self.duration_s!r} is not a positive duration")


def parse_phases(spec: str) -> list[Phase]:
    """Parse the `--phases` syntax (see PHASES_HELP): KIND:DURATION[,KIND:DURATION...].

    Pure. Raises ValueError with a one-line message naming the offending phase (by position and
    text) and what is wrong with it.
    """
    if not spec.strip():
        raise ValueError("no phase given: expected KIND:SECONDS[,KIND:SECONDS...]")
    phases = []
    for n, item in enumerate(spec.split(","), 1):
        item = item.strip()
        if not item:
            raise ValueError(f"phase {n} is empty (a stray comma?)")
        kind, sep, raw = (s.strip() for s in item.partition(":"))
        kind = kind.lower()
        if kind not in PHASE_KINDS:
            known = ", ".join(PHASE_KINDS)
            raise ValueError(f"phase {n} {item!r}: unknown kind {kind!r} (known: {known})")
        if not sep or not raw:
            raise ValueError(f"phase {n} {item!r}: no duration, expected {kind}:SECONDS")
        m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)", raw.lower())
        if not m:
            raise ValueError(
                f"phase {n} {item!r}: {raw!r} is not a duration (e.g. 90, 1.5, 20m, 1h)"
            )
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if seconds <= 0:
            raise ValueError(f"phase {n} {item!r}: the duration must be more than 0")
        phases.append(Phase(kind, seconds))
    return phases


def simulate_phases(
    route: Sequence[RoutePoint],
    phases: Sequence[Phase] | str,
    *,
    rate_hz: float = 1.0,
    speed_mps: float = 6.0,
    start_time: datetime,
    talker: str = "GN",
    sentences: Sequence[str] = DEFAULT_SENTENCES,
    faults: FaultRates = FaultRates(),  # noqa: B008 - frozen, so a shared default is safe
    seed: int = 0,
    glonass: bool = False,
) -> Iterator[Epoch]:
    """A ride in phases (parked, riding, parked under a poor sky) on `route`: one `Epoch` per
    1/`rate_hz` seconds, for testing what must tell riding from standing from GPS alone.

    `phases` is a list of `Phase` or the text `parse_phases` reads; PHASES_HELP says what each
    kind does. The ride lasts the sum of their durations; an epoch belongs to the phase its
    offset falls in (`Epoch.phase`), and `Epoch.moving` is true only in a ride phase while the
    true speed is above 0 (not at its first epoch, which is at standstill). Reported speeds are
    not the truth: noise, park speed spikes and phantom walks report speed while standing.
    `speed_mps` is the cruise speed of the ride phases. The noise is the phases' own, in metres
    and seconds whatever the rate (phantom walks last 10-20 s, 10-20 epochs at 1 Hz); a park
    speed spike is one epoch at any rate. An error beyond a phase's bound when it begins (a park
    after a bad phase) settles to it within about 10 s rather than jumping. Sentences, times,
    faults, `glonass` and `valid` are as in `simulate()`. Deterministic for a seed. Raises
    ValueError on bad arguments.
    """
    if isinstance(phases, str):
        phases = parse_phases(phases)
    phases = list(phases)
    if not phases:
        raise ValueError("no phase given")
    kinds = check_arguments(rate_hz, speed_mps, start_time, talker, sentences, glonass)
    truths = _phased(RoutePath(route), phases, rate_hz, speed_mps, seed)
    return receive(truths, rate_hz, start_time, talker, kinds, faults, seed, glonass)


@dataclass(frozen=True, slots=True)
class _Drift:
    """How the position error wanders in a kind of phase (see _Wander)."""

    sigma_v: float  # m/s: 1-sigma per axis of the velocity the error drifts at
    tau_v: float  # s: how long that drift keeps its direction
    tau_p: float  # s: how fast the error is pulled back towards the true spot
    bound_m: float  # the horizontal error stays within this


# The error's 1-sigma per axis comes to about sigma_v * sqrt(tau_v * tau_p): 1.7 m riding,
# 3.9 m parked, 9 m in a bad spot; the bounds cut off only the rare long excursion.
_DRIFT = {
    "ride": _Drift(0.05, 20.0, 60.0, 10.0),
    "park": _Drift(0.08, 20.0, 120.0, 20.0),
    "bad": _Drift(0.25, 15.0, 90.0, 45.0),
}
_SETTLE_S = 3.0  # an error beyond the bound shrinks back to it with this time constant
_UERE_M = 3.0  # GST's 1-sigma horizontal error per unit of HDOP


class _Wander:
    """The receiver's position error, metres east, north and up: a random walk whose steps are
    correlated (its velocity is a Gauss-Markov process), pulled back towards the true spot and
    bounded. Smooth like a real receiver's: metres over minutes, centimetres from one second to
    the next, so standing still does not look like moving."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.p = [rng.gauss(0.0, 1.0) for _ in range(3)]
        self.v = [0.0, 0.0, 0.0]

    def step(self, dt: float, drift: _Drift) -> None:
        p, v = self.p, self.v
        decay = math.exp(-dt / drift.tau_v)
        kick = drift.sigma_v * math.sqrt(1.0 - decay * decay)
        for k in range(3):
            v[k] = decay * v[k] + kick * self.rng.gauss(0.0, 1.0)
            p[k] += (v[k] - p[k] / drift.tau_p) * dt
        bound = drift.bound_m
        r = math.hypot(p[0], p[1])
        if r > bound:
            # Settle back rather than jump (a new phase with a tighter bound), and stop drifting
            # outwards.
            scale = (bound + (r - bound) * math.exp(-dt / _SETTLE_S)) / r
            p[0], p[1] = p[0] * scale, p[1] * scale
            out = (v[0] * p[0] + v[1] * p[1]) / (r * scale)
            if out > 0:
                v[0] -= out * p[0] / (r * scale)
                v[1] -= out * p[1] / (r * scale)
        p[2] = min(max(p[2], -1.5 * bound), 1.5 * bound)


@dataclass(slots=True)
class _Rider:
    """What the phases of a ride share and hand on: the route ridden so far, the sky, the error."""

    path: RoutePath
    rate_hz: float
    speed_mps: float
    rng: random.Random
    sky: Sky
    wander: _Wander
    s: float = 0.0  # metres of the route ridden so far
    second: int = 0  # the sky has been stepped up to this second

    def tick(self, i: int) -> float:
        """The offset of epoch i, in seconds; the sky brought up to it."""
        offset = i / self.rate_hz
        while self.second < int(offset):
            self.sky.step()
            self.second += 1
        return offset

    def truth(
        self,
        where: tuple[float, float, float],
        speed: float,
        course: float,
        *,
        phase: str,
        moving: bool = False,
        sky: tuple[int, float] | None = None,
        shift: tuple[float, float] = (0.0, 0.0),
    ) -> Truth:
        """The epoch at the true spot `where` (lat, lon, ele) plus the error and `shift` (metres
        east, north); `sky` (satellites, HDOP) overrides the good sky's."""
        lat, lon, ele = where
        east, north, up = self.wander.p
        lat, lon = offset_position(lat, lon, east + shift[0], north + shift[1])
        if sky is None:
            sats, hdop, vdop, pdop = self.sky.dops()
        else:
            sats, hdop = sky
            vdop = round(hdop * 1.6, 2)
            pdop = round(math.hypot(hdop, vdop), 2)
        return Truth(
            lat=lat,
            lon=lon,
            ele=ele + up,
            speed=speed,
            course=course % 360.0,
            sats=sats,
            hdop=hdop,
            vdop=vdop,
            pdop=pdop,
            err_h=_UERE_M * hdop,
            used=self.sky.used_prns(sats),
            view=self.sky.in_view(),
            phase=phase,
            moving=moving,
        )


def _phased(
    path: RoutePath, phases: list[Phase], rate_hz: float, speed_mps: float, seed: int
) -> Iterator[Truth]:
    rng = random.Random(f"{seed}:phases")
    # A good sky all along (8-12 satellites, HDOP 0.7-1.5); a bad phase overrides it.
    sky = Sky(random.Random(f"{seed}:sky"), used=(8, 12), floor=5.0)
    rider = _Rider(path, rate_hz, speed_mps, rng, sky, _Wander(rng))
    models = {"park": _park, "ride": _ride, "bad": _bad}
    start, i = 0.0, 0
    for phase in phases:
        end = start + phase.duration_s
        n = math.ceil(end * rate_hz - 1e-9)
        yield from models[phase.kind](rider, range(i, n), start, end)
        start, i = end, n


def _park(r: _Rider, epochs: range, t0: float, t1: float) -> Iterator[Truth]:
    rng, drift, dt = r.rng, _DRIFT["park"], 1.0 / r.rate_hz
    where = r.path.at(r.s)[:3]
    spike_at = t0 + rng.uniform(30.0, 300.0)
    for i in epochs:
        offset = r.tick(i)
        r.wander.step(dt, drift)
        speed = min(abs(rng.gauss(0.0, 0.12)), 0.4)
        course = rng.uniform(0.0, 360.0)  # a standing receiver's course means nothing
        if offset >= spike_at:
            # What real receivers do now and then at a standstill: one epoch of speed from a
            # bad Doppler measurement, at a good HDOP, the position unmoved.
            speed = rng.uniform(2.0, 5.0)
            spike_at = offset + rng.uniform(180.0, 300.0)
        yield r.truth(where, speed, course, phase="park")


@dataclass(frozen=True, slots=True)
class _Profile:
    """A ride phase's true speed: up from 0 at `accel`, `top` for as long as the phase allows,
    down to 0 at `decel` exactly when it ends (no cruise at all when the phase is too short to
    reach the cruise speed: then `top` is lower)."""

    accel: float
    decel: float
    top: float
    duration: float

    @classmethod
    def make(cls, cruise: float, duration: float, accel: float, decel: float) -> _Profile:
        return cls(accel, decel, min(cruise, duration / (1 / accel + 1 / decel)), duration)

    def at(self, t: float) -> tuple[float, float]:
        """(metres ridden, speed in m/s) t seconds into the phase."""
        a, d, top = self.accel, self.decel, self.top
        t = min(max(t, 0.0), self.duration)
        t1, t2 = top / a, self.duration - top / d
        if t <= t1:
            return 0.5 * a * t * t, a * t
        s1 = 0.5 * top * t1
        if t <= t2:
            return s1 + top * (t - t1), top
        u = t - t2
        return s1 + top * (t2 - t1) + top * u - 0.5 * d * u * u, max(0.0, top - d * u)


def _ride(r: _Rider, epochs: range, t0: float, t1: float) -> Iterator[Truth]:
    rng, drift, dt = r.rng, _DRIFT["ride"], 1.0 / r.rate_hz
    profile = _Profile.make(r.speed_mps, t1 - t0, rng.uniform(0.3, 0.5), rng.uniform(0.3, 0.5))
    for i in epochs:
        offset = r.tick(i)
        r.wander.step(dt, drift)
        ridden, v = profile.at(offset - t0)
        lat, lon, ele, course = r.path.at(r.s + ridden)
        speed = abs(v + rng.gauss(0.0, 0.08))
        course += rng.gauss(0.0, 1.0)
        yield r.truth((lat, lon, ele), speed, course, phase="ride", moving=v > 0)
    r.s += profile.at(t1 - t0)[0]


def _bad(r: _Rider, epochs: range, t0: float, t1: float) -> Iterator[Truth]:
    rng, drift, dt = r.rng, _DRIFT["bad"], 1.0 / r.rate_hz
    where = r.path.at(r.s)[:3]
    sats, hdop, change_at = 4, 0.0, t0  # drawn at the first epoch
    walk_at = t0 + rng.uniform(20.0, 240.0)
    walk_left = 0
    walk_speed = walk_course = walk_hdop = 0.0
    east = north = 0.0  # how far the phantom walk has gone
    for i in epochs:
        offset = r.tick(i)
        if not walk_left and offset >= walk_at:
            walk_at = offset + rng.uniform(120.0, 240.0)
            n = round(rng.randint(10, 20) * r.rate_hz)
            if i + n <= epochs.stop:  # only whole walks: a test may count their epochs
                walk_left = n
                walk_speed = rng.uniform(1.2, 2.8)
                walk_course = rng.uniform(0.0, 360.0)
                walk_hdop = rng.uniform(6.3, 7.7)
        if walk_left:
            # A phantom walk: a solution from 4 satellites, one of them reflected, walks off at a
            # steady speed and course, the position following it; the error underneath is held.
            walk_left -= 1
            speed = min(max(walk_speed + rng.gauss(0.0, 0.05), 1.0), 3.0)
            course = (walk_course + rng.gauss(0.0, 1.0)) % 360.0
            east += speed * dt * math.sin(math.radians(course))
            north += speed * dt * math.cos(math.radians(course))
            sky = (4, round(min(max(walk_hdop + rng.gauss(0.0, 0.1), 6.0), 8.0), 2))
            yield r.truth(where, speed, course, phase="bad", sky=sky, shift=(east, north))
            if not walk_left:
                east = north = 0.0  # the reflection is gone: the next epoch snaps back
            continue
        r.wander.step(dt, drift)
        if offset >= change_at:
            last = hdop
            while abs(hdop - last) < 0.5:  # a jump, not a wobble
                hdop = round(rng.uniform(4.0, 8.0), 2)
            sats = rng.randint(4, 6)
            change_at = offset + rng.uniform(2.0, 6.0)
        speed = min(abs(rng.gauss(0.0, 0.2)), 0.9)  # mostly below 0.5, never a walk's 1 m/s
        yield r.truth(where, speed, rng.uniform(0.0, 360.0), phase="bad", sky=(sats, hdop))


# --- writing ------------------------------------------------------------------------------------
