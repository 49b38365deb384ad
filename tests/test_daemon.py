"""End to end: the simulator through a real pty into a real `tracker run` process."""

from __future__ import annotations

import json
import random
import time
from datetime import timedelta

import pytest
from support import T0, epochs, stored_activities, stored_times, wait_for

from tracker import simulate
from tracker.store import open_store

pytestmark = pytest.mark.slow


def play(gps, eps, pause: float = 0.0) -> None:
    for e in eps:
        gps.write(e.data)
        if pause:
            time.sleep(pause)


def test_a_ride_is_stored_reported_and_the_daemon_stops_cleanly(daemon, gps):
    d = daemon().start()
    d.wait_gps_open()
    faults = simulate.parse_faults("checksum=0.02,garbage=0.02,truncate=0.01")
    ride = epochs(300, faults=faults, seed=3)
    play(gps, ride)
    expected = {round(e.unix, 3) for e in ride if e.valid}
    possible = {round(e.unix, 3) for e in ride if e.fix}
    assert expected, "the ride has valid epochs"
    wait_for(lambda: expected <= set(stored_times(d.db)), what="every valid epoch stored")

    status = d.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    times = stored_times(d.db)
    assert report["fixes"] == len(times)
    assert len(times) == len(set(times)), "no fix stored twice"
    assert set(times) <= possible, "nothing stored from an epoch without a fix"
    assert report["pending"] == {}
    assert report["activity"]["id"] == 1
    assert report["lifecycle"]["mode"] == "auto"  # the default, as the daemon reports it
    assert report["activity"]["state"] in ("moving", "paused")
    assert report["last_fix"]["satellites"] is not None
    assert report["database"]["size_bytes"] > 0
    wait_for(lambda: json.loads(d.cli("status", "--json").stdout)["rejected"]["total"] > 0,
             timeout=10, what="rejected sentences counted in status")  # fmt: skip
    human = d.cli("status")
    assert "running" in human.stdout and "last fix" in human.stdout

    started = time.monotonic()
    assert d.terminate() == 0
    assert time.monotonic() - started < 15
    assert "tracker stopped" in d.log_text()
    report = json.loads(d.cli("status", "--json").stdout)
    assert report["daemon"]["running"] is False


def test_the_epoch_still_open_at_sigterm_is_stored_before_the_daemon_exits(daemon, gps):
    """SIGTERM right after the last sentence, before the line could go quiet: the reader
    completes that epoch as it stops, and the recorder waits for it before its last commit."""
    d = daemon().start()
    d.wait_gps_open()
    ride = epochs(20)
    for e in ride[:-1]:
        gps.write(e.data)
    wait_for(lambda: len(stored_times(d.db)) >= len(ride) - 2, what="all but the newest stored")
    # The newest epoch without the sentence that ends this receiver's cycle: the decoder holds
    # it until the next epoch or a quiet line, and neither comes before the SIGTERM.
    last = ride[-1].data.rstrip(b"\r\n").rsplit(b"\r\n", 1)[0] + b"\r\n"
    gps.write(last)
    time.sleep(0.2)  # read, and still open
    assert d.terminate() == 0
    assert set(stored_times(d.db)) == {round(e.unix, 3) for e in ride}


def test_activity_stop_and_start_through_the_running_daemon(daemon, gps):
    d = daemon().start()
    d.wait_gps_open()
    ride = epochs(60, rate_hz=1.0)
    play(gps, ride[:20])
    wait_for(lambda: len(stored_times(d.db)) >= 20, what="first fixes")

    reply = d.cli("activity", "stop")
    assert reply.returncode == 0, reply.stderr
    assert "activity 1 stopped" in reply.stdout
    play(gps, ride[20:40])
    wait_for(lambda: len(stored_times(d.db)) >= 40, what="fixes after the stop")

    reply = d.cli("activity", "start")
    assert reply.returncode == 0 and "next fix" in reply.stdout
    play(gps, ride[40:])
    wait_for(lambda: len(stored_times(d.db)) >= 60, what="fixes after the start")
    assert d.terminate() == 0

    store = open_store(d.db, readonly=True)
    try:
        acts = store.activities()
        by_activity = {}
        for f in store.iter_fixes():
            by_activity.setdefault(f.activity_id, []).append(f.time)
    finally:
        store.close()
    assert [a.id for a in acts] == [1, 2]
    assert acts[0].end_reason == "requested" and acts[0].ended_at == ride[19].unix
    assert len(by_activity[1]) == 20
    assert len(by_activity[None]) == 20, "fixes between stop and start belong to no activity"
    assert len(by_activity[2]) == 20 and acts[1].started_at == ride[40].unix


def test_activity_request_without_a_daemon_says_so(daemon):
    d = daemon()
    open_store(d.db).close()
    reply = d.cli("activity", "stop", "--wait", "0.5")
    assert reply.returncode == 1
    assert "did not take the request" in reply.stderr


def test_a_restart_within_the_window_resumes_the_activity(daemon, gps):
    d = daemon('[activity]\nstart = "always"\nresume_window_s = 600\n').start()
    d.wait_gps_open()
    play(gps, epochs(10, rate_hz=1.0))
    wait_for(lambda: len(stored_times(d.db)) >= 10)
    assert d.terminate() == 0

    d.start()
    d.wait_gps_open()
    play(gps, epochs(10, rate_hz=1.0, start=T0 + timedelta(minutes=5)))  # within 600 s
    wait_for(lambda: len(stored_times(d.db)) >= 20)
    assert d.terminate() == 0

    d.start()
    d.wait_gps_open()
    play(gps, epochs(10, rate_hz=1.0, start=T0 + timedelta(minutes=30)))  # beyond it
    wait_for(lambda: len(stored_times(d.db)) >= 30)
    assert d.terminate() == 0

    acts = stored_activities(d.db)
    assert len(acts) == 2
    assert acts[0].end_reason == "gap"
    assert acts[0].ended_at == pytest.approx((T0 + timedelta(minutes=5, seconds=9)).timestamp())


def test_sigkill_repeatedly_loses_nothing_committed_and_never_corrupts(daemon, gps):
    """Kill -9 a real daemon again and again while fixes stream in at 10 Hz."""
    d = daemon()
    rng = random.Random(7)
    ride = epochs(100_000, rate_hz=10.0)
    position = 0
    committed_before_kills: list[set[float]] = []
    for _ in range(6):
        d.start()
        d.wait_gps_open()
        until = time.monotonic() + rng.uniform(1.0, 2.5)
        while time.monotonic() < until:
            gps.write(ride[position].data)
            position += 1
            time.sleep(0.01)
        # What a reader sees as committed right now must survive the kill that follows.
        committed = set(stored_times(d.db))
        d.kill()
        committed_before_kills.append(committed)
        time.sleep(0.1)

    store = open_store(d.db)  # read-write open: runs quick_check, would move a damaged file
    try:
        assert store.integrity_check() == "ok"
        final = [round(f.time, 3) for f in store.iter_fixes()]
        assert len(store.activities()) == 1, "restarts within the window resume the activity"
    finally:
        store.close()
    assert not list(d.workdir.glob("*.corrupt-*"))
    assert len(final) == len(set(final)), "no fix stored twice"
    for n, committed in enumerate(committed_before_kills):
        assert committed, f"kill {n}: something had been committed"
        assert committed <= set(final), f"kill {n}: committed fixes lost"
    assert final == sorted(final)


def test_bad_config_is_one_line_and_exit_2(daemon, tmp_path):
    d = daemon()
    d.config.write_text('[gps]\nbaudrate = "fast"\n')
    d.start()
    assert d.proc.wait(timeout=30) == 2
    lines = d.log_text().strip().splitlines()
    assert len(lines) == 1
    assert "[gps] baudrate" in lines[0] and str(d.config) in lines[0]


def test_a_corrupt_database_is_moved_aside_and_recording_goes_on(daemon, gps):
    d = daemon()
    d.db.write_bytes(b"this is not a database, it is what a bad SD card left\n" * 200)
    d.start()
    d.wait_gps_open()
    play(gps, epochs(10, rate_hz=1.0))
    wait_for(lambda: len(stored_times(d.db)) == 10, what="fixes in the fresh database")
    assert d.terminate() == 0
    aside = list(d.workdir.glob("tracker.db.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not a database")
    errors = [line for line in d.log_text().splitlines() if "moved it to" in line]
    assert len(errors) == 1 and str(aside[0]) in errors[0] and "ERROR" in errors[0]


def test_status_without_a_database_is_one_clear_line(daemon):
    d = daemon()
    done = d.cli("status")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and str(d.db) in done.stderr
    assert "Traceback" not in done.stderr


def test_version_and_python_dash_m():
    import subprocess
    import sys

    from tracker import __version__

    done = subprocess.run([sys.executable, "-m", "tracker", "--version"], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == f"tracker {__version__}"


def test_a_button_without_gpio_hardware_is_one_log_line_and_the_daemon_runs_on(daemon, gps):
    d = daemon('[activity]\nstart = "always"\n\n[button]\ngpio = 17\n').start()
    d.wait_gps_open()
    play(gps, epochs(5, rate_hz=1.0))
    wait_for(lambda: len(stored_times(d.db)) >= 5, what="fixes stored without the button")
    wait_for(lambda: "button on GPIO 17 unavailable" in d.log_text(), timeout=10,
             what="one line about the missing button")  # fmt: skip
    assert d.terminate() == 0
    lines = [x for x in d.log_text().splitlines() if "button on GPIO" in x]
    assert len(lines) == 1, lines
    assert "Traceback" not in d.log_text()


def test_an_exposed_secret_is_warned_about_and_the_database_is_not_world_readable(daemon, gps):
    import stat

    d = daemon('[mapmytracks]\nurl = "http://127.0.0.1:9/api/"\nusername = "r"\n'
               'password = "hunter2"\n')  # fmt: skip
    d.config.chmod(0o644)
    d.start()
    d.wait_gps_open()
    play(gps, epochs(3, rate_hz=1.0))
    wait_for(lambda: len(stored_times(d.db)) >= 3, what="fixes stored")
    assert d.terminate() == 0
    log = d.log_text()
    assert f"chmod 640 {d.config}" in log and "hunter2" not in log
    for path in d.db.parent.glob("tracker.db*"):
        assert not stat.S_IMODE(path.stat().st_mode) & 0o007, path  # owner and group only


def test_an_error_in_the_main_loop_is_logged_and_the_daemon_tracks_on(gps, tmp_path, monkeypatch,
                                                                       caplog):
    """The main thread runs through the worker loop like every other: a bug in its systemd
    step (here the supervisor's tick, failing once) is one logged error, not a stopped
    daemon."""
    import logging
    import threading
    import tomllib

    from tracker import daemon
    from tracker import systemd as sd
    from tracker.config import parse

    real, failed = sd.Supervisor.tick, []

    def tick(self, *args, **kw):
        if not failed:
            failed.append(True)
            raise RuntimeError("a bug in the status line")
        return real(self, *args, **kw)

    monkeypatch.setattr(sd.Supervisor, "tick", tick)
    db = tmp_path / "tracker.db"
    cfg = parse(tomllib.loads(f'[gps]\ndevice = "{gps.path}"\n[storage]\npath = "{db}"\n'))
    stop = threading.Event()
    caplog.set_level(logging.ERROR)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run(cfg, stop)), daemon=True)
    thread.start()
    try:
        wait_for(lambda: failed, what="the failing step")
        play(gps, epochs(20))
        wait_for(lambda: db.exists() and len(stored_times(db)) >= 19, what="fixes after the error")
        assert thread.is_alive()
        assert any("a bug in the status line" in r.getMessage() or
                   (r.exc_info and "a bug in the status line" in str(r.exc_info[1]))
                   for r in caplog.records)  # fmt: skip
    finally:
        stop.set()
        thread.join(timeout=20)
    assert result == [0]
