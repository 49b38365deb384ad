"""The Map My Tracks test server over real HTTP on 127.0.0.1, seen from a `requests` client."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import gpxpy
import gpxpy.gpx
import pytest
import requests

from tracker.testing.faults import ALL_KINDS, KINDS, Faults
from tracker.testing.mapmytracks import MapMyTracksServer, Readings

ROOT = Path(__file__).resolve().parents[1]
AUTH = ("rider", "secret")
T0 = 1_780_000_000


@pytest.fixture
def server() -> Iterator[MapMyTracksServer]:
    with MapMyTracksServer(users={"rider": "secret", "other": "pw2"}) as s:
        yield s


def post(server: MapMyTracksServer, auth=AUTH, timeout: float = 5.0, **data) -> ET.Element:
    """POST a form, check the reply is a 200 XML message, return its root."""
    r = requests.post(server.url, data=data, auth=auth, timeout=timeout)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/xml")
    assert r.text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<message>\n')
    root = ET.fromstring(r.content)
    assert root.tag == "message"
    return root


def pts(n: int, t0: int = T0, lat: float = 51.37, lon: float = 1.15) -> str:
    """`n` points as `lat lon alt time`, one second apart."""
    return " ".join(f"{lat + i * 1e-4} {lon + i * 1e-4} {10 + i * 0.5} {t0 + i}" for i in range(n))


def start(server: MapMyTracksServer, auth=AUTH, timeout: float = 5.0, **extra) -> int:
    data = dict(
        request="start_activity", title="Morning ride", privacy="public", activity="cycling",
        points=pts(2), source="tracker", version="0.1.0",
    )  # fmt: skip
    data.update(extra)
    root = post(server, auth=auth, timeout=timeout, **data)
    assert root.findtext("type") == "activity_started", ET.tostring(root)
    return int(root.findtext("activity_id"))


def error_reason(root: ET.Element) -> str:
    assert root.findtext("type") == "error", ET.tostring(root)
    reason = root.findtext("reason")
    assert reason
    return reason


def page(server: MapMyTracksServer, aid: int, from_time: int, key: str = "from_time"):
    root = post(server, request="get_activity", activity_id=str(aid), **{key: str(from_time)})
    text = (root.findtext("points") or "").split()
    points = [tuple(float(x) for x in block.split(",")) for block in text]
    return root.findtext("complete"), points


# -- the seven requests ---------------------------------------------------------------------


def test_get_time(server):
    before = int(time.time())
    root = post(server, request="get_time")
    assert root.findtext("type") == "time"
    assert before <= int(root.findtext("server_time")) <= time.time() + 1


def test_path_without_slash_and_unknown_request(server):
    r = requests.post(server.url.rstrip("/"), data={"request": "get_time"}, auth=AUTH, timeout=5)
    assert r.status_code == 200 and "<server_time>" in r.text
    assert "unknown request" in error_reason(post(server, request="get_everything"))
    assert "missing request" in error_reason(post(server))
    r = requests.post(server.url.replace("/api/", "/other"), data={}, auth=AUTH, timeout=5)
    assert r.status_code == 404


def test_start_activity_records_everything(server):
    aid = start(
        server, title="Ride to Whitstable", tags="training,whitstable", privacy="private",
        points="51.3704583333333 1.15737333333333 1.345 1198052842 51.3704586 1.1573741 1.345 "
        "1198052844", hr="80 1198052842 90 1198052848", cad="33 1198052842", pwr="110 1198052842",
        unique_token="serial-1",
    )  # fmt: skip
    a = server.activities[aid]
    assert a.user == "rider" and a.title == "Ride to Whitstable" and a.type == "cycling"
    assert a.privacy == "private" and a.tags == ["training", "whitstable"]
    assert a.points == [
        (1198052842, 51.3704583333333, 1.15737333333333, 1.345),
        (1198052844, 51.3704586, 1.1573741, 1.345),
    ]
    assert a.hr == [(1198052842, 80.0), (1198052848, 90.0)]
    assert a.cad == [(1198052842, 33.0)] and a.pwr == [(1198052842, 110.0)]
    assert a.live and a.token == "serial-1" and a.created_via == "start"
    assert (a.source, a.version) == ("tracker", "0.1.0")
    assert server.live_activity("rider") == aid
    assert server.count("start_activity", processed=True) == 1


def test_update_activity_appends(server):
    aid = start(server)
    root = post(server, request="update_activity", activity_id=str(aid), points=pts(3, T0 + 2),
                hr="80 1780000002 90 1780000004")  # fmt: skip
    assert root.findtext("type") == "activity_updated"
    a = server.activities[aid]
    assert [p[0] for p in a.points] == [T0 + i for i in range(5)]
    assert a.hr == [(T0 + 2, 80.0), (T0 + 4, 90.0)]
    assert server.duplicate_points(aid) == []
    post(server, request="update_activity", activity_id=str(aid), points=pts(3, T0 + 2))
    assert [p[0] for p in server.duplicate_points(aid)] == [T0 + 2, T0 + 3, T0 + 4]


def test_unique_token_returns_the_same_activity_and_adds_nothing(server):
    first = start(server, unique_token="abc-1")
    again = start(server, unique_token="abc-1", points=pts(5, T0 + 100), title="other")
    assert again == first
    assert len(server.activities) == 1
    assert len(server.activities[first].points) == 2
    assert server.activities[first].title == "Morning ride"
    # the token is per user, and a new token makes a new activity
    assert start(server, auth=("other", "pw2"), unique_token="abc-1") != first
    assert start(server, unique_token="abc-2") != first
    # a repeat after the activity was superseded/stopped still changes nothing
    assert start(server, unique_token="abc-1") == first
    assert not server.activities[first].live


def test_failed_start_does_not_use_the_token(server):
    error_reason(post(server, request="start_activity", title="x", privacy="public",
                      activity="curling", points="", source="s", version="1",
                      unique_token="tok"))  # fmt: skip
    assert server.activities == {}
    aid = start(server, unique_token="tok")
    assert server.activities[aid].token == "tok"


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"points": "51.1 1.1 3"}, "multiple of 4"),
        ({"points": "51.1 1.1 3 100 51.2"}, "multiple of 4"),
        ({"points": "51.1 1.1 3 1780000000.5"}, "whole number"),
        ({"points": "north 1.1 3 100"}, "not a number"),
        ({"points": "91 1.1 3 100"}, "latitude"),
        ({"points": "51 181 3 100"}, "longitude"),
        ({"points": "51 1 nan 100"}, "finite"),
        ({"activity": "curling"}, "activity type"),
        ({"privacy": "friends"}, "privacy"),
        ({"title": "x" * 101}, "title"),
        ({"tags": "ok," + "t" * 51}, "tag"),
        ({"hr": "80 1780000000 90"}, "odd number"),
        ({"cad": "fast 1780000000"}, "not a number"),
        ({"source": None}, "missing parameter"),
    ],
)
def test_start_activity_data_errors(server, change, reason):
    data = dict(
        request="start_activity", title="t", privacy="public", activity="running",
        points=pts(1), source="s", version="1",
    )  # fmt: skip
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    assert reason in error_reason(post(server, **data))
    assert server.activities == {}
    assert server.live_activity("rider") is None


def test_limits_are_inclusive(server):
    aid = start(server, title="x" * 100, tags="t" * 50, activity="stand up paddle boarding")
    assert len(server.activities[aid].title) == 100


def test_update_errors(server):
    mine = start(server)
    theirs = start(server, auth=("other", "pw2"))
    upd = dict(request="update_activity", points=pts(1, T0 + 10))
    assert "no such activity" in error_reason(post(server, activity_id="999999", **upd))
    assert "no such activity" in error_reason(post(server, activity_id=str(theirs), **upd))
    assert "bad activity_id" in error_reason(post(server, activity_id="x", **upd))
    assert "multiple of 4" in error_reason(
        post(server, request="update_activity", activity_id=str(mine), points="1 2 3")
    )
    post(server, request="stop_activity")
    assert "stopped" in error_reason(post(server, activity_id=str(mine), **upd))
    assert len(server.activities[mine].points) == 2
    assert len(server.activities[theirs].points) == 2


def test_stop_semantics(server):
    # Nothing live: answered as stopped, as the specification's example reads.
    assert post(server, request="stop_activity").findtext("type") == "activity_stopped"
    first = start(server)
    second = start(server)  # stops the first: recorded as superseded
    assert server.superseded == [(first, second)]
    assert server.activities[first].stopped_by == "superseded"
    assert not server.activities[first].live and server.activities[second].live
    other = start(server, auth=("other", "pw2"))
    root = post(server, request="stop_activity")
    assert root.findtext("type") == "activity_stopped"
    assert server.activities[second].stopped_by == "stop_activity"
    assert server.live_activity("rider") is None
    assert server.activities[other].live  # another user's live activity is untouched
    assert post(server, request="stop_activity").findtext("type") == "activity_stopped"


def test_the_older_stop_reading_answers_an_error_when_nothing_is_live():
    with MapMyTracksServer(readings=Readings(stop_when_idle="error")) as server:
        assert error_reason(post(server, request="stop_activity")) == "no live activity"


def test_activity_types_are_matched_case_insensitively(server):
    aid = start(server, activity="Cycling")
    assert server.activities[aid].type == "cycling"
    assert "unknown activity type" in error_reason(post(server, request="start_activity",
        title="t", privacy="private", activity="Unicycling", points="", source="s",
        version="1"))  # fmt: skip


def test_get_activities_pages_with_offset_when_configured():
    with MapMyTracksServer(readings=Readings(activities_page=2)) as server:
        ids = [start(server, points=pts(1, T0 + 10 * i)) for i in range(5)]
        got, offset = [], 0
        while True:
            root = post(server, request="get_activities", offset=str(offset))
            page = [int(a.findtext("id")) for a in root.find("activities")]
            if not page:
                break
            got += page
            offset += len(page)
        assert got == ids


def test_get_activity_pages_250_points(server):
    aid = start(server, points=pts(100))
    post(server, request="update_activity", activity_id=str(aid), points=pts(150, T0 + 100))
    complete, p1 = page(server, aid, 0)
    assert complete == "No" and len(p1) == 100
    assert p1[0] == (T0, 51.37, 1.15, 10.0)
    complete, p2 = page(server, aid, int(p1[-1][0]) + 1)
    assert complete == "No" and len(p2) == 100
    complete, p3 = page(server, aid, int(p2[-1][0]) + 1)
    assert complete == "No" and len(p3) == 50  # still live
    post(server, request="stop_activity")
    complete, p3 = page(server, aid, int(p2[-1][0]) + 1, key="start_from")
    assert complete == "Yes" and len(p3) == 50
    times = [int(p[0]) for p in p1 + p2 + p3]
    assert times == list(range(T0, T0 + 250))
    complete, p1 = page(server, aid, 0)
    assert complete == "No" and len(p1) == 100  # more points follow
    complete, tail = page(server, aid, T0 + 10_000)
    assert complete == "Yes" and tail == []


def test_get_activity_is_ordered_by_time_and_private_to_others(server):
    aid = start(server, points=pts(1, T0 + 5) + " " + pts(1, T0), privacy="private")
    _, points = page(server, aid, 0)
    assert [int(p[0]) for p in points] == [T0, T0 + 5]
    root = post(server, auth=("other", "pw2"), request="get_activity", activity_id=str(aid))
    assert "no such activity" in error_reason(root)


def test_get_activities(server):
    public = start(server, title="Public ride", points=pts(1, T0 + 50))
    private = start(server, title="Private & secret", privacy="private", points=pts(1, T0))
    root = post(server, request="get_activities", author="rider")
    assert root.findtext("author") == "rider"
    acts = list(root.find("activities"))
    assert [a.tag for a in acts] == ["activity1", "activity2"]
    assert [
        (int(a.findtext("id")), a.findtext("title"), int(a.findtext("date"))) for a in acts
    ] == [
        (private, "Private & secret", T0),
        (public, "Public ride", T0 + 50),
    ]
    root = post(server, auth=("other", "pw2"), request="get_activities", author="rider")
    assert [int(a.findtext("id")) for a in root.find("activities")] == [public]
    root = post(server, request="get_activities", author="nobody")
    assert list(root.find("activities")) == []


def make_gpx(n: int) -> str:
    gpx = gpxpy.gpx.GPX()
    track = gpxpy.gpx.GPXTrack(name="Saturday loop")
    seg = gpxpy.gpx.GPXTrackSegment()
    t = datetime.fromtimestamp(T0, UTC)
    for i in range(n):
        seg.points.append(gpxpy.gpx.GPXTrackPoint(
            51.0 + i * 1e-3, 1.0 + i * 1e-3, elevation=5.0 + i, time=t + timedelta(seconds=i)
        ))  # fmt: skip
    track.segments.append(seg)
    gpx.tracks.append(track)
    return gpx.to_xml()


def test_upload_activity(server):
    live = start(server)
    r = requests.post(
        server.url, auth=AUTH, timeout=5,
        data={"request": "upload_activity", "status": "private", "description": "My weekend run",
              "activity": "running"},
        files={"gpx_file": ("ride.gpx", make_gpx(120).encode(), "application/gpx+xml")},
    )  # fmt: skip
    assert r.status_code == 200
    root = ET.fromstring(r.content)
    assert root.findtext("type") == "success"
    aid = int(root.findtext("activity_id"))
    a = server.activities[aid]
    assert a.created_via == "upload" and not a.live and a.title == "My weekend run"
    assert a.privacy == "private" and a.type == "running"
    assert len(a.points) == 120 and a.points[0] == (T0, 51.0, 1.0, 5.0)
    assert server.live_activity("rider") == live  # an upload leaves the live activity alone
    complete, points = page(server, aid, T0 + 100)
    assert complete == "Yes" and len(points) == 20
    rec = server.requests[-2]
    assert rec.name == "upload_activity" and rec.params["description"] == "My weekend run"


def test_upload_activity_errors(server):
    base = {"request": "upload_activity", "status": "public", "activity": "running"}
    for gpx, reason in [("<not gpx", "not GPX"), (make_gpx(0), "no track points")]:
        r = requests.post(server.url, auth=AUTH, timeout=5, data=base,
                          files={"gpx_file": ("a.gpx", gpx.encode())})  # fmt: skip
        assert reason in error_reason(ET.fromstring(r.content))
    r = requests.post(server.url, auth=AUTH, timeout=5, data={**base, "status": "hidden"},
                      files={"gpx_file": ("a.gpx", make_gpx(2).encode())})  # fmt: skip
    assert "status" in error_reason(ET.fromstring(r.content))
    assert server.activities == {}


# -- authentication and recording ---------------------------------------------------------


@pytest.mark.parametrize("auth", [None, ("rider", "wrong"), ("nobody", "secret")])
def test_bad_credentials_get_401(server, auth):
    r = requests.post(server.url, data={"request": "stop_activity"}, auth=auth, timeout=5)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="Map My Tracks"'
    assert error_reason(ET.fromstring(r.content)) == "authentication failed"
    [rec] = server.requests
    assert rec.status == 401 and not rec.processed and rec.name == "stop_activity"


def test_recording_never_holds_the_password(server):
    start(server)
    requests.post(server.url, data={"request": "get_time"}, auth=("rider", "s3cr3t-wrong"),
                  timeout=5)  # fmt: skip
    post(server, request="get_time", password="secret")
    recorded = repr(server.requests)
    assert "secret" not in recorded and "s3cr3t" not in recorded
    assert [r.user for r in server.requests] == ["rider"] * 3
    assert all("password" not in r.params for r in server.requests)


# -- faults, seen from the client -----------------------------------------------------------


def test_fail_500(server):
    server.faults.set(fail_500=1.0)
    r = requests.post(server.url, data={"request": "get_time"}, auth=AUTH, timeout=5)
    assert r.status_code == 500
    [rec] = server.requests
    assert (rec.fault, rec.status, rec.processed) == ("fail_500", 500, False)


def test_reset_before_processing(server):
    server.faults.set(reset=1.0)
    with pytest.raises(requests.ConnectionError):
        start(server)
    assert server.activities == {}
    [rec] = server.requests
    assert (rec.fault, rec.status, rec.processed) == ("reset", None, False)


def test_reset_is_a_real_rst(server):
    server.faults.set(reset=1.0)
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(b"POST /api/ HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\nrequest=get_time")
        with pytest.raises(ConnectionResetError):
            s.recv(1024)


def test_dropped_reply_was_processed(server):
    server.faults.set(drop_reply=1.0, only={"start_activity"})
    with pytest.raises(requests.ConnectionError):
        start(server, unique_token="t1")
    [rec] = server.requests
    assert (rec.fault, rec.status, rec.processed) == ("drop_reply", None, True)
    [aid] = server.activities
    assert server.activities[aid].live
    server.faults.clear()
    assert start(server, unique_token="t1") == aid  # the retry is recognised


def test_slow_reply_times_out_but_was_processed(server):
    server.faults.set(slow=1.0, slow_s=2.0)
    t = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        requests.post(server.url, data={"request": "get_time"}, auth=AUTH, timeout=0.3)
    assert time.monotonic() - t < 1.5
    server.faults.set(slow_s=0.2)
    r = requests.post(server.url, data={"request": "get_time"}, auth=AUTH, timeout=5)
    assert r.status_code == 200 and "<server_time>" in r.text
    assert all(r.fault == "slow" and r.processed for r in server.requests)


def test_stop_ends_a_slow_reply_at_once():
    s = MapMyTracksServer(faults=Faults(slow=1.0, slow_s=60)).start()
    errors: list[Exception] = []

    def call():
        try:
            start(s, timeout=30)
        except requests.RequestException as e:
            errors.append(e)

    th = threading.Thread(target=call)
    th.start()
    deadline = time.monotonic() + 5
    while not s.activities:  # processed at once; the reply is what is held back
        assert time.monotonic() < deadline, "start_activity was not processed"
        time.sleep(0.02)
    t = time.monotonic()
    s.stop()
    assert time.monotonic() - t < 2.0
    th.join(5)
    assert errors and isinstance(errors[0], requests.ConnectionError)
    [rec] = s.requests
    assert rec.fault == "slow" and rec.status is None and rec.processed


def test_html_captive_portal(server):
    server.faults.set(html=1.0)
    r = requests.post(server.url, data={"request": "get_time"}, auth=AUTH, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "<message>" not in r.text and "<html>" in r.text
    assert not server.requests[0].processed


def test_retry_after(server):
    server.faults.set(retry_after=1.0, retry_after_s=7)
    codes = set()
    for _ in range(12):
        r = requests.post(server.url, data={"request": "get_time"}, auth=AUTH, timeout=5)
        assert r.headers["Retry-After"] == "7"
        codes.add(r.status_code)
    assert codes == {429, 503}
    assert server.count(processed=True) == 0


def test_truncated_reply(server):
    server.faults.set(truncate=1.0)
    r = requests.post(server.url, data={"request": "stop_activity"}, auth=AUTH, timeout=5)
    assert r.status_code == 200
    with pytest.raises(ET.ParseError):
        ET.fromstring(r.content)
    assert server.requests[0].processed and server.requests[0].fault == "truncate"


def test_only_restricts_faults(server):
    server.faults.set(fail_500=1.0, only={"update_activity"})
    aid = start(server)
    r = requests.post(
        server.url,
        auth=AUTH,
        timeout=5,
        data={"request": "update_activity", "activity_id": aid, "points": pts(1)},
    )
    assert r.status_code == 500
    assert [r.fault for r in server.requests] == [None, "fail_500"]


def test_offline_switch_resets_everything_then_recovers(server):
    server.faults.set(only={"nothing"})
    server.faults.offline = True
    for _ in range(3):
        with pytest.raises(requests.ConnectionError):
            post(server, request="get_time")
    server.faults.offline = False
    assert post(server, request="get_time").findtext("type") == "time"
    assert [r.fault for r in server.requests] == ["offline"] * 3 + [None]


def test_fault_rates_are_seeded_and_validated():
    def draws(seed):
        f = Faults(fail_500=0.2, reset=0.2, slow=0.2, seed=seed)
        return [f.choose("x") for _ in range(200)]

    a = draws(1)
    assert a == draws(1) and a != draws(2)
    for kind in ("fail_500", "reset", "slow"):
        assert 20 <= a.count(kind) <= 60
    assert 60 <= a.count(None) <= 100
    with pytest.raises(ValueError):
        Faults(reset=1.5)
    with pytest.raises(ValueError):
        Faults().set(explode=0.5)
    assert ALL_KINDS == ("reset", "fail_500", "retry_after", "html", "drop_reply", "truncate",
                         "slow", "garbage", "huge", "trickle")  # fmt: skip (new kinds go last)
    assert ALL_KINDS[: len(KINDS)] == KINDS


def test_server_seed_makes_a_faulty_run_repeatable():
    def run(seed):
        with MapMyTracksServer(faults=Faults(fail_500=0.5), seed=seed) as s:
            return [
                requests.post(s.url, data={"request": "get_time"}, auth=AUTH, timeout=5).status_code
                for _ in range(20)
            ]

    assert run(3) == run(3)
    assert set(run(3)) == {200, 500}


# -- restart on the same port ---------------------------------------------------------------


def test_unreachable_then_back_on_the_same_port_with_the_same_state():
    first = MapMyTracksServer().start()
    session = requests.Session()  # a kept-alive connection must not reach the stopped server
    r = session.post(first.url, data={"request": "get_time"}, auth=AUTH, timeout=5)
    assert r.status_code == 200
    aid = start(first)
    port, url = first.port, first.url
    first.stop()
    with pytest.raises(requests.ConnectionError):
        session.post(url, data={"request": "get_time"}, auth=AUTH, timeout=2)
    second = MapMyTracksServer(port=port, state=first.state).start()
    try:
        assert second.url == url
        root = post(second, request="update_activity", activity_id=str(aid), points=pts(1, T0 + 9))
        assert root.findtext("type") == "activity_updated"
        assert start(second) == aid + 1
        assert len(second.activities[aid].points) == 3
        assert [r.name for r in second.requests][-2:] == ["update_activity", "start_activity"]
    finally:
        second.stop()
    first.start()  # the same object comes back on its port too
    try:
        assert first.port == port and post(first, request="get_time").findtext("type") == "time"
    finally:
        first.stop()
    first.stop()  # idempotent


# -- command line ---------------------------------------------------------------------------


def test_cli_serves_get_time():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker.testing.mapmytracks", "--port", "0",
         "--user", "ann:pw", "--fail-500", "0", "--seed", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/api/)", line)
        assert m, line + proc.stderr.read() if proc.poll() is not None else line
        r = requests.post(m.group(1), data={"request": "get_time"}, auth=("ann", "pw"), timeout=5)
        assert r.status_code == 200
        assert ET.fromstring(r.content).findtext("type") == "time"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "get_time user=ann status=200" in err


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_kept_alive_session_recovers_after_each_fault(server, kind):
    server.faults.set(**{kind: 1.0}, slow_s=0.5)
    session = requests.Session()
    session.auth = AUTH
    with contextlib.suppress(requests.RequestException):
        session.post(server.url, data={"request": "get_time"}, timeout=0.2)
    server.faults.clear()
    for _ in range(2):
        r = session.post(server.url, data={"request": "get_time"}, timeout=5)
        assert r.status_code == 200 and "<server_time>" in r.text
    assert [r.fault for r in server.requests] == [kind, None, None]
