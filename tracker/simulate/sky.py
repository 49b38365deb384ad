"""The simulated receiver's sky: satellites in view and the DOPs they give."""

from __future__ import annotations

import math
import random


class Sky:
    """Satellites in view and the DOPs they give: slow drift, updated once a second.

    `used` bounds the satellites used in the solution, `floor` the elevation (degrees) a
    satellite turns back up at: a floor of 5 or more keeps all 14 in view, for a sky that must
    stay good for hours.
    """

    def __init__(
        self, rng: random.Random, *, used: tuple[int, int] = (7, 14), floor: float = 1.0
    ) -> None:
        self.rng = rng
        self.used_range = used
        self.floor = floor
        # [prn, elevation, azimuth, elevation rate, azimuth rate, snr offset]
        self.sats = [
            [
                prn,
                rng.uniform(5.0, 85.0),
                rng.uniform(0.0, 360.0),
                rng.uniform(-0.008, 0.008),  # degrees per second: a GPS satellite crawls
                rng.uniform(-0.01, 0.01),
                rng.uniform(-3.0, 3.0),
            ]
            for prn in sorted(rng.sample(range(1, 33), 14))
        ]
        self.used = rng.randint(9, 12)
        self.jitter = 0.0

    def step(self) -> None:
        rng = self.rng
        for sat in self.sats:
            sat[1] += sat[3]
            if not self.floor <= sat[1] <= 89.0:
                sat[3] = -sat[3]
                sat[1] = min(max(sat[1], self.floor), 89.0)
            sat[2] = (sat[2] + sat[4]) % 360.0
            sat[5] = min(max(sat[5] + rng.uniform(-0.5, 0.5), -4.0), 4.0)
        if rng.random() < 0.05:
            lo, hi = self.used_range
            self.used = min(max(self.used + rng.choice((-1, 1)), lo), hi)
        self.jitter = min(max(self.jitter + rng.uniform(-0.03, 0.03), -0.15), 0.15)

    def in_view(self) -> list[tuple[int, int, int, int]]:
        """(prn, elevation, azimuth, snr) of the satellites above 5 degrees, by PRN."""
        return [
            (int(prn), round(el), round(az) % 360,
             round(20 + 28 * math.sin(math.radians(el)) + off))
            for prn, el, az, _, _, off in self.sats
            if el >= 5.0
        ]

    def used_prns(self, n: int | None = None) -> list[int]:
        """The highest `n` (default: all used, at most 12) satellites in view, by PRN."""
        view = sorted(self.in_view(), key=lambda s: -s[1])
        return sorted(s[0] for s in view[: min(self.used if n is None else n, 12)])

    def dops(self) -> tuple[int, float, float, float]:
        sats = min(self.used, len(self.in_view()))
        hdop = round(max(0.5, 0.45 + 5.5 / max(sats, 1) + self.jitter), 2)
        vdop = round(hdop * 1.45 + self.jitter / 2, 2)
        pdop = round(math.hypot(hdop, vdop), 2)
        return sats, hdop, vdop, pdop
