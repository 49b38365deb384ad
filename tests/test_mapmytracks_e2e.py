"""End to end for Map My Tracks: the simulator through a real pty into real `tracker run`
processes, delivering over real HTTP to the project's test server running in this process.

Each test reads the outcome where a user would: the server's activities and request log, the
store (read-only), `tracker status --json` and the daemon's log. Nothing waits by sleeping:
every wait polls for what it needs (`wait_for`), with generous limits for a loaded machine.
"""

from __future__ import annotations

import json
import random
import threading

import pytest
from support import (
    USER,
    Daemon,
    assert_points_match,
    epochs,
    first_of_each_second,
    free_port,
    mmt_section,
    stored_fixes,
    stored_times,
    stream,
    wait_for,
)

from tracker.fix import Fix
from tracker.senders.mapmytracks import NAME, MapMyTracksSender, Settings
from tracker.store import open_store
from tracker.testing.faults import KINDS, Faults, RecordedRequest
from tracker.testing.mapmytracks import MapMyTracksServer

pytestmark = pytest.mark.slow

PASSWORD = "Pa55-e2e-d0-not-leak"  # distinctive: searched for in logs and status output
SLOW_SHORT_S = 0.3  # a slow reply the sender waits for
SLOW_LONG_S = 2.5  # a slow reply the sender gives up on (read timeout), then checks
MIN_KILLS = 4
MAX_ROUNDS = 12


def pending(d: Daemon) -> int | None:
    return d.status()["pending"].get(NAME)


def backend_status(d: Daemon) -> dict:
    return d.backend_status(NAME)


def slow_outcomes(requests: list[RecordedRequest], slow_s: float) -> dict[str, int]:
    """How the slow-faulted requests of one daemon process ended, from what came next.

    The sender has one request in flight. A next request that arrived before the held reply
    was due means the sender gave up waiting (read timeout; the reply counts as lost). A slow
    update followed by anything but a get_activity means the sender waited and took the late
    reply as the answer (a lost update reply is always checked with get_activity first).
    """
    out = {"waited": 0, "gave_up": 0}
    for r, nxt in zip(requests, requests[1:], strict=False):
        if r.fault != "slow":
            continue
        if nxt.time < r.time + slow_s:
            out["gave_up"] += 1
        elif r.name == "update_activity" and nxt.name != "get_activity":
            out["waited"] += 1
    return out


# --- every fault, SIGKILLs, one activity -----------------------------------------------------


def test_every_fault_and_repeated_sigkill_end_in_one_stopped_activity_with_every_fix_once(
    daemon, gps
):
    faults = Faults(
        reset=0.04, fail_500=0.05, retry_after=0.03, html=0.04, drop_reply=0.05, truncate=0.05,
        slow=0.08, slow_s=SLOW_SHORT_S, retry_after_s=1, seed=20260601,
    )  # fmt: skip
    server = MapMyTracksServer(users={USER: PASSWORD}, faults=faults).start()
    try:
        # offline_upload off: the ride must go live (start/update/stop) whatever the timing.
        d = daemon(mmt_section(server.url, PASSWORD, offline_upload="off"))
        ride = epochs(6000, rate_hz=5.0)
        assert all(e.valid for e in ride)
        rng = random.Random(4)
        position = kills = 0
        outcomes = {"waited": 0, "gave_up": 0}
        for n in range(MAX_ROUNDS):
            slow_s = SLOW_SHORT_S if n % 2 == 0 else SLOW_LONG_S
            server.faults.set(slow_s=slow_s)
            first = len(server.requests)
            d.start()
            d.wait_gps_open()
            position = stream(gps, ride, position, rng.uniform(1.5, 3.0))
            d.kill()  # mid-stream, mid-request, mid-commit: wherever it lands
            kills += 1
            for k, v in slow_outcomes(server.requests[first:], slow_s).items():
                outcomes[k] += v
            every_kind = all(server.count(fault=k) for k in KINDS)
            if kills >= MIN_KILLS and every_kind and all(outcomes.values()):
                break
        else:
            kinds = {k: server.count(fault=k) for k in KINDS}
            pytest.fail(f"after {kills} rounds not every fault happened: {kinds} {outcomes}")

        # The last run: more of the ride, then the rider stops the activity.
        d.start()
        d.wait_gps_open()
        position = stream(gps, ride, position, 2.0)
        last = round(ride[position - 1].unix, 3)
        wait_for(lambda: last in stored_times(d.db), timeout=30, what="the last fix stored")
        reply = d.cli("activity", "stop")
        assert reply.returncode == 0, reply.stderr
        assert "stopped" in reply.stdout
        server.faults.clear()

        def delivered() -> bool:
            acts = list(server.activities.values())
            return bool(acts) and not any(a.live for a in acts) and pending(d) == 0

        wait_for(delivered, timeout=45, what="the activity stopped on the server, pending 0")
        report = d.status()
        assert report["pending"] == {NAME: 0} and report["quarantined"] == {NAME: 0}
        assert d.terminate() == 0

        fixes = stored_fixes(d.db)
        store = open_store(d.db, readonly=True)
        try:
            (activity,) = store.activities()  # every restart resumed the one activity
        finally:
            store.close()
        assert activity.end_reason == "requested"
        assert {f.activity_id for f in fixes} == {activity.id}
        assert len(fixes) > 1000, "a ride of several minutes was stored"

        (remote,) = server.activities.values()
        assert remote.created_via == "start" and remote.stopped_by == "stop_activity"
        assert remote.token == activity.uuid
        assert server.superseded == []
        assert server.duplicate_points(remote.id) == []
        assert_points_match(remote.points, first_of_each_second(fixes))

        # The run was what it claims: every fault kind, lost replies checked, both slow paths.
        assert {k: server.count(fault=k) > 0 for k in KINDS} == dict.fromkeys(KINDS, True)
        assert server.count("get_activity") > 0
        assert server.count("start_activity", processed=True) >= 1
        assert outcomes["waited"] > 0 and outcomes["gave_up"] > 0, outcomes
        assert kills >= MIN_KILLS
        assert PASSWORD not in d.log_text()
    finally:
        server.stop()


# --- offline for a whole ride, then back -----------------------------------------------------


def test_a_ride_wholly_offline_is_uploaded_once_as_gpx_with_every_point(daemon, gps):
    port = free_port()  # nothing listens there until the server starts below
    d = daemon(mmt_section(f"http://127.0.0.1:{port}/api/", PASSWORD)).start()
    d.wait_gps_open()
    ride = epochs(150, rate_hz=5.0)
    stream(gps, ride, 0, 60.0)
    last = round(ride[-1].unix, 3)
    wait_for(lambda: last in stored_times(d.db), timeout=30, what="the whole ride stored")
    # The sender tried (and failed) while the activity was live, more than once.
    wait_for(lambda: backend_status(d).get("failures", 0) >= 2, timeout=30,
             what="the sender retrying against the closed port")  # fmt: skip
    assert backend_status(d)["state"] == "retrying"
    reply = d.cli("activity", "stop")
    assert reply.returncode == 0 and "stopped" in reply.stdout, reply

    server = MapMyTracksServer(port=port, users={USER: PASSWORD}).start()
    try:
        wait_for(lambda: server.activities and pending(d) == 0, timeout=30,
                 what="the ride on the server and pending 0")  # fmt: skip
        fixes = stored_fixes(d.db)
        assert len(fixes) == 150
        (remote,) = server.activities.values()
        assert remote.created_via == "upload" and not remote.live
        assert server.count("upload_activity") == 1
        assert server.count("start_activity") == server.count("update_activity") == 0
        assert server.count("stop_activity") == 0
        # The GPX carries every stored fix (no thinning: GPX has sub-second times).
        assert_points_match(remote.points, fixes)
        assert d.terminate() == 0
    finally:
        server.stop()


def test_sender_uploads_a_ride_whose_live_start_never_reached_the_server(tmp_path):
    """In-process and quick: the sender was online (get_time answered), then the ride started
    out of reach. Its start attempts were refused at connect, so the server surely never saw
    one: when the ride ends it still goes as one upload_activity, as for a ride that never got
    online. (Before the fix `start_sent` stuck at True after the first refused attempt and the
    ride went out as start/update/stop.)"""
    db = tmp_path / "tracker.db"
    store = open_store(db)
    server = MapMyTracksServer(users={USER: PASSWORD}).start()
    try:
        opts = Settings(url=server.url, username=USER, interval_s=0.0, connect_timeout_s=1.0,
                       read_timeout_s=1.0)  # fmt: skip
        sender = MapMyTracksSender(opts, threading.Event(), lambda: open_store(db, check=False),
                                   secret=lambda: PASSWORD, rand=lambda: 0.0)  # fmt: skip
        sender.step()  # online and idle: get_time only
        assert [r.name for r in server.requests] == ["get_time"]
        server.stop()  # out of reach: connections refused from here on
        t0 = 1_780_000_000.0
        a = store.start_activity("Offline ride", "cycling", "private", (), t0)
        store.add_fixes(a.id, [Fix(t0 + i, 51.0 + i * 1e-5, 1.0, 5.0) for i in range(30)])
        for _ in range(3):
            sender.step()
        assert sender.status.state == "retrying" and sender.retry.failures == 3
        store.end_activity(a.id, t0 + 30, "test")
        server.start()  # back, same port and state
        for _ in range(20):
            sender.step()
            if store.pending()[NAME] == 0 and not store.get_state(NAME)["activities"]:
                break
        (remote,) = server.activities.values()
        assert remote.created_via == "upload" and len(remote.points) == 30
        assert server.count("start_activity") == 0 and server.count("upload_activity") == 1
        assert store.pending()[NAME] == 0
        sender.close()
        sender.store.close()
    finally:
        server.stop()
        store.close()


# --- bad credentials ---------------------------------------------------------------------------


def test_bad_password_is_one_error_no_retry_storm_data_kept_and_never_shown(daemon, gps):
    server = MapMyTracksServer(users={USER: "the-right-one"}).start()
    try:
        d = daemon(mmt_section(server.url, PASSWORD)).start()  # PASSWORD is wrong for this server
        d.wait_gps_open()
        ride = epochs(600, rate_hz=5.0)
        position = stream(gps, ride, 0, 1.0)
        wait_for(lambda: backend_status(d).get("state") == "disabled", timeout=30,
                 what="the backend stopped for auth")  # fmt: skip
        refused = server.count()
        # Several seconds more of riding (the rest of the ride, ~5 s): a disabled backend
        # has work queued and must still not try again.
        position = stream(gps, ride, position, 60.0)
        assert position == len(ride)
        last = round(ride[-1].unix, 3)
        wait_for(lambda: last in stored_times(d.db), timeout=30, what="the ride stored")
        assert server.count() == refused == 1, [r.name for r in server.requests]
        assert all(r.status == 401 and not r.processed for r in server.requests)

        report = d.status()
        s = report["backends"][NAME]  # what `tracker status` shows of the sender
        assert s["state"] == "disabled" and s["auth_failed"] is True
        assert "check username and password" in s["last_error"]
        n = len(stored_fixes(d.db))
        assert report["fixes"] == n == len(ride)
        assert report["pending"] == {NAME: n}, "every fix kept for when the password is fixed"
        assert s["backlog"] == n

        errors = [line for line in d.log_text().splitlines() if "ERROR" in line]
        assert len(errors) == 1 and "401" in errors[0] and "password" in errors[0], errors
        human = d.cli("status")
        assert f"sender:    {NAME}: disabled" in human.stdout
        assert "check username and password" in human.stdout
        assert d.terminate() == 0
        for text in (d.log_text(), json.dumps(report), human.stdout, human.stderr):
            assert PASSWORD not in text
    finally:
        server.stop()
