"""The status page (tracker/web.py): its JSON against the store, its token, its downloads, and
the page itself rendered by a real browser (Debian's chromium, headless) against a real
`tracker run` fed through a pty."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from support import T0, epochs, free_port, stored_fixes, wait_for

from tracker import status, web
from tracker.config import Config, StorageConfig, WebConfig, parse
from tracker.fix import Fix, Sample
from tracker.store import open_store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "tracker.db"
    s = open_store(path)
    a = s.start_activity("Morning loop", "cycling", "private", (), T0.timestamp())
    s.add_fixes(a.id, [Fix(T0.timestamp() + i, 48.0 + i * 4.5e-5, 11.0, speed=5.0, hdop=0.9)
                       for i in range(3000)])  # fmt: skip
    s.add_samples([Sample(T0.timestamp() + i, "hr", 130) for i in range(0, 3000, 10)])
    s.close()
    return path


def serve(db: Path, token: str = "") -> tuple[web.StatusServer, threading.Event]:
    cfg = Config(storage=StorageConfig(path=db), web=WebConfig(listen="127.0.0.1:0"))
    server = web.StatusServer(cfg, token)
    stop = threading.Event()
    threading.Thread(target=server.run, args=(stop,), daemon=True).start()
    return server, stop


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):  # the test looks at the 303 itself
        return None


def test_the_json_is_what_status_and_activities_read(db):
    server, stop = serve(db)
    try:
        code, headers, body = fetch(server.url + "api/status")
        assert code == 200 and headers["Content-Type"] == "application/json"
        got = json.loads(body)
        s = open_store(db, readonly=True)
        try:
            want = json.loads(json.dumps(status.collect(s, server.cfg)))
        finally:
            s.close()
        assert {k: v for k, v in got.items() if k != "web"} == want
        assert got["instruments"] == {"activity": 1, "readings": []}  # a bike has none
        assert got["inputs"] == [] and got["share"] == {}  # nor inputs, nor a share
        (act,) = json.loads(fetch(server.url + "api/activities")[2])
        assert act["points"] == 3000 and act["distance_m"] == pytest.approx(2999 * 5.0, 0.01)
        track = json.loads(fetch(server.url + "api/track")[2])
        assert track["activity"] == 1 and len(track["points"]) <= web.TRACK_POINTS
        assert track["points"][0] == [48.0, 11.0]
        assert track["points"][-1] == [round(48.0 + 2999 * 4.5e-5, 6), 11.0]  # where it is now
        assert fetch(server.url + "nope")[0] == 404
    finally:
        stop.set()


def test_downloads(db):
    server, stop = serve(db)
    try:
        code, headers, body = fetch(server.url + "export/1.csv")
        assert code == 200 and "activity-1.csv" in headers["Content-Disposition"]
        assert body.decode().count("\n") == 3001  # header and one row a fix
        assert json.loads(fetch(server.url + "export/1.geojson")[2])["type"] == "FeatureCollection"
        assert b"<trkpt" in fetch(server.url + "export/1.gpx")[2]
        assert fetch(server.url + "export/9.gpx")[0] == 404
    finally:
        stop.set()


def test_a_token_is_needed_for_every_request_when_set(db):
    server, stop = serve(db, token="s3cret-page")
    try:
        assert fetch(server.url + "api/status")[0] == 401
        assert fetch(server.url, {"Authorization": "Bearer wrong"})[0] == 401
        assert fetch(server.url + "api/status", {"Authorization": "Bearer s3cret-page"})[0] == 200
        code, headers, _ = fetch(server.url + "?token=s3cret-page")
        assert code == 303 and headers["Location"] == "/"  # the token leaves the address bar
        cookie = headers["Set-Cookie"].split(";")[0]
        assert "HttpOnly" in headers["Set-Cookie"]
        assert fetch(server.url + "api/activities", {"Cookie": cookie})[0] == 200
    finally:
        stop.set()


def test_any_address_but_the_loopback_needs_a_token():
    with pytest.raises(Exception, match="token: missing"):
        parse({"web": {"listen": "0.0.0.0:8080"}})
    assert parse({"web": {"listen": "0.0.0.0:8080", "token": "x"}}).web.token == "x"
    assert parse({"web": {}}).web.listen == "127.0.0.1:8080"
    assert parse({}).web is None  # no section, no page


CHROMIUM = shutil.which("chromium")
BROWSER = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           "--virtual-time-budget=8000"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (scripts/test installs it)")
def test_the_page_in_a_real_browser_shows_the_store(daemon, gps, tmp_path):
    port = free_port()
    # A json-gpsr server that cannot be reached: the ride waits for it, 80 s behind.
    nowhere = f'[gpsr]\nurl = "http://127.0.0.1:{free_port()}/"\ntoken = "t"\n'
    d = daemon(f'[web]\nlisten = "127.0.0.1:{port}"\n\n' + nowhere).start()
    d.wait_gps_open()
    ride = epochs(400, rate_hz=5.0)
    gps.write(b"$GPRMC,bad*00\r\n")  # one refused sentence: the page shows the reason
    for e in ride:
        gps.write(e.data)
    wait_for(lambda: d.db.exists() and len(stored_fixes(d.db)) >= 400, what="the ride stored")
    wait_for(lambda: "status page at" in d.log_text(), what="the page started")
    url = f"http://127.0.0.1:{port}/"
    dom = subprocess.run([CHROMIUM, *BROWSER, f"--user-data-dir={tmp_path / 'profile'}",
                          "--dump-dom", url], capture_output=True, text=True,
                         timeout=90).stdout  # fmt: skip
    assert 'data-loaded="yes"' in dom, dom[-2000:]

    def shown(element: str) -> str:
        m = re.search(rf'id="{element}"[^>]*>([^<]*)<', dom)
        assert m, element
        return m.group(1)

    fixes = stored_fixes(d.db)
    last = fixes[-1]
    assert int(shown("fixes")) == len(fixes)
    assert shown("lat") == f"{last.lat:.6f}" and shown("lon") == f"{last.lon:.6f}"
    assert shown("act-title") == "Cycling 2026-06-01 08:00"
    assert '<div id="instruments-box" hidden="">' in dom  # a bike: no instruments section
    assert '<div id="inputs-box" hidden="">' in dom and '<div id="share-box" hidden="">' in dom
    track = json.loads(urllib.request.urlopen(url + "api/track", timeout=10).read())
    path = re.search(r'<path id="track" d="([^"]*)"[^>]*data-points="(\d+)"', dom)
    assert path, "the SVG track is drawn"
    assert int(path.group(2)) == len(track["points"]) > 0
    assert path.group(1).count("L") == len(track["points"]) - 1
    rows = re.findall(r'<tr data-id="(\d+)">', dom)
    assert rows == [str(a) for a in sorted({f.activity_id for f in fixes if f.activity_id})]
    # What is drawn says what it is: the ride under way, marked where it began and where the
    # rider is, with a scale; the storage line hidden while it works.
    assert shown("track-label") == "current ride: Cycling 2026-06-01 08:00"
    ends = re.findall(r'<circle id="track-(start|end)" r="6" cx="([\d.]+)" cy="([\d.]+)"', dom)
    drawn = re.findall(r"[ML]([\d.]+) ([\d.]+)", path.group(1))
    assert ends == [("start", *drawn[0]), ("end", *drawn[-1])], (ends, drawn[:1], drawn[-1:])
    scale = re.search(r'<g id="scale" data-metres="(\d+)">', dom)
    assert scale and re.search(r'id="scale-text"[^>]*>(\d+ k?m)<', dom)
    assert int(scale.group(1)) in {f * 10**e for f in (1, 2, 5) for e in range(6)}
    assert '<div id="storage" class="bad" hidden=""' in dom
    # The backend's row says in words how far its server is behind.
    row = re.search(r'<tr data-backend="gpsr">(.*?)</tr>', dom)
    assert row and re.search(r'class="delivery">catching up \(1 min behind\)<', row.group(1))
    reasons = d.status()["rejected"]["by_reason"]  # what `tracker status` reads and prints
    assert shown("rejected") == ", ".join(
        f"{k.replace('_', ' ')} {n}" for k, n in sorted(reasons.items()) if n
    ) != ""
    status_code, headers, body = fetch(url + "favicon.ico")
    assert status_code == 200 and headers["Content-Type"] == "image/svg+xml" and b"<svg" in body
    assert '<link rel="icon" href="/favicon.svg"' in dom

    # After the ride: the last ride, labelled with when it ended.
    assert d.cli("activity", "stop").returncode == 0
    wait_for(lambda: all(a["end"] for a in json.loads(
        urllib.request.urlopen(url + "api/activities", timeout=10).read())), what="ride ended")
    dom = subprocess.run([CHROMIUM, *BROWSER, f"--user-data-dir={tmp_path / 'profile'}",
                          "--dump-dom", url], capture_output=True, text=True,
                         timeout=90).stdout  # fmt: skip
    assert 'data-loaded="yes"' in dom, dom[-2000:]
    assert re.fullmatch(r"last ride, ended \d\d:\d\d: Cycling 2026-06-01 08:00",
                        shown("track-label")), shown("track-label")
    assert d.terminate() == 0


@pytest.fixture
def boat_db(db: Path) -> Path:
    """The fixture's activity with a depth sounder and a wind instrument on board."""
    s = open_store(db)
    s.add_samples([Sample(T0.timestamp() + i, "depth", 4.0 + i / 1000, "nmea0")
                   for i in range(0, 3000, 2)]
                  + [Sample(T0.timestamp() + 2990, "wind_speed_app", 12.6 * 1852 / 3600),
                     Sample(T0.timestamp() + 2991, "wind_angle_app", 45.0)])  # fmt: skip
    s.close()
    return db


def test_api_status_has_the_latest_instrument_readings(boat_db):
    server, stop = serve(boat_db)
    try:
        got = json.loads(fetch(server.url + "api/status")[2])["instruments"]
        assert got["activity"] == 1
        assert [(r["kind"], r["value"], r["text"]) for r in got["readings"]] == [
            ("depth", 6.998, "7.0 m"), ("wind_angle_app", 45.0, "45°"),
            ("wind_speed_app", 6.482, "12.6 kn"),
        ]  # fmt: skip
        assert got["readings"][0]["time"] == "2026-06-01T08:49:58Z"
        (act,) = json.loads(fetch(server.url + "api/activities")[2])
        assert act["instruments"]["depth"] == 6.998
    finally:
        stop.set()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (scripts/test installs it)")
def test_the_page_in_a_real_browser_shows_the_instruments(boat_db, tmp_path):
    server, stop = serve(boat_db)
    try:
        dom = subprocess.run([CHROMIUM, *BROWSER, f"--user-data-dir={tmp_path / 'profile'}",
                              "--dump-dom", server.url], capture_output=True, text=True,
                             timeout=90).stdout  # fmt: skip
    finally:
        stop.set()
    assert 'data-loaded="yes"' in dom, dom[-2000:]
    assert re.search(r'<div id="instruments-box">', dom), "shown: the activity has readings"
    boxes = re.findall(r'data-kind="(\w+)"[^>]*><div class="label">([^<]*)</div>'
                       r'<div class="value">([^<]*)</div>', dom)  # fmt: skip
    assert boxes == [("depth", "depth", "7.0 m"), ("wind_angle_app", "apparent wind angle", "45°"),
                     ("wind_speed_app", "apparent wind", "12.6 kn")]  # fmt: skip


def test_replace_keeps_web_optional():
    cfg = replace(Config(), web=None)
    assert web.start(cfg, threading.Event()) is None


def test_without_a_web_section_there_is_no_page_and_no_token():
    """A server built without [web] says so in one line, and such a config has no token (both
    were an AttributeError on None: mypy found them when the page was first type-checked)."""
    cfg = replace(Config(), web=None)
    with pytest.raises(ValueError, match=r"needs a \[web\] section"):
        web.StatusServer(cfg)
    assert web.web_token(cfg) == ""


def test_after_the_ride_the_page_shows_the_newest_activitys_readings(boat_db):
    """`tracker status` shows the current activity's readings only; the page, looked at
    after the ride, the newest activity's."""
    s = open_store(boat_db)
    s.end_activity(1, T0.timestamp() + 3000, "manual")
    s.close()
    server, stop = serve(boat_db)
    try:
        got = json.loads(fetch(server.url + "api/status")[2])
    finally:
        stop.set()
    assert got["activity"] is None
    assert got["instruments"]["activity"] == 1 and len(got["instruments"]["readings"]) == 3


def with_inputs_and_share(db: Path) -> None:
    """The runtime row of a daemon reading a multiplexer and a lost sounder, and sharing."""
    from tracker.runtime import DAEMON_KEY, DaemonStatus, InputStatus, ShareStatus

    s = open_store(db)
    row = DaemonStatus(
        pid=1, running=False,
        inputs=[InputStatus(name="mux", url="tcp://192.168.1.10:10110", state="open",
                            sentences=1200, readings=800, last_seen=1780300800.0).to_json(),
                InputStatus(name="sounder", url="/dev/ttyUSB1", state="lost",
                            error="No such file or directory").to_json()],
        share=ShareStatus(listen="0.0.0.0:10110", clients=2, dropped_bytes=4096),
    )  # fmt: skip
    s.put_runtime(DAEMON_KEY, row.to_json())
    s.close()


def test_api_status_has_the_inputs_and_the_share(boat_db):
    with_inputs_and_share(boat_db)
    server, stop = serve(boat_db)
    try:
        got = json.loads(fetch(server.url + "api/status")[2])
    finally:
        stop.set()
    assert [(i["name"], i["state"], i["sentences"], i["last_seen"]) for i in got["inputs"]] == [
        ("mux", "open", 1200, "2026-06-01T08:00:00.000Z"), ("sounder", "lost", 0, None),
    ]  # fmt: skip
    assert (got["share"]["listen"], got["share"]["clients"]) == ("0.0.0.0:10110", 2)
    assert got["share"]["dropped_bytes"] == 4096
    # The page reads those fields, and stays one small file with nothing fetched from outside.
    html = web.page().decode()
    assert 'id="inputs"' in html and 'id="share-listen"' in html
    assert len(html) < 16_000 and not re.search(r'(src|href)="https?:', html)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (scripts/test installs it)")
def test_the_page_in_a_real_browser_shows_the_inputs_and_the_share(boat_db, tmp_path):
    with_inputs_and_share(boat_db)
    server, stop = serve(boat_db)
    try:
        dom = subprocess.run([CHROMIUM, *BROWSER, f"--user-data-dir={tmp_path / 'profile'}",
                              "--dump-dom", server.url], capture_output=True, text=True,
                             timeout=90).stdout  # fmt: skip
    finally:
        stop.set()
    assert 'data-loaded="yes"' in dom, dom[-2000:]
    assert '<div id="inputs-box">' in dom and '<div id="share-box">' in dom, "both shown"
    rows = re.findall(r'<tr data-input="(\w+)"><td[^>]*>([^<]*)</td><td class="(\w+)">([^<]*)'
                      r'</td><td class="n">(\d+)</td><td>([^<]*)</td></tr>', dom)  # fmt: skip
    assert rows == [
        ("mux", "mux", "ok", "open", "1200", "2026-06-01 08:00:00.000"),
        ("sounder", "sounder", "bad", "lost (No such file or directory)", "0", "nothing yet"),
    ]  # fmt: skip
    for element, text in (("share-listen", "tcp 0.0.0.0:10110"), ("share-clients", "2"),
                          ("share-dropped", "4096 bytes")):  # fmt: skip
        assert re.search(rf'id="{element}"[^>]*>{re.escape(text)}<', dom), element


def test_a_database_that_cannot_be_opened_is_shown_not_a_failed_page(tmp_path):
    """The page says what state the storage is in even when the database cannot be opened for
    reading (tracker status does the same): its storage line, not an HTTP error."""
    bad = tmp_path / "tracker.db"
    bad.write_bytes(b"this is no database" * 100)
    server, stop = serve(bad)
    try:
        code, _, body = fetch(server.url + "api/status")
        assert code == 200, body
        report = json.loads(body, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
        assert report["storage"]["state"] in ("error", "corrupt")
        assert str(bad) in report["storage"]["storage_error"]
        if CHROMIUM is not None:
            dom = subprocess.run([CHROMIUM, *BROWSER, f"--user-data-dir={tmp_path / 'p'}",
                                  "--dump-dom", server.url], capture_output=True, text=True,
                                 timeout=90).stdout  # fmt: skip
            line = re.search(r'<div id="storage" class="bad" data-state="(\w+)">([^<]*)<', dom)
            assert line and line.group(2).startswith("storage " + line.group(1)), dom[-1500:]
    finally:
        stop.set()
