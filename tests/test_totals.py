"""A ride's running totals (tracker/store/totals.py): the figures `tracker activities` and the
status page read from one row per activity are those a full read of the fixes computes
(rides.summarize_scan, the computation they replace), whatever the writes were; and a page
request reads about as much for a ten-hour ride as for a ten-minute one."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker import rides, web
from tracker.activity import Rules
from tracker.config import Config, StorageConfig, WebConfig
from tracker.fix import Fix, Sample
from tracker.store import MIGRATIONS, open_store
from tracker.store import db as store_db

T0 = 1_780_300_800.0  # 2026-06-01 08:00 UTC
DEG = 1 / 111_195.0  # a metre north, in degrees

PROPS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# What a receiver and a ride give: steps in time (with the repeats, jumps back and gaps the
# store sees), speeds and HDOPs unknown, zero, negative, infinite or NaN.
dts = st.sampled_from([0.0, 0.1, 0.5, 1.0, 1.0, 1.0, 2.0, 9.9, 10.0, 10.5, 60.0, -0.5, -30.0])
speeds = st.one_of(
    st.none(), st.floats(0, 30), st.sampled_from([0.0, 0.4, 0.8, 1.5, 3.0, -1.0, math.inf,
                                                  math.nan])  # fmt: skip
)
hdops = st.one_of(st.none(), st.floats(0.5, 12), st.sampled_from([5.0, math.nan]))
moves = st.tuples(dts, st.floats(-30, 30), st.floats(-30, 30), speeds, hdops)


def fixes_from(t: float, lat: float, lon: float, steps: list) -> tuple[list[Fix], float, float,
                                                                      float]:  # fmt: skip
    out = []
    for dt, north, east, speed, hdop in steps:
        t, lat, lon = t + dt, lat + north * DEG, lon + east * DEG
        out.append(Fix(t, lat, lon, speed=speed, hdop=hdop))
    return out, t, lat, lon


def same(ride: rides.Ride, scan: rides.Ride, exact: bool = False) -> None:
    """The figures of the totals and of the full read; `exact`: summed in the same order
    (only fixes added), so the same bits."""
    if exact:
        assert (ride.distance_m, ride.moving_s) == (scan.distance_m, scan.moving_s)
    assert ride.points == scan.points
    assert ride.samples == scan.samples
    assert ride.elapsed_s == scan.elapsed_s
    assert ride.max_speed_mps == scan.max_speed_mps
    # Sums in another order (and, after a detach, less what came off): the same to rounding.
    assert ride.distance_m == pytest.approx(scan.distance_m, rel=1e-9, abs=1e-6)
    assert ride.moving_s == pytest.approx(scan.moving_s, rel=1e-9, abs=1e-6)
    assert ride.backends == scan.backends and ride.instruments == scan.instruments


def check_store(s, rules: Rules, exact: bool = True) -> None:
    for a in s.activities():
        t = s.ride_totals(a.id)
        assert t is not None and t.rules_match(rules.max_hdop, rules.start_speed_mps)
        same(rides.summarize(s, a, rules), rides.summarize_scan(s, a, rules), exact)
    counts = s._one(
        "SELECT count(*), coalesce(sum(activity_id IS NULL), 0), coalesce(sum(local), 0) "
        "FROM fixes"
    )
    assert s.fix_counts() == dict(zip(("total", "outside", "local"), counts, strict=True))
    assert s.fix_count() == counts[0]


@PROPS
@given(
    lead_in=st.lists(moves, max_size=12),
    adopt=st.integers(0, 14),
    batches=st.lists(st.tuples(st.lists(moves, min_size=1, max_size=40), st.booleans(),
                               st.booleans()), min_size=1, max_size=8),  # fmt: skip
    detach=st.one_of(st.none(), st.floats(-60, 400)),
    end=st.booleans(),
    second=st.lists(moves, max_size=30),
    samples=st.lists(st.floats(-100, 500), max_size=40),
    max_hdop=st.sampled_from([5.0, 2.0]),
    start_speed=st.sampled_from([1.5, 0.5, 3.0]),
)
def test_running_totals_are_the_full_read_whatever_the_writes(
    tmp_path_factory, lead_in, adopt, batches, detach, end, second, samples, max_hdop, start_speed
):
    """Lead-in adopted, batches in and out of the activity (paused ones kept local), a tail
    detached (time that went back included), activities ended, a second ride: the totals
    equal the full read after every write."""
    rules = Rules(max_hdop=max_hdop, start_speed_mps=start_speed)
    path = tmp_path_factory.mktemp("totals") / "tracker.db"
    s = open_store(path, ride_rules=(max_hdop, start_speed))
    try:
        s.add_samples([Sample(T0 + x, "hr", 120.0) for x in samples])
        fixes, t, lat, lon = fixes_from(T0, 48.0, 11.0, lead_in)
        s.add_fixes(None, fixes)
        a = s.start_activity("Loop", "cycling", "private", (), t)
        s.adopt_fixes(a.id, adopt)
        check_store(s, rules)
        for steps, local, outside in batches:
            fixes, t, lat, lon = fixes_from(t, lat, lon, steps)
            s.add_fixes(None if outside else a.id, fixes, local=local)
            check_store(s, rules)
        if detach is not None:
            s.detach_fixes(a.id, T0 + detach)  # sums less what came off: to rounding
            check_store(s, rules, exact=False)
        if end:
            s.end_activity(a.id, t, "stopped")
            b = s.start_activity("Back", "running", "private", (), t + 1)
            fixes, t, lat, lon = fixes_from(t + 1, lat, lon, second)
            s.add_fixes(b.id, fixes)
        check_store(s, rules, exact=detach is None)
    finally:
        s.close()
    with open_store(path, readonly=True) as r:
        check_store(r, rules, exact=detach is None)


@settings(PROPS, max_examples=25)
@given(
    rides_=st.lists(st.tuples(st.sampled_from(["cycling", "running", "sailing", "driving"]),
                              st.lists(moves, max_size=40), st.booleans()),
                    max_size=4),  # fmt: skip
    outside=st.integers(0, 5),
    samples=st.lists(st.floats(-100, 5000), max_size=30),
)
def test_migration_5_sums_what_was_stored_before(tmp_path_factory, rides_, outside, samples):
    """A database of schema 4 with rides in it: migration 5 fills the totals (in SQL) with the
    figures the full read gives, with the rules `[activity]` defaults to for each type."""
    path = tmp_path_factory.mktemp("v4") / "tracker.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size = {store_db.PAGE_SIZE}")  # no rewrite at open: quicker
    for script in MIGRATIONS[:4]:
        for statement in store_db._statements(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 4")
    t, lat, lon = T0, 48.0, 11.0
    for n, (kind, steps, local) in enumerate(rides_, start=1):
        conn.execute("INSERT INTO activities (uuid, type, started_at) VALUES (?, ?, ?)",
                     (f"u{n}", kind, t))  # fmt: skip
        fixes, t, lat, lon = fixes_from(t, lat, lon, steps)
        if n < len(rides_):  # one current activity at most: the last
            conn.execute("UPDATE activities SET ended_at = ? WHERE id = ?", (t, n))
        for f in fixes:
            conn.execute("INSERT INTO fixes (activity_id, local, time, lat, lon, speed, hdop) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (n, int(local), f.time, f.lat, f.lon, f.speed, f.hdop))  # fmt: skip
        for i in range(outside):
            conn.execute("INSERT INTO fixes (time, lat, lon) VALUES (?, 48, 11)", (t + i,))
    for x in samples:
        conn.execute("INSERT INTO samples (time, kind, value) VALUES (?, 'hr', 1)", (T0 + x,))
    conn.close()
    with open_store(path) as s:
        for a in s.activities():
            t_ = s.ride_totals(a.id)
            rules = Rules(max_hdop=t_.max_hdop, start_speed_mps=t_.start_speed)
            assert (t_.max_hdop, t_.start_speed) == (5.0, {"running": 0.8, "sailing": 0.5,
                                                           "driving": 3.0}.get(a.type, 1.5))
            same(rides.summarize(s, a, rules), rides.summarize_scan(s, a, rules))
            # And the sums go on from the last fix the migration found.
            s.add_fixes(a.id, [Fix(T0 + 9000 + a.id, 48.001, 11.0, speed=4.0, hdop=1.0)])
            same(rides.summarize(s, a, rules), rides.summarize_scan(s, a, rules))
        assert s.sample_count(T0 - 200, T0 + 6000) == len(s.samples_between(T0 - 200, T0 + 6000))


@PROPS
@given(
    times=st.lists(st.floats(0, 4 * 3600), max_size=60),
    span=st.tuples(st.floats(-100, 4 * 3600 + 100), st.floats(0, 4 * 3600)),
)
def test_sample_count_is_the_samples_between(tmp_path_factory, times, span):
    """Minute and hour counts plus the samples at both ends: the same number as the samples
    read one by one, at bucket edges too."""
    edges = [60.0 * k for k in range(0, 240, 7)] + [3600.0, 3599.999999, 7200.000001]
    path = tmp_path_factory.mktemp("samples") / "tracker.db"
    with open_store(path) as s:
        s.add_samples([Sample(T0 + x, "cad", 80.0) for x in times + edges])
        t0, length = span
        for a, b in ((T0 + t0, T0 + t0 + length), (T0, T0 + 4 * 3600), (T0 + 60, T0 + 3600)):
            assert s.sample_count(a, b) == len(s.samples_between(a, b))
        s.prune_if_needed()  # no limit: deletes nothing, counts unchanged
        s._conn.execute("DELETE FROM samples WHERE time < ?", (T0 + 3600,))  # pruning's way
        assert s.sample_count(T0, T0 + 4 * 3600) == len(s.samples_between(T0, T0 + 4 * 3600))


def test_other_rules_read_the_fixes_and_give_their_own_figures(tmp_path: Path) -> None:
    """Totals summed with one start speed are not the figures of another: a reader with other
    `[activity]` rules gets the full read's figures, not the stored ones."""
    with open_store(tmp_path / "t.db", ride_rules=(5.0, 1.5)) as s:
        a = s.start_activity("Walk", "cycling", "private", (), T0)
        s.add_fixes(a.id, [Fix(T0 + i, 48.0 + i * DEG, 11.0, speed=1.0, hdop=1.0)
                           for i in range(100)])  # fmt: skip
        slow = Rules(max_hdop=5.0, start_speed_mps=0.8)
        assert rides.summarize(s, a, Rules(max_hdop=5.0, start_speed_mps=1.5)).distance_m == 0
        ride = rides.summarize(s, a, slow)
        assert ride.distance_m == pytest.approx(99, rel=1e-3)
        same(ride, rides.summarize_scan(s, a, slow))


def test_pruning_keeps_the_counts_and_the_ride_as_recorded(tmp_path: Path) -> None:
    """Pruning deletes delivered fixes to make room: the counts follow what is still stored,
    the ride's distance and times stay those recorded, and an activity pruned away takes its
    totals with it."""
    with open_store(tmp_path / "t.db", max_mb=0.35) as s:
        s.register_backend("gpsr")
        a = s.start_activity("Loop", "cycling", "private", (), T0)
        s.add_fixes(a.id, [Fix(T0 + i, 48.0 + i * 5 * DEG, 11.0, speed=5.0, hdop=1.0)
                           for i in range(600)])  # fmt: skip
        s.end_activity(a.id, T0 + 599, "stopped")
        b = s.start_activity("Loop", "cycling", "private", (), T0 + 700)
        s.add_fixes(b.id, [Fix(T0 + 700 + i, 48.0, 11.0 + i * 5 * DEG, speed=5.0, hdop=1.0)
                           for i in range(6000)])  # fmt: skip
        recorded = s.ride_totals(b.id)
        s.acknowledge("gpsr", [f.id for f in s.iter_fixes()])
        report = s.prune_if_needed()
        assert report.deleted_fixes > 600 and report.deleted_activities == 1
        assert s.ride_totals(a.id) is None
        left = s.ride_totals(b.id)
        assert left.points == sum(1 for _ in s.iter_fixes(b.id)) < 6000
        assert (left.distance_m, left.moving_s) == (recorded.distance_m, recorded.moving_s)
        assert s.fix_counts()["total"] == s._scalar("SELECT count(*) FROM fixes")


def test_the_track_is_thinned_at_evenly_spaced_fixes(tmp_path: Path) -> None:
    """At most `limit` points, the first and the newest fix included, in order, none twice,
    with fixes outside the activity between its own (the ids it skips)."""
    with open_store(tmp_path / "t.db") as s:
        a = s.start_activity("Loop", "cycling", "private", (), T0)
        for k in range(50):
            s.add_fixes(a.id, [Fix(T0 + k * 100 + i, 48.0 + (k * 100 + i) * DEG, 11.0)
                               for i in range(90)])  # fmt: skip
            s.add_fixes(None, [Fix(T0 + k * 100 + 90 + i, 47.0, 11.0) for i in range(10)])
        pts = web.track(s, a.id, limit=300)
        assert 250 <= len(pts) <= 300
        assert pts[0] == [48.0, 11.0] and pts[-1] == [round(48.0 + 4989 * DEG, 6), 11.0]
        lats = [p[0] for p in pts]
        assert lats == sorted(set(lats)) and all(lat >= 48.0 for lat in lats)
        assert web.track(s, a.id, limit=10_000) == [
            [round(f.lat, 6), round(f.lon, 6)] for f in s.iter_fixes(a.id)
        ]


# -- a request reads a bounded number of rows ----------------------------------------------------


def big_ride(path: Path, hours: float, hz: float = 10.0) -> None:
    """A ride at `hz` for `hours`, with a heart rate a second, straight into the store in big
    batches (the recorder's own writes, so the totals are the recorder's)."""
    n = int(hours * 3600 * hz)
    with open_store(path) as s:
        s.register_backend("gpsr")
        a = s.start_activity("Long ride", "cycling", "private", (), T0)
        batch = 20_000
        for start in range(0, n, batch):
            s.add_fixes(a.id, [Fix(T0 + i / hz, 48.0 + i * 0.5 * DEG, 11.0, speed=5.0, hdop=0.8)
                               for i in range(start, min(n, start + batch))])  # fmt: skip
        s.add_samples([Sample(T0 + i, "hr", 130.0) for i in range(int(hours * 3600))])
        s.acknowledge("gpsr", range(1, n + 1))  # the backend is up to date: no backlog


def request_cost(path: Path) -> dict[str, int]:
    """SQLite virtual-machine steps (in hundreds) each of the page's requests takes, as the
    page asks them (StatusServer's methods on a read-only store, as each request opens)."""
    cfg = Config(storage=StorageConfig(path=path), web=WebConfig(listen="127.0.0.1:0"))
    server = web.StatusServer(cfg)
    cost = {}
    try:
        for name, ask in (("status", server.status), ("activities", server.activities),
                          ("track", lambda s: server.track(s, None))):  # fmt: skip
            steps = [0]

            def tick(steps=steps) -> int:
                steps[0] += 1
                return 0

            with open_store(path, readonly=True) as s:
                s._conn.set_progress_handler(tick, 100)
                ask(s)
                s._conn.set_progress_handler(None, 0)
            cost[name] = steps[0]
    finally:
        server.close()
    return cost


def test_a_page_request_costs_the_same_for_a_ten_hour_ride(tmp_path: Path) -> None:
    """/api/status, /api/activities and /api/track on a ride of 10 hours at 10 Hz (360,000
    fixes, 36,000 samples) take about the SQLite work they take on one of 10 minutes, counted
    in virtual-machine steps (rows read, index seeks), not in wall-clock time."""
    short, long_ = tmp_path / "short.db", tmp_path / "long.db"
    big_ride(short, 10 / 60)
    big_ride(long_, 10)
    small, big = request_cost(short), request_cost(long_)
    for name in small:
        # The track is 2,000 seeks either way; the rest is a few rows per activity.
        assert big[name] <= 1.5 * small[name] + 20, (name, small, big)
    # And the full read it replaces would cost a hundred times as much: the count is real.
    with open_store(long_, readonly=True) as s:
        steps = [0]
        s._conn.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1) or 0, 100)
        a = s.activities()[0]
        rides.summarize_scan(s, a, Rules())
        s._conn.set_progress_handler(None, 0)
    assert steps[0] > 50 * (small["activities"] + 1)


def test_a_live_daemon_sums_with_its_own_rules_and_the_page_serves_them(daemon, gps):
    """A real `tracker run` with `[activity]` rules of its own, fed a ride through a pty:
    its activity's totals are summed with those rules (daemon.py hands them to the store),
    so /api/activities serves the totals, and they are the full read's figures; the track
    ends where the rider is. Then `tracker activity stop` and the figures still agree."""
    import json
    import urllib.request

    from support import epochs, free_port, stored_fixes, wait_for

    port = free_port()
    d = daemon(f'[activity]\nstart_speed_mps = 0.9\nmax_hdop = 4.0\n\n'
               f'[web]\nlisten = "127.0.0.1:{port}"\n').start()  # fmt: skip
    d.wait_gps_open()
    ride = epochs(300, rate_hz=5.0)
    for e in ride:
        gps.write(e.data)
    valid = sum(e.valid for e in ride)
    wait_for(lambda: d.db.exists() and len(stored_fixes(d.db)) >= valid, what="the ride stored")
    wait_for(lambda: "status page at" in d.log_text(), what="the page started")
    url = f"http://127.0.0.1:{port}/"
    (got,) = json.loads(urllib.request.urlopen(url + "api/activities", timeout=10).read())
    track = json.loads(urllib.request.urlopen(url + "api/track", timeout=10).read())
    rules = Rules(start_speed_mps=0.9, max_hdop=4.0)
    with open_store(d.db, readonly=True) as s:
        (a,) = s.activities()
        t = s.ride_totals(a.id)
        assert (t.max_hdop, t.start_speed) == (4.0, 0.9)
        scan = rides.summarize_scan(s, a, rules)
        last = s.last_fix(a.id)
    assert got["points"] == scan.points > 0.9 * valid
    assert got["distance_m"] == round(scan.distance_m, 1) > 400  # 60 s at 7 m/s
    assert got["moving_s"] == round(scan.moving_s)
    assert track["activity"] == a.id and 0 < len(track["points"]) <= web.TRACK_POINTS
    assert track["points"][-1] == [round(last.lat, 6), round(last.lon, 6)]
    assert d.cli("activity", "stop").returncode == 0
    assert d.terminate() == 0
    with open_store(d.db, readonly=True) as s:
        (a,) = s.activities()
        assert a.ended_at is not None
        same(rides.summarize(s, a, rules), rides.summarize_scan(s, a, rules))
