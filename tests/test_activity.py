"""The lifecycle decision (tracker/activity.py), fix by fix, without a database."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from tracker.activity import (
    BACK_JUMP_S,
    PAUSED_EVERY_S,
    Decision,
    Lifecycle,
    Place,
    Rules,
    start_speed_for,
)
from tracker.fix import Fix

T0 = 1_780_000_000.0
AUTO = Rules(mode="auto", start_speed_mps=1.5, max_hdop=5.0, start_after_s=10.0,
             idle_stop_s=900.0, paused_points="thin")  # fmt: skip


def fix(t: float, speed: float | None = 0.0, hdop: float | None = 1.0, north_m: float = 0.0):
    return Fix(time=T0 + t, lat=48.0 + north_m / 111_195.0, lon=11.0, speed=speed, hdop=hdop)


def feed(life: Lifecycle, fixes) -> list[Decision]:
    return [life.step(f) for f in fixes]


def parked(t0: float, t1: float, **kw) -> list[Fix]:
    return [fix(t, 0.2, **kw) for t in range(int(t0), int(t1))]


def riding(t0: float, t1: float, speed: float = 5.0, **kw) -> list[Fix]:
    return [fix(t, speed, **kw) for t in range(int(t0), int(t1))]


def places(decisions: list[Decision]) -> list[Place]:
    return [d.place for d in decisions]


# --- start ------------------------------------------------------------------------------------


def test_auto_starts_once_movement_holds_and_adopts_the_lead_in():
    life = Lifecycle(AUTO)
    ds = feed(life, parked(0, 60) + riding(60, 80))
    assert set(places(ds[:60])) == {Place.OUTSIDE}
    assert places(ds[60:70]) == [Place.LEAD_IN] * 10
    start = ds[70].start
    assert start is not None and ds[70].place is Place.SENT
    assert start.at == T0 + 60  # the first moving fix, not 10 s later
    assert start.adopt == 10  # the lead-in stored meanwhile
    assert [d.start for d in ds[71:]] == [None] * 9
    assert set(places(ds[71:])) == {Place.SENT}


def test_parked_noise_never_starts_an_activity():
    life = Lifecycle(AUTO)
    noise = parked(0, 600)
    # One-epoch speed spikes at a good HDOP, every 37 s.
    noise = [fix(f.time - T0, 4.5) if int(f.time - T0) % 37 == 0 else f for f in noise]
    # Phantom walks: 20 epochs at 1-3 m/s with HDOP 6-8 (4 satellites under trees).
    for k in range(100, 600, 150):
        for t in range(k, k + 20):
            noise[t] = fix(t, 2.5, hdop=6.0 + (t % 3))
    ds = feed(life, noise)
    assert not any(d.start for d in ds)
    assert Place.SENT not in places(ds)


def test_a_bad_hdop_fix_is_no_evidence_either_way():
    life = Lifecycle(AUTO)
    # Moving at a good HDOP, with a stretch of bad-HDOP fixes (slow ones) inside the run.
    ride = riding(0, 4) + [fix(t, 0.0, hdop=9.0) for t in range(4, 7)] + riding(7, 12)
    ds = feed(life, ride)
    assert ds[10].start is not None and ds[10].start.at == T0


def test_a_short_stop_cancels_the_lead_in():
    life = Lifecycle(AUTO)
    ds = feed(life, riding(0, 6) + parked(6, 12) + riding(12, 23))
    starts = [d.start for d in ds if d.start]
    assert len(starts) == 1 and starts[0].at == T0 + 12
    assert starts[0].adopt == 10


def test_a_dip_of_a_few_seconds_does_not_cancel_the_run():
    life = Lifecycle(AUTO)
    ds = feed(life, riding(0, 5) + parked(5, 7) + riding(7, 11))
    assert ds[10].start is not None and ds[10].start.at == T0


def test_speed_is_derived_from_positions_when_the_receiver_sends_none():
    life = Lifecycle(AUTO)
    ds = feed(life, [fix(t, None, north_m=5.0 * t) for t in range(13)])
    assert ds[11].start is not None and ds[11].start.at == T0 + 1  # the first has no previous


@pytest.mark.parametrize(
    ("kind", "speed"),
    [("cycling", 1.5), ("mountain biking", 1.5), ("walking", 0.8), ("hiking", 0.8),
     ("running", 0.8), ("sailing", 0.5), ("rowing", 0.5), ("kayaking", 0.5)],
)  # fmt: skip
def test_start_speeds_by_activity_type(kind, speed):
    assert start_speed_for(kind) == speed


# --- pause ------------------------------------------------------------------------------------


def _paused_run(paused_points: str) -> list[Decision]:
    life = Lifecycle(replace(AUTO, paused_points=paused_points))
    ds = feed(life, riding(0, 100) + parked(100, 400) + riding(400, 420))
    return ds


def test_thin_sends_one_paused_fix_a_minute_and_resumes_at_once():
    ds = _paused_run("thin")
    cafe = ds[100:400]
    # Within start_after_s of the last movement the fixes still go (a red light).
    assert places(cafe[:9]) == [Place.SENT] * 9
    sent = [i for i, d in enumerate(cafe[9:]) if d.place is Place.SENT]
    assert sent == [0, 60, 120, 180, 240]
    assert all(d.place is Place.LOCAL for i, d in enumerate(cafe[9:]) if i not in sent)
    assert PAUSED_EVERY_S == 60
    assert set(places(ds[400:])) == {Place.SENT}  # riding again: at once


def test_send_and_keep_local():
    assert set(places(_paused_run("send"))) == {Place.LEAD_IN, Place.SENT}
    kept = places(_paused_run("keep_local")[110:400])
    assert set(kept) == {Place.LOCAL}


def test_a_speed_spike_in_a_pause_sends_that_fix_only():
    life = Lifecycle(AUTO)
    feed(life, riding(0, 100) + parked(100, 200))
    assert life.step(fix(200, 4.0)).place is Place.SENT
    assert life.step(fix(201, 0.1)).place is Place.LOCAL  # the spike sent itself only
    ds = feed(life, parked(205, 260))
    assert Place.LOCAL in places(ds)


# --- end --------------------------------------------------------------------------------------


def test_idle_end_at_the_last_moving_fix_whatever_comes_between():
    life = Lifecycle(AUTO)
    ride = riding(0, 100)
    # Parked in a bad spot: HDOP jumps, phantom walks at HDOP 6-8, spikes: none keeps it alive.
    spot = []
    for t in range(100, 1100):
        if t % 200 < 15:
            spot.append(fix(t, 2.0, hdop=7.0))
        elif t % 97 == 0:
            spot.append(fix(t, 5.0))
        else:
            spot.append(fix(t, 0.3, hdop=4.0 + (t % 5)))
    ds = feed(life, ride + spot)
    ends = [(i, d.end) for i, d in enumerate(ds) if d.end]
    assert len(ends) == 1
    i, end = ends[0]
    assert end.at == T0 + 99 and end.reason == "idle"
    assert i == 999  # the first fix 900 s after the last movement
    assert not any(d.start for d in ds[i:])
    assert set(places(ds[i:])) <= {Place.OUTSIDE, Place.LEAD_IN}


def test_a_new_ride_after_the_end_starts_a_new_activity():
    life = Lifecycle(AUTO)
    ds = feed(life, riding(0, 100) + parked(100, 1100) + riding(1100, 1120))
    assert [d.end.at for d in ds if d.end] == [T0 + 99]
    assert [d.start.at for d in ds if d.start] == [T0, T0 + 1100]


def test_a_cafe_shorter_than_idle_stop_continues():
    life = Lifecycle(AUTO)
    ds = feed(life, riding(0, 100) + parked(100, 950) + riding(950, 1000))
    assert [d.start.at for d in ds if d.start] == [T0]
    assert not any(d.end for d in ds)


def test_restart_replay_continues_within_idle_stop_and_ends_beyond_it():
    stored = riding(0, 100) + parked(100, 400)
    life = Lifecycle(AUTO)
    life.resumed(T0, stored[-1].time)
    life.replay(stored)
    assert life.last_moving == T0 + 99
    assert life.step(fix(900, 0.2)).end is None  # power back after 500 s: same ride
    life2 = Lifecycle(AUTO)
    life2.resumed(T0, stored[-1].time)
    life2.replay(stored)
    d = life2.step(fix(1200, 0.2))  # after 1100 s without movement
    assert d.end is not None and d.end.at == T0 + 99


def test_a_replay_without_movement_never_ends_at_the_activity_start():
    life = Lifecycle(AUTO)
    life.resumed(T0 - 5000, T0 + 99)
    life.replay(parked(0, 100))
    assert life.last_moving == T0


def test_stop_in_auto_waits_for_stillness_before_the_next_start():
    life = Lifecycle(AUTO)
    feed(life, riding(0, 30))
    life.stopped()
    ds = feed(life, riding(30, 120))  # still rolling after the stop: no new activity
    assert not any(d.start for d in ds)
    ds = feed(life, parked(120, 135) + riding(135, 150))
    assert [d.start.at for d in ds if d.start] == [T0 + 135]


def test_start_request_starts_with_the_next_fix_in_auto_mode():
    life = Lifecycle(AUTO)
    life.start_requested()
    d = life.step(fix(0, 0.0))
    assert d.start is not None and d.start.adopt == 0 and d.place is Place.SENT


# --- always and manual ------------------------------------------------------------------------


def test_always_starts_at_the_first_fix_and_a_gap_restarts():
    life = Lifecycle(Rules(mode="always", idle_stop_s=None, resume_window_s=600), armed=True)
    ds = feed(life, parked(0, 10) + parked(700, 705))
    assert ds[0].start is not None and ds[0].start.at == T0
    assert ds[10].end is not None and ds[10].end.at == T0 + 9 and ds[10].end.reason == "gap"
    assert ds[10].start is not None and ds[10].start.at == T0 + 700
    assert set(places(ds)) == {Place.SENT}


def test_manual_waits_for_a_request_and_survives_gaps():
    life = Lifecycle(Rules(mode="manual", idle_stop_s=None), armed=False)
    assert set(places(feed(life, riding(0, 30)))) == {Place.OUTSIDE}
    life.start_requested()
    ds = feed(life, riding(30, 40) + parked(10_000, 10_010))
    assert ds[0].start is not None
    assert not any(d.end for d in ds)
    life.stopped()
    assert set(places(feed(life, riding(20_000, 20_030)))) == {Place.OUTSIDE}


def test_manual_with_an_explicit_idle_stop_ends_on_idle():
    life = Lifecycle(Rules(mode="manual", idle_stop_s=300), armed=False)
    life.start_requested()
    ds = feed(life, riding(0, 20) + parked(20, 330))
    [(i, end)] = [(i, d.end) for i, d in enumerate(ds) if d.end]
    assert end.at == T0 + 19 and i == 319  # parked fixes do not count
    assert ds[i].start is None and set(places(ds[i:])) == {Place.OUTSIDE}  # as after a stop


# --- time -------------------------------------------------------------------------------------


def test_repeated_and_slightly_earlier_epochs_are_dropped():
    life = Lifecycle(AUTO)
    feed(life, riding(0, 20))
    assert life.step(fix(19, 5.0)).place is Place.DROP
    assert life.step(fix(19 - BACK_JUMP_S, 5.0)).place is Place.DROP
    assert life.step(fix(20, 5.0)).place is Place.SENT


def test_a_jump_back_ends_the_activity_cleanly():
    life = Lifecycle(AUTO)
    feed(life, riding(0, 30))
    d = life.step(fix(10, 5.0))  # 19 s back
    assert d.end is not None and d.end.at == T0 + 29 and "back" in d.end.reason
    assert d.place in (Place.OUTSIDE, Place.LEAD_IN)
    assert life.step(fix(11, 5.0)).place is Place.LEAD_IN  # time moves on from there


def test_nan_speed_is_no_evidence():
    life = Lifecycle(AUTO)
    ds = feed(life, [fix(t, math.nan) for t in range(20)])
    assert set(places(ds)) == {Place.OUTSIDE}


def test_a_lead_in_replayed_after_a_restart_goes_on():
    before = parked(0, 30) + riding(30, 36)  # stored outside when the power went
    life = Lifecycle(AUTO)
    life.replay(before)
    ds = feed(life, riding(36, 41))
    [start] = [d.start for d in ds if d.start]
    assert start.at == T0 + 30 and start.adopt == 10  # 6 stored before, 4 after the restart
