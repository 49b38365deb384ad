"""End to end, `catch_up = "live_first"`: the simulator through a real pty into real `tracker
run` processes; the server (the OsmAnd test server, a real Mosquitto) away while a backlog is
stored, then back; the daemon SIGKILLed during the catch-up and started again while the ride
goes on. What is asserted is what a user would see: the present first, then every stored second
on the server, repeats only as docs/traccar.md and docs/mqtt.md allow.
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack

import pytest
from mosquitto import Broker, Subscriber
from support import (
    Daemon,
    epochs,
    first_of_each_second,
    stored_fixes,
    stored_times,
    stream,
    wait_for,
)
from test_mqtt_e2e import PASSWORD, TOPIC, USER, mqtt_section
from test_traccar_e2e import ALWAYS, DEVICE, prepared, seconds, traccar_section

from tracker.senders import mqtt, traccar
from tracker.store import open_store
from tracker.testing.osmand import OsmAndServer

pytestmark = pytest.mark.slow

BACKLOG = 900  # 15 minutes at 1 Hz, replayed fast
MQTT_BACKLOG = 1800  # 100 in flight go fast: more, for the kill to land in the history


def store_backlog(d: Daemon, gps, ride, n: int = BACKLOG) -> int:
    """The backlog into the store while the server is away; its newest second."""
    assert stream(gps, ride[:n], 0, 120.0, pace_s=0.005) == n
    newest = round(ride[n - 1].unix, 3)
    wait_for(lambda: newest in stored_times(d.db), timeout=60, what="the backlog stored")
    return math.floor(newest)


def pending(d: Daemon, name: str) -> int | None:
    return d.status()["pending"].get(name)


def ride_on(d: Daemon, gps, ride, position: int, name: str) -> None:
    """The daemon started again after its SIGKILL while the ride goes on (20 fixes a second
    of GPS time, the rest of `ride`), until the backend `name` has sent everything."""
    d.start()
    d.wait_gps_open()
    position = stream(gps, ride, position, 60.0, pace_s=0.05)
    last = round(ride[position - 1].unix, 3)
    wait_for(lambda: last in stored_times(d.db), timeout=30, what="the ride stored")
    wait_for(lambda: pending(d, name) == 0, timeout=120, what="everything sent")


def test_traccar_live_first_across_a_sigkill_in_the_history(daemon, gps):
    with ExitStack() as stack:
        server = OsmAndServer(devices=[DEVICE]).start()
        stack.callback(server.stop)
        server.faults.offline = True
        d = prepared(daemon(ALWAYS + traccar_section(server.url, catch_up="live_first")))
        d.start()
        d.wait_gps_open()
        ride = epochs(BACKLOG + 200, rate_hz=1.0)
        newest = store_backlog(d, gps, ride)
        # Back, each reply 20 ms late: the history takes long enough for a kill to land in it.
        server.faults.set(offline=False, slow=1.0, slow_s=0.02)
        wait_for(lambda: len(server.positions(DEVICE)) >= 100, timeout=60,
                 what="the present and some history")  # fmt: skip
        d.kill()
        got = seconds(server)
        # The present first (the request left unanswered when the outage began may go just
        # before it, if within 2 s), then the history, oldest first.
        ahead = next(i for i, t in enumerate(got) if t < newest - 2)
        assert 1 <= ahead <= 2 and newest in got[:ahead], got[:5]
        assert got[ahead:] == sorted(got[ahead:]) and got[-1] < newest - 2, got[:5]

        server.faults.clear()
        ride_on(d, gps, ride, BACKLOG, traccar.NAME)
        repeats = d.status()["backends"][traccar.NAME]["repeats"]
        assert d.terminate() == 0

        want = [math.floor(f.time) for f in first_of_each_second(stored_fixes(d.db))]
        assert sorted(set(seconds(server))) == want, "every stored second"
        dups = server.duplicates(DEVICE)
        # One kill: at most one position stored twice (the outage's resets never reached the
        # store), and every repeat counted (the resets too: their fate was unknown).
        assert len(dups) <= 1 and len(dups) <= repeats
        assert all(p.time_ms // 1000 < newest for p in dups), "repeats only in the history"
        assert server.latest(DEVICE).time_ms // 1000 == want[-1], "the map ends on the present"


def test_mqtt_live_first_across_a_sigkill_in_the_history(daemon, gps, tmp_path):
    with ExitStack() as stack:
        broker = Broker(tmp_path / "broker", users={USER: PASSWORD}).start()
        stack.callback(broker.stop)
        # The subscriber's persistent session is there before the daemon can publish: what
        # comes before it is connected again is queued for it.
        sub = Subscriber(broker, username=USER, password=PASSWORD).start()
        stack.callback(sub.stop)
        broker.stop()
        d = prepared(daemon(ALWAYS + mqtt_section(broker, catch_up="live_first", retain=True,
                                                  events=False)))  # fmt: skip
        d.start()
        d.wait_gps_open()
        ride = epochs(MQTT_BACKLOG + 200, rate_hz=1.0)
        newest = store_backlog(d, gps, ride, MQTT_BACKLOG)  # the broker away
        broker.start()
        # Stopped dead as soon as the store says the present was acknowledged (it goes first):
        # the history is then in flight. Watching the subscriber instead raced: it comes back
        # a second after the broker, and a quick machine had sent the whole history by then.
        deadline = time.monotonic() + 60
        while not read_state(d)[1].get("runs"):
            assert time.monotonic() < deadline, "the present was never acknowledged"
            time.sleep(0.002)
        with broker.frozen():  # no acknowledgement, then the daemon is gone mid-history
            d.kill()
        left, state = read_state(d)
        assert left > 0, "killed before the history was through"
        wait_for(lambda: sub.locations(TOPIC), timeout=60, what="the first location")
        got = [m["tst"] for m in sub.locations(TOPIC)]
        assert got[0] == newest, "the present first"

        ride_on(d, gps, ride, MQTT_BACKLOG, mqtt.NAME)
        assert d.terminate() == 0

        want = [math.floor(f.time) for f in first_of_each_second(stored_fixes(d.db))]
        # Thousands of QoS 2 deliveries to the subscriber: slow on a loaded machine.
        wait_for(lambda: set(m["tst"] for m in sub.locations(TOPIC)) >= set(want), timeout=120,
                 what="every stored second")  # fmt: skip
        got = [m["tst"] for m in sub.locations(TOPIC)]
        assert sorted(set(got)) == want, sorted(set(want) - set(got))
        # At least once: repeats at most the window in flight at the kill (up to 100 then).
        assert len(got) - len(set(got)) <= mqtt.CATCH_UP_INFLIGHT
        assert got.index(newest) < got.index(newest - 1), "the present before the history"
        runs = mqtt.State.from_json(state).runs
        assert runs in ([], [[newest, newest]]), "as acknowledged at the kill"


def read_state(d: Daemon) -> tuple[int, dict]:
    """(the fixes not yet acknowledged for MQTT, its delivery state) in the store."""
    store = open_store(d.db, readonly=True)
    try:
        return store.pending().get(mqtt.NAME, 0), store.get_state(mqtt.NAME)
    finally:
        store.close()
