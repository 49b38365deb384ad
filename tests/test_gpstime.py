"""GPS time: roll-over decisions and the one-time clock set, with every clock injected.

CI runs as root: nothing here may reach the real clock. Every TimeKeeper gets a fake setter, and
an autouse fixture makes time.clock_settime fail the test if anything calls it anyway.
"""

from __future__ import annotations

import ctypes
import logging
import math
import random
import subprocess
import time
from datetime import UTC, datetime

import pytest

from tracker import gpstime
from tracker.gpstime import (
    ERA_S,
    RELEASE_FLOOR,
    TimeKeeper,
    default_setter,
    ntp_synchronized,
    rollover_eras,
    server_now,
    system_clock_if_synced,
)


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


# Worked by hand: 1024 weeks = 7168 days. 2026-06-14 09:30 minus 7168 days is 2006-10-29 09:30
# (minus 2 * 7168 days: 1987-03-15 09:30).
RIDE = ts(2026, 6, 14, 9, 30)
ONE_ERA_BACK = ts(2006, 10, 29, 9, 30)
TWO_ERAS_BACK = ts(1987, 3, 15, 9, 30)


@pytest.fixture(autouse=True)
def never_the_real_clock(monkeypatch):
    def refuse(*_args):
        raise AssertionError("a test reached time.clock_settime")

    monkeypatch.setattr(time, "clock_settime", refuse)


class Wall:
    """An injected wall clock the test moves by hand."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Trusted:
    """An injected trusted clock that counts how often it was asked."""

    def __init__(self, now: float | None) -> None:
        self.now = now
        self.calls = 0

    def __call__(self) -> float | None:
        self.calls += 1
        return self.now


def keeper(trusted, *, wall=None, **kw) -> tuple[TimeKeeper, list[float]]:
    calls: list[float] = []
    k = TimeKeeper(trusted, setter=calls.append, wall=wall or Wall(RIDE), **kw)
    return k, calls


# -- rollover_eras ------------------------------------------------------------------------------


def test_the_era_and_the_worked_dates():
    assert ERA_S == 619_315_200
    assert RIDE - ONE_ERA_BACK == ERA_S
    assert RIDE - TWO_ERAS_BACK == 2 * ERA_S
    assert ts(2026, 1, 1) == RELEASE_FLOOR


def test_one_and_two_eras_behind():
    assert rollover_eras(ONE_ERA_BACK, RIDE) == 1
    assert rollover_eras(TWO_ERAS_BACK, RIDE) == 2
    assert rollover_eras(ONE_ERA_BACK + 3.2, RIDE) == 1  # receiver and trusted clock a bit apart


def test_no_correction_when_in_step_or_ahead():
    assert rollover_eras(RIDE, RIDE) == 0
    assert rollover_eras(RIDE + 5, RIDE) == 0
    assert rollover_eras(RIDE + ERA_S, RIDE) == 0  # ahead by an era is never "corrected" back


def test_a_replayed_capture_stays_old():
    # A 2019 ride replayed today: about 7 years behind, not a whole number of eras.
    assert rollover_eras(ts(2019, 4, 7, 12), RIDE) == 0
    # Nor a 2006 capture replayed a day off its era: whole eras within seconds, not within a day.
    assert rollover_eras(ONE_ERA_BACK + 86400, RIDE) == 0


def test_tolerance_edges():
    assert rollover_eras(ONE_ERA_BACK - 10, RIDE) == 1
    assert rollover_eras(ONE_ERA_BACK + 10, RIDE) == 1
    assert rollover_eras(ONE_ERA_BACK - 10.001, RIDE) == 0
    assert rollover_eras(ONE_ERA_BACK + 10.001, RIDE) == 0
    assert rollover_eras(ONE_ERA_BACK + 25, RIDE, tolerance_s=30) == 1
    assert rollover_eras(ONE_ERA_BACK + 1, RIDE, tolerance_s=0) == 0
    assert rollover_eras(ONE_ERA_BACK, RIDE, tolerance_s=0) == 1


@pytest.mark.parametrize(
    ("gps", "now", "tol"),
    [
        (math.nan, RIDE, 10), (ONE_ERA_BACK, math.nan, 10), (ONE_ERA_BACK, RIDE, math.nan),
        (math.inf, RIDE, 10), (-math.inf, RIDE, 10), (ONE_ERA_BACK, RIDE, math.inf),
        (ONE_ERA_BACK, RIDE, -1), (-1e308, 1e308, 10), (None, RIDE, 10), ("x", RIDE, 10),
        (-RIDE, RIDE, 10), (0, -1, 10),
    ],
)  # fmt: skip
def test_edge_values_give_zero(gps, now, tol):
    assert rollover_eras(gps, now, tol) == 0


def test_arbitrary_inputs_never_raise():
    rng = random.Random(1024)
    specials = [0.0, -0.0, 1e-300, -1e300, 1e300, math.nan, math.inf, -math.inf, ERA_S, -ERA_S]
    for _ in range(5000):
        a, b = (rng.choice(specials) if rng.random() < 0.2 else rng.uniform(-1e12, 1e12)
                for _ in range(2))  # fmt: skip
        tol = rng.choice([0.0, 10.0, 1e9, -5.0, math.nan])
        k = rollover_eras(a, b, tol)
        assert isinstance(k, int) and k >= 0


# -- TimeKeeper.shift_s -------------------------------------------------------------------------


def test_one_era_corrected_and_logged_once(caplog):
    k, _ = keeper(Trusted(RIDE))
    with caplog.at_level(logging.INFO, logger="tracker.gpstime"):
        assert k.shift_s(ONE_ERA_BACK) == ERA_S
        assert ONE_ERA_BACK + k.shift_s(ONE_ERA_BACK + 1) == RIDE
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "1 era(s) (1024 weeks)" in text
    assert "2006-10-29T09:30:00+00:00 becomes 2026-06-14T09:30:00+00:00" in text


def test_two_eras_corrected():
    k, _ = keeper(Trusted(RIDE))
    assert k.shift_s(TWO_ERAS_BACK) == 2 * ERA_S


def test_a_healthy_receiver_decides_no_shift():
    k, _ = keeper(Trusted(RIDE + 2))
    assert k.shift_s(RIDE) == 0.0 and k.decided


def test_the_decision_is_latched():
    trusted, wall = Trusted(RIDE), Wall(RIDE)
    k, _ = keeper(trusted, wall=wall)
    assert k.shift_s(ONE_ERA_BACK) == ERA_S
    trusted.now = None
    wall.t += 3600
    assert k.shift_s(ONE_ERA_BACK + 3600) == ERA_S
    trusted.now = ONE_ERA_BACK  # a trusted clock changing its mind changes nothing
    assert k.shift_s(ONE_ERA_BACK + 3601) == ERA_S
    assert trusted.calls == 1


def test_without_a_trusted_clock_no_shift_and_asked_at_most_every_60_s():
    trusted, wall = Trusted(None), Wall(RIDE)
    k, _ = keeper(trusted, wall=wall)
    for _ in range(59):
        assert k.shift_s(ONE_ERA_BACK) == 0.0
        wall.t += 1
    assert trusted.calls == 1 and not k.decided
    wall.t += 1  # 60 s after the first ask
    assert k.shift_s(ONE_ERA_BACK) == 0.0
    assert trusted.calls == 2
    trusted.now = RIDE + 90  # a trusted clock turns up (the wall happens to be right too)
    wall.t = RIDE + 90
    assert k.shift_s(ONE_ERA_BACK + 90) == 0.0  # 30 s since the last ask: not asked yet
    trusted.now = wall.t = RIDE + 120
    assert k.shift_s(ONE_ERA_BACK + 120) == ERA_S and trusted.calls == 3


def test_a_wall_clock_stepped_back_does_not_stop_the_asking():
    trusted, wall = Trusted(None), Wall(RIDE)
    k, _ = keeper(trusted, wall=wall)
    k.shift_s(ONE_ERA_BACK)
    wall.t -= 86400
    k.shift_s(ONE_ERA_BACK)
    assert trusted.calls == 2


def test_a_replay_is_not_corrected_and_not_latched(caplog):
    trusted, wall = Trusted(RIDE), Wall(RIDE)
    k, _ = keeper(trusted, wall=wall)
    old = ts(2019, 4, 7, 12)
    with caplog.at_level(logging.WARNING, logger="tracker.gpstime"):
        assert k.shift_s(old) == 0.0
        wall.t += 60
        assert k.shift_s(old + 60) == 0.0
    assert not k.decided and trusted.calls == 2
    assert len(caplog.records) == 1 and "replayed" in caplog.records[0].getMessage()


def test_a_failing_trusted_clock_counts_as_none(caplog):
    def broken() -> float:
        raise RuntimeError("bug in the daemon's callable")

    wall = Wall(RIDE)
    k, _ = keeper(broken, wall=wall)
    with caplog.at_level(logging.WARNING, logger="tracker.gpstime"):
        assert k.shift_s(ONE_ERA_BACK) == 0.0
        wall.t += 60
        assert k.shift_s(ONE_ERA_BACK) == 0.0
    assert len(caplog.records) == 1


def test_nan_receiver_time_is_not_a_decision():
    trusted = Trusted(RIDE)
    k, _ = keeper(trusted)
    assert k.shift_s(math.nan) == 0.0 and trusted.calls == 0


# -- TimeKeeper.observe -------------------------------------------------------------------------


def test_sets_the_clock_once_when_more_than_60_s_off():
    wall = Wall(RIDE - 3600)
    k, calls = keeper(Trusted(None), wall=wall, set_system_clock=True)
    k.observe(RIDE)
    assert calls == [RIDE]
    wall.t = RIDE - 3600  # the fake setter left the wall where it was: still not again
    k.observe(RIDE + 1)
    assert calls == [RIDE]


@pytest.mark.parametrize("off", [0.0, 59.9, 60.0, -60.0])
def test_not_when_within_60_s(off):
    k, calls = keeper(Trusted(None), wall=Wall(RIDE + off), set_system_clock=True)
    k.observe(RIDE)
    assert calls == []


def test_within_60_s_does_not_use_up_the_one_set():
    wall = Wall(RIDE)
    k, calls = keeper(Trusted(None), wall=wall, set_system_clock=True)
    k.observe(RIDE)
    wall.t = RIDE - 61
    k.observe(RIDE)
    assert calls == [RIDE]


def test_not_when_switched_off():
    k, calls = keeper(Trusted(None), wall=Wall(RIDE - 3600))
    k.observe(RIDE)
    assert calls == []


def test_never_below_the_floor(caplog):
    # A rolled-over receiver and no trusted clock: 2006 must never reach the clock.
    k, calls = keeper(Trusted(None), wall=Wall(RIDE), set_system_clock=True)
    with caplog.at_level(logging.WARNING, logger="tracker.gpstime"):
        k.observe(ONE_ERA_BACK)
        k.observe(ONE_ERA_BACK + 1)
    assert calls == []
    assert len(caplog.records) == 1
    k.observe(RIDE + 3600)  # the floor refusing did not use up the one set
    assert calls == [RIDE + 3600]


def test_a_custom_floor():
    k, calls = keeper(Trusted(None), wall=Wall(RIDE), set_system_clock=True, floor=RIDE + 7200)
    k.observe(RIDE + 3600)
    assert calls == []


def test_not_after_a_trusted_clock_disagreed():
    k, calls = keeper(Trusted(RIDE + 90 * 86400), wall=Wall(RIDE), set_system_clock=True)
    assert k.shift_s(RIDE) == 0.0
    k.observe(RIDE + 3600)
    assert calls == []


def test_a_later_agreement_lifts_the_disagreement():
    trusted, wall = Trusted(RIDE + 90 * 86400), Wall(RIDE - 3600)
    k, calls = keeper(trusted, wall=wall, set_system_clock=True)
    assert k.shift_s(RIDE) == 0.0
    trusted.now, wall.t = RIDE + 60, RIDE - 3540
    assert k.shift_s(RIDE + 60) == 0.0 and k.decided
    k.observe(RIDE + 60)
    assert calls == [RIDE + 60]


def test_the_corrected_time_sets_the_clock():
    wall = Wall(ts(2025, 3, 1))  # fake-hwclock's last saved time, long before the ride
    k, calls = keeper(Trusted(RIDE), wall=wall, set_system_clock=True)
    k.observe(ONE_ERA_BACK + k.shift_s(ONE_ERA_BACK))
    assert calls == [RIDE]


@pytest.mark.parametrize("error", [PermissionError(1, "Operation not permitted"), OSError(22, "x")])
def test_a_failing_setter_is_one_log_line_and_no_exception(caplog, error):
    attempts = []

    def setter(t: float) -> None:
        attempts.append(t)
        raise error

    k = TimeKeeper(Trusted(None), set_system_clock=True, setter=setter, wall=Wall(RIDE - 3600))
    with caplog.at_level(logging.WARNING, logger="tracker.gpstime"):
        k.observe(RIDE)
        k.observe(RIDE + 1)
    assert attempts == [RIDE]
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.ERROR
    assert "CAP_SYS_TIME" in caplog.records[0].getMessage()
    assert "tracker.service" in caplog.records[0].getMessage()


def test_default_setter_exists():
    assert callable(default_setter)  # never called here: CI runs as root


# -- trusted clocks -----------------------------------------------------------------------------


def test_ntp_synchronized_answers_without_raising():
    assert ntp_synchronized() in (True, False, None)


def test_struct_timex_layout():
    long = ctypes.sizeof(ctypes.c_long)
    assert gpstime._Timex.status.offset == 5 * long  # after modes (padded), 4 longs
    if long == 8:
        assert ctypes.sizeof(gpstime._Timex) == 208  # glibc x86_64 and aarch64
    else:
        assert ctypes.sizeof(gpstime._Timex) == 128  # glibc armhf, 32-bit time_t


@pytest.mark.parametrize(
    ("rc", "out", "expected"),
    [(0, "yes\n", True), (0, "no\n", False), (1, "", None), (0, "maybe\n", None)],
)
def test_timedatectl_fallback(monkeypatch, rc, out, expected):
    monkeypatch.setattr(gpstime.shutil, "which", lambda _name: "/usr/bin/timedatectl")

    def run(args, **_kw):
        assert args[1:] == ["show", "--property=NTPSynchronized", "--value"]
        return subprocess.CompletedProcess(args, rc, stdout=out, stderr="")

    assert gpstime._timedatectl_synced(run=run) is expected


def test_timedatectl_fallback_timeout(monkeypatch):
    monkeypatch.setattr(gpstime.shutil, "which", lambda _name: "/usr/bin/timedatectl")

    def run(args, **kw):
        raise subprocess.TimeoutExpired(args, kw["timeout"])

    assert gpstime._timedatectl_synced(run=run) is None


def test_system_clock_only_when_synced():
    wall = Wall(RIDE)
    assert system_clock_if_synced(wall, synced=lambda: True) == RIDE
    assert system_clock_if_synced(wall, synced=lambda: False) is None
    assert system_clock_if_synced(wall, synced=lambda: None) is None


def test_server_now_from_an_offset():
    wall = Wall(RIDE)
    assert server_now(2.5, wall) == RIDE + 2.5
    assert server_now(-ERA_S, wall) == ONE_ERA_BACK
    assert server_now(None, wall) is None
    assert server_now(math.nan, wall) is None


def test_a_daemon_style_trusted_clock():
    # The daemon's composition: a synchronised system clock, else the server's clock.
    wall = Wall(ts(2025, 3, 1))  # unsynchronised, stale
    offset = RIDE - wall.t

    def trusted() -> float | None:
        return system_clock_if_synced(wall, synced=lambda: False) or server_now(offset, wall)

    k, _ = keeper(trusted, wall=wall)
    assert k.shift_s(ONE_ERA_BACK) == ERA_S
