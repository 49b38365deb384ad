"""End to end with both backends: the simulator through a real pty into real `tracker run`
processes, delivering over real HTTP to the Map My Tracks and json-gpsr test servers, both
running in this process on 127.0.0.1 (issue 5).

Each test reads the outcome where a user would: the servers' data and request logs, the store
(read-only), `tracker status --json` and the daemon's log. Nothing waits by sleeping: every wait
polls for what it needs (`wait_for`), with generous limits for a loaded machine.
"""

from __future__ import annotations

import json
import math
import random
import threading
from contextlib import ExitStack

import pytest
from support import (
    USER,
    Daemon,
    assert_points_match,
    epochs,
    first_of_each_second,
    free_port,
    gpsr_section,
    mmt_section,
    stored_fixes,
    stored_times,
    stream,
    wait_for,
)

from tracker.senders.gpsr import NAME as GPSR
from tracker.senders.mapmytracks import NAME as MMT
from tracker.store import StoredFix, open_store
from tracker.testing.faults import KINDS, Faults
from tracker.testing.gpsr import GpsrServer
from tracker.testing.mapmytracks import MapMyTracksServer

pytestmark = pytest.mark.slow

# Distinctive secrets: searched for in logs and status output.
PASSWORD = "Pa55-both-e2e-d0-not-leak"
TOKEN = "gpsr-t0ken-both-e2e-d0-not-leak"
MIN_KILLS = 4
MAX_ROUNDS = 14
LIVE_HZ = 5.0  # the receiver's rate; streamed in real time where timing is what is tested


def servers(stack: ExitStack, *, mmt_faults: Faults | None = None,
            gpsr_faults: Faults | None = None) -> tuple[MapMyTracksServer, GpsrServer]:  # fmt: skip
    """Both test servers, started, stopped by `stack`; the rider's post token is valid."""
    mmt = MapMyTracksServer(users={USER: PASSWORD}, faults=mmt_faults)
    gpsr = GpsrServer(users={USER: "web-login"}, faults=gpsr_faults, seed=5)
    gpsr.make_token(USER, "post", 0, 4_000_000_000, key=TOKEN)
    for server in (mmt, gpsr):
        server.start()
        stack.callback(server.stop)
    return mmt, gpsr


# For tests of sending, not of the ride's lifecycle: every fix belongs to the activity at once,
# so backlogs count from the first fix (in "auto" mode the first 10 s wait as a lead-in).
ALWAYS = '[activity]\nstart = "always"\n\n'


def prepared(d: Daemon) -> Daemon:
    """`d` with its database created, as after the unit's first start.

    The daemon's threads open a fresh database concurrently, and two connections switching a
    new file to WAL at once get SQLITE_BUSY immediately (SQLite calls no busy handler there;
    reproduced in-process with three threads and open_store, ~4% of tries): the loser logs
    an ERROR and waits STORE_RETRY_S. That is the store's to fix (tracker/store/db.py, _try_open);
    these tests look at sending, so they start from a database that exists.
    """
    open_store(d.db).close()
    return d


def backlogs(d: Daemon) -> dict[str, int]:
    return d.status()["pending"]


def assert_gpsr_holds(gpsr: GpsrServer, fixes: list[StoredFix]) -> None:
    """The json-gpsr server holds every stored second exactly once, each with the position and
    altitude of the first stored fix of its second (seconds mode, docs/gpsr.md)."""
    assert gpsr.duplicates(USER) == []
    got = sorted(gpsr.fixes(USER), key=lambda f: f.t)
    want = first_of_each_second(fixes)
    assert [f.t for f in got] == [math.floor(w.time) for w in want]
    for g, w in zip(got, want, strict=True):
        assert (g.lat, g.lon) == (round(w.lat, 7), round(w.lon, 7)), (g, w)
        assert g.al == pytest.approx(w.alt, abs=0.051), (g, w)


def one_activity(d: Daemon):
    store = open_store(d.db, readonly=True)
    try:
        (activity,) = store.activities()
    finally:
        store.close()
    return activity


def ride_in_background(gps, ride) -> threading.Thread:
    """The receiver sending `ride` in real time (LIVE_HZ) while the test looks at the daemon."""
    t = threading.Thread(target=stream, args=(gps, ride, 0, 3600.0, 1 / LIVE_HZ), daemon=True)
    t.start()
    return t


# --- both backends, every fault, SIGKILLs ---------------------------------------------------


def test_both_backends_every_fault_and_repeated_sigkill_each_server_has_every_second_once(
    daemon, gps
):
    def faults(seed: int) -> Faults:
        return Faults(
            reset=0.05, fail_500=0.05, retry_after=0.04, html=0.05, drop_reply=0.06,
            truncate=0.06, slow=0.06, slow_s=0.3, retry_after_s=1, seed=seed,
        )  # fmt: skip

    with ExitStack() as stack:
        mmt, gpsr = servers(stack, mmt_faults=faults(20260601), gpsr_faults=faults(20260602))
        # offline_upload off: the ride goes live to Map My Tracks (start/update/stop).
        d = prepared(daemon(mmt_section(mmt.url, PASSWORD, offline_upload="off")
                            + gpsr_section(gpsr.url, TOKEN)))  # fmt: skip
        ride = epochs(6000, rate_hz=LIVE_HZ)
        rng = random.Random(5)
        position = kills = 0

        def every_fault_seen() -> bool:
            return all(s.count(fault=k) for s in (mmt, gpsr) for k in KINDS) and bool(
                gpsr.count("/input", fault="drop_reply")  # a lost /input reply: checked by /f
            )

        for _ in range(MAX_ROUNDS):
            d.start()
            d.wait_gps_open()
            position = stream(gps, ride, position, rng.uniform(1.5, 3.0), pace_s=0.02)
            d.kill()  # mid-stream, mid-request, mid-commit: wherever it lands
            kills += 1
            if kills >= MIN_KILLS and every_fault_seen():
                break
        else:
            seen = {s.__class__.__name__: {k: s.count(fault=k) for k in KINDS}
                    for s in (mmt, gpsr)}  # fmt: skip
            pytest.fail(f"after {kills} rounds not every fault happened: {seen}")

        # The last run: more of the ride, the rider stops the activity, the faults end.
        d.start()
        d.wait_gps_open()
        position = stream(gps, ride, position, 2.0, pace_s=0.02)
        last = round(ride[position - 1].unix, 3)
        wait_for(lambda: last in stored_times(d.db), timeout=30, what="the last fix stored")
        reply = d.cli("activity", "stop")
        assert reply.returncode == 0 and "stopped" in reply.stdout, reply
        mmt.faults.clear()
        gpsr.faults.clear()

        def delivered() -> bool:
            acts = list(mmt.activities.values())
            return bool(acts) and not any(a.live for a in acts) and backlogs(d) == {
                MMT: 0, GPSR: 0,
            }  # fmt: skip

        wait_for(delivered, timeout=60, what="both backlogs 0 and the activity stopped")
        report = d.status()
        assert report["quarantined"] == {MMT: 0, GPSR: 0}
        assert {report["backends"][n]["state"] for n in (MMT, GPSR)} == {"ok"}
        assert d.terminate() == 0

        fixes = stored_fixes(d.db)
        activity = one_activity(d)  # every restart resumed the one activity
        assert activity.end_reason == "requested"
        assert len(first_of_each_second(fixes)) > 60, "minutes of riding were stored"

        (remote,) = mmt.activities.values()
        assert remote.created_via == "start" and remote.stopped_by == "stop_activity"
        assert mmt.duplicate_points(remote.id) == [] and mmt.superseded == []
        assert_points_match(remote.points, first_of_each_second(fixes))
        assert_gpsr_holds(gpsr, fixes)

        # The run was what it claims: every kind on both servers, lost replies checked.
        assert every_fault_seen() and kills >= MIN_KILLS
        assert gpsr.count("/f", processed=True) > 0
        assert mmt.count("get_activity", processed=True) > 0
        for secret in (PASSWORD, TOKEN):
            assert secret not in d.log_text()


# --- one backend down for the whole ride ----------------------------------------------------


def test_gpsr_down_for_the_whole_ride_never_delays_mapmytracks_and_catches_up_after(
    daemon, gps
):
    interval_s = 1.0
    bound = 3 * interval_s * LIVE_HZ  # fixes: three posting intervals' worth
    port = free_port()  # nothing listens there until the gpsr server starts below
    with ExitStack() as stack:
        mmt = MapMyTracksServer(users={USER: PASSWORD}).start()
        stack.callback(mmt.stop)
        d = prepared(daemon(
            ALWAYS
            + mmt_section(mmt.url, PASSWORD, offline_upload="off", interval_s=interval_s)
            + gpsr_section(f"http://127.0.0.1:{port}/", TOKEN, interval_s=interval_s)
        )).start()  # fmt: skip
        d.wait_gps_open()
        ride = epochs(int(15 * LIVE_HZ), rate_hz=LIVE_HZ)  # 15 s, ridden in real time
        rider = ride_in_background(gps, ride)
        samples = []
        while rider.is_alive():  # `tracker status` as often as it answers, all ride long
            report = d.status()
            pending = report["pending"]
            samples.append((report["fixes"], pending.get(MMT), pending.get(GPSR),
                            report["backends"].get(GPSR, {}).get("state")))  # fmt: skip
        rider.join()
        last = round(ride[-1].unix, 3)
        wait_for(lambda: last in stored_times(d.db), timeout=30, what="the whole ride stored")

        assert len(samples) >= 5, samples
        riding = [s for s in samples if s[0]]
        assert riding and riding[-1][0] > 3 * bound, "long enough for a delay to show"
        # Map My Tracks kept up at every look; json-gpsr had every stored fix in its backlog.
        assert all(m is not None and m < bound for _, m, _, _ in riding), samples
        # (`tracker status` counts the fixes, then the backlogs: a commit may fall between.)
        assert all(g >= n for n, _, g, _ in riding), samples
        states = {state for *_, state in riding}
        assert "retrying" in states and states <= {"starting", "retrying"}, samples
        n = len(stored_fixes(d.db))
        seconds = len({math.floor(t) for t in stored_times(d.db)})
        wait_for(lambda: [len(a.points) for a in mmt.activities.values()] == [seconds],
                 timeout=3 * interval_s + 5,
                 what="every stored second on Map My Tracks")  # fmt: skip
        # The server holds the last point a moment before the daemon commits its reply, and
        # the fixes after it in the same second are thinned on the next posting interval.
        wait_for(lambda: backlogs(d) == {MMT: 0, GPSR: n}, timeout=3 * interval_s + 5,
                 what="Map My Tracks' backlog empty, json-gpsr's whole")  # fmt: skip

        gpsr = GpsrServer(port=port, users={USER: "web-login"})
        gpsr.make_token(USER, "post", 0, 4_000_000_000, key=TOKEN)  # before it answers /tt
        gpsr.start()
        stack.callback(gpsr.stop)
        wait_for(lambda: backlogs(d)[GPSR] == 0, timeout=30, what="json-gpsr caught up")
        fixes = stored_fixes(d.db)
        assert_gpsr_holds(gpsr, fixes)
        (remote,) = mmt.activities.values()
        assert remote.live and mmt.duplicate_points(remote.id) == []
        assert_points_match(remote.points, first_of_each_second(fixes))
        assert d.status()["backends"][GPSR]["state"] == "ok"
        assert d.terminate() == 0


# --- partial acknowledgement ----------------------------------------------------------------


def test_partial_acknowledgement_through_a_daemon_resends_the_rest_without_duplicates(
    daemon, gps
):
    with ExitStack() as stack:
        _, gpsr = servers(stack)
        gpsr.partial_ack = 0.5  # each /input stores and acknowledges half of its times
        # 40 fixes (8 seconds) a post, so every post has times to leave out.
        d = prepared(daemon(gpsr_section(gpsr.url, TOKEN, batch_max_points=40))).start()
        d.wait_gps_open()
        ride = epochs(400, rate_hz=LIVE_HZ)
        assert stream(gps, ride, 0, 60.0) == len(ride)
        last = round(ride[-1].unix, 3)
        wait_for(lambda: last in stored_times(d.db), timeout=30, what="the whole ride stored")
        wait_for(lambda: backlogs(d)[GPSR] == 0, timeout=45, what="the backlog sent")
        assert d.terminate() == 0

        fixes = stored_fixes(d.db)
        assert_gpsr_holds(gpsr, fixes)
        seconds = len(first_of_each_second(fixes))
        posts = [r for r in gpsr.requests if r.name == "/input"]
        sent = sum(len(json.loads(r.params["fixes"])) for r in posts)
        # Half of every post went unacknowledged and was sent again: about twice the times.
        assert sent >= 1.5 * seconds and len(posts) > math.ceil(len(fixes) / 40), (sent, seconds)
        assert gpsr.count("/f") == 0, "a partial reply is an answer: resent, not checked"
        assert "fixes acknowledged; the rest are sent again" in d.log_text()


# --- invalid token --------------------------------------------------------------------------


def test_invalid_token_is_one_clear_error_no_retry_storm_and_mapmytracks_unaffected(daemon, gps):
    bad = "not-the-r1ders-t0ken"
    with ExitStack() as stack:
        mmt, gpsr = servers(stack)  # `bad` is not a token of this gpsr server
        d = prepared(daemon(ALWAYS + mmt_section(mmt.url, PASSWORD, offline_upload="off")
                            + gpsr_section(gpsr.url, bad))).start()  # fmt: skip
        d.wait_gps_open()
        ride = epochs(int(8 * LIVE_HZ), rate_hz=LIVE_HZ)
        rider = ride_in_background(gps, ride)  # 8 s of riding in real time
        wait_for(lambda: d.backend_status(GPSR).get("state") == "disabled", timeout=30,
                 what="json-gpsr stopped for the token")  # fmt: skip
        checked = gpsr.count()
        rider.join()  # several seconds more with fixes queued for json-gpsr
        last = round(ride[-1].unix, 3)
        wait_for(lambda: last in stored_times(d.db), timeout=30, what="the ride stored")
        reply = d.cli("activity", "stop")
        assert reply.returncode == 0 and "stopped" in reply.stdout, reply
        wait_for(lambda: mmt.activities and not any(a.live for a in mmt.activities.values())
                 and backlogs(d)[MMT] == 0, timeout=30,
                 what="the ride on Map My Tracks, stopped")  # fmt: skip

        # json-gpsr saw the token check and nothing else, all ride long.
        assert [r.name for r in gpsr.requests] == ["/tt"] and checked == 1
        assert gpsr.fixes(USER) == []
        report = d.status()
        g = report["backends"][GPSR]
        n = len(stored_fixes(d.db))
        assert g["state"] == "disabled" and g["auth_failed"] is True
        assert '"post" token' in g["last_error"] and "[gpsr] token" in g["last_error"]
        assert report["pending"] == {MMT: 0, GPSR: n}, "every fix kept for a fixed token"
        assert report["backends"][MMT]["state"] == "ok"

        (remote,) = mmt.activities.values()
        assert_points_match(remote.points, first_of_each_second(stored_fixes(d.db)))

        errors = [line for line in d.log_text().splitlines() if "ERROR" in line]
        assert len(errors) == 1, errors
        assert "gpsr" in errors[0] and "token" in errors[0] and "restart tracker" in errors[0]
        human = d.cli("status")
        assert f"sender:    {GPSR}: disabled" in human.stdout
        assert d.terminate() == 0
        for text in (d.log_text(), json.dumps(report), human.stdout, human.stderr):
            assert bad not in text and PASSWORD not in text
