"""End to end: simulated sensors in a real `tracker run`, GPS from the simulator through a pty,
live to the Map My Tracks test server, and into the store and the GPX export."""

from __future__ import annotations

import io
import math
import time

import pytest
from support import epochs, wait_for

from tracker.export import write_gpx
from tracker.sensors.simulated import Rider
from tracker.store import open_store
from tracker.testing.mapmytracks import MapMyTracksServer, parse_points, parse_samples

pytestmark = pytest.mark.slow

RATE_HZ = 5.0


def generated(rider: Rider, t: float, kind: str, value: float) -> bool:
    """The value is what the rider produced within 0.3 s of t (the offset is refined between
    a value's generation and its conversion by at most the GPS hand-over delay)."""
    return any(rider.values_at(t + d / 100)[kind] == value for d in range(-30, 31))


def test_simulated_sensors_go_live_with_the_points_and_into_the_gpx(daemon, gps):
    server = MapMyTracksServer(users={"rider": "secret"}).start()
    try:
        d = daemon(
            f'[mapmytracks]\nurl = "{server.url}"\nusername = "rider"\npassword = "secret"\n'
            "interval_s = 1\n\n"
            '[[sensors]]\ntype = "simulated"\nrate_hz = 4\nseed = 7\n'
        ).start()
        d.wait_gps_open()
        ride = epochs(int(12 * RATE_HZ), rate_hz=RATE_HZ)
        for e in ride:  # in real time: GPS time and the monotonic clock advance together
            gps.write(e.data)
            time.sleep(1 / RATE_HZ)

        def live():
            acts = list(server.activities.values())
            return acts and all(len(getattr(acts[0], k)) >= 5 for k in ("hr", "cad", "pwr"))

        wait_for(live, 20, "hr, cad and pwr at the server")
        assert d.terminate() == 0
    finally:
        server.stop()

    # Every batch's samples lie within the time range of that batch's points.
    batches = 0
    for req in server.state.requests.snapshot():
        if req.name not in ("start_activity", "update_activity") or not req.processed:
            continue
        points = parse_points(req.params.get("points", ""))
        for kind in ("hr", "cad", "pwr"):
            if kind not in req.params:
                continue
            assert points, f"{req.name} sent {kind} without points"
            lo, hi = min(p[0] for p in points), max(p[0] for p in points)
            for t, _ in parse_samples(req.params[kind], kind):
                assert lo <= t <= hi, f"{kind} at {t} outside the batch's points {lo}..{hi}"
            batches += 1
    assert batches >= 3

    # What the server has is what the daemon stored, which is what the rider generated.
    store = open_store(d.db, readonly=True)
    try:
        fixes = list(store.iter_fixes())
        stored = store.samples_between(fixes[0].time - 60, fixes[-1].time + 60)
        out = io.StringIO()
        write_gpx(store, out)
    finally:
        store.close()
    rider = Rider(seed=7)
    assert {s.kind for s in stored} == {"hr", "cad", "pwr"}
    assert all(s.sensor == "simulated" for s in stored)
    for s in stored:
        assert generated(rider, s.time, s.kind, s.value), s
    first_of_second: dict[tuple[str, int], float] = {}
    for s in stored:
        first_of_second.setdefault((s.kind, math.floor(s.time)), s.value)
    (activity,) = server.activities.values()
    for kind in ("hr", "cad", "pwr"):
        for t, value in getattr(activity, kind):
            assert first_of_second[(kind, t)] == value, (kind, t)
    # Sample times fall within the ride: GPS time, not the system clock.
    assert fixes[0].time - 1 <= min(s.time for s in stored)
    assert max(s.time for s in stored) <= fixes[-1].time + 1

    # The GPX export carries them on the points.
    gpx = out.getvalue()
    assert gpx.count("<gpxtpx:hr>") >= len(fixes) // 2
    assert "<gpxtpx:cad>" in gpx and "<pwr:PowerInWatts>" in gpx
