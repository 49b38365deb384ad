"""Storage that fails and comes back, against real `tracker run` processes (issue 21): a
read-only file system at start (after a SIGKILL left the -wal and -shm, with no database yet),
a full one, a stop while fixes are held, a fatal signal, and a whole ride with random write
and fsync failures injected by libfiu, SIGKILLs and an `activity stop` at its end, delivered
to the Map My Tracks and json-gpsr test servers.

The disk is a real tiny tmpfs (skipped where the machine cannot mount one); the service's
runtime directory ($RUNTIME_DIRECTORY, /run/tracker under systemd) is a directory of the test.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest
from support import (
    Daemon,
    epochs,
    fill_disk,
    mount,
    stored_activities,
    stored_fixes,
    stored_so_far,
    stream,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The runtime directory systemd would give the service, for the daemon and the CLI."""
    d = tmp_path / "run"
    d.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(d))
    return d


def on_disk(d: Daemon, disk: Path) -> Daemon:
    """`d` with its database on `disk` (its config and log stay where they are)."""
    db = disk / "tracker.db"
    d.config.write_text(d.config.read_text().replace(f'path = "{d.db}"', f'path = "{db}"'))
    d.db = db
    return d


def times(d: Daemon) -> list[float]:
    return [round(f.time, 3) for f in stored_so_far(d.db)]


def status(d: Daemon) -> dict:
    done = d.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_read_only_at_start_after_a_sigkill_then_writable(daemon, gps, tiny_disk, run_dir):
    """The power cut leaves -wal and -shm; the card comes up read-only, later writable. SQLite
    would open such a database read-only and keep it so, in the recorder and in the senders:
    every part of the daemon must write again, and the ride reach the server."""
    from support import gpsr_section
    from test_backends_e2e import ALWAYS, TOKEN, assert_gpsr_holds, servers

    ride = epochs(80, rate_hz=1.0)
    with ExitStack() as stack:
        _, gpsr = servers(stack)
        d = on_disk(daemon(ALWAYS + gpsr_section(gpsr.url, TOKEN)), tiny_disk).start()
        d.wait_gps_open()
        for e in ride[:10]:
            gps.write(e.data)
        wait_for(lambda: len(times(d)) == 10, what="the first fixes")
        d.kill()
        assert (tiny_disk / "tracker.db-wal").exists() and (tiny_disk / "tracker.db-shm").exists()
        assert mount("-o", "remount,ro", str(tiny_disk))
        d.start()
        d.wait_gps_open()
        for e in ride[10:40]:
            gps.write(e.data)
        wait_for(lambda: "holding" in d.log_text(), timeout=30, what="the read-only error")
        # The daemon cannot write its row: status says what it wrote in the runtime directory.
        report = wait_for(lambda: (r := status(d))["storage"]["state"] == "read-only"
                          and r["storage"]["held"] >= 1 and r,
                          what="status naming the read-only storage, fixes held")  # fmt: skip
        assert report["daemon"]["running"] and report["daemon"]["pid"] == d.proc.pid
        assert "STORAGE:   read-only" in d.cli("status").stdout
        assert mount("-o", "remount,rw", str(tiny_disk))
        for e in ride[40:]:
            gps.write(e.data)
        wait_for(lambda: len(times(d)) == 80, timeout=60, what="every fix once writable")
        wait_for(lambda: (r := status(d))["storage"]["state"] == "ok" and r["pending"]["gpsr"] == 0,
                 timeout=60, what="status: storage ok again, the backlog sent")  # fmt: skip
        assert d.terminate() == 0
        assert times(d) == [round(e.unix, 3) for e in ride]
        assert_gpsr_holds(gpsr, stored_fixes(d.db))
    assert "storage writable again" in d.log_text()
    assert not list(run_dir.iterdir()), "no status file left once the storage works"


def test_read_only_with_no_database_yet_then_writable(daemon, gps, tiny_disk, run_dir):
    ride = epochs(30, rate_hz=1.0)
    assert mount("-o", "remount,ro", str(tiny_disk))
    d = on_disk(daemon(), tiny_disk).start()
    d.wait_gps_open()
    for e in ride[:20]:
        gps.write(e.data)
    wait_for(lambda: "holding" in d.log_text(), timeout=30, what="the read-only error")
    assert mount("-o", "remount,rw", str(tiny_disk))
    for e in ride[20:]:
        gps.write(e.data)
    wait_for(lambda: len(times(d)) == 30, timeout=60, what="every fix once writable")
    assert d.terminate() == 0
    assert times(d) == [round(e.unix, 3) for e in ride]


def test_full_at_start_then_freed(daemon, gps, tiny_disk, run_dir):
    ride = epochs(60, rate_hz=1.0)
    d = on_disk(daemon(), tiny_disk).start()
    d.wait_gps_open()
    for e in ride[:10]:
        gps.write(e.data)
    wait_for(lambda: len(times(d)) == 10, what="the first fixes")
    assert d.terminate() == 0
    filler = fill_disk(tiny_disk)
    d.start()
    d.wait_gps_open()
    for e in ride[10:40]:
        gps.write(e.data)
    wait_for(lambda: "holding" in d.log_text(), timeout=30, what="the disk-full error")
    report = wait_for(lambda: (r := status(d))["storage"]["state"] == "full" and r,
                      what="status naming the full storage")  # fmt: skip
    assert report["daemon"]["running"]
    filler.unlink()
    for e in ride[40:]:
        gps.write(e.data)
    wait_for(lambda: len(times(d)) == 60, timeout=60, what="every fix, space back")
    assert d.terminate() == 0
    assert times(d) == [round(e.unix, 3) for e in ride]


def test_stopped_while_holding_fixes_then_restarted(daemon, gps, tiny_disk, run_dir):
    """SIGTERM while the card is read-only: the held fixes go to a spill file in the runtime
    directory, and the next start stores them, once, before the new ones."""
    ride = epochs(90, rate_hz=1.0)
    d = on_disk(daemon(), tiny_disk).start()
    d.wait_gps_open()
    for e in ride[:10]:
        gps.write(e.data)
    wait_for(lambda: len(times(d)) == 10, what="the first fixes")
    d.kill()
    assert mount("-o", "remount,ro", str(tiny_disk))
    d.start()
    d.wait_gps_open()
    for e in ride[10:60]:
        gps.write(e.data)
    wait_for(lambda: "holding 50 fixes" in d.log_text() or status(d)["storage"]["held"] == 50,
             timeout=30, what="50 fixes held")  # fmt: skip
    assert d.terminate() == 0
    (spilled,) = run_dir.glob("*.spill")
    assert "written to" in d.log_text()
    after_stop = status(d)
    assert not after_stop["daemon"]["running"] and after_stop["storage"]["state"] == "read-only"
    assert mount("-o", "remount,rw", str(tiny_disk))
    d.start()
    d.wait_gps_open()
    for e in ride[60:]:
        gps.write(e.data)
    wait_for(lambda: len(times(d)) == 90, timeout=60, what="spilled and new fixes stored")
    wait_for(lambda: not spilled.exists(), what="the spill file deleted")
    assert d.terminate() == 0
    assert times(d) == [round(e.unix, 3) for e in ride]


def test_a_fatal_signal_is_logged_before_the_process_ends(daemon, gps):
    """What a SIGBUS on a memory-mapped -shm does, sent for real: never a silent end."""
    d = daemon().start()
    d.wait_gps_open()
    d.proc.send_signal(signal.SIGBUS)
    assert d.proc.wait(timeout=20) == -signal.SIGBUS
    log = d.log_text()
    assert "Fatal Python error: Bus error" in log
    assert "Thread" in log and "recorder" in log  # every thread's stack, the recorder's too


FIU_RUN, FIU_CTRL = shutil.which("fiu-run"), shutil.which("fiu-ctrl")
PROBABILITY = 0.03
FAILING = ("posix/io/rw/pwrite", "posix/io/sync/*")  # SQLite's writes (pwrite64) and syncs


@pytest.mark.skipif(FIU_CTRL is None, reason="needs fiu-utils: scripts/setup --test installs it")
def test_random_write_and_fsync_failures_through_a_ride_with_sigkills(daemon, gps, tmp_path):
    """A few percent of the daemon's writes (pwrite: SQLite's) and fsyncs fail at random,
    the daemon is killed three times, the rider stops the activity at the end while fixes are
    still held: every fix of the last run stored once, every stored fix in the activity, and,
    while the failures go on, each stored fix delivered once to both servers."""
    from support import assert_points_match, gpsr_section
    from test_backends_e2e import (
        ALWAYS,
        PASSWORD,
        TOKEN,
        assert_gpsr_holds,
        first_of_each_second,
        mmt_section,
        one_activity,
        prepared,
        servers,
    )

    from tracker.senders.gpsr import NAME as GPSR
    from tracker.senders.mapmytracks import NAME as MMT

    with ExitStack() as stack:
        mmt, gpsr = servers(stack)
        d = prepared(daemon(ALWAYS + mmt_section(mmt.url, PASSWORD, offline_upload="off")
                            + gpsr_section(gpsr.url, TOKEN)))  # fmt: skip
        ctrl = str(tmp_path / "fiu-ctrl")  # libfiu's control pipes: <this>-<pid>.in/.out
        d.prefix = [FIU_RUN, "-x", "-f", ctrl]
        for name in FAILING:
            d.prefix += ["-c", f"enable_random name={name},probability={PROBABILITY}"]
        ride = epochs(3000, rate_hz=5.0)
        rng = random.Random(21)
        position = 0
        for _ in range(3):
            d.start()
            d.wait_gps_open()
            position = stream(gps, ride, position, rng.uniform(2.0, 3.0), pace_s=0.02)
            d.kill()
        d.start()
        d.wait_gps_open()
        last_start = position
        position = stream(gps, ride, position, 3.0, pace_s=0.02)
        # At once, not after the fixes are stored: the store may still refuse them (then the
        # CLI says the request stays queued, and the daemon carries it out when it can).
        reply = d.cli("activity", "stop")
        assert reply.returncode == 0 or "stays queued" in reply.stderr, reply
        last_run = [round(e.unix, 3) for e in ride[last_start:position]]
        wait_for(lambda: stored_activities(d.db)[0].ended_at is not None, timeout=60,
                 what="the activity stopped")  # fmt: skip
        wait_for(lambda: set(last_run) <= set(times(d)), timeout=60,
                 what="every fix of the last run stored")  # fmt: skip
        assert "holding" in d.log_text(), "the injected failures reached the store"

        def delivered() -> bool:
            acts = list(mmt.activities.values())
            report = status(d)
            return (bool(acts) and not any(a.live for a in acts)
                    and report["pending"] == {MMT: 0, GPSR: 0})  # fmt: skip

        # Delivered while the writes still fail: the senders retry a failing store within a
        # fraction of a second, not after a fixed 5 s per failure (which held the backlog for
        # minutes).
        wait_for(delivered, timeout=180, what="both backlogs 0 and the activity stopped")
        off = [FIU_CTRL, "-f", ctrl]
        for name in FAILING:
            off += ["-c", f"disable name={name}"]
        subprocess.run([*off, str(d.proc.pid)], check=True, timeout=30)
        assert d.terminate() == 0

    fixes = stored_fixes(d.db)
    got = [round(f.time, 3) for f in fixes]
    assert len(got) == len(set(got)), "no fix stored twice"
    assert got == sorted(got)
    assert set(last_run) <= set(got)
    activity = one_activity(d)  # every restart resumed the one activity
    assert activity.end_reason == "requested"
    assert all(f.activity_id == activity.id for f in fixes), "every fix in the activity"
    assert activity.ended_at == pytest.approx(fixes[-1].time)
    (remote,) = mmt.activities.values()
    assert mmt.duplicate_points(remote.id) == []
    assert_points_match(remote.points, first_of_each_second(fixes))
    assert_gpsr_holds(gpsr, fixes)
