"""The [traccar] backend: the OsmAnd encoding, the OsmAnd test server (tracker.testing.osmand)
and the sender against it over real HTTP on 127.0.0.1, with a real SQLite store.

Sender tests step the sender in the test's thread (`drive`, jitter 0 so backoff never waits)
or run it in its own thread where a fault makes it wait (Retry-After, a slow reply).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from urllib.error import HTTPError

import pytest
from support import ROOT, drive, wait_for

from tracker.config import ConfigError, parse
from tracker.fix import Fix, Sample
from tracker.senders.state import Pending, StateError
from tracker.senders.traccar import (
    KNOTS_PER_MPS,
    NAME,
    Settings,
    State,
    TraccarSender,
    current_samples,
    next_to_send,
    position_params,
    probe,
)
from tracker.store import Store, StoredFix, open_store
from tracker.testing.faults import ALL_KINDS, Faults
from tracker.testing.osmand import OsmAndServer, parse_timestamp

T0 = 1_780_000_000.0
DEVICE = "tracker-1"


@pytest.fixture
def server():
    srv = OsmAndServer(devices=[DEVICE], faults=Faults(seed=1)).start()
    yield srv
    srv.stop()


def stored(fid: int, t: float, **kw) -> StoredFix:
    base = {"lat": 51.0, "lon": 1.0}
    base.update(kw)
    return StoredFix(t, base.pop("lat"), base.pop("lon"), **base, id=fid, activity_id=1)


def ride(store: Store, n: int, *, t0: float = T0, rate_hz: float = 1.0, activity: bool = True,
         **fix) -> int | None:  # fmt: skip
    aid = store.start_activity("Ride", "cycling", "public", (), t0).id if activity else None
    add(store, aid, n, t0=t0, rate_hz=rate_hz, **fix)
    return aid


def add(store: Store, aid: int | None, n: int, *, t0: float, rate_hz: float = 1.0, **fix):
    kw = {"alt": 10.0, "speed": 5.0, "course": 90.0, "hdop": 1.0, "vdop": 1.5, **fix}
    store.add_fixes(aid, [
        Fix(t0 + i / rate_hz, 51.0 + i * 1e-4, 1.0 + i * 1e-4, **kw) for i in range(n)
    ])  # fmt: skip


def make_sender(server: OsmAndServer, db: Path, stop: threading.Event | None = None,
                **opts) -> TraccarSender:  # fmt: skip
    kw = {"interval_s": 0.05, "read_timeout_s": 1.0, "connect_timeout_s": 1.0,
          "backoff_max_s": 0.2, "device_id": DEVICE, **opts}  # fmt: skip
    return TraccarSender(Settings(url=server.url, **kw), stop or threading.Event(),
                         lambda: open_store(db, check=False), rand=lambda: 0.0)  # fmt: skip


def pending(store: Store) -> int:
    return store.pending().get(NAME, 0)


def seconds(server: OsmAndServer) -> list[int]:
    return [p.time_ms // 1000 for p in server.positions(DEVICE)]


def in_thread(sender: TraccarSender) -> threading.Thread:
    t = threading.Thread(target=sender.run, daemon=True)
    t.start()
    return t


# --- encoding -------------------------------------------------------------------------------


def test_position_params_seven_decimals_knots_accuracy_and_sensor_attributes():
    f = stored(1, T0 + 0.97, lat=51.5, lon=-0.1234567891, alt=12.34, speed=5.0, course=271.25,
               hdop=0.9, vdop=1.4)  # fmt: skip
    p = position_params(f, "unit-7", {"hr": 141.6, "cad": 88.2, "pwr": 250.0})
    assert p == {
        "id": "unit-7", "timestamp": str(int(T0)),  # whole seconds, floor
        "lat": "51.5000000", "lon": "-0.1234568",  # always 7 decimals
        "speed": "9.72",  # 5 m/s in knots
        "bearing": "271.2", "altitude": "12.3",
        "accuracy": "4.5", "hdop": "0.9",  # HDOP x UERE 5 m
        "hr": "142", "cad": "88", "pwr": "250",
    }  # fmt: skip
    assert float(p["speed"]) == pytest.approx(5.0 * KNOTS_PER_MPS, abs=0.005)


def test_position_params_gst_accuracy_and_unknowns_left_out():
    gst = stored(1, T0, err_lat=3.0, err_lon=4.0, hdop=9.9)
    assert position_params(gst, "d")["accuracy"] == "5"  # GST beats HDOP x UERE
    assert position_params(stored(1, T0, hdop=2.0), "d", uere_m=3.0)["accuracy"] == "6"
    bare = position_params(stored(1, T0, speed=float("nan")), "d")
    assert set(bare) == {"id", "timestamp", "lat", "lon"}


def test_current_samples_take_the_newest_reading_not_after_the_fix_nor_too_old():
    samples = [
        Sample(T0 - 6, "hr", 100),
        Sample(T0 - 2, "hr", 120),
        Sample(T0 - 1, "hr", 121),
        Sample(T0 + 0.5, "hr", 150),
        Sample(T0 - 7, "cad", 80),
        Sample(T0, "pwr", 200),
    ]
    assert current_samples(samples, T0) == {"hr": 121, "pwr": 200}


def test_next_to_send_thins_to_seconds_and_covers_what_the_server_has():
    fixes = [stored(i + 1, T0 + i / 10) for i in range(25)]  # 10 Hz, 2.5 s
    assert next_to_send(fixes, None) == ([], fixes[0])
    covered, nxt = next_to_send(fixes, int(T0))
    assert covered == fixes[:10] and nxt is fixes[10]
    covered, nxt = next_to_send(fixes, int(T0) + 2)
    assert covered == fixes and nxt is None
    covered, nxt = next_to_send(fixes, int(T0), min_interval_s=2)
    assert nxt is fixes[20]
    older = [stored(1, T0 - 30), stored(2, T0 + 5)]  # GPS time went back: not sent
    assert next_to_send(older, int(T0)) == ([older[0]], older[1])


# --- settings and state ---------------------------------------------------------------------


def test_config_section_defaults_send_scope_and_required_keys():
    cfg = parse({"traccar": {"url": "http://t.example:5055/", "device_id": "unit-7"}})
    s = cfg.backends[NAME]
    assert (s.send, s.scope(), s.min_point_interval_s, s.uere_m) == ("all", "all", 1.0, 5.0)
    s = parse({"traccar": {"url": "http://t.example:5055/", "device_id": "u",
                           "send": "activities"}}).backends[NAME]  # fmt: skip
    assert s.scope() == "activities"
    ok = {"url": "http://t:5055/", "device_id": "u"}
    for body, key in [({"url": "http://t:5055/"}, "device_id"), ({"device_id": "u"}, "url"),
                      ({**ok, "send": "some"}, "send"), ({**ok, "device_id": "u u"}, "device_id"),
                      ({**ok, "min_point_interval_s": 0.5}, "min_point_interval_s"),
                      ({**ok, "token": "x"}, "token")]:  # fmt: skip
        with pytest.raises(ConfigError, match=key):
            parse({"traccar": body})


def test_state_round_trips_and_a_newer_version_is_refused():
    st = State(Pending("position", 5, 5, 9), {"id": "u", "timestamp": "5"}, 4, {"id": "u"})
    assert State.from_json(st.to_json()) == st
    assert State.from_json({}) == State()
    assert State.from_json(State(None, {"x": "1"}).to_json()).sent is None  # only in flight
    with pytest.raises(StateError):
        State.from_json({"v": 99})
    with pytest.raises(StateError):
        State.from_json({"sent": {"id": "u"}, "pending": {"kind": "position"}})


# --- the test server ------------------------------------------------------------------------


def call(server: OsmAndServer, query: str = "", body: bytes | None = None,
         method: str = "GET") -> int:  # fmt: skip
    req = urllib.request.Request(server.url + ("?" + query if query else ""), data=body,
                                 method=method)  # fmt: skip
    if body is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.read() == b""  # Traccar acknowledges with an empty 200
            return r.status
    except HTTPError as e:
        return e.code


def test_server_takes_get_post_query_and_form_body(server):
    q = f"id={DEVICE}&lat=51.1234567&lon=-1.5&timestamp={int(T0)}&speed=10&bearing=90&hr=140"
    assert call(server, q) == 200
    assert call(server, q.replace(str(int(T0)), str(int(T0) + 1)), b"", "POST") == 200
    assert call(server, body=q.replace(str(int(T0)), str(int(T0) + 2)).encode(),
                method="POST") == 200  # fmt: skip
    got = server.positions(DEVICE)
    assert [p.method for p in got] == ["GET", "POST", "POST"]
    assert seconds(server) == [int(T0), int(T0) + 1, int(T0) + 2]
    p = got[0]
    assert (p.lat, p.lon, p.speed, p.course, p.attributes) == (51.1234567, -1.5, 10, 90,
                                                                {"hr": 140})  # fmt: skip


def test_server_timestamp_forms():
    assert parse_timestamp("1780000000") == 1_780_000_000_000
    assert parse_timestamp("1780000000123") == 1_780_000_000_123
    assert parse_timestamp("2026-05-28T20:26:40Z") == 1_780_000_000_000
    assert parse_timestamp("2026-05-28 20:26:40") == 1_780_000_000_000


@pytest.mark.parametrize("query", [
    "lat=1&lon=1&timestamp=1",  # no id
    "id=someone-else&lat=1&lon=1&timestamp=1",  # not registered
    f"id={DEVICE}&lat=north&lon=1&timestamp=1",
    f"id={DEVICE}&lat=95&lon=1&timestamp=1",
    f"id={DEVICE}&lon=1&timestamp=1",
    f"id={DEVICE}&lat=1&lon=1&timestamp=yesterday",
])  # fmt: skip
def test_server_answers_400_to_a_malformed_or_unknown_device_request(server, query):
    assert call(server, query) == 400
    assert server.positions(DEVICE) == [] and server.count("position", status=400) == 1


def test_server_registers_unknown_devices_when_told():
    with OsmAndServer(devices=[], register_unknown=True) as srv:
        assert call(srv, "id=new&lat=1&lon=1&timestamp=5") == 200
        assert srv.devices() == {"new"} and srv.times("new") == [5.0]


def test_server_duplicate_filter_drops_only_the_latest_time_without_new_attributes(server):
    def post(t: int, extra: str = "") -> int:
        return call(server, f"id={DEVICE}&lat=1&lon=1&timestamp={t}&hdop=1{extra}")

    assert post(100) == 200 and post(100) == 200  # the second is dropped, answered 200
    assert seconds(server) == [100] and server.filtered(DEVICE) == 1
    assert post(100, "&hr=120") == 200  # an attribute the latest lacks: stored (Traccar's rule)
    assert post(101) == 200 and post(100) == 200  # older than the latest: stored as history
    assert seconds(server) == [100, 100, 101, 100]
    assert server.latest(DEVICE).time_ms == 101_000
    assert post(101) == 200 and server.filtered(DEVICE) == 2
    server.duplicate_filter = False
    assert post(101) == 200
    assert [p.time_ms for p in server.duplicates(DEVICE)] == [100_000, 100_000, 101_000]


# --- the sender -----------------------------------------------------------------------------


@pytest.fixture
def store(db: Path):
    s = open_store(db)
    s.register_backend(NAME, "all")
    yield s
    s.close()


def test_every_fix_once_in_time_order_one_request_each(server, store, db):
    ride(store, 95, rate_hz=10.0)  # 10 Hz: the first fix of each second goes
    store.add_samples([Sample(T0 + 2.5, "hr", 131.0), Sample(T0 + 3, "pwr", 180.0)])
    sender = make_sender(server, db, batch_max_points=7)
    drive(sender, lambda: pending(store) == 0)
    assert seconds(server) == [int(T0) + i for i in range(10)]
    assert server.count("position") == 10 and server.duplicates(DEVICE) == []
    second = server.positions(DEVICE)[1]
    assert (second.lat, second.lon, second.altitude) == (51.001, 1.001, 10.0)
    assert (second.speed, second.course, second.accuracy) == (9.72, 90.0, 5.0)
    assert second.attributes == {"hdop": 1.0}
    assert server.positions(DEVICE)[3].attributes == {"hdop": 1.0, "hr": 131, "pwr": 180}
    status, _ = store.get_runtime(f"backend:{NAME}")
    assert status["state"] == "ok" and status["fixes_sent"] == 10 and status["user"] == DEVICE


def test_min_point_interval_thins_further(server, store, db):
    ride(store, 20)
    drive(make_sender(server, db, min_point_interval_s=5), lambda: pending(store) == 0)
    assert seconds(server) == [int(T0) + i for i in (0, 5, 10, 15)]


def test_send_all_delivers_fixes_outside_activities_and_activities_does_not(server, db):
    s = open_store(db)
    ride(s, 3, activity=False)  # parked: stored outside any activity
    ride(s, 3, t0=T0 + 10)
    drive(make_sender(server, db), lambda: s.pending().get(NAME) == 0)
    assert seconds(server) == [int(T0) + i for i in (0, 1, 2, 10, 11, 12)]
    s.close()
    with OsmAndServer(devices=[DEVICE]) as other:
        db2 = db.with_name("activities.db")
        s2 = open_store(db2)
        ride(s2, 3, activity=False)
        ride(s2, 3, t0=T0 + 10)
        drive(make_sender(other, db2, send="activities"), lambda: s2.pending().get(NAME) == 0)
        assert seconds(other) == [int(T0) + i for i in (10, 11, 12)]
        s2.close()


def test_a_lost_reply_is_resent_identically_and_the_filter_drops_it(server, store, db):
    ride(store, 3)
    server.faults.set(drop_reply=1.0)
    sender = make_sender(server, db)
    drive(sender, lambda: server.count("position") == 1)
    assert store.get_state(NAME)["pending"]["last_time"] == int(T0)
    # A sensor reading stored meanwhile must not change the resend: a new attribute would get
    # past Traccar's duplicate filter.
    store.add_samples([Sample(T0 - 1, "hr", 120.0)])
    server.faults.clear()
    drive(sender, lambda: pending(store) == 0)
    assert seconds(server) == [int(T0) + i for i in range(3)]
    assert server.duplicates(DEVICE) == [] and server.filtered(DEVICE) == 1
    requests = [r.params for r in server.requests]
    assert requests[0] == requests[1] and "hr" not in requests[1]
    # The fixes after it carry the reading.
    assert [p.attributes.get("hr") for p in server.positions(DEVICE)] == [None, 120, 120]


def test_without_the_servers_duplicate_filter_a_lost_reply_makes_a_duplicate(server, store, db):
    """Why docs/traccar.md asks for filter.duplicate: OsmAnd cannot ask what arrived."""
    server.duplicate_filter = False
    ride(store, 3)
    server.faults.set(drop_reply=1.0)
    sender = make_sender(server, db)
    drive(sender, lambda: server.count("position") == 1)
    server.faults.clear()
    drive(sender, lambda: pending(store) == 0)
    assert [p.time_ms // 1000 for p in server.duplicates(DEVICE)] == [int(T0)]


def test_a_sender_killed_between_receipt_and_ack_resends_and_makes_no_duplicate(server, store,
                                                                                db):  # fmt: skip
    ride(store, 10)
    first = make_sender(server, db)
    drive(first, lambda: server.count("position") == 3)  # three acknowledged
    server.faults.set(drop_reply=1.0)
    drive(first, lambda: server.count("position") == 4)  # stored, reply lost
    first.close()
    first.store.close()  # the process is gone: what it committed is what the next one finds
    assert store.get_state(NAME)["pending"]["last_time"] == int(T0) + 3
    assert pending(store) == 7
    server.faults.clear()
    drive(make_sender(server, db), lambda: pending(store) == 0)
    assert seconds(server) == [int(T0) + i for i in range(10)]
    assert server.duplicates(DEVICE) == [] and server.filtered(DEVICE) == 1


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_fault_kind_delivers_every_second_once(server, store, db, kind):
    server.faults.set(**{kind: 0.4}, slow_s=1.5, trickle_s=0.5, retry_after_s=1)
    ride(store, 12)
    stop = threading.Event()
    sender = make_sender(server, db, stop, read_timeout_s=0.5)
    t = in_thread(sender)
    try:
        wait_for(lambda: pending(store) == 0, timeout=50, what="every fix acknowledged")
    finally:
        stop.set()
        t.join(10)
    assert seconds(server) == [int(T0) + i for i in range(12)]
    assert server.duplicates(DEVICE) == [] and store.quarantined()[NAME] == 0
    assert server.count(fault=kind) > 0


def test_a_refused_fix_is_quarantined_and_the_rest_goes_on(server, store, db):
    a = store.start_activity("Ride", "cycling", "public", (), T0)
    fixes = [Fix(T0 + i, 51.0, 1.0 + i * 1e-4) for i in range(10)]
    fixes[4] = Fix(T0 + 4, 95.0, 1.0)  # the test server refuses a latitude out of range
    store.add_fixes(a.id, fixes)
    sender = make_sender(server, db)
    drive(sender, lambda: pending(store) == 0)
    assert seconds(server) == [int(T0) + i for i in range(10) if i != 4]
    assert store.quarantined()[NAME] == 1 and server.duplicates(DEVICE) == []
    assert server.filtered(DEVICE) == 1  # the device check: the last accepted one, dropped
    assert "HTTP 400" in sender.status.last_rejected


def test_an_unknown_device_quarantines_nothing_and_delivers_once_registered(server, store, db):
    ride(store, 5)
    sender = make_sender(server, db, device_id="not-yet")
    for _ in range(5):
        sender.step()
    assert server.positions("not-yet") == [] and store.quarantined()[NAME] == 0
    assert sender.status.state == "retrying" and "registered" in sender.status.last_error
    server.add_device("not-yet")
    drive(sender, lambda: pending(store) == 0)
    assert [p.time_ms // 1000 for p in server.positions("not-yet")] == [
        int(T0) + i for i in range(5)
    ]
    assert store.quarantined()[NAME] == 0


def test_a_device_removed_mid_ride_quarantines_nothing(server, store, db):
    aid = ride(store, 3)
    sender = make_sender(server, db)
    drive(sender, lambda: pending(store) == 0)
    with server.state.lock:
        server.state.devices.discard(DEVICE)
    add(store, aid, 3, t0=T0 + 3)
    for _ in range(5):
        sender.step()
    assert store.quarantined()[NAME] == 0 and pending(store) == 3
    assert "registered" in sender.status.last_error


def test_probe_ok_and_failures(server):
    checks = probe(Settings(url=server.url, device_id=DEVICE)).checks
    assert [c.result for c in checks] == ["ok", "skip"]
    assert server.positions(DEVICE) == []  # the probe stores nothing
    server.stop()
    (down,) = probe(Settings(url=server.url, device_id=DEVICE)).checks
    assert down.result == "FAIL" and "unreachable" in down.detail
    with OsmAndServer(faults=Faults(html=1.0)) as portal:
        (html,) = probe(Settings(url=portal.url, device_id=DEVICE)).checks
        assert html.result == "FAIL" and "5055" in html.fix


def test_status_with_a_traccar_section_loads_no_http_stack(tmp_path):
    """`tracker status` parses the [traccar] section without importing the HTTP stack."""
    config = tmp_path / "tracker.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "tracker.db"}"\n\n'
        f'[traccar]\nurl = "http://127.0.0.1:9/"\ndevice_id = "{DEVICE}"\n'
    )
    open_store(tmp_path / "tracker.db").close()
    out = tmp_path / "modules.txt"
    dump = (
        "import atexit, sys\n"
        "out = sys.argv.pop(1)\n"
        "atexit.register(lambda: open(out, 'w').write('\\n'.join(sorted(sys.modules))))\n"
        "from tracker.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run([sys.executable, "-c", dump, str(out), "status", "-c", str(config)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = set(out.read_text().split())
    assert "tracker.senders.traccar" in loaded, "the section was parsed"
    assert not {"ssl", "http.client", "tracker.senders.http"} & loaded


@pytest.mark.parametrize("status, body", [(204, b""), (201, b"created")])
def test_only_http_200_acknowledges(store, db, status, body):
    """A 2xx other than 200 is not Traccar's acknowledgement: not settled, the marker kept (the
    server may have stored it), and the same request sent again."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        ride(store, 2)
        sender = TraccarSender(
            Settings(url=f"http://127.0.0.1:{httpd.server_address[1]}/", device_id=DEVICE,
                    backoff_max_s=0.1),
            threading.Event(), lambda: open_store(db, check=False), rand=lambda: 0.0,
        )  # fmt: skip
        for _ in range(3):
            sender.step()
        assert len(seen) == 3 and seen[0] == seen[1] == seen[2]
        assert pending(store) == 2 and store.get_state(NAME)["pending"]["last_time"] == int(T0)
        assert f"HTTP {status}" in sender.status.last_error
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_traccar_down_never_holds_another_backend_back_and_catches_up(db):
    """Each backend has its own cursor: json-gpsr delivers while nothing listens for Traccar."""
    from support import free_port

    from tracker.senders.gpsr import NAME as GPSR
    from tracker.senders.gpsr import GpsrSender
    from tracker.senders.gpsr import Settings as GpsrSettings
    from tracker.testing.gpsr import GpsrServer

    port = free_port()
    store = open_store(db)
    ride(store, 20)
    stop = threading.Event()
    gpsr = GpsrServer().start()
    token = gpsr.make_token("rider", "post", 0, 4_000_000_000).key
    senders = [
        GpsrSender(GpsrSettings(url=gpsr.url, interval_s=0.05), stop,
                   lambda: open_store(db, check=False), secret=lambda: token),
        make_sender(OsmAndServer(port=port), db, stop),  # its URL; nothing listens yet
    ]  # fmt: skip
    threads = [in_thread(s) for s in senders]
    traccar = None
    try:
        wait_for(lambda: store.pending() == {GPSR: 0, NAME: 20}
                 and senders[1].status.state == "retrying", timeout=30,
                 what="json-gpsr delivered, Traccar retrying with all of it")  # fmt: skip
        traccar = OsmAndServer(port=port, devices=[DEVICE]).start()
        wait_for(lambda: pending(store) == 0, timeout=30, what="Traccar caught up")
        assert seconds(traccar) == [int(T0) + i for i in range(20)]
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        gpsr.stop()
        if traccar is not None:
            traccar.stop()
        store.close()
