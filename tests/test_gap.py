"""How far each server is behind the unit (issue 24, "status shows the gap"): the store's
`gap()`, the status's `behind_s` / `backlog_s` / `delivery` words, and how they read."""

from __future__ import annotations

from tracker.config import Config, StorageConfig
from tracker.fix import Fix
from tracker.status import collect, delivery_words, render
from tracker.store import open_store
from tracker.words import duration

T0 = 1_780_000_000.0


def fix(t: float) -> Fix:
    return Fix(time=T0 + t, lat=48.1 + t * 1e-5, lon=11.5, alt=500.0, speed=5.0, course=90.0,
               quality=1, sats=9, hdop=0.9)  # fmt: skip


def test_words_for_a_span():
    assert [duration(s) for s in (0, 40.4, 59.6, 720, 3599, 3600, 3900, 2 * 86400 + 3 * 3600)] == [
        "0 s", "40 s", "1 min", "12 min", "1 h", "1 h", "1 h 5 min", "2 d 3 h",
    ]  # fmt: skip
    assert delivery_words(False, 0) == "up to date"
    assert delivery_words(True, 4) == "live (4 s behind)"
    assert delivery_words(True, 720) == "catching up (12 min behind)"
    assert delivery_words(True, 1, 3000) == "live, filling in 50 min of history"


def test_the_gap_follows_what_the_server_acknowledged(tmp_path):
    db = tmp_path / "tracker.db"
    store = open_store(db)
    a = store.start_activity("Ride", "cycling", "private", [], T0)
    store.add_fixes(a.id, [fix(i) for i in range(3600)])  # an hour at 1 Hz, nothing sent
    store.register_backend("gpsr")
    store.register_backend("traccar")
    ids = [f.id for f in store.next_batch("gpsr", 5000)]
    assert store.gap("gpsr") == {"server_newest": None, "oldest_pending": T0,
                                 "newest_pending": T0 + 3599}  # fmt: skip

    store.acknowledge("gpsr", ids[:600])  # the first 10 minutes, in order
    assert store.gap("gpsr")["server_newest"] == T0 + 599
    assert store.gap("gpsr")["oldest_pending"] == T0 + 600
    store.acknowledge("gpsr", ids[-1:])  # the present first, out of order
    assert store.gap("gpsr") == {"server_newest": T0 + 3599, "oldest_pending": T0 + 600,
                                 "newest_pending": T0 + 3598}  # fmt: skip
    store.quarantine("traccar", ids[:10], "refused")  # refused is not held by the server
    assert store.gap("traccar")["server_newest"] is None

    got = collect(store, Config(storage=StorageConfig(path=db)))["backends"]
    store.close()
    assert got["traccar"]["behind_s"] == 3599 - 10 and got["traccar"]["backlog_s"] == 3589
    assert got["traccar"]["delivery"] == "catching up (1 h behind)"
    assert got["gpsr"]["server_newest"] == "2026-05-28T21:26:39.000Z"
    assert got["gpsr"]["behind_s"] == 0 and got["gpsr"]["backlog_s"] == 2998  # the present first
    assert got["gpsr"]["delivery"] == "live, filling in 50 min of history"


def test_tracker_status_says_how_far_behind():
    status = {
        "fixes": 3600, "pending": {"gpsr": 3000, "mapmytracks": 0}, "quarantined": {},
        "backends": {"gpsr": {"state": "ok", "delivery": "catching up (50 min behind)",
                              "held_back": 600},
                     "mapmytracks": {"state": "ok", "delivery": "up to date"}},
        "activity": None, "last_fix": None, "rejected": {"total": 0, "by_reason": {}},
        "database": {"path": "/x.db", "size_bytes": 1, "max_mb": 1}, "gps": {},
        "daemon": {"running": True, "pid": 1, "started": None, "updated": None},
        "sensors": [], "storage": {},
    }  # fmt: skip
    text = render(status)
    assert ("backlog:   gpsr: 3000 fixes, catching up (50 min behind) (600 older than its "
            "history, kept, not sent)") in text
    assert "backlog:   mapmytracks: 0 fixes\n" in text
