"""`tracker status` as a person reads it, from a crafted status (the JSON side is end-to-end)."""

from tracker.status import render


def status(**over):
    base = {
        "fixes": 12,
        "pending": {"mapmytracks": 3},
        "quarantined": {"mapmytracks": 1},
        "backends": {},
        "activity": {"id": 2, "title": "Ride", "type": "cycling", "started": "2026-06-01T08:00Z"},
        "last_fix": {"time": "2026-06-01T08:10:00.000Z", "lat": 47.0, "lon": 7.6, "alt": 512.0,
                     "quality": 2, "satellites": 9, "hdop": 0.8},
        "rejected": {"total": 4, "by_reason": {"checksum": 4, "garbage": 0}},
        "database": {"path": "/var/lib/tracker/tracker.db", "size_bytes": 2_500_000,
                     "max_mb": 1024},
        "daemon": {"running": True, "pid": 42, "started": "2026-06-01T07:59Z", "updated": None},
        "gps": {"device": "/dev/serial0", "state": "open", "baudrate": 9600, "sentences": 99},
        "sensors": [{"label": "strap", "type": "ble", "state": "lost", "error": "out of range",
                     "last": {"hr": 141.0}}],
        "storage": {"storage_error": None, "dropped_fixes": 0},
    }  # fmt: skip
    base.update(over)
    return base


def test_the_lines_a_rider_reads():
    text = render(status())
    assert "daemon:    running (pid 42" in text
    assert "rejected:  checksum 4" in text and "garbage" not in text
    assert "sensor:    strap (ble) lost (out of range): hr 141" in text
    assert "47.000000, 7.600000  alt 512.0 m  dgps, 9 satellites" in text
    assert "backlog:   mapmytracks: 3 fixes (1 quarantined)" in text
    assert "2.5 MB of 1024 MB" in text
    assert "STORAGE" not in text


def test_one_fix_is_one_fix():
    text = render(status(pending={"mapmytracks": 1, "gpsr": 0}, quarantined={}))
    assert "backlog:   mapmytracks: 1 fix\n" in text + "\n"
    assert "backlog:   gpsr: 0 fixes" in text


def test_problems_stand_out():
    text = render(status(storage={"storage_error": "/x.db: disk full", "dropped_fixes": 7,
                                  "dropped_undelivered": 3},
                         daemon={"running": False, "pid": None, "started": None,
                                 "updated": None}, last_fix=None, pending={}))  # fmt: skip
    assert "not running (last seen never)" in text
    assert "STORAGE:   /x.db: disk full" in text
    assert "DROPPED:   7 fixes" in text and "PRUNED:    3 undelivered" in text
    assert "last fix:  none yet" in text and "no backend configured" in text


def test_the_storage_state_stands_out():
    error = "/x.db: cannot write: attempt to write a readonly database"
    text = render(status(storage={"state": "read-only", "held": 412, "storage_error": error}))
    assert "STORAGE:   read-only, 412 fixes held in memory: /x.db: cannot write" in text
    text = render(status(storage={"state": "full", "storage_error": None},
                         database={"path": "/x.db", "size_bytes": None, "max_mb": 1024}))
    assert "STORAGE:   full" in text and "database:  /x.db cannot be read" in text
    assert "STORAGE" not in render(status(storage={"state": "ok", "storage_error": None}))


def test_a_stale_row_gives_way_to_the_daemons_status_file(tmp_path, monkeypatch):
    """The daemon cannot write its row while the storage fails: status takes what it wrote in
    the runtime directory, when that is newer and from a live process, and ignores a file
    written for another database."""
    import os

    from tracker.config import Config, StorageConfig
    from tracker.runtime import DaemonStatus, RecorderCounters, write_status_file
    from tracker.status import collect
    from tracker.store import open_store

    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    db = tmp_path / "tracker.db"
    cfg = Config(storage=StorageConfig(path=db))
    with open_store(db) as s:
        s.put_runtime("daemon", DaemonStatus(pid=os.getpid(), running=True).to_json())
    failing = DaemonStatus(pid=os.getpid(), running=True, recorder=RecorderCounters(
        storage_state="full", storage_error="disk full", held=9))  # fmt: skip
    write_status_file(tmp_path / "other.db", failing)  # another daemon's
    with open_store(db, readonly=True) as s:
        report = collect(s, cfg)
    assert report["daemon"]["running"] and report["storage"]["state"] == "ok"

    with open_store(db) as s:  # the row goes stale: the daemon stopped writing it
        s._clock = lambda: 1.0
        s.put_runtime("daemon", DaemonStatus(pid=os.getpid(), running=True).to_json())
    with open_store(db, readonly=True) as s:
        assert collect(s, cfg)["daemon"]["running"] is False
    written = write_status_file(db, failing)
    assert [p.parent for p in written] == [tmp_path / "run", tmp_path]
    with open_store(db, readonly=True) as s:
        report = collect(s, cfg)
    assert report["daemon"]["running"] and report["daemon"]["pid"] == os.getpid()
    assert report["storage"]["state"] == "full" and report["storage"]["held"] == 9


def test_watch_refreshes_until_interrupted(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tracker.fix import Fix
    from tracker.store import open_store

    db = tmp_path / "tracker.db"
    store = open_store(db)
    store.add_fixes(None, [Fix(1_780_000_000.0, 47.0, 7.6)])
    store.close()
    conf = tmp_path / "tracker.toml"
    conf.write_text(f'[storage]\npath = "{db}"\n')
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker", "status", "--watch", "0.1", "-c", str(conf)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    lines = []
    while sum("fixes:" in line for line in lines) < 3 and time.monotonic() < deadline:
        lines.append(proc.stdout.readline())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err
    assert sum("fixes:     1 stored" in line for line in lines) >= 3  # a report each refresh


def test_inputs_and_the_share_are_shown():
    inputs = [
        {"name": "mux", "url": "tcp://192.168.1.10:10110", "state": "open", "error": None,
         "sentences": 1200, "readings": 800, "last_seen": "2026-06-01T08:10:00.000Z"},
        {"name": "sounder", "url": "/dev/ttyUSB1", "state": "connecting",
         "error": "No such file or directory", "sentences": 0, "readings": 0, "last_seen": None},
    ]  # fmt: skip
    share = {"listen": "0.0.0.0:10110", "clients": 2, "dropped_bytes": 4096}
    text = render(status(inputs=inputs, share=share,
                         gps={"device": "gpsd://127.0.0.1:2947", "state": "open",
                              "baudrate": 9600, "sentences": 99}))  # fmt: skip
    assert ("input:     mux (tcp://192.168.1.10:10110) open: 1200 sentences, 800 readings, "
            "last seen 2026-06-01T08:10:00.000Z") in text
    assert ("input:     sounder (/dev/ttyUSB1) connecting (No such file or directory): "
            "0 sentences, 0 readings, nothing yet") in text
    assert "share:     tcp 0.0.0.0:10110, 2 clients, 4096 bytes dropped for slow clients" in text
    assert "gps:       gpsd://127.0.0.1:2947 open, 99 reports" in text  # no baud rate
    failed = {"listen": "0.0.0.0:10110", "error": "Address already in use", "clients": 0}
    assert "SHARE:     tcp 0.0.0.0:10110 not serving: Address already in use" in render(
        status(share=failed)
    )
    plain = render(status())  # neither configured: no lines for them
    assert "input:" not in plain and "share:" not in plain


def test_collect_reads_the_inputs_and_share_rows(tmp_path):
    from tracker.config import Config, StorageConfig
    from tracker.runtime import DAEMON_KEY, DaemonStatus, InputStatus, ShareStatus
    from tracker.status import collect
    from tracker.store import open_store

    db = tmp_path / "tracker.db"
    store = open_store(db)
    row = DaemonStatus(
        pid=1, running=False,
        inputs=[InputStatus(name="mux", url="tcp://h:1", state="lost", last_seen=1.78e9,
                            connects=2).to_json()],
        share=ShareStatus(listen="127.0.0.1:10110", clients=1, dropped_bytes=7),
    )  # fmt: skip
    store.put_runtime(DAEMON_KEY, row.to_json())
    got = collect(store, Config(storage=StorageConfig(path=db)))
    store.close()
    (mux,) = got["inputs"]
    assert (mux["name"], mux["state"], mux["connects"]) == ("mux", "lost", 2)
    assert mux["last_seen"] == "2026-05-28T20:26:40.000Z"
    assert got["share"]["clients"] == 1 and got["share"]["dropped_bytes"] == 7
    store = open_store(db)
    store.put_runtime(DAEMON_KEY, DaemonStatus(pid=1).to_json())  # a daemon without them
    got = collect(store, Config(storage=StorageConfig(path=db)))
    store.close()
    assert got["inputs"] == [] and got["share"] == {}


def test_the_current_activitys_latest_instrument_readings(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from tracker.config import Config, StorageConfig
    from tracker.fix import Fix, Sample
    from tracker.status import collect
    from tracker.store import open_store

    t0 = 1_780_300_800.0
    db = tmp_path / "tracker.db"
    store = open_store(db)
    a = store.start_activity("Race", "sailing", "private", (), t0)
    store.add_fixes(a.id, [Fix(t0 + i, 47.0, 7.6, speed=3.0) for i in range(10)])
    store.add_samples([Sample(t0 + 1, "depth", 9.0, "mux"), Sample(t0 + 8, "depth", 15.5, "mux"),
                       Sample(t0 + 9, "wind_speed_app", 12.6 * 1852 / 3600, "mux"),
                       Sample(t0 + 9, "water_temp", 17.9, "mux"),
                       Sample(t0 - 60, "heading_mag", 90.0, "mux"),  # before the activity
                       Sample(t0 + 5, "hr", 120.0)])  # fmt: skip
    cfg = Config(storage=StorageConfig(path=db))
    got = collect(store, cfg)["instruments"]
    assert got["activity"] == a.id
    assert [(r["kind"], r["value"], r["text"]) for r in got["readings"]] == [
        ("depth", 15.5, "15.5 m"), ("wind_speed_app", 6.482, "12.6 kn"),
        ("water_temp", 17.9, "17.9 °C"),
    ]  # fmt: skip
    text = render(status(instruments=got))
    assert "readings:  depth 15.5 m, apparent wind 12.6 kn, water 17.9 °C" in text
    assert text.index("activity:") < text.index("readings:")

    # The JSON a script reads is the same, through the command.
    conf = tmp_path / "tracker.toml"
    conf.write_text(f'[storage]\npath = "{db}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "tracker", "status", "--json", "-c", str(conf)],
        capture_output=True, text=True, timeout=30, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["instruments"] == got

    # Once the activity ended: no current activity, no readings line.
    store.end_activity(a.id, t0 + 10, "manual")
    got = collect(store, cfg)
    store.close()
    assert got["instruments"] == {"activity": None, "readings": []}
    assert "readings:" not in render(status(activity=None, instruments=got["instruments"]))


def test_no_readings_line_for_a_bike():
    bike = {"activity": 2, "readings": []}
    assert "readings:" not in render(status(instruments=bike))
    assert "readings:" not in render(status())  # a status without the key (an older reader)
