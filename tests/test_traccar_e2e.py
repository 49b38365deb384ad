"""End to end with the [traccar] backend: the simulator through a real pty into real `tracker
run` processes, delivering over real HTTP to the OsmAnd test server (tracker.testing.osmand, the
Traccar model with its duplicate filter) in this process on 127.0.0.1, with real SIGKILLs.

Outcomes are read where a user would: the server's positions and request log, the store
(read-only), `tracker status --json` and the daemon's log. Every wait polls (`wait_for`).
"""

from __future__ import annotations

import math
import random
from contextlib import ExitStack

import pytest
from support import (
    T0,
    TUNED,
    Daemon,
    epochs,
    first_of_each_second,
    section,
    stored_fixes,
    stored_times,
    stream,
    wait_for,
)

from tracker import simulate
from tracker.senders.traccar import NAME
from tracker.store import StoredFix, open_store
from tracker.testing.faults import KINDS, Faults
from tracker.testing.osmand import OsmAndServer

pytestmark = pytest.mark.slow

DEVICE = "unit-e2e-7"
MIN_KILLS = 4
MAX_ROUNDS = 12
LIVE_HZ = 5.0
ALWAYS = '[activity]\nstart = "always"\n\n'


def traccar_section(url: str, device: str = DEVICE, **extra: object) -> str:
    """A [traccar] section tuned so faults and backoff resolve in well under a second."""
    return section(NAME, {"url": url, "device_id": device, **TUNED, **extra})


def prepared(d: Daemon) -> Daemon:
    """`d` with its database created first (see test_backends_e2e.prepared: a fresh database
    opened by the daemon's threads at once can lose a WAL switch race, which is not what these
    tests look at)."""
    open_store(d.db).close()
    return d


def backlog(d: Daemon) -> int | None:
    return d.status()["pending"].get(NAME)


def seconds(server: OsmAndServer, device: str = DEVICE) -> list[int]:
    """The stored positions' whole seconds, in the order the server received them."""
    return [p.time_ms // 1000 for p in server.positions(device)]


def assert_holds(server: OsmAndServer, fixes: list[StoredFix], device: str = DEVICE) -> None:
    """The server holds exactly these fixes' seconds, each once, received in time order, each
    with the position and altitude of the first stored fix of its second."""
    want = first_of_each_second(fixes)
    assert server.duplicates(device) == []
    assert seconds(server, device) == [math.floor(f.time) for f in want]
    for got, w in zip(server.positions(device), want, strict=True):
        assert (got.lat, got.lon) == (round(w.lat, 7), round(w.lon, 7)), (got, w)
        assert got.altitude == pytest.approx(w.alt, abs=0.051), (got, w)


def test_one_activity_every_fault_and_repeated_sigkill_every_second_once(daemon, gps):
    faults = Faults(
        reset=0.05, fail_500=0.05, retry_after=0.04, html=0.05, drop_reply=0.06, truncate=0.06,
        slow=0.06, slow_s=0.3, retry_after_s=1, seed=20261204,
    )  # fmt: skip
    with ExitStack() as stack:
        server = OsmAndServer(devices=[DEVICE], faults=faults).start()
        stack.callback(server.stop)
        d = prepared(daemon(traccar_section(server.url)))
        ride = epochs(6000, rate_hz=LIVE_HZ)
        rng = random.Random(7)
        position = kills = 0

        def every_fault_seen() -> bool:
            return all(server.count(fault=k) for k in KINDS)

        for _ in range(MAX_ROUNDS):
            d.start()
            d.wait_gps_open()
            position = stream(gps, ride, position, rng.uniform(1.5, 3.0), pace_s=0.02)
            d.kill()  # mid-stream, mid-request, mid-commit: wherever it lands
            kills += 1
            if kills >= MIN_KILLS and every_fault_seen():
                break
        else:
            seen = {k: server.count(fault=k) for k in KINDS}
            pytest.fail(f"after {kills} rounds not every fault happened: {seen}")

        # The last run: more of the ride, the rider stops the activity, the faults end.
        d.start()
        d.wait_gps_open()
        position = stream(gps, ride, position, 2.0, pace_s=0.02)
        last = round(ride[position - 1].unix, 3)
        wait_for(lambda: last in stored_times(d.db), timeout=30, what="the last fix stored")
        reply = d.cli("activity", "stop")
        assert reply.returncode == 0 and "stopped" in reply.stdout, reply
        server.faults.clear()
        wait_for(lambda: backlog(d) == 0, timeout=60, what="the backlog sent")
        report = d.status()
        assert report["quarantined"][NAME] == 0
        assert report["backends"][NAME]["state"] == "ok"
        assert d.terminate() == 0

        fixes = stored_fixes(d.db)
        store = open_store(d.db, readonly=True)
        try:
            (activity,) = store.activities()  # every restart resumed the one activity
        finally:
            store.close()
        assert activity.end_reason == "requested"
        assert len(first_of_each_second(fixes)) > 60, "minutes of riding were stored"
        assert_holds(server, fixes)
        # The run was what it claims: every kind, and resends that the duplicate filter dropped.
        assert every_fault_seen() and kills >= MIN_KILLS
        assert server.filtered(DEVICE) > 0


def test_sigkill_between_server_receipt_and_store_ack_makes_no_duplicate(daemon, gps):
    with ExitStack() as stack:
        server = OsmAndServer(devices=[DEVICE]).start()
        stack.callback(server.stop)
        # A long read timeout: the sender waits for the held reply until it is killed.
        d = prepared(daemon(ALWAYS + traccar_section(server.url, read_timeout_s=60.0)))
        d.start()
        d.wait_gps_open()
        ride = epochs(int(12 * LIVE_HZ), rate_hz=LIVE_HZ)
        position = stream(gps, ride, 0, 0.5, pace_s=0.02)
        first = round(ride[position - 1].unix, 3)
        wait_for(lambda: first in stored_times(d.db), timeout=30, what="the first fixes stored")
        wait_for(lambda: backlog(d) == 0 and server.positions(DEVICE), timeout=30,
                 what="the first positions delivered")  # fmt: skip
        delivered = len(server.positions(DEVICE))
        # The server stores the next position and holds its reply: the sender is killed after
        # the server's receipt and before the store's acknowledgement.
        server.faults.set(slow=1.0, slow_s=60.0)
        position = stream(gps, ride, position, 0.4, pace_s=0.02)
        wait_for(lambda: server.count(fault="slow", processed=True) >= 1, timeout=30,
                 what="a position stored, its reply held")  # fmt: skip
        held = server.latest(DEVICE)
        assert held is not None and len(server.positions(DEVICE)) == delivered + 1
        store = open_store(d.db, readonly=True)
        try:
            marker = store.get_state(NAME)["pending"]
        finally:
            store.close()
        assert marker["last_time"] == held.time_ms // 1000  # in flight, not acknowledged
        d.kill()

        server.faults.clear()
        d.start()
        d.wait_gps_open()
        stream(gps, ride, position, 30.0, pace_s=0.02)
        last = round(ride[-1].unix, 3)
        wait_for(lambda: last in stored_times(d.db), timeout=30, what="the whole ride stored")
        wait_for(lambda: backlog(d) == 0, timeout=30, what="the backlog sent")
        assert d.terminate() == 0

        assert_holds(server, stored_fixes(d.db))
        assert server.filtered(DEVICE) == 1  # the resend of the held position, dropped
        assert "may have arrived without its reply" in d.log_text()


def parked_then_riding() -> list[simulate.Epoch]:
    return list(simulate.simulate_phases(
        simulate.demo_route(), "park:40,ride:40", rate_hz=1.0, speed_mps=6.0, start_time=T0,
        seed=3,
    ))  # fmt: skip


@pytest.mark.parametrize("send", ["all", "activities"])
def test_send_all_maps_a_parked_unit_and_activities_only_the_ride(daemon, gps, send):
    """In auto mode the parked minute is stored outside any activity: a fleet backend shows it
    by default, and `send = "activities"` keeps it to the ride."""
    with ExitStack() as stack:
        server = OsmAndServer(devices=[DEVICE]).start()
        stack.callback(server.stop)
        d = prepared(daemon(traccar_section(server.url, send=send))).start()
        d.wait_gps_open()
        ride = parked_then_riding()
        assert stream(gps, ride, 0, 30.0, pace_s=0.01) == len(ride)
        last = round(ride[-1].unix, 3)
        wait_for(lambda: last in stored_times(d.db), timeout=30, what="the whole ride stored")
        fixes = stored_fixes(d.db)
        riding = [f for f in fixes if f.activity_id is not None and not f.local]
        parked = [f for f in fixes if f.activity_id is None]
        assert riding and len(parked) >= 30, "an activity started, after a parked stretch"
        want = fixes if send == "all" else riding
        wait_for(lambda: backlog(d) == 0 and len(server.positions(DEVICE))
                 >= len(first_of_each_second(want)), timeout=30,
                 what="everything of its scope sent")  # fmt: skip
        assert d.terminate() == 0
        assert_holds(server, want)
