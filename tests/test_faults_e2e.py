"""Faults of the unit itself, against a real `tracker run`: a corrupt database at start, and a
receiver whose line goes away and comes back a hundred times in a row."""

from __future__ import annotations

import os

import pytest
from support import Daemon, epochs, fill_disk, mount, stored_so_far, wait_for

from tracker.pty import PtyWriter

pytestmark = pytest.mark.slow




def test_a_corrupt_database_at_start_is_moved_aside_and_tracking_goes_on(daemon, gps, tmp_path):
    d = daemon()
    d.db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))  # a header, then noise
    d.start()
    d.wait_gps_open()
    for e in epochs(20, rate_hz=1.0):
        gps.write(e.data)
    wait_for(lambda: len(stored_so_far(d.db)) >= 20, what="fixes in a new database")
    assert d.terminate() == 0
    aside = list(tmp_path.glob("tracker.db.corrupt-*"))
    assert len([p for p in aside if not p.name.endswith(("-wal", "-shm"))]) == 1
    errors = [line for line in d.log_text().splitlines() if " is corrupt (" in line]
    assert len(errors) == 1 and "ERROR" in errors[0] and str(aside[0]) in errors[0]


def test_the_line_going_away_and_back_a_hundred_times(tmp_path):
    link = tmp_path / "gps-line"
    writer = PtyWriter.open(link, timeout=2.0)
    d = Daemon(tmp_path, str(link)).start()
    ride = epochs(100 * 3, rate_hz=1.0)
    fds = []
    try:
        for cycle in range(100):
            assert writer.wait_for_reader(timeout=20), f"not reopened after {cycle} cuts"
            for e in ride[3 * cycle : 3 * cycle + 3]:
                writer.write(e.data)
            want = round(ride[3 * cycle + 2].unix, 3)
            wait_for(lambda w=want: any(round(f.time, 3) == w for f in stored_so_far(d.db)),
                     timeout=20, what=f"cycle {cycle}'s fixes")  # fmt: skip
            if cycle in (10, 99):
                fds.append(len(os.listdir(f"/proc/{d.proc.pid}/fd")))
            writer.close()  # the cable is pulled...
            if cycle < 99:  # ...and plugged back in (not after the last: 100 pulls, no more)
                writer = PtyWriter.open(link, timeout=2.0)
    except BaseException:
        d.stop()
        raise
    finally:
        writer.close()
    assert d.proc.poll() is None, "the daemon is still running"
    assert fds[1] <= fds[0], f"no descriptor leaked over 90 reconnects: {fds}"
    assert d.terminate() == 0
    times = [round(f.time, 3) for f in stored_so_far(d.db)]
    assert len(times) == len(set(times)) == 300  # every fix of every cycle, once
    lost = [line for line in d.log_text().splitlines() if " lost (" in line]
    assert 1 <= len(lost) <= 100


def started_on(d: Daemon, disk, gps, ride) -> Daemon:
    """The daemon `d` with its database on `disk` (its config and log stay where they are),
    started, with the first 10 epochs of `ride` stored."""
    db = disk / "tracker.db"
    d.config.write_text(d.config.read_text().replace(f'path = "{d.db}"', f'path = "{db}"'))
    d.db = db
    d.start()
    d.wait_gps_open()
    for e in ride[:10]:
        gps.write(e.data)
    wait_for(lambda: len(stored_so_far(d.db)) >= 10, what="the first fixes")
    return d


def test_a_full_disk_then_space_again(daemon, gps, tiny_disk):
    ride = epochs(400, rate_hz=5.0)
    d = started_on(daemon(), tiny_disk, gps, ride)
    filler = fill_disk(tiny_disk)
    for e in ride[10:]:
        gps.write(e.data)
    wait_for(lambda: "holding" in d.log_text(), timeout=30, what="the disk-full error")
    assert d.proc.poll() is None
    filler.unlink()
    wait_for(lambda: len(stored_so_far(d.db)) >= 400, timeout=60, what="every fix, space back")
    assert d.terminate() == 0
    times = [round(f.time, 3) for f in stored_so_far(d.db)]
    assert len(times) == len(set(times)) == 400
    log = d.log_text()
    assert "storage writable again" in log
    assert log.count("activity 1 started") == 1, "a commit that failed logs nothing it undid"
    assert log.count("database or disk is full") == 1  # once, not at every retry


def test_a_read_only_database_then_writable(daemon, gps, tiny_disk):
    ride = epochs(60, rate_hz=1.0)
    d = started_on(daemon(), tiny_disk, gps, ride)
    assert d.terminate() == 0
    assert mount("-o", "remount,ro", str(tiny_disk))
    d.start()
    d.wait_gps_open()
    for e in ride[10:]:
        gps.write(e.data)
    wait_for(lambda: "read-only" in d.log_text().lower() or "readonly" in d.log_text().lower(),
             timeout=30, what="the read-only error")  # fmt: skip
    assert d.proc.poll() is None
    assert mount("-o", "remount,rw", str(tiny_disk))
    wait_for(lambda: len(stored_so_far(d.db)) >= 60, timeout=60, what="every fix once writable")
    assert d.terminate() == 0
    assert len({round(f.time, 3) for f in stored_so_far(d.db)}) == 60
