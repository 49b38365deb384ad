"""The json-gpsr sender against the test server (tracker.testing.gpsr), over real HTTP on
127.0.0.1.

Most tests drive the sender step by step in the test's thread (`drive`), with jitter 0 so
backoff never sleeps; faults are the server's own (drop_reply = the reply lost after the fixes
were stored, reset = refused before, truncate, slow), and `partial_ack` makes the server store
and acknowledge only some of the times it is sent. The two-backend tests run real sender
threads side by side.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import drive

from tracker.fix import Fix
from tracker.senders.base import IDLE_S
from tracker.senders.gpsr import NAME, GpsrSender, Settings
from tracker.store import Store, open_store
from tracker.testing.faults import Faults
from tracker.testing.gpsr import GpsrServer

T0 = 1_780_000_000.0


@pytest.fixture
def server():
    srv = GpsrServer(faults=Faults(seed=1), seed=1).start()
    yield srv
    srv.stop()


@pytest.fixture
def token(server: GpsrServer) -> str:
    return server.make_token("rider", "post", 0, 4_000_000_000).key


def ride(store: Store, n: int, *, t0: float = T0, rate_hz: float = 1.0, end: bool = False,
         title: str = "Morning ride", **fix) -> int:  # fmt: skip
    a = store.start_activity(title, "cycling", "public", (), t0)
    add(store, a.id, n, t0=t0, rate_hz=rate_hz, **fix)
    if end:
        store.end_activity(a.id, t0 + n / rate_hz, "test")
    return a.id


def add(store: Store, aid: int, n: int, *, t0: float, rate_hz: float = 1.0, **fix) -> None:
    kw = {"alt": 10.0, "speed": 5.0, "course": 90.0, "hdop": 1.0, "vdop": 1.5, **fix}
    store.add_fixes(aid, [
        Fix(t0 + i / rate_hz, 51.0 + i * 1e-4, 1.0 + i * 1e-4, **kw) for i in range(n)
    ])  # fmt: skip


def make_sender(server: GpsrServer, db: Path, token: str, stop: threading.Event | None = None,
                **opts) -> GpsrSender:  # fmt: skip
    kw = {"interval_s": 0.0, "read_timeout_s": 2.0, "connect_timeout_s": 2.0, **opts}
    return GpsrSender(
        Settings(url=server.url, **kw), stop or threading.Event(),
        lambda: open_store(db, check=False), secret=lambda: token, rand=lambda: 0.0,
    )  # fmt: skip


def pending(store: Store) -> int:
    return store.pending().get(NAME, 0)


def times(server: GpsrServer) -> list[int]:
    return [f.t for f in server.fixes("rider")]


def test_every_fix_arrives_once_with_its_fields(server, store, db, token):
    aid = ride(store, 250)
    fid = next(f.id for f in store.iter_fixes(aid) if f.time == T0 + 7)
    store.mark_poi(fid, "cafe")
    sender = make_sender(server, db, token)
    drive(sender, lambda: pending(store) == 0)
    assert times(server) == [int(T0) + i for i in range(250)]
    assert server.duplicates("rider") == []
    first = server.fixes("rider")[0]
    assert (first.lat, first.lon, first.al) == (51.0, 1.0, 10.0)
    assert (first.ha, first.va, first.vv) == (5.0, 7.5, (5.0, 90.0))  # DOP x 5 m
    assert {f.tag for f in server.fixes("rider")} == {"Morning ride"}
    assert [f.t for f in server.fixes("rider") if f.poi == "cafe"] == [int(T0) + 7]
    assert server.count("/tt") == 1
    assert server.count("/input") == 2  # 100 fixes, then the limit doubles for the backlog
    status, _ = store.get_runtime(f"backend:{NAME}")
    assert status["state"] == "ok" and token not in repr(status)


def test_gst_accuracy_and_configured_tag(server, store, db, token):
    ride(store, 3, err_lat=3.0, err_lon=4.0, err_alt=2.0)
    sender = make_sender(server, db, token, tag="grocery trip")
    drive(sender, lambda: pending(store) == 0)
    f = server.fixes("rider")[0]
    assert (f.ha, f.va, f.tag) == (5.0, 2.0, "grocery trip")


def test_seconds_mode_thins_to_one_fix_per_second_and_millis_sends_all(server, store, db,
                                                                       token):  # fmt: skip
    ride(store, 95, rate_hz=10.0)
    drive(make_sender(server, db, token, batch_max_points=7), lambda: pending(store) == 0)
    assert times(server) == [int(T0) + i for i in range(10)]
    assert server.fixes("rider")[1].lat == pytest.approx(51.0 + 10e-4)  # first of second 1
    db2 = db.with_name("millis.db")
    s2 = open_store(db2)
    ride(s2, 25, rate_hz=10.0)
    before = len(times(server))
    drive(make_sender(server, db2, token, millis=True), lambda: s2.pending().get(NAME) == 0)
    assert times(server)[before:] == [int(T0) * 1000 + 100 * i for i in range(25)]
    s2.close()


def test_stragglers_of_a_sent_second_are_not_sent_again(server, store, db, token):
    """A 10 Hz receiver and commits not aligned to seconds: the rest of a second already sent
    arrives in the next commit and is acknowledged with it."""
    aid = ride(store, 5, rate_hz=10.0)  # T0 .. T0+0.4
    sender = make_sender(server, db, token)
    drive(sender, lambda: pending(store) == 0)
    add(store, aid, 10, t0=T0 + 0.5, rate_hz=10.0)  # T0+0.5 .. T0+1.4
    drive(sender, lambda: pending(store) == 0)
    assert times(server) == [int(T0), int(T0) + 1]


def test_partial_acknowledgement_resends_only_the_rest(server, store, db, token):
    server.partial_ack = 0.5
    ride(store, 300)
    sender = make_sender(server, db, token)
    drive(sender, lambda: pending(store) == 0, steps=2000)
    assert sorted(times(server)) == [int(T0) + i for i in range(300)]
    assert server.duplicates("rider") == []
    assert server.count("/input") > 3  # the unacknowledged halves were sent again


@pytest.mark.parametrize("fault", ["drop_reply", "truncate", "slow"])
def test_lost_replies_are_checked_with_f_and_make_no_duplicate(server, store, db, token,
                                                               fault):  # fmt: skip
    server.faults.set(**{fault: 0.5}, slow_s=3.0, only=["/input"])
    ride(store, 400)
    sender = make_sender(server, db, token, read_timeout_s=0.5, batch_max_points=50)
    drive(sender, lambda: pending(store) == 0, steps=2000)
    assert sorted(times(server)) == [int(T0) + i for i in range(400)]
    assert server.duplicates("rider") == []
    assert server.count("/input", fault=fault) > 0
    assert server.count("/f") > 0


def test_lost_reply_with_partial_ack_resends_exactly_the_missing(server, store, db, token):
    server.partial_ack = 0.5
    server.faults.set(drop_reply=1.0, only=["/input"])
    ride(store, 40)
    sender = make_sender(server, db, token)
    drive(sender, lambda: server.count("/input") == 1)
    server.faults.clear()
    server.partial_ack = None
    drive(sender, lambda: pending(store) == 0)
    assert sorted(times(server)) == [int(T0) + i for i in range(40)]
    assert server.duplicates("rider") == []


def test_server_not_listening_is_retried_without_a_check(server, store, db, token):
    sender = make_sender(server, db, token)
    drive(sender, lambda: server.count("/tt") == 1)  # the token check, with nothing to send
    ride(store, 20)
    server.stop()  # nothing listens: the requests surely never arrived
    sender.transport.close()  # and the kept-alive connection to the old server is gone
    for _ in range(3):
        sender.step()
    assert sender.status.state == "retrying" and store.get_state(NAME)["pending"] is None
    again = GpsrServer(port=server.port, state=server.state).start()  # same port, same data
    try:
        drive(sender, lambda: pending(store) == 0)
        assert times(again) == [int(T0) + i for i in range(20)]
        assert again.count("/f") == 0 and again.count("/input") == 1
    finally:
        again.stop()


def test_reset_after_sending_is_ambiguous_and_checked(server, store, db, token):
    server.faults.set(reset=1.0, only=["/input"])  # refused unprocessed, but after sending
    ride(store, 20)
    sender = make_sender(server, db, token)
    drive(sender, lambda: server.count("/input") >= 2)
    server.faults.clear()
    drive(sender, lambda: pending(store) == 0)
    assert times(server) == [int(T0) + i for i in range(20)]
    assert server.count("/f") >= 1 and server.duplicates("rider") == []


def test_sigkill_mid_post_checks_before_resending(server, store, db, token):
    """A sender that dies with a post in flight (stored, reply never read) is replaced by a
    fresh one: the committed pending marker makes it ask /f first."""
    ride(store, 150)
    first = make_sender(server, db, token)
    server.faults.set(drop_reply=1.0, only=["/input"])
    drive(first, lambda: server.count("/input") == 1)
    first.close()
    first.store.close()  # the process is gone; its state is what was committed
    assert store.get_state(NAME)["pending"] is not None
    server.faults.clear()
    second = make_sender(server, db, token)
    drive(second, lambda: pending(store) == 0)
    assert times(server) == [int(T0) + i for i in range(150)]
    assert server.duplicates("rider") == []
    assert server.count("/f") >= 1
    assert server.count("/input") == 2  # the first 100 were not sent again


def test_stationary_compression_sends_time_lists_and_acks_every_time(server, store, db, token):
    a = store.start_activity("Cafe stop", "cycling", "public", (), T0)
    still = [Fix(T0 + i, 51.0 + (i % 2) * 1e-6, 1.0, speed=0.0, hdop=1.0) for i in range(30)]
    moving = [Fix(T0 + 30 + i, 51.001 + i * 1e-4, 1.0, speed=6.0, hdop=1.0) for i in range(5)]
    store.add_fixes(a.id, still + moving)
    sender = make_sender(server, db, token, compress_stationary=True)
    drive(sender, lambda: pending(store) == 0)
    assert times(server) == [int(T0) + i for i in range(35)]
    req = next(r for r in server.requests if r.name == "/input")
    assert req.params["fixes"].count('"t":[') == 1  # the 30 still fixes went as one object


def test_invalid_token_is_one_clear_error_and_no_retry_storm(server, store, db, caplog):
    ride(store, 20)
    sender = make_sender(server, db, "not-a-token")
    for _ in range(5):
        assert sender.step() == IDLE_S or sender.disabled
    assert server.count("/tt") == 1 and server.count("/input") == 0
    assert "invalid or expired" in sender.disabled
    status, _ = store.get_runtime(f"backend:{NAME}")
    assert status["state"] == "disabled" and status["auth_failed"]
    assert "not-a-token" not in caplog.text and "not-a-token" not in repr(status)
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1
    assert pending(store) == 20  # kept for when the token is fixed


def test_token_expiring_mid_ride_pauses_the_backend(server, store, db):
    tok = server.make_token("rider", "post")
    aid = ride(store, 10)
    sender = make_sender(server, db, tok.key)
    drive(sender, lambda: pending(store) == 0)
    # The server deletes a token once it expires; deleting it here is the same to a client.
    with server.state.lock:
        del server.state.tokens[tok.key]
    add(store, aid, 10, t0=T0 + 10)
    for _ in range(5):
        sender.step()
    assert sender.disabled and "token" in sender.disabled
    assert server.count("/input") == 2  # one refused post, no retries
    assert tok.key not in sender.disabled


def test_a_refused_fix_is_quarantined_and_the_rest_goes_on(server, store, db, token):
    a = store.start_activity("Ride", "cycling", "public", (), T0)
    fixes = [Fix(T0 + i, 51.0, 1.0 + i * 1e-4) for i in range(20)]
    fixes[7] = Fix(T0 + 7, 95.0, 1.0)  # the server refuses a latitude out of range
    store.add_fixes(a.id, fixes)
    sender = make_sender(server, db, token)
    drive(sender, lambda: pending(store) == 0)
    assert times(server) == [int(T0) + i for i in range(20) if i != 7]
    assert store.quarantined()[NAME] == 1


# --- two backends ------------------------------------------------------------------------


def _wait(cond: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll until `cond`; the timeout is only a guard against a hung test, never asserted on
    as a duration."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def test_one_backend_down_never_holds_the_other_back(server, store, db, token):
    from tracker.senders.mapmytracks import NAME as MMT
    from tracker.senders.mapmytracks import MapMyTracksSender
    from tracker.senders.mapmytracks import Settings as MmtSettings
    from tracker.testing.mapmytracks import MapMyTracksServer

    mmt = MapMyTracksServer(users={"rider": "secret"}, faults=Faults(seed=2)).start()
    mmt.faults.offline = True  # down for the whole ride
    store.register_backend(MMT)
    stop = threading.Event()
    senders = [
        make_sender(server, db, token, stop),
        MapMyTracksSender(
            MmtSettings(url=mmt.url, username="rider", interval_s=0.0, offline_upload="off",
                       read_timeout_s=2.0, connect_timeout_s=2.0),
            stop, lambda: open_store(db, check=False), secret=lambda: "secret",
        ),
    ]  # fmt: skip
    threads = [threading.Thread(target=s.run, daemon=True) for s in senders]
    for t in threads:
        t.start()
    try:
        aid = ride(store, 50)
        for k in range(1, 5):  # live: fixes keep coming, gpsr keeps up with each of them
            _wait(lambda: store.pending().get(NAME) == 0)
            add(store, aid, 50, t0=T0 + 50 * k)
        _wait(lambda: store.pending().get(NAME) == 0)
        assert times(server) == [int(T0) + i for i in range(250)]
        assert store.pending()[MMT] == 250 and mmt.activities == {}
        assert senders[1].status.state == "retrying"
        mmt.faults.offline = False  # back: it catches up on its own
        _wait(lambda: store.pending().get(MMT) == 0)
        (remote,) = mmt.activities.values()
        assert [p[0] for p in remote.points] == [int(T0) + i for i in range(250)]
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        mmt.stop()
    assert server.duplicates("rider") == []


def test_gpsr_down_mapmytracks_live_and_gpsr_catches_up(server, store, db, token):
    from tracker.senders.mapmytracks import NAME as MMT
    from tracker.senders.mapmytracks import MapMyTracksSender
    from tracker.senders.mapmytracks import Settings as MmtSettings
    from tracker.testing.mapmytracks import MapMyTracksServer

    mmt = MapMyTracksServer(users={"rider": "secret"}, faults=Faults(seed=3)).start()
    server.faults.offline = True
    store.register_backend(MMT)
    stop = threading.Event()
    senders = [
        make_sender(server, db, token, stop, backoff_max_s=0.5),
        MapMyTracksSender(
            MmtSettings(url=mmt.url, username="rider", interval_s=0.0, offline_upload="off",
                       read_timeout_s=2.0, connect_timeout_s=2.0),
            stop, lambda: open_store(db, check=False), secret=lambda: "secret",
        ),
    ]  # fmt: skip
    threads = [threading.Thread(target=s.run, daemon=True) for s in senders]
    for t in threads:
        t.start()
    try:
        aid = ride(store, 120)
        _wait(lambda: store.pending().get(MMT) == 0)
        add(store, aid, 30, t0=T0 + 120)
        _wait(lambda: store.pending().get(MMT) == 0)
        assert store.pending()[NAME] == 150 and times(server) == []
        server.faults.offline = False
        _wait(lambda: store.pending().get(NAME) == 0)
        assert times(server) == [int(T0) + i for i in range(150)]
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        mmt.stop()


# --- tracker poi and tracker status ------------------------------------------------------


def test_poi_marks_the_next_stored_fix_and_reaches_the_server(server, store, db, token,
                                                              tmp_path, capsys):  # fmt: skip
    import queue

    from tracker import cli
    from tracker.config import ActivityConfig, Config, StorageConfig
    from tracker.recorder import Recorder

    conf = tmp_path / "tracker.toml"
    conf.write_text(f'[storage]\npath = "{db}"\n')
    assert cli.main(["poi", "-c", str(conf), "--wait", "0", "cafe", "stop"]) == 1  # no daemon
    inbox: queue.Queue = queue.Queue()
    cfg = Config(storage=StorageConfig(path=db), activity=ActivityConfig(start="always"))
    rec = Recorder(cfg, inbox, threading.Event())
    try:
        rec.commit()  # no fix yet: the request stays open
        (req,) = store.take_requests()
        assert req.command == "poi" and req.arg == "cafe stop"
        inbox.put([Fix(T0 + i, 51.0 + i * 1e-4, 1.0) for i in range(5)])
        rec._receive(0.0)
        rec.commit()
    finally:
        if rec.store is not None:
            rec.store.close()
    assert store.take_requests() == []
    assert store.request(req.id).result.startswith("the next fix is marked: cafe stop")
    drive(make_sender(server, db, token), lambda: pending(store) == 0)
    assert [(f.t, f.poi) for f in server.fixes("rider")][:2] == [(int(T0), "cafe stop"),
                                                                 (int(T0) + 1, None)]  # fmt: skip


def test_status_shows_each_backend_state_error_and_backlog_never_the_token(server, store, db):
    import json

    from tracker import status
    from tracker.config import Config, StorageConfig

    store.register_backend("mapmytracks")  # registered, no sender row yet
    ride(store, 20)
    sender = make_sender(server, db, "wrong-token-123")
    sender.step()
    report = status.collect(store, Config(storage=StorageConfig(path=db)))
    g = report["backends"][NAME]
    assert g["state"] == "disabled" and g["backlog"] == 20 and "invalid" in g["last_error"]
    assert report["backends"]["mapmytracks"]["backlog"] == 20
    assert "wrong-token-123" not in json.dumps(report)
    text = status.render(report)
    assert f"sender:    {NAME}: disabled" in text and "backlog:   gpsr: 20 fixes" in text


# --- end to end: both backends, every fault, SIGKILLs ------------------------------------

_CHILD = """
import sys, threading
from tracker.config import load
from tracker.backends import make_senders
stop = threading.Event()
senders = make_senders(load(sys.argv[1]), stop)
threads = [threading.Thread(target=s.run) for s in senders]
for t in threads:
    t.start()
print("started", len(threads), flush=True)
for t in threads:
    t.join()
"""


def test_both_backends_every_fault_and_sigkills_deliver_every_fix_exactly_once(tmp_path):
    """Both senders in a child process, from a real config, killed with SIGKILL at seeded
    moments and restarted while fixes keep being stored, both servers dropping replies,
    resetting, failing, truncating and stalling: each server ends with every fix once."""
    import random
    import signal
    import subprocess
    import sys

    from tracker.senders.mapmytracks import NAME as MMT
    from tracker.testing.mapmytracks import MapMyTracksServer

    rates = {"reset": 0.08, "fail_500": 0.05, "retry_after": 0.03, "html": 0.03,
             "drop_reply": 0.1, "truncate": 0.05, "slow": 0.05}  # fmt: skip
    gpsr = GpsrServer(faults=Faults(seed=4, slow_s=1.5, retry_after_s=1, **rates), seed=4)
    mmt_faults = Faults(seed=5, slow_s=1.5, retry_after_s=1, **rates)
    mmt = MapMyTracksServer(users={"rider": "secret"}, faults=mmt_faults)
    gpsr.start()
    mmt.start()
    tok = gpsr.make_token("rider", "post", 0, 4_000_000_000).key
    db = tmp_path / "tracker.db"
    conf = tmp_path / "tracker.toml"
    timeouts = "connect_timeout_s = 1\nread_timeout_s = 0.5\nbackoff_max_s = 0.5\n"
    conf.write_text(
        f'[storage]\npath = "{db}"\n'
        f'[mapmytracks]\nurl = "{mmt.url}"\nusername = "rider"\npassword = "secret"\n'
        f'interval_s = 0.2\nbatch_max_points = 40\noffline_upload = "off"\n{timeouts}'
        f'[gpsr]\nurl = "{gpsr.url}"\ntoken = "{tok}"\ninterval_s = 0.2\n'
        f"batch_max_points = 40\n{timeouts}"
    )
    store = open_store(db)
    rng = random.Random(7)
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", _CHILD, str(conf)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)  # fmt: skip
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline().startswith(b"started 2")
        return p

    try:
        aid = ride(store, 60)
        n = 60
        for _ in range(8):
            child = start()
            time.sleep(rng.uniform(0.2, 1.2))  # when to kill: any moment, mid-request too
            add(store, aid, 30, t0=T0 + n)
            n += 30
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        store.end_activity(aid, T0 + n, "test")
        gpsr.faults.clear()
        mmt.faults.clear()
        child = start()
        _wait(lambda: store.pending().get(NAME) == 0 and store.pending().get(MMT) == 0
              and not store.get_state(MMT).get("activities"), timeout_s=120)  # fmt: skip
        child.send_signal(signal.SIGTERM)
        child.wait(10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        store.close()
        gpsr.stop()
        mmt.stop()
    expected = [int(T0) + i for i in range(n)]
    assert sorted(times(gpsr)) == expected and gpsr.duplicates("rider") == []
    (remote,) = mmt.activities.values()
    assert [p[0] for p in remote.points] == expected
    assert mmt.duplicate_points(remote.id) == []
    assert gpsr.count("/f") > 0  # lost replies were checked, not blindly resent
