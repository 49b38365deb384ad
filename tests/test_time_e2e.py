"""End to end: time that a receiver gets wrong, through a real pty into a real `tracker run`.

- A receiver one GPS week-number era (1024 weeks) behind: corrected once the Map My Tracks
  test server's get_time (a trusted clock) agrees, so the ride is stored and sent in 2026.
- A replayed old capture: months off, not whole eras: stored as it is.
- GPS time repeating and jumping back: repeats and small steps dropped, a jump back of more than
  5 s ends the activity cleanly.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from support import (
    T0,
    USER,
    epochs,
    mmt_section,
    stored_activities,
    stored_fixes,
    stored_so_far,
    wait_for,
)

from tracker.gpstime import ERA_S
from tracker.testing.mapmytracks import MapMyTracksServer

pytestmark = pytest.mark.slow

PASSWORD = "t1me-pw"
ALWAYS = '[activity]\nstart = "always"\n\n'




def play(gps, eps) -> None:
    for e in eps:
        gps.write(e.data)


def _ride_through_server(daemon, gps, start: datetime, n: int = 40):
    server = MapMyTracksServer(users={USER: PASSWORD}).start()
    try:
        d = daemon(ALWAYS + mmt_section(server.url, PASSWORD, offline_upload="off")).start()
        d.wait_gps_open()
        # The sender's get_time at start is the trusted clock the recorder asks.
        wait_for(lambda: d.backend_status("mapmytracks").get("clock_offset_system_s") is not None,
                 what="the server's clock known")  # fmt: skip
        ride = epochs(n, rate_hz=1.0, start=start)
        play(gps, ride)
        wait_for(lambda: len(stored_so_far(d.db)) >= n, what="the ride stored")
        wait_for(lambda: sum(len(a.points) for a in server.activities.values()) >= n,
                 what="the ride on the server")  # fmt: skip
        return d, ride, list(server.activities.values())
    finally:
        server.stop()


def test_a_receiver_one_era_behind_is_corrected_when_the_servers_clock_agrees(daemon, gps):
    now = datetime.now(UTC).replace(microsecond=0)
    behind = now - timedelta(seconds=ERA_S)
    assert behind.year < 2010  # what such a receiver reports
    d, ride, remote = _ride_through_server(daemon, gps, behind)
    fixes = stored_fixes(d.db)
    assert [round(f.time, 2) for f in fixes] == [round(e.unix + ERA_S, 2) for e in ride]
    (activity,) = remote
    assert [p[0] for p in activity.points] == [math.floor(e.unix + ERA_S) for e in ride]
    assert "GPS week roll-over" in d.log_text()


def test_a_replayed_old_capture_stays_old(daemon, gps):
    d, ride, remote = _ride_through_server(daemon, gps, T0)  # months ago, not whole eras
    fixes = stored_fixes(d.db)
    assert [round(f.time, 2) for f in fixes] == [round(e.unix, 2) for e in ride]
    assert "GPS week roll-over" not in d.log_text()


def test_repeats_are_dropped_and_a_jump_back_ends_the_activity_cleanly(daemon, gps):
    d = daemon().start()  # "auto": the ride starts once it has moved 10 s
    d.wait_gps_open()
    ride = epochs(120, rate_hz=1.0)
    sent = ride[:60] + [ride[57], ride[59]]  # 2 s back, and a repeat: dropped
    sent += ride[30:90]  # 30 s back: the receiver's clock jumped
    play(gps, sent)
    wait_for(lambda: stored_so_far(d.db) and stored_so_far(d.db)[-1].time >= ride[89].unix - 0.01,
             what="the last epoch stored")  # fmt: skip
    assert d.terminate() == 0
    report = d.status()  # the counters the daemon wrote as it stopped
    fixes = stored_fixes(d.db)
    assert len(fixes) == 60 + 60, "the repeat and the small step back are not stored"
    acts = stored_activities(d.db)
    assert len(acts) == 2
    first, second = acts
    assert first.end_reason == "GPS time jumped back"
    assert first.ended_at == pytest.approx(ride[59].unix)
    assert first.started_at == pytest.approx(ride[0].unix)
    assert second.started_at == pytest.approx(ride[30].unix)  # with its lead-in
    assert {f.activity_id for f in fixes[:60]} == {first.id}
    assert {f.activity_id for f in fixes[60:]} == {second.id}
    assert report["storage"]["repeated_fixes"] == 2
