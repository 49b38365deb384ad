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


def test_problems_stand_out():
    text = render(status(storage={"storage_error": "/x.db: disk full", "dropped_fixes": 7,
                                  "dropped_undelivered": 3},
                         daemon={"running": False, "pid": None, "started": None,
                                 "updated": None}, last_fix=None, pending={}))  # fmt: skip
    assert "not running (last seen never)" in text
    assert "STORAGE:   /x.db: disk full" in text
    assert "DROPPED:   7 fixes" in text and "PRUNED:    3 undelivered" in text
    assert "last fix:  none yet" in text and "no backend configured" in text


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
