"""The simulated sensor: a rider's heart rate, cadence and power for the demo and the tests.

The values are a deterministic function of GPS time and the entry's seed (`values_at`), so they
follow the simulated ride's clock (whatever speed-up the simulator plays at) and a test can
check every stored sample against what was generated. The rider pedals at 75-95 rpm and
150-300 W with a slow rhythm and faster surges, coasts now and then (cadence and power 0 for
half a minute or so), and their heart rate follows the effort between about 115 and 170 bpm.

Nothing is generated before the first fix: without GPS time there is no ride to follow.
"""

from __future__ import annotations

import math
import random

from tracker.fix import SAMPLE_KINDS
from tracker.sensors.clock import Reading
from tracker.sensors.config import SensorConfig
from tracker.sensors.link import LinkContext, Pacer

TAU = 2 * math.pi


class Rider:
    """The values a simulated rider produces at a GPS time. Pure; one per seed."""

    def __init__(self, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.phase = [rng.uniform(0, TAU) for _ in range(6)]

    def coasting(self, t: float) -> bool:
        return math.sin(TAU * t / 600 + self.phase[0]) > 0.93  # ~12 % of the ride

    def values_at(self, t: float) -> dict[str, float]:
        p = self.phase
        if self.coasting(t):
            power = cadence = 0.0
        else:
            power = 220 + 50 * math.sin(TAU * t / 300 + p[1]) + 25 * math.sin(TAU * t / 47 + p[2])
            cadence = 85 + 7 * math.sin(TAU * t / 180 + p[3]) + 0.03 * (power - 220)
        effort = 0.5 + 0.5 * math.sin(TAU * t / 300 + p[1] - 0.6)  # heart rate lags the power
        hr = 118 + 45 * effort + 5 * math.sin(TAU * t / 90 + p[4])
        return {"hr": round(hr), "cad": round(cadence), "pwr": round(power)}


class SimulatedLink:
    """A Link producing `rate_hz` readings of each kind a second, never lost."""

    def __init__(self, cfg: SensorConfig, ctx: LinkContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.rider = Rider(cfg.seed)
        self._pacer = Pacer(cfg.rate_hz, ctx.stop)

    def open(self) -> None:
        self._pacer.start()

    def poll(self, timeout: float) -> list[Reading]:
        now = self._pacer.due(timeout)
        if now is None:
            return []
        gps_time = self.ctx.clock.to_gps(now)
        if gps_time is None:
            return []
        values = self.rider.values_at(gps_time)
        return [
            Reading(now, kind, values[kind], self.cfg.label)
            for kind in SAMPLE_KINDS
            if kind in self.cfg.kinds
        ]

    def close(self) -> None:
        pass
