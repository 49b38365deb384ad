"""Export: GPX 1.1 (tracks per activity, receiver-precision times, Garmin extensions), CSV and
GeoJSON; through the CLI: selection, stdout, a closed pipe, errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import gpxpy
import pytest
from support import ROOT

from tracker.cli import main
from tracker.export import (
    CSV_COLUMNS,
    INSTRUMENTS_NS,
    NS,
    TerminalProgress,
    write_csv,
    write_geojson,
    write_gpx,
)
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
    assert done.stderr == f"wrote 2 activities, 35 fixes to {out}\n" and done.stdout == ""
    assert len(gpxpy.parse(out.read_text()).tracks) == 2
    done = cli("--gpx", str(out), "--activity", "2")
    assert done.returncode == 0 and "wrote 1 activity, 5 fixes " in done.stderr
    bad = cli("--gpx", str(out), "--activity", "7")
    assert bad.returncode == 2 and "no activity with id 7" in bad.stderr
    assert len(gpxpy.parse(out.read_text()).tracks) == 1, "a failed export leaves the old file"
    assert not list(tmp_path.glob("*.part"))


# --- CSV and GeoJSON ------------------------------------------------------------------------


def csv_rows(text: str) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    return [dict(zip(CSV_COLUMNS, r, strict=True)) for r in rows[1:]]


def test_csv_one_row_per_fix_with_the_nearest_samples(store):
    first = next(store.iter_fixes(1))
    store.mark_poi(first.id, "great view, east")
    out = io.StringIO()
    assert write_csv(store, out) == 2
    rows = csv_rows(out.getvalue())
    assert len(rows) == 35
    assert [r["activity"] for r in rows] == ["1"] * 30 + ["2"] * 5
    assert rows[0] == {
        "activity": "1", "time": "2026-06-01T08:00:00Z", "lat": "47.0", "lon": "7.6",
        "alt": "500.0", "speed": "", "course": "", "hdop": "0.9", "sats": "9", "quality": "",
        "hr": "120", "cad": "85", "pwr": "210", "poi": "great view, east",
    }  # fmt: skip
    assert rows[3]["time"] == "2026-06-01T08:00:00.3Z"  # the receiver's tenths, no more
    assert float(rows[3]["lat"]) == pytest.approx(47.00003)
    # hr every 0.25 s: the fix at T+0.5 s takes the sample at T+0.5 s (122); T+0.6 s the one
    # at T+0.5 s too (nearer than T+0.75 s), T+2.9 s the last one, at T+2.75 s (131)
    assert [rows[i]["hr"] for i in (5, 6, 29)] == ["122", "122", "131"]
    # one power sample at T+0.2 s: within 1.5 s of the fixes up to T+1.7 s, not after
    assert rows[17]["pwr"] == "210" and rows[18]["pwr"] == ""
    assert rows[30] == {
        "activity": "2", "time": "2026-06-01T09:00:00Z", "lat": "46.5", "lon": "6.6",
        "alt": "", "speed": "", "course": "", "hdop": "", "sats": "", "quality": "",
        "hr": "", "cad": "", "pwr": "", "poi": "",
    }  # fmt: skip


def test_geojson_one_linestring_per_activity_with_aligned_arrays(store):
    out = io.StringIO()
    assert write_geojson(store, out) == 2
    doc = json.loads(out.getvalue())
    assert doc["type"] == "FeatureCollection"
    ride, sail = doc["features"]
    assert ride["type"] == "Feature" and ride["geometry"]["type"] == "LineString"
    coords = ride["geometry"]["coordinates"]
    assert len(coords) == 30
    assert coords[3] == [7.6, pytest.approx(47.00003), 503.0]  # lon, lat, alt
    props = ride["properties"]
    assert {k: props[k] for k in ("id", "title", "type", "start", "end", "points")} == {
        "id": 1, "title": "Morning ride", "type": "cycling", "start": "2026-06-01T08:00:00Z",
        "end": "2026-06-01T08:00:02.9Z", "points": 30,
    }  # fmt: skip
    assert [len(props[k]) for k in ("times", "hr", "cad", "pwr")] == [30] * 4
    assert props["times"][3] == "2026-06-01T08:00:00.3Z"
    assert props["hr"][5] == 122 and props["cad"][0] == 85
    assert props["pwr"][17] == 210 and props["pwr"][18] is None
    assert sail["geometry"]["coordinates"][0] == [6.6, 46.5]  # no altitude: no third number
    assert sail["properties"]["end"] is None  # still the current activity
    assert sail["properties"]["hr"] == [None] * 5
    out = io.StringIO()
    write_geojson(store, out, [])
    assert json.loads(out.getvalue()) == {"type": "FeatureCollection", "features": []}


KNOT = 1852 / 3600


def sail_instruments(store) -> None:
    """The evening sail (activity 2, fixes at T+3600..T+3604 s) gets a depth sounder every
    2 s and one wind reading; the morning ride gets none."""
    store.add_samples(
        [Sample(T + 3600 + 2 * i, "depth", 4.0 + i / 10, "nmea0") for i in range(3)]
        + [Sample(T + 3601.2, "wind_speed_app", 12.6 * KNOT, "nmea0")]
    )


def test_csv_instrument_columns_only_for_the_kinds_the_activities_have(store):
    sail_instruments(store)
    out = io.StringIO()
    write_csv(store, out, [1])
    assert next(csv.reader(io.StringIO(out.getvalue()))) == list(CSV_COLUMNS)  # a ride: none
    out = io.StringIO()
    write_csv(store, out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == [*CSV_COLUMNS, "depth", "wind_speed_app"]  # after the known columns
    sail = [dict(zip(rows[0], r, strict=True)) for r in rows[1:] if r[0] == "2"]
    # depth at T+3600, +3602, +3604: every fix within 1.5 s of one; the wind at T+3601.2 s for
    # the fixes at +3600 to +3602 only (the one pairing rule). SI units, 4 decimals.
    assert [r["depth"] for r in sail] == ["4", "4", "4.1", "4.1", "4.2"]
    assert [r["wind_speed_app"] for r in sail] == ["6.482", "6.482", "6.482", "", ""]
    assert rows[1][len(CSV_COLUMNS) :] == ["", ""]  # the ride's rows: empty


def test_geojson_instrument_arrays_per_activity(store):
    sail_instruments(store)
    out = io.StringIO()
    write_geojson(store, out)
    ride, sail = (f["properties"] for f in json.loads(out.getvalue())["features"])
    assert "depth" not in ride and "wind_speed_app" not in ride
    assert sail["depth"] == [4, 4, 4.1, 4.1, 4.2]
    assert sail["wind_speed_app"] == [6.482, 6.482, 6.482, None, None]


def test_gpx_instruments_in_our_namespace_and_never_in_an_upload(store):
    sail_instruments(store)
    text = export(store)
    root = ET.fromstring(text.encode())
    gpx = "{http://www.topografix.com/GPX/1/1}"
    inst = f"{{{INSTRUMENTS_NS}}}"
    ride, sail = root.findall(f"{gpx}trk")
    assert ride.find(f".//{inst}instruments") is None
    points = sail.findall(f".//{gpx}trkpt")

    def shown(point):
        el = point.find(f"{gpx}extensions/{inst}instruments")
        return [(c.tag.removeprefix(inst), c.text) for c in el]

    # The wind at T+3601.2 s is within GPX's 1.5 s of the points at +3600..+3602.
    assert shown(points[0]) == [("depth", "4"), ("wind_speed_app", "6.482")]
    assert shown(points[4]) == [("depth", "4.2")]
    assert len(gpxpy.parse(text).tracks[1].segments[0].points) == 5  # still plain GPX
    # An upload to a backend (Map My Tracks) gets the fitness data only.
    out = io.StringIO()
    write_gpx(store, out, sent_only=True)
    assert "instruments" not in out.getvalue() and "gpxtpx:hr" in out.getvalue()


def test_progress_shows_only_on_long_exports_and_at_most_every_quarter_second():
    now = [0.0]
    stream = io.StringIO()
    progress = TerminalProgress(stream, clock=lambda: now[0])
    progress(1000)
    assert stream.getvalue() == ""  # under a second: nothing
    for t in (1.0, 1.1, 1.3):
        now[0] = t
        progress(1000)
    assert stream.getvalue() == "\rexporting: 2,000 fixes\rexporting: 4,000 fixes"
    progress.done()
    assert stream.getvalue().endswith("\rexporting: 4,000 fixes\n")
    quiet = TerminalProgress(None)
    quiet(5)
    quiet.done()
    assert quiet.fixes == 5


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def config(store, tmp_path):
    cfg = tmp_path / "tracker.toml"
    cfg.write_text(f'[storage]\npath = "{store.path}"\n')
    return cfg


def run(config, *args) -> int:
    return main(["export", "-c", str(config), *args])


def test_cli_formats_to_files_and_stdout(config, tmp_path, capsys):
    out = tmp_path / "ride.csv"
    assert run(config, "--format", "csv", "-o", str(out)) == 0
    assert len(csv_rows(out.read_text())) == 35
    assert capsys.readouterr().err == f"wrote 2 activities, 35 fixes to {out}\n"
    assert run(config, "--format", "geojson", "-o", "-", "--activity", "2") == 0
    captured = capsys.readouterr()
    assert [f["properties"]["id"] for f in json.loads(captured.out)["features"]] == [2]
    assert captured.err == "wrote 1 activity, 5 fixes to stdout\n"
    assert run(config, "-o", "-") == 0  # GPX by default
    assert len(gpxpy.parse(capsys.readouterr().out).tracks) == 2


@pytest.mark.parametrize(
    ("args", "ids"),
    [
        (["--until", "2026-06-01T08:30:00Z"], [1]),
        (["--until", "2026-06-01T10:30+02:00"], [1]),  # the same time, with an offset
        (["--since", "2026-06-01T08:30"], [2]),  # UTC; the current activity runs on
        (["--since", "2026-06-02"], [2]),
        (["--since", "2026-06-01T08:00:02", "--until", "2026-06-01T08:59"], [1]),
        (["--until", "2026-06-01"], [1, 2]),  # a date is up to its end
        (["--until", "2026-05-31"], []),
        (["--activity", "1", "--since", "2026-06-01T08:30"], []),
    ],
)
def test_cli_since_and_until_select_overlapping_activities(config, capsys, args, ids):
    assert run(config, "--format", "csv", "-o", "-", *args) == 0
    rows = csv_rows(capsys.readouterr().out)
    assert sorted({int(r["activity"]) for r in rows}) == ids


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "-", "--activity", "9"], "no activity with id 9"),
        (["-o", "-", "--since", "yesterday"], "--since: not an ISO 8601 date or time"),
        (["-o", "-", "--until", "2026-13-01"], "--until: not an ISO 8601 date or time"),
        (["--format", "csv", "--gpx", "x.gpx"], "--gpx FILE means --format gpx -o FILE"),
        (["--format", "csv"], "no output"),
    ],
)
def test_cli_bad_arguments_are_one_line_and_exit_2(config, capsys, args, message):
    assert run(config, *args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"tracker export: {message}") and captured.err.count("\n") == 1


def test_cli_an_unreadable_database_exits_1(tmp_path, capsys):
    cfg = tmp_path / "tracker.toml"
    cfg.write_text(f'[storage]\npath = "{tmp_path / "missing.db"}"\n')
    assert run(cfg, "-o", "-") == 1
    err = capsys.readouterr().err
    assert err.startswith("tracker: ") and err.count("\n") == 1


# --- a long ride -----------------------------------------------------------------------------

LONG = 50_000


@pytest.fixture(scope="module")
def long_ride(tmp_path_factory):
    """A config whose store holds one activity of LONG fixes at 1 Hz, with one hr sample right
    on fix 2000, where one page of fixes ends and the next begins."""
    tmp = tmp_path_factory.mktemp("long")
    s = open_store(tmp / "tracker.db")
    ride = s.start_activity("Long ride", "cycling", "private", (), T)
    s.add_fixes(ride.id, [Fix(time=T + i, lat=47.0, lon=7.0 + i * 1e-5, alt=400.0)
                          for i in range(LONG)])  # fmt: skip
    s.add_samples([Sample(T + 2000, "hr", 77)])
    s.end_activity(ride.id, T + LONG, "requested")
    s.close()
    cfg = tmp / "tracker.toml"
    cfg.write_text(f'[storage]\npath = "{tmp / "tracker.db"}"\n')
    return cfg


def test_a_long_ride_is_streamed_page_by_page(long_ride, tmp_path, capsys):
    out = tmp_path / "long.csv"
    assert run(long_ride, "--format", "csv", "-o", str(out)) == 0
    with out.open() as f:
        assert sum(1 for _ in f) == LONG + 1  # and the header
    assert capsys.readouterr().err == f"wrote 1 activity, 50,000 fixes to {out}\n"
    out = tmp_path / "long.geojson"
    assert run(long_ride, "--format", "geojson", "-o", str(out)) == 0
    props = json.loads(out.read_text())["features"][0]["properties"]
    assert props["points"] == LONG and len(props["times"]) == len(props["hr"]) == LONG
    # aligned across the pages: the sample at fix 2000 is within 1.5 s of fixes 1999 to 2001 only
    assert props["hr"][1998:2003] == [None, 77, 77, 77, None]
    assert props["times"][2000] == "2026-06-01T08:33:20Z"


def test_a_closed_stdout_ends_quietly(long_ride):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker", "export", "-c", str(long_ride), "--format", "csv",
         "-o", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout.readline() == ",".join(CSV_COLUMNS) + "\n"
    proc.stdout.close()  # as `| head -n 1` does, long before the 4 MB are written
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read() == ""


def test_every_format_pairs_the_same_samples_with_the_same_points(tmp_path):
    """One pairing rule: GPX, CSV and GeoJSON give each point the same heart rate (issue 22:
    GPX had it on 897 points of the demo ride, CSV and GeoJSON on 598)."""
    t0 = 1_780_000_000.0
    with open_store(tmp_path / "t.db") as store:
        a = store.start_activity("Ride", "cycling", "public", "", t0)
        store.add_fixes(a.id, [Fix(time=t0 + i, lat=47.0 + i * 1e-4, lon=7.6) for i in range(40)])
        # a strap reporting every 2.6 s, so some points are 1.3 s from their nearest sample
        store.add_samples([Sample(t0 + 0.4 + 2.6 * k, "hr", 120.0 + k) for k in range(15)])
        csv_out, geo_out, gpx_out = io.StringIO(), io.StringIO(), io.StringIO()
        write_csv(store, csv_out)
        write_geojson(store, geo_out)
        write_gpx(store, gpx_out)
    from_csv = [r["hr"] or None for r in csv.DictReader(io.StringIO(csv_out.getvalue()))]
    from_csv = [None if v is None else float(v) for v in from_csv]
    from_geo = json.loads(geo_out.getvalue())["features"][0]["properties"]["hr"]
    gpx = gpx_out.getvalue()
    points = gpx.split("<trkpt")[1:]
    from_gpx = [float(p.split("<gpxtpx:hr>")[1].split("<")[0]) if "<gpxtpx:hr>" in p else None
                for p in points]  # fmt: skip
    assert len(from_csv) == len(from_geo) == len(from_gpx) == 40
    assert from_csv == [None if v is None else float(v) for v in from_geo] == from_gpx
    assert any(v is None for v in from_gpx) and sum(v is not None for v in from_gpx) > 20
