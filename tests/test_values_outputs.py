"""No output holds a non-finite number, and a fix a server refuses is quarantined alone.

Values stored by an older release that did not check them (an `inf` altitude, speed or HDOP in
a database in the field) are written into a real SQLite store here, then read back through
every output: the exports, `tracker status --json`, the status page's JSON API, and the
request bodies of the senders against their real test servers.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from support import drive, free_port
from test_sender_mapmytracks import make_sender, pending, remote_activities

from tracker.config import load
from tracker.export import write_csv, write_geojson, write_gpx
from tracker.fix import Fix, Sample
from tracker.senders import gpsr, mqtt, traccar
from tracker.senders.mapmytracks import NAME, encode_points
from tracker.store import Store, open_store
from tracker.testing.faults import Faults
from tracker.testing.mapmytracks import MapMyTracksServer

T0 = 1_780_000_000.0
INF = math.inf


def strict(text: str | bytes) -> object:
    """json.loads that refuses NaN and Infinity, as a browser's JSON.parse does."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def old_release_ride(store: Store) -> int:
    """An ended activity as an older release could have stored it: impossible values in it."""
    a = store.start_activity("Old ride", "cycling", "private", (), T0)
    fixes = [Fix(T0 + i, 51.0 + i * 1e-5, 1.0, 10.0, 5.0, 90.0, 1, 8, 0.9, 1.2, 1.5)
             for i in range(10)]  # fmt: skip
    fixes[3] = Fix(T0 + 3, 51.0, 1.0, INF, INF, -INF, 1, 8, INF, INF, INF, INF, 2.0, INF)
    fixes[6] = Fix(T0 + 6, 51.0, 1.0, 1e300, 1.0, 90.0, 1, 8, 0.9)  # finite: kept as is
    store.add_fixes(a.id, fixes)
    store.add_samples([Sample(T0 + 3, "hr", INF), Sample(T0 + 4, "hr", 120.0)])
    store.end_activity(a.id, T0 + 9, "test")
    return a.id


def test_sqlite_keeps_inf_so_outputs_must_cope(store: Store) -> None:
    old_release_ride(store)
    [bad] = [f for f in store.iter_fixes(1) if f.time == T0 + 3]
    assert bad.alt == INF and bad.speed == INF  # the hazard is real, not hypothetical


def test_exports_hold_no_nonfinite_number(store: Store) -> None:
    aid = old_release_ride(store)
    gpx, csv_out, geo = io.StringIO(), io.StringIO(), io.StringIO()
    write_gpx(store, gpx, [aid])
    write_csv(store, csv_out, [aid])
    write_geojson(store, geo, [aid])
    for text in (gpx.getvalue(), csv_out.getvalue()):
        assert "inf" not in text.lower() and "nan" not in text.lower()
    doc = strict(geo.getvalue())
    feature = doc["features"][0]
    assert len(feature["geometry"]["coordinates"]) == 10
    assert feature["geometry"]["coordinates"][3] == [1.0, 51.0]  # no altitude: [lon, lat]
    assert feature["properties"]["hr"][4] == 120  # the `inf` beside it is left out
    assert "<ele>inf" not in gpx.getvalue() and gpx.getvalue().count("<trkpt") == 10


def test_sender_bodies_hold_no_nonfinite_number(store: Store) -> None:
    old_release_ride(store)
    fixes = list(store.iter_fixes(1))
    assert "inf" not in encode_points(fixes).lower()
    body = gpsr.encode_fixes(gpsr.encode_batch(fixes).objects)
    strict(body)
    for f in fixes:
        strict(mqtt.dumps(mqtt.location(f, "tk")))
        params = traccar.position_params(f, "unit")
        assert not any(v.lower() in ("inf", "-inf", "nan") or "inf" in v for v in params.values())


def test_mapmytracks_delivers_the_old_inf_altitude_as_unknown(server, store: Store, db) -> None:
    old_release_ride(store)
    sender = make_sender(server, db, offline_upload="off")
    drive(sender, lambda: pending(store) == 0 and not store.get_state(NAME).get("activities"))
    [remote] = remote_activities(server)
    assert len(remote.points) == 10 and store.quarantined().get(NAME, 0) == 0
    assert all(math.isfinite(p[3]) for p in remote.points)


@pytest.fixture
def server():
    srv = MapMyTracksServer(users={"rider": "secret"}, faults=Faults(seed=1)).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("where", ["start", "update"])
def test_mapmytracks_quarantines_the_refused_fix_alone(server, store: Store, db, where) -> None:
    """One point the server refuses (a latitude out of range, from an old database) among 28:
    the batch is narrowed to it, it alone is quarantined, the 27 others arrive once."""
    a = store.start_activity("Ride", "cycling", "private", (), T0)
    sender = make_sender(server, db, batch_max_points=50, offline_upload="off")
    if where == "update":
        store.add_fixes(a.id, [Fix(T0 - 1, 51.0, 1.0, 5.0)])
        drive(sender, lambda: pending(store) == 0)
    fixes = [Fix(T0 + i, 51.0 + i * 1e-5, 1.0, 5.0) for i in range(28)]
    fixes[17] = Fix(T0 + 17, 95.0, 1.0, 5.0)
    store.add_fixes(a.id, fixes)
    store.end_activity(a.id, T0 + 27, "test")
    drive(sender, lambda: pending(store) == 0 and not store.get_state(NAME).get("activities"))
    assert store.quarantined()[NAME] == 1
    [remote] = remote_activities(server)
    times = sorted(p[0] for p in remote.points)
    want = [int(T0) + i for i in range(28) if i != 17]
    assert times == ([int(T0) - 1] if where == "update" else []) + want  # each once
    status, _ = store.get_runtime(f"backend:{NAME}")
    assert "latitude" in status["last_rejected"]


# -- tracker status --json and the page's API on an old release's database ----------------------


def config_for(tmp_path: Path, db: Path, web_port: int | None = None) -> Path:
    path = tmp_path / "tracker.toml"
    text = f'[storage]\npath = "{db}"\n'
    if web_port is not None:
        text += f'[web]\nlisten = "127.0.0.1:{web_port}"\n'
    path.write_text(text)
    return path


def test_status_and_activities_json_are_strict(tmp_path: Path, db: Path) -> None:
    store = open_store(db)
    old_release_ride(store)
    a = store.start_activity("Now", "cycling", "private", (), T0 + 100)
    store.add_fixes(a.id, [Fix(T0 + 100, 51.0, 1.0, INF, INF, None, 1, 8, INF)])
    store.close()
    cfg = config_for(tmp_path, db)
    for cmd in (["status", "--json"], ["activities", "--json"]):
        out = subprocess.run([sys.executable, "-m", "tracker", *cmd, "-c", str(cfg)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stderr
        doc = strict(out.stdout)
        if cmd[0] == "status":
            assert doc["last_fix"]["alt"] is None and doc["last_fix"]["speed"] is None


def test_the_pages_json_api_is_strict(tmp_path: Path, db: Path) -> None:
    from tracker import web

    store = open_store(db)
    aid = old_release_ride(store)
    store.add_fixes(None, [Fix(T0 + 50, 51.0, 1.0, INF, INF, None, 1, 8, INF)])
    store.close()
    port = free_port()
    cfg = load(config_for(tmp_path, db, port))
    stop = threading.Event()
    server = web.start(cfg, stop)
    assert server
    try:
        base = f"http://127.0.0.1:{port}"
        for path in ("/api/status", "/api/activities", f"/api/track?activity={aid}"):
            with urllib.request.urlopen(base + path, timeout=10) as reply:
                doc = strict(reply.read())
            if path == "/api/status":
                assert doc["last_fix"]["alt"] is None and doc["last_fix"]["speed"] is None
        with urllib.request.urlopen(f"{base}/export/{aid}.geojson", timeout=10) as reply:
            strict(reply.read())
    finally:
        stop.set()
