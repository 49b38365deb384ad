"""The Map My Tracks sender against the test server, over real HTTP on 127.0.0.1.

The sender is driven step by step in the test's thread (`drive`), with jitter 0 so backoff
never sleeps; faults are the server's own (drop_reply = the reply lost after processing,
reset = the connection refused before it, truncate, html, retry_after).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from support import drive

from tracker.fix import Fix, Sample
from tracker.senders.base import IDLE_S
from tracker.senders.http import HttpTransport
from tracker.senders.mapmytracks import NAME, MapMyTracksSender, Settings, State
from tracker.store import Store, open_store
from tracker.testing.faults import Faults
from tracker.testing.mapmytracks import MapMyTracksServer, Readings

T0 = 1_780_000_000.0


@pytest.fixture
def server():
    srv = MapMyTracksServer(users={"rider": "secret"}, faults=Faults(seed=1)).start()
    yield srv
    srv.stop()


def ride(store: Store, n: int, *, t0: float = T0, rate_hz: float = 1.0, end: bool = False,
         title: str = "Morning ride") -> int:  # fmt: skip
    a = store.start_activity(title, "cycling", "public", ("commute", "rain"), t0)
    add(store, a.id, n, t0=t0, rate_hz=rate_hz)
    if end:
        store.end_activity(a.id, t0 + n / rate_hz, "test")
    return a.id


def add(store: Store, aid: int, n: int, *, t0: float, rate_hz: float = 1.0) -> None:
    fixes = [
        Fix(t0 + i / rate_hz, 51.0 + i * 1e-5, 1.0 + i * 1e-5, 10.0 + i * 0.1) for i in range(n)
    ]
    store.add_fixes(aid, fixes)
    store.add_samples([Sample(f.time, "hr", 120 + i % 10) for i, f in enumerate(fixes)])


def make_sender(server: MapMyTracksServer, db: Path, stop: threading.Event | None = None,
                password: str = "secret", **opts) -> MapMyTracksSender:  # fmt: skip
    kw = {"interval_s": 0.0, "read_timeout_s": 2.0, "connect_timeout_s": 2.0, **opts}
    o = Settings(url=server.url, username="rider", **kw)
    return MapMyTracksSender(
        o, stop or threading.Event(), lambda: open_store(db, check=False),
        secret=lambda: password, rand=lambda: 0.0,
    )  # fmt: skip


def remote_activities(server: MapMyTracksServer) -> list:
    return sorted(server.activities.values(), key=lambda a: a.id)


def pending(store: Store) -> int:
    return store.pending().get(NAME, 0)


def test_start_update_stop_delivers_every_point_once(server, store, db):
    aid = ride(store, 250, end=True)
    sender = make_sender(server, db, offline_upload="off")
    drive(sender, lambda: pending(store) == 0 and not store.get_state(NAME).get("activities"))
    acts = remote_activities(server)
    assert len(acts) == 1
    a = acts[0]
    assert a.created_via == "start" and not a.live and a.stopped_by == "stop_activity"
    assert [p[0] for p in a.points] == [int(T0) + i for i in range(250)]
    assert server.duplicate_points(a.id) == []
    assert a.title == "Morning ride" and a.tags == ["commute", "rain"] and a.privacy == "public"
    assert a.source == "tracker" and a.version
    assert a.token == store.activity(aid).uuid
    assert len(a.hr) == 250 and a.hr[0] == (int(T0), 120.0)
    assert a.points[0][1:] == pytest.approx((51.0, 1.0, 10.0))
    # A 100-point start, then the limit doubles for the backlog: one update, then one stop.
    assert server.count("start_activity") == 1
    assert server.count("update_activity") == 1
    assert server.count("stop_activity") == 1
    assert server.count("get_time") == 1
    state = store.get_state(NAME)
    assert state["done_through"] == aid
    status, _ = store.get_runtime(f"backend:{NAME}")
    assert status["state"] == "ok" and "secret" not in repr(status)


def test_live_activity_is_not_stopped_and_new_fixes_follow(server, store, db):
    aid = ride(store, 30)
    sender = make_sender(server, db)
    drive(sender, lambda: pending(store) == 0)
    add(store, aid, 20, t0=T0 + 30)
    drive(sender, lambda: pending(store) == 0)
    (a,) = remote_activities(server)
    assert a.live and len(a.points) == 50 and server.count("stop_activity") == 0
    assert server.duplicate_points(a.id) == []


def test_faster_than_1hz_sends_the_first_fix_of_each_second(server, store, db):
    ride(store, 100, rate_hz=10.0, end=True)
    sender = make_sender(server, db, offline_upload="off", batch_max_points=7)
    drive(sender, lambda: pending(store) == 0 and not store.get_state(NAME).get("activities"))
    (a,) = remote_activities(server)
    assert [p[0] for p in a.points] == [int(T0) + i for i in range(10)]
    assert a.points[1][1] == pytest.approx(51.0 + 10e-5)  # the first fix of second 1


@pytest.mark.parametrize("fault", ["drop_reply", "truncate", "slow"])
def test_every_second_reply_lost_makes_no_duplicate(server, store, db, fault):
    server.faults.set(**{fault: 0.5}, slow_s=3.0)
    ride(store, 700, end=True)
    sender = make_sender(server, db, offline_upload="off", read_timeout_s=0.5)
    drive(sender, lambda: pending(store) == 0 and not store.get_state(NAME).get("activities"),
          steps=2000)  # fmt: skip
    acts = remote_activities(server)
    assert len(acts) == 1
    assert [p[0] for p in acts[0].points] == [int(T0) + i for i in range(700)]
    assert server.duplicate_points(acts[0].id) == []
    assert server.count(fault=fault) > 0
    assert server.count("get_activity") > 0  # lost update replies were checked


def test_lost_start_reply_reuses_the_token(server, store, db):
    server.faults.set(drop_reply=1.0, only=["start_activity"])
    ride(store, 50)
    sender = make_sender(server, db)
    for _ in range(3):
        sender.step()
    assert server.count("start_activity", processed=True) >= 2
    server.faults.clear()
    drive(sender, lambda: pending(store) == 0)
    assert len(remote_activities(server)) == 1
    tokens = {r.params["unique_token"] for r in server.requests if r.name == "start_activity"}
    assert len(tokens) == 1


def test_sigkill_mid_update_checks_before_resending(server, store, db):
    """A sender that dies with an update in flight (applied, reply never read) is replaced by a
    fresh one: the stored pending marker makes it ask get_activity first."""
    aid = ride(store, 150)
    first = make_sender(server, db)
    drive(first, lambda: server.count("start_activity") == 1)
    server.faults.set(drop_reply=1.0, only=["update_activity"])
    drive(first, lambda: server.count("update_activity") == 1)
    first.close()
    first.store.close()  # the process is gone; its state is what was committed
    server.faults.clear()
    second = make_sender(server, db)
    drive(second, lambda: pending(store) == 0)
    (a,) = remote_activities(server)
    assert len(a.points) == 150 and server.duplicate_points(a.id) == []
    assert server.count("update_activity") == 1  # nothing needed resending
    assert server.count("get_activity") >= 1
    assert store.get_state(NAME).get("activities")[str(aid)]["pending"] is None


def test_partially_lost_batch_sends_only_the_rest(server, store, db):
    """The server took the first update; a later one's reply is lost and its points are
    sent again only if get_activity says they are missing."""
    ride(store, 120)
    sender = make_sender(server, db, batch_max_points=40)
    drive(sender, lambda: server.count("update_activity") == 1)
    server.faults.set(reset=1.0, only=["update_activity"])  # refused before processing
    sender.step()
    server.faults.clear()
    drive(sender, lambda: pending(store) == 0)
    (a,) = remote_activities(server)
    assert [p[0] for p in a.points] == [int(T0) + i for i in range(120)]


def test_offline_ride_is_uploaded_whole(server, store, db):
    server.faults.offline = True
    aid = ride(store, 300, end=True)
    sender = make_sender(server, db)
    for _ in range(3):
        sender.step()
    assert sender.status.state == "retrying"
    server.faults.offline = False
    drive(sender, lambda: not store.get_state(NAME).get("activities") and pending(store) == 0)
    (a,) = remote_activities(server)
    assert a.created_via == "upload" and len(a.points) == 300 and a.title == "Morning ride"
    assert server.count("start_activity") == 0 and server.count("update_activity") == 0
    assert store.get_state(NAME)["done_through"] == aid


def test_lost_upload_reply_is_found_not_repeated(server, store, db):
    server.faults.set(drop_reply=1.0, only=["upload_activity"])
    ride(store, 60, end=True)
    sender = make_sender(server, db)
    drive(sender, lambda: server.count("upload_activity") == 1)
    server.faults.clear()
    drive(sender, lambda: not store.get_state(NAME).get("activities") and pending(store) == 0)
    assert len(remote_activities(server)) == 1
    assert server.count("upload_activity") == 1 and server.count("get_activities") == 1


def test_older_activity_is_stopped_before_the_next_starts(server, store, db):
    first = ride(store, 30, end=True)
    second = ride(store, 30, t0=T0 + 4000, title="Evening ride")
    sender = make_sender(server, db, offline_upload="off")
    drive(sender, lambda: pending(store) == 0)
    acts = remote_activities(server)
    assert [a.title for a in acts] == ["Morning ride", "Evening ride"]
    assert acts[0].stopped_by == "stop_activity" and acts[1].live
    assert server.superseded == []
    names = [r.name for r in server.requests if r.name != "get_time"]
    assert names.index("stop_activity") < names.index("start_activity", 1)
    assert store.get_state(NAME)["done_through"] == first
    assert str(second) in store.get_state(NAME).get("activities")


@pytest.mark.parametrize("when_idle", ["stopped", "error"])
def test_lost_stop_reply_does_not_block_with_either_reading(store, db, when_idle):
    """The retried stop finds nothing live: answered `activity_stopped` (the specification's
    example) or an error (other servers); done either way."""
    with MapMyTracksServer(users={"rider": "secret"},
                           readings=Readings(stop_when_idle=when_idle)) as server:  # fmt: skip
        server.faults.set(drop_reply=1.0, only=["stop_activity"])
        ride(store, 10, end=True)
        sender = make_sender(server, db, offline_upload="off")
        drive(sender, lambda: server.count("stop_activity") == 1)
        server.faults.clear()
        drive(sender, lambda: not store.get_state(NAME).get("activities"))
        assert server.count("stop_activity") == 2
        (a,) = remote_activities(server)
        assert not a.live and a.stopped_by == "stop_activity"


@pytest.mark.parametrize("tag", ["activity_id", "id", None])
def test_every_upload_reply_reading_finishes_the_upload(store, db, tag):
    with MapMyTracksServer(users={"rider": "secret"},
                           readings=Readings(upload_id_tag=tag)) as server:  # fmt: skip
        aid = ride(store, 20, end=True)
        sender = make_sender(server, db)
        drive(sender, lambda: pending(store) == 0 and not store.get_state(NAME)["activities"])
        (a,) = remote_activities(server)
        assert a.created_via == "upload" and server.count("upload_activity") == 1
        assert store.get_state(NAME)["done_through"] == aid


def test_a_lost_upload_reply_is_found_on_a_server_that_pages_its_list(store, db):
    with MapMyTracksServer(users={"rider": "secret"},
                           readings=Readings(activities_page=2)) as server:  # fmt: skip
        for i in range(5):  # older rides of the account fill the first pages
            ride(store, 5, t0=T0 - 10_000 * (i + 1), end=True, title=f"Old ride {i}")
        sender = make_sender(server, db)
        drive(sender, lambda: server.count("upload_activity") == 5)
        server.faults.set(drop_reply=1.0, only=["upload_activity"])
        ride(store, 30, end=True)
        drive(sender, lambda: server.count("upload_activity") == 6)
        server.faults.clear()
        drive(sender, lambda: pending(store) == 0 and not store.get_state(NAME)["activities"])
        assert server.count("upload_activity") == 6  # found on the third page, not repeated
        assert server.count("get_activities") >= 3
        assert len(remote_activities(server)) == 6


def test_bad_point_is_quarantined_and_the_rest_goes_on(server, store, db):
    a = store.start_activity("Ride", "cycling", "private", (), T0)
    store.add_fixes(a.id, [Fix(T0, 51.0, 1.0, 5.0)])
    sender = make_sender(server, db, batch_max_points=10)
    drive(sender, lambda: pending(store) == 0)
    store.add_fixes(a.id, [Fix(T0 + 1, 95.0, 1.0, 5.0)])  # latitude out of range
    drive(sender, lambda: pending(store) == 0)
    store.add_fixes(a.id, [Fix(T0 + 2 + i, 51.0, 1.0, 5.0) for i in range(5)])
    drive(sender, lambda: pending(store) == 0)
    assert store.quarantined()[NAME] == 1
    (remote,) = remote_activities(server)
    assert len(remote.points) == 6
    status, _ = store.get_runtime(f"backend:{NAME}")
    assert "error" in status["last_rejected"]


def test_wrong_password_stops_the_backend_and_keeps_the_data(server, store, db, caplog):
    ride(store, 20)
    sender = make_sender(server, db, password="wrong")
    assert sender.step() == IDLE_S
    assert sender.disabled and "401" in sender.disabled
    n = len(server.requests)
    assert sender.step() == IDLE_S and len(server.requests) == n  # no more requests
    assert pending(store) == 20
    status, _ = store.get_runtime(f"backend:{NAME}")
    assert status["state"] == "disabled" and status["auth_failed"]
    assert "wrong" not in caplog.text and "wrong" not in repr(status)


def test_retry_after_is_honoured(server, store, db):
    server.faults.set(retry_after=1.0, retry_after_s=7)
    ride(store, 5)
    sender = make_sender(server, db)
    wait = sender.step()
    assert 6.9 <= wait <= 7.1 and sender.status.state == "retrying"
    n = len(server.requests)
    assert sender.step() > 6 and len(server.requests) == n  # not before the time


def test_html_and_reset_are_transient(server, store, db):
    ride(store, 5)
    sender = make_sender(server, db)
    for fault in ("html", "reset", "fail_500"):
        server.faults.set(**{fault: 1.0})
        sender.step()
        assert sender.status.state == "retrying", fault
        server.faults.clear()
    drive(sender, lambda: pending(store) == 0)
    assert len(remote_activities(server)) == 1


def test_thread_stops_promptly_and_beats(server, store, db):
    ride(store, 10)
    stop = threading.Event()
    sender = make_sender(server, db, stop)
    t = threading.Thread(target=sender.run)
    t.start()
    try:
        import time

        deadline = time.monotonic() + 10
        while pending(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pending(store) == 0
        beat = sender.heartbeat
        time.sleep(0.3)
        assert sender.heartbeat > beat
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()


def test_plain_http_warns_once(server, caplog):
    for _ in range(2):
        HttpTransport(server.url + "?warn-test", "u", "pw").close()
    assert caplog.text.count("clear text") == 1


# --- the transport against scripted raw sockets ---------------------------------------------


class RawServer:
    """Accepts connections on 127.0.0.1 and answers each with `script(conn)`."""

    def __init__(self, script: Callable) -> None:

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/api/"
        self.script = script
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    _read_request(conn)
                    self.script(conn)
                    # Half-close and wait for the client to hang up: closing with unread bytes
                    # sends an RST, which can discard the reply in the client's buffer and
                    # turn the case under test into a reset.
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):
                        pass
                except OSError:
                    pass  # the client hung up first (it stops reading an oversized reply)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in _serve
        self.sock.close()
        self.thread.join(timeout=5)


def _read_request(conn) -> None:
    """Read one whole request (headers and Content-Length body) so none is left unread."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
    remaining = (int(match.group(1)) if match else 0) - len(body)
    while remaining > 0:
        chunk = conn.recv(65536)
        if not chunk:
            return
        remaining -= len(chunk)


def _reply(body: bytes, length: int | None = None, extra: str = "") -> bytes:
    n = len(body) if length is None else length
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {n}\r\n{extra}\r\n"
    return head.encode() + body


def _post(url: str, read_timeout_s: float = 0.5):
    t = HttpTransport(url, "u", "pw", connect_timeout_s=0.5, read_timeout_s=read_timeout_s)
    try:
        return t.post({"request": "get_time"})
    finally:
        t.close()


def test_transport_tells_connect_failed_from_lost_reply():
    import socket

    from tracker.senders.transport import LostReply, Transient, Unreachable

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(Unreachable) as err:
        _post(f"http://127.0.0.1:{port}/api/")
    assert not err.value.maybe_applied

    def cases():
        yield "hang", lambda c: threading.Event().wait(1.0), LostReply
        yield "close", lambda c: None, LostReply
        yield "short", lambda c: c.sendall(_reply(b"<message>", length=500)), LostReply
        yield "big", lambda c: c.sendall(_reply(b"x" * (1024 * 1024 + 1))), Transient
        yield "big-chunks", lambda c: c.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"10000\r\n" + b"x" * 0x10000 + b"\r\n"  # fmt: skip
            + (b"10000\r\n" + b"y" * 0x10000 + b"\r\n") * 16
        ), Transient  # fmt: skip
        yield "429", lambda c: c.sendall(
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 12\r\nContent-Length: 0\r\n\r\n"
        ), Transient  # fmt: skip

    for name, script, kind in cases():
        srv = RawServer(script)
        try:
            with pytest.raises(kind) as err:
                _post(srv.url)
            assert err.type is kind, name
            if name == "429":
                assert err.value.retry_after_s == 12 and not err.value.maybe_applied
            if kind is LostReply:
                assert err.value.maybe_applied, name
        finally:
            srv.close()


# --- typed state (tracker/senders/state.py) --------------------------------------------


def test_upgraded_mid_ride_the_pending_marker_is_reconciled_not_resent(server, store, db):
    """An old release sent an update and died before the reply; the state it left is version
    0. The new sender asks the server (get_activity) and sends none of those points again."""
    ride(store, 150)
    first = make_sender(server, db)
    drive(first, lambda: server.count("start_activity") == 1)
    server.faults.set(drop_reply=1.0, only=["update_activity"])
    drive(first, lambda: server.count("update_activity") == 1)
    first.close()
    first.store.close()
    server.faults.clear()
    state = store.get_state(NAME)
    del state["v"]  # as the old release wrote it
    store.set_state(NAME, state)
    second = make_sender(server, db)
    drive(second, lambda: pending(store) == 0)
    (a,) = remote_activities(server)
    assert len(a.points) == 150 and server.duplicate_points(a.id) == []
    assert server.count("update_activity") == 1 and server.count("get_activity") >= 1
    assert store.get_state(NAME)["v"] == State.VERSION


def test_a_newer_state_in_the_store_stops_only_that_backend_and_keeps_the_data(
    server, store, db
):
    ride(store, 20)
    store.set_state(NAME, {"v": State.VERSION + 1, "whatever": 1})
    sender = make_sender(server, db)
    sender.step()
    assert sender.disabled and "newer than this tracker reads" in sender.disabled
    assert server.count("start_activity") == 0 and pending(store) == 20


def test_samples_stored_after_their_second_was_sent_go_with_the_next_update(server, store, db):
    """A 1 Hz strap whose readings reach the store late: every second on the server once."""
    a = store.start_activity("Late strap", "cycling", "private", (), T0)
    fixes = [Fix(T0 + i, 51.0 + i * 1e-5, 1.0) for i in range(30)]
    store.add_fixes(a.id, fixes[:20])
    store.add_samples([Sample(T0 + i, "hr", 100 + i) for i in range(10)])
    sender = make_sender(server, db)
    drive(sender, lambda: pending(store) == 0)  # seconds 0-19 sent, hr only for 0-9
    store.add_samples([Sample(T0 + i + 0.5, "hr", 100 + i) for i in range(10, 20)])  # late
    store.add_samples([Sample(T0 + 5.5, "hr", 999)])  # a second reading of a second sent
    store.add_fixes(a.id, fixes[20:])
    store.add_samples([Sample(T0 + i, "hr", 100 + i) for i in range(20, 30)])
    drive(sender, lambda: pending(store) == 0)
    (remote,) = remote_activities(server)
    seconds = [t for t, _ in remote.hr]
    assert sorted(seconds) == [int(T0) + i for i in range(30)], "no gap, no second twice"
    assert dict(remote.hr)[int(T0) + 5] == 105  # the second sent first stays as sent
