"""`tracker activities`: a store with known rides, read back as a rider sees them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracker import cli
from tracker.activity import Rules
from tracker.fix import Fix, Sample
from tracker.rides import rides
from tracker.store import open_store

T0 = 1_780_300_800.0  # 2026-06-01 08:00 UTC
METRES_PER_DEG = 111_195.0


def ride(store, t0: float, moving_s: int, parked_s: int, speed: float = 5.0) -> int:
    """North at `speed` for `moving_s` seconds (1 Hz), then parked with drift and a spike."""
    a = store.start_activity("Loop", "cycling", "private", (), t0)
    fixes = [Fix(t0 + i, 48.0 + i * speed / METRES_PER_DEG, 11.0, speed=speed, hdop=0.9)
             for i in range(moving_s)]  # fmt: skip
    north = 48.0 + (moving_s - 1) * speed / METRES_PER_DEG
    for j in range(parked_s):
        t = t0 + moving_s + j
        wobble = (j % 7 - 3) * 2 / METRES_PER_DEG  # 2 m of drift each way
        fixes.append(Fix(t, north + wobble, 11.0, speed=0.2, hdop=1.1))
    fixes.append(Fix(t0 + moving_s + parked_s, north, 11.0, speed=9.0, hdop=7.0))  # bad HDOP
    store.add_fixes(a.id, fixes)
    store.add_samples([Sample(t0 + i, "hr", 120) for i in range(0, moving_s, 2)])
    store.end_activity(a.id, t0 + moving_s - 1, "idle")
    return a.id


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "tracker.db"
    s = open_store(path)
    first = ride(s, T0, moving_s=100, parked_s=60)
    ride(s, T0 + 3600, moving_s=50, parked_s=10, speed=8.0)
    s.register_backend("mapmytracks")
    s.register_backend("gpsr")
    ids = [f.id for f in s.iter_fixes(first)]
    s.acknowledge("gpsr", ids)  # the first ride went to json-gpsr, the second did not
    s.acknowledge("mapmytracks", [f.id for f in s.iter_fixes()])
    s.set_state("mapmytracks", {"v": 1, "done_through": first, "activities": {}})
    s.close()
    return path


def test_figures_count_movement_only(db):
    s = open_store(db, readonly=True)
    try:
        first, second = rides(s, Rules(start_speed_mps=1.5, max_hdop=5.0))
    finally:
        s.close()
    assert first.points == 161 and first.samples == 50
    assert first.distance_m == pytest.approx(99 * 5.0, rel=1e-3)  # no metres from the drift
    assert first.moving_s == 99 and first.elapsed_s == 99
    assert first.avg_speed_mps == pytest.approx(5.0, rel=1e-3)
    assert first.max_speed_mps == 5.0  # the 9 m/s spike had HDOP 7
    assert second.distance_m == pytest.approx(49 * 8.0, rel=1e-3)
    assert first.backends["gpsr"].delivered and first.backends["gpsr"].finished is None
    assert second.backends["gpsr"].to_send == 61
    assert first.backends["mapmytracks"].finished is True
    assert second.backends["mapmytracks"].delivered
    assert second.backends["mapmytracks"].finished is False  # sent, not yet stopped


def write_config(tmp_path: Path, db: Path, tz: str = "Europe/Paris") -> Path:
    conf = tmp_path / "tracker.toml"
    conf.write_text(f'[storage]\npath = "{db}"\n\n[activity]\ntimezone = "{tz}"\n')
    return conf


def test_the_table_in_the_riders_time_zone(db, tmp_path, capsys):
    assert cli.main(["activities", "-c", str(write_config(tmp_path, db))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["id", "start", "end"]
    first = out[1].split()
    assert first[:5] == ["1", "2026-06-01", "10:00", "10:01", "0.50"]  # 08:00 UTC in Paris
    assert first[7:9] == ["18.0", "18.0"]  # km/h
    assert out[2].strip() == "gpsr: sent; mapmytracks: sent, finished"
    assert "gpsr: 61 to send; mapmytracks: sent, not finished" in out[4]


def test_json(db, tmp_path, capsys):
    assert cli.main(["activities", "--json", "-c", str(write_config(tmp_path, db, "UTC"))]) == 0
    first, second = json.loads(capsys.readouterr().out)
    assert first["start"] == "2026-06-01T08:00:00+00:00" and first["end_reason"] == "idle"
    assert first["distance_m"] == pytest.approx(495.0, abs=0.5)
    assert (first["moving_s"], first["points"], first["samples"]) == (99, 161, 50)
    assert first["backends"]["mapmytracks"] == {"to_send": 0, "delivered": True,
                                                "finished": True}  # fmt: skip
    assert second["backends"]["gpsr"]["to_send"] == 61


def test_an_empty_store_says_so(tmp_path, capsys):
    db = tmp_path / "empty.db"
    open_store(db).close()
    assert cli.main(["activities", "-c", str(write_config(tmp_path, db))]) == 0
    assert capsys.readouterr().out.strip() == "no activities stored yet"


def test_a_boat_ride_shows_its_latest_instrument_readings(tmp_path, capsys):
    db = tmp_path / "sail.db"
    s = open_store(db)
    a = s.start_activity("Sail", "sailing", "private", (), T0)
    s.add_fixes(a.id, [Fix(T0 + i, 46.5 + i * 1e-5, 6.6, speed=2.0) for i in range(60)])
    s.add_samples(
        [Sample(T0 + i, "depth", 10.0 + i / 10, "nmea0") for i in range(0, 60, 5)]
        + [Sample(T0 + 30, "wind_speed_app", 12.6 * 1852 / 3600), Sample(T0 + 31, "hr", 80)]
        + [Sample(T0 + 20, "water_temp", 17.9), Sample(T0 + 9999, "depth", 99.0)]
    )
    s.end_activity(a.id, T0 + 59, "stop")  # the reading at T0+9999 s is after it
    s.close()
    conf = write_config(tmp_path, db, "UTC")
    assert cli.main(["activities", "--json", "-c", str(conf)]) == 0
    (sail,) = json.loads(capsys.readouterr().out)
    assert sail["instruments"] == {"depth": 15.5, "wind_speed_app": 6.482, "water_temp": 17.9}
    assert sail["samples"] == 1  # the fitness samples: the heart rate only
    assert cli.main(["activities", "-c", str(conf)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].strip() == "depth 15.5 m, apparent wind 12.6 kn, water 17.9 °C"
