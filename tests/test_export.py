"""GPX 1.1 export: tracks per activity, receiver-precision times, Garmin extensions; via the CLI."""

from __future__ import annotations

import io
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import gpxpy
import pytest
from support import ROOT

from tracker.export import NS, write_gpx
from tracker.fix import Fix, Sample
from tracker.store import open_store

T = datetime(2026, 6, 1, 8, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "tracker.db")
    first = s.start_activity("Morning ride", "cycling", "private", ("a",), T)
    s.add_fixes(
        first.id,
        [Fix(time=T + i / 10, lat=47.0 + i * 1e-5, lon=7.6, alt=500.0 + i, hdop=0.9, sats=9)
         for i in range(30)],
    )  # fmt: skip
    s.add_samples(
        [Sample(T + i / 4, "hr", 120 + i) for i in range(12)]
        + [Sample(T + i, "cad", 85) for i in range(3)]
        + [Sample(T + 0.2, "pwr", 210)]
    )
    s.end_activity(first.id, T + 2.9, "requested")
    second = s.start_activity("Evening sail", "sailing", "public", (), T + 3600)
    s.add_fixes(second.id, [Fix(time=T + 3600 + i, lat=46.5, lon=6.6) for i in range(5)])
    s.add_fixes(None, [Fix(time=T + 7200, lat=1.0, lon=1.0)])  # outside any activity
    yield s
    s.close()


def export(store, ids=None) -> str:
    out = io.StringIO()
    write_gpx(store, out, ids)
    return out.getvalue()


def test_one_track_per_activity_with_every_point(store):
    gpx = gpxpy.parse(export(store))
    assert gpx.version == "1.1"
    assert [t.name for t in gpx.tracks] == ["Morning ride", "Evening sail"]
    assert [t.type for t in gpx.tracks] == ["cycling", "sailing"]
    points = gpx.tracks[0].segments[0].points
    assert len(points) == 30
    assert len(gpx.tracks[1].segments[0].points) == 5
    assert points[0].elevation == 500.0 and points[29].elevation == 529.0
    assert points[3].latitude == pytest.approx(47.00003)
    assert points[0].horizontal_dilution == 0.9 and points[0].satellites == 9


def test_times_keep_the_receivers_fraction(store):
    text = export(store)
    assert "<time>2026-06-01T08:00:00.300000Z</time>" in text
    points = gpxpy.parse(text).tracks[0].segments[0].points
    assert [p.time.timestamp() for p in points] == pytest.approx([T + i / 10 for i in range(30)])


def test_sensor_values_as_garmin_extensions(store):
    root = ET.fromstring(export(store, [1]).encode())
    gpx = "{http://www.topografix.com/GPX/1/1}"
    points = root.findall(f".//{gpx}trkpt")
    tpx = f"{{{NS['gpxtpx']}}}"
    pwr = f"{{{NS['pwr']}}}"

    def value(point, path):
        el = point.find(f"{gpx}extensions/{path}")
        return None if el is None else int(el.text)

    # hr every 0.25 s from T: the point at T+0.5 s takes the sample at T+0.5 s (122)
    assert value(points[5], f"{tpx}TrackPointExtension/{tpx}hr") == 122
    assert value(points[0], f"{tpx}TrackPointExtension/{tpx}cad") == 85
    assert value(points[2], f"{pwr}PowerInWatts") == 210
    # the sample window is 1.5 s: nothing after T+2.75+1.5 would get hr; all 30 points have it
    assert all(value(p, f"{tpx}TrackPointExtension/{tpx}hr") is not None for p in points)
    # hr comes before cad, as the TrackPointExtension schema orders them
    ext = points[0].find(f"{gpx}extensions/{tpx}TrackPointExtension")
    assert [c.tag for c in ext] == [f"{tpx}hr", f"{tpx}cad"]


def test_points_without_samples_have_no_extensions(store):
    text = export(store, [2])
    assert "extensions" not in text
    assert len(gpxpy.parse(text).tracks) == 1


def test_an_unknown_activity_is_an_error(store):
    with pytest.raises(KeyError, match="no activity with id 9"):
        export(store, [9])


def test_cli_export_writes_the_file_and_reports(store, tmp_path):
    cfg = tmp_path / "tracker.toml"
    cfg.write_text(f'[storage]\npath = "{store.path}"\n')
    out = tmp_path / "ride.gpx"

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "tracker", "export", "-c", str(cfg), *args],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip

    done = cli("--gpx", str(out))
    assert done.returncode == 0, done.stderr
    assert "wrote 2 activities" in done.stdout
    assert len(gpxpy.parse(out.read_text()).tracks) == 2
    done = cli("--gpx", str(out), "--activity", "2")
    assert done.returncode == 0 and "wrote 1 activity " in done.stdout
    bad = cli("--gpx", str(out), "--activity", "7")
    assert bad.returncode == 2 and "no activity with id 7" in bad.stderr
    assert len(gpxpy.parse(out.read_text()).tracks) == 1, "a failed export leaves the old file"
    assert not list(tmp_path.glob("*.part"))
