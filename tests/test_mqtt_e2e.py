"""End to end with the [mqtt] backend: the simulator through a real pty into real `tracker run`
processes, publishing to a real Mosquitto (tests/mosquitto.py) read by a real paho subscriber.

One activity, every fix once (docs/mqtt.md: duplicates only within the window of messages in
flight): across daemon SIGKILLs, a broker restart and a network drop (the broker stopped for a
while, then started again on the same port). A bad password: one ERROR line, the fixes kept.
TLS with the test CA as `ca_file`, and the load benchmark's short form.
Every wait polls for what it needs (`wait_for`); nothing is timed.
"""

from __future__ import annotations

import json
import math

import pytest
from mosquitto import Broker, Subscriber, pause
from support import (
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

from tracker.senders.mqtt import NAME
from tracker.store import open_store

pytestmark = pytest.mark.slow

USER = "rider"
PASSWORD = "mqtt-e2e-Pa55-d0-not-leak"
TOPIC = f"owntracks/{USER}/unit7"
WINDOW = 10  # max_inflight
ALWAYS = '[activity]\nstart = "always"\n\n'
LIVE_HZ = 5.0


def mqtt_section(broker: Broker, password: str = PASSWORD, **extra: object) -> str:
    opts = {**TUNED, "read_timeout_s": 2.0, "url": broker.url, "username": USER,
            "password": password, "topic": TOPIC, "max_inflight": WINDOW, **extra}  # fmt: skip
    return section(NAME, opts)


def prepared(d: Daemon) -> Daemon:
    """`d` with its database created (see test_backends_e2e.prepared: a fresh file opened by
    several threads at once may log a spurious SQLITE_BUSY)."""
    open_store(d.db).close()
    return d


def backlog(d: Daemon) -> int | None:
    return d.status()["pending"].get(NAME)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker", users={USER: PASSWORD}).start()
    yield b
    b.stop()


@pytest.fixture
def sub(broker):
    s = Subscriber(broker, username=USER, password=PASSWORD).start()
    yield s
    s.stop()


def test_one_activity_every_fix_across_sigkills_a_broker_restart_and_a_network_drop(
    daemon, gps, broker, sub
):
    d = prepared(daemon(ALWAYS + mqtt_section(broker)))
    ride = epochs(3000, rate_hz=LIVE_HZ)
    position = 0
    interruptions = 0
    for round_ in range(5):
        d.start()
        d.wait_gps_open()
        position = stream(gps, ride, position, 1.5, pace_s=0.02)
        if round_ == 2:  # the broker restarts mid-ride (SIGTERM: it keeps the sessions)
            broker.restart()
            interruptions += 1
        if round_ == 3:  # the network goes for a while, riding on
            broker.stop()
            position = stream(gps, ride, position, 1.5, pace_s=0.02)
            pause(1.0)
            broker.start()
            interruptions += 1
        position = stream(gps, ride, position, 1.0, pace_s=0.02)
        d.kill()  # mid-publish, mid-commit: wherever it lands
        interruptions += 1

    # The last run: more of the ride, then the rider stops the activity.
    d.start()
    d.wait_gps_open()
    position = stream(gps, ride, position, 1.5, pace_s=0.02)
    last = round(ride[position - 1].unix, 3)
    wait_for(lambda: last in stored_times(d.db), timeout=30, what="the last fix stored")
    reply = d.cli("activity", "stop")
    assert reply.returncode == 0 and "stopped" in reply.stdout, reply
    wait_for(lambda: backlog(d) == 0, timeout=40, what="the mqtt backlog sent")
    events = f"{TOPIC}/event"
    wait_for(lambda: any(m.payload.get("event") == "end" for m in sub.received(events)),
             timeout=20, what="the activity's end event")  # fmt: skip
    report = d.status()
    assert report["backends"][NAME]["state"] == "ok" and report["quarantined"][NAME] == 0
    assert d.terminate() == 0

    fixes = stored_fixes(d.db)
    want = first_of_each_second(fixes)
    assert len(want) > 30, "half a minute of riding at least"
    wait_for(lambda: {m["tst"] for m in sub.locations(TOPIC)} >= {math.floor(f.time)
             for f in want}, timeout=20, what="every second at the subscriber")  # fmt: skip
    got = sub.received(TOPIC, "location")
    by_t = {}
    for m in got:
        by_t.setdefault(m.payload["tst"], m.payload)
    assert sorted(by_t) == [math.floor(f.time) for f in want], "every second, nothing else"
    for f in want:
        p = by_t[math.floor(f.time)]
        assert (p["lat"], p["lon"]) == (round(f.lat, 7), round(f.lon, 7)), (p, f)
        assert p["alt"] == round(f.alt)
    fresh = [m.payload["tst"] for m in got if not m.dup]
    dups = len(fresh) - len(set(fresh))
    assert dups <= interruptions * WINDOW, f"{dups} duplicates after {interruptions} faults"

    # Only locations and the last will on the location topic; one start and one end of the
    # one activity on the event topic (an event may come twice after a SIGKILL, like a fix).
    assert {m.payload["_type"] for m in sub.received(TOPIC)} <= {"location", "lwt"}
    assert sub.received(TOPIC, "lwt"), "a SIGKILL leaves the last will"
    (activity,) = open_store(d.db, readonly=True).activities()
    kinds = {(m.payload["_type"], m.payload["event"], m.payload["id"])
             for m in sub.received(events)}  # fmt: skip
    assert kinds == {("activity", "start", activity.uuid), ("activity", "end", activity.uuid)}
    assert PASSWORD not in d.log_text()


def test_a_bad_password_is_one_error_line_and_every_fix_stays_queued(daemon, gps, broker, sub):
    bad = "not-the-r1ders-passw0rd"
    d = prepared(daemon(ALWAYS + mqtt_section(broker, bad))).start()
    d.wait_gps_open()
    ride = epochs(int(4 * LIVE_HZ), rate_hz=LIVE_HZ)
    stream(gps, ride, 0, 60.0, pace_s=1 / LIVE_HZ)
    last = round(ride[-1].unix, 3)
    wait_for(lambda: last in stored_times(d.db), timeout=30, what="the ride stored")
    wait_for(lambda: d.backend_status(NAME).get("state") == "disabled", timeout=30,
             what="the mqtt backend stopped for the password")  # fmt: skip
    report = d.status()
    b = report["backends"][NAME]
    assert b["auth_failed"] is True and "password" in b["last_error"]
    assert report["pending"][NAME] == len(stored_fixes(d.db)), "every fix kept"
    errors = [line for line in d.log_text().splitlines() if "ERROR" in line]
    assert len(errors) == 1 and NAME in errors[0] and "restart tracker" in errors[0], errors
    human = d.cli("status")
    assert f"sender:    {NAME}: disabled" in human.stdout
    assert d.terminate() == 0
    assert sub.received() == [], "nothing reached the broker"
    for text in (d.log_text(), json.dumps(report), human.stdout, human.stderr):
        assert bad not in text and PASSWORD not in text


def test_over_tls_with_the_ca_file_at_qos_2_every_second_arrives_once(daemon, gps, tmp_path):
    from mosquitto import make_certs

    certs = make_certs(tmp_path / "certs")
    tls = Broker(tmp_path / "tls", users={USER: PASSWORD}, certs=certs).start()
    sub = None
    try:
        sub = Subscriber(tls, username=USER, password=PASSWORD, ca_file=certs.ca).start()
        url = f"mqtts://127.0.0.1:{tls.port}"
        d = prepared(daemon(ALWAYS + mqtt_section(tls, url=url, ca_file=str(certs.ca),
                                                  qos=2)))  # fmt: skip
        d.start()
        d.wait_gps_open()
        ride = epochs(int(4 * LIVE_HZ), rate_hz=LIVE_HZ)
        stream(gps, ride, 0, 60.0, pace_s=1 / LIVE_HZ)
        last = round(ride[-1].unix, 3)
        wait_for(lambda: last in stored_times(d.db), timeout=30, what="the ride stored")
        wait_for(lambda: backlog(d) == 0, timeout=30, what="the backlog sent over TLS")
        assert d.terminate() == 0
        want = [math.floor(f.time) for f in first_of_each_second(stored_fixes(d.db))]
        wait_for(lambda: len(sub.locations(TOPIC)) >= len(want), what="every second")
        assert [m["tst"] for m in sub.locations(TOPIC)] == want  # QoS 2: each once, in order
        assert "certificate" not in d.log_text()
    finally:
        if sub is not None:
            sub.stop()
        tls.stop()


def test_the_load_benchmarks_short_form_loses_nothing():
    """scripts/bench_mqtt.py, six units in two processes for a few seconds: the script works
    and every unit's every second reached the subscriber (the figure is the long run's)."""
    import subprocess
    import sys

    from mosquitto import require_mosquitto
    from support import ROOT

    require_mosquitto()
    done = subprocess.run(
        [sys.executable, "scripts/bench_mqtt.py", "--units", "6", "--seconds", "6",
         "--warmup", "2", "--per-process", "3"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stored 36 fixes, subscriber received 36 locations" in done.stdout
    assert "lost 0, duplicates 0" in done.stdout
