"""gpsd as the GPS source (`[gps] device = "gpsd://host:port"`, tracker/gpsd.py): the JSON
mapping, and a real `tracker run` reading a real gpsd fed from a pty (issue 15)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import T0, Daemon, epochs, stored_fixes, stored_so_far, wait_for
from test_share import GPSD, Gpsd

from tracker.config import ConfigError, parse
from tracker.gpsd import GpsdDecoder, parse_url
from tracker.pty import PtyWriter

T = "2026-06-01T08:00:00.200Z"
T_UNIX = 1780300800.2


def lines(*reports: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\r\n" for r in reports)


TPV = {"class": "TPV", "device": "/dev/ttyS0", "mode": 3, "time": T, "lat": 47.019219333,
       "lon": 7.612494, "altHAE": 574.6, "altMSL": 527.6, "alt": 527.6, "track": 334.14,
       "speed": 7.0, "epx": 10.2, "epy": 11.0, "epv": 31.7}  # fmt: skip
SKY = {"class": "SKY", "device": "/dev/ttyS0", "hdop": 0.95, "vdop": 1.38, "pdop": 1.68,
       "nSat": 14, "uSat": 11}  # fmt: skip
GST = {"class": "GST", "device": "/dev/ttyS0", "time": T, "lat": 0.7, "lon": 0.8, "alt": 1.1}


def test_an_epoch_is_tpv_sky_and_gst_merged_and_completed_by_the_next():
    d = GpsdDecoder(clock=lambda: 100.0)
    hello = lines({"class": "VERSION", "release": "3.22"}, {"class": "WATCH", "enable": True})
    assert d.feed(hello) == []
    assert d.version == "3.22"
    # gpsd's first report of a stream: no date known yet, so no time: not a fix.
    assert d.feed(lines({**TPV, "time": None} | {"time": None})) == []
    assert d.feed(lines(TPV, {**TPV, "climb": 0.0}, SKY, GST)) == []  # held: more may come
    nxt = {**TPV, "time": "2026-06-01T08:00:00.400Z", "lat": 47.0193}
    (fix,) = d.feed(lines(nxt))
    assert fix.time == pytest.approx(T_UNIX)
    assert (fix.lat, fix.lon, fix.alt) == (47.019219333, 7.612494, 527.6)
    assert (fix.speed, fix.course, fix.quality) == (7.0, 334.14, 1)
    assert (fix.hdop, fix.vdop, fix.pdop, fix.sats) == (0.95, 1.38, 1.68, 11)
    # GST's 1-sigma errors, as the NMEA decoder stores them; not gpsd's 95% epx/epy/epv.
    assert (fix.err_lat, fix.err_lon, fix.err_alt) == (0.7, 0.8, 1.1)
    assert d.arrived == 100.0
    (last,) = d.flush()  # the line went quiet: the held epoch is complete
    assert last.lat == 47.0193 and last.hdop == 0.95  # the newest SKY until another comes
    assert last.err_lat is None  # no GST for this epoch
    assert d.stats.fixes == 2 and d.stats.invalid_epochs == 1
    assert d.flush() == []


def test_no_fix_2d_fixes_gpsd_status_and_junk():
    d = GpsdDecoder()
    assert d.feed(lines({"class": "TPV", "mode": 1, "time": T})) == []  # no fix
    two_d = {**TPV, "mode": 2, "status": 2}  # 2D, DGPS: no altitude
    out = d.feed(lines(two_d, {**TPV, "time": "2026-06-01T08:00:01Z", "status": 4}))
    assert [(f.alt, f.quality) for f in out] == [(None, 2)]
    assert [f.quality for f in d.flush()] == [5]  # RTK float, GGA's 5
    assert d.feed(b"not json\r\n[1]\r\n" + lines({**TPV, "lat": 91.0})) == []
    assert d.stats.rejected_by["json"] == 2 and d.stats.rejected == 2
    assert d.stats.invalid_epochs == 2 and d.flush() == []
    # Without uSat (gpsd before 3.22), the satellites marked used are counted.
    sky = {"class": "SKY", "satellites": [{"used": True}, {"used": False}, {"used": True}]}
    d.feed(lines(TPV, sky))
    assert [f.sats for f in d.flush()] == [2]


def test_one_device_of_several():
    d = GpsdDecoder(device="/dev/ttyUSB1")
    d.feed(lines(TPV, {**TPV, "device": "/dev/ttyUSB1", "lat": 1.0}))
    assert [f.lat for f in d.flush()] == [1.0]
    assert d.stats.ignored == 1


def test_urls():
    assert parse_url("gpsd://127.0.0.1:2947") == ("127.0.0.1", 2947, None)
    assert parse_url("gpsd://localhost") == ("localhost", 2947, None)
    assert parse_url("gpsd://[::1]:3000/dev/ttyUSB0") == ("::1", 3000, "/dev/ttyUSB0")
    for bad in ("gpsd://", "gpsd://host:port", "gpsd://host:70000", "tcp://host:1"):
        with pytest.raises(ValueError):
            parse_url(bad)
    assert parse({"gps": {"device": "gpsd://127.0.0.1:2947"}}).gps.device.startswith("gpsd://")
    with pytest.raises(ConfigError, match=r"\[gps\] device: expected gpsd://host:port"):
        parse({"gps": {"device": "gpsd://:x"}})


# --- a real gpsd between the pty and a real daemon ---------------------------------------------

SENTENCES = ("GGA", "RMC", "GSA", "GSV", "GST", "VTG")  # all that gpsd maps to TPV, SKY, GST


def same_fix(a, b) -> None:
    """The fields both paths give, to the digits gpsd prints (9 decimals of degree, 3 of a
    metre, 3 of m/s, 4 of a degree)."""
    assert a.lat == pytest.approx(b.lat, abs=1e-8) and a.lon == pytest.approx(b.lon, abs=1e-8)
    assert a.alt == pytest.approx(b.alt, abs=1e-3)
    assert a.speed == pytest.approx(b.speed, abs=1e-3)
    assert a.course == pytest.approx(b.course, abs=1e-4)
    assert (a.quality, a.hdop, a.vdop, a.pdop) == (b.quality, b.hdop, b.vdop, b.pdop)
    assert (a.err_lat, a.err_lon, a.err_alt) == (b.err_lat, b.err_lon, b.err_alt)


def gpsd_ready(gpsd: Gpsd, pty: PtyWriter, start: datetime) -> None:
    """Feed gpsd a prelude (an earlier stretch of the ride, nobody else reads it) until it
    reports a fix: a freshly started gpsd hunts for the speed and the protocol first, and
    drops what it reads meanwhile."""
    prelude = epochs(100, rate_hz=5.0, sentences=SENTENCES, start=start)
    locked_after(gpsd, prelude, lambda e: pty.write(e.data))


def locked_after(gpsd: Gpsd, ride: list, write: Callable[[Any], None]) -> int:
    """Write the ride's epochs until gpsd reports a fix (to a watch of the test's); how many
    it took. The watch's timeout paces the writing; gpsd's report, not a time, ends it."""
    watch = gpsd.watch()
    got = b""
    try:
        for i, e in enumerate(ride):
            write(e)
            watch.settimeout(0.05)
            with contextlib.suppress(TimeoutError):
                got += watch.recv(65536)
            if b'"class":"TPV"' in got and b'"time"' in got:
                return i + 1
        pytest.fail(f"gpsd reported no fix in {len(ride)} epochs (log: {gpsd.log})")
    finally:
        watch.close()


@pytest.mark.skipif(GPSD is None, reason="gpsd is not installed (Debian: apt install gpsd)")
def test_tracker_reading_gpsd_stores_the_fixes_it_stores_reading_the_pty(tmp_path: Path):
    (tmp_path / "direct").mkdir()
    (tmp_path / "gpsd").mkdir()
    ride = epochs(120, rate_hz=5.0, sentences=SENTENCES, noise_m=2.0)

    def write(e) -> None:
        pty1.write(e.data)
        pty2.write(e.data)
        threading.Event().wait(0.02)  # pacing (50 Hz), not synchronisation

    with PtyWriter.open(tmp_path / "gps0", timeout=2.0) as pty1, \
            PtyWriter.open(tmp_path / "gps1", timeout=2.0) as pty2:  # fmt: skip
        gpsd = Gpsd(tmp_path, pty2.path)
        direct = Daemon(tmp_path / "direct", pty1.path)
        via = Daemon(tmp_path / "gpsd", f"gpsd://127.0.0.1:{gpsd.port}")
        try:
            assert pty2.wait_for_reader(timeout=20), f"gpsd did not open the pty: {gpsd.log}"
            gpsd_ready(gpsd, pty2, T0 - timedelta(minutes=2))
            direct.start()
            via.start()
            direct.wait_gps_open()
            via.wait_gps_open()
            gpsd.watch().close()  # answered after the daemon's WATCH: that one is registered
            half = len(ride) // 2
            for e in ride[:half]:
                write(e)
            wait_for(lambda: len(stored_so_far(via.db)) >= half - 1, 30,
                     what=f"the fixes through gpsd (log: {via.log})")  # fmt: skip

            # gpsd restarts (an upgrade, a crash): the daemon reconnects like to a serial GPS.
            gpsd.stop()
            wait_for(lambda: "lost" in via.log_text(), 20, what="the daemon to see gpsd go")
            opens = via.gps_opens()
            gpsd = Gpsd(tmp_path, pty2.path, port=gpsd.port)
            assert pty2.wait_for_reader(timeout=20)
            wait_for(lambda: via.gps_opens() > opens, 30, what="the daemon to reconnect")
            # The new gpsd hunts again and loses what it reads meanwhile: the ride goes on
            # until it reports a fix again, from there every epoch must come through. Asked
            # of gpsd itself (a watch of the test's, opened after the daemon's), not of the
            # store, whose lag under load would let the ride run out first.
            resumed = half + locked_after(gpsd, ride[half:-20], write)
            for e in ride[resumed:]:
                write(e)
            wait_for(lambda: len(stored_so_far(direct.db)) == len(ride), 30,
                     what="every fix stored from the pty")  # fmt: skip
            last = round(ride[-2].unix, 3)
            wait_for(lambda: any(round(f.time, 3) >= last for f in stored_so_far(via.db)), 30,
                     what="the last fixes through gpsd")  # fmt: skip
            assert via.terminate() == 0 and direct.terminate() == 0
        finally:
            gpsd.stop()
            direct.stop()
            via.stop()
    mine = {round(f.time, 3): f for f in stored_fixes(direct.db)}
    theirs = stored_fixes(via.db)
    assert len(mine) == len(ride)
    # Every epoch through gpsd but those its restart lost, each the fix read directly.
    times = {round(f.time, 3) for f in theirs}
    expected = [round(e.unix, 3) for e in ride[:half] + ride[resumed:]]
    assert [t for t in expected if t not in times] == []
    for f in theirs:
        same_fix(f, mine[round(f.time, 3)])
    # Satellites: GGA's count directly, gpsd's count of those marked used (GSA) through it.
    assert all(f.sats for f in theirs)
    status = via.status()
    assert status["gps"]["device"].startswith("gpsd://") and status["gps"]["connects"] >= 2
    assert "reports" in via.cli("status").stdout
