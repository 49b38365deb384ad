"""The recorder against storage that fails: a full disk, a read-only file system, no directory.

Where the machine allows it (root, mount permitted) the disk is a real tiny tmpfs filled to the
last byte and remounted read-only; otherwise SQLite's own `max_page_count` gives a real
SQLITE_FULL at the narrowest boundary.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

from support import epochs, mount, stored_fixes, stored_times, wait_for

from tracker.config import Config, StorageConfig
from tracker.fix import Fix, Sample
from tracker.recorder import Recorder
from tracker.store import open_store


class Running:
    def __init__(self, db: Path, open_db=open_store, **cfg_kw) -> None:
        cfg = Config(storage=StorageConfig(path=db, commit_interval_s=0.1), **cfg_kw)
        self.inbox: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.recorder = Recorder(cfg, self.inbox, self.stop, open_db=open_db)
        self.thread = threading.Thread(target=self.recorder.run, daemon=True)
        self.thread.start()

    def feed(self, fixes) -> None:
        self.recorder.offer(list(fixes))  # as a source does: stamped with its arrival

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def fixes(n: int) -> list[Fix]:
    """`n` fixes of the simulated ride at 10 Hz, as the decoder would make them."""
    return [
        Fix(time=e.unix, lat=e.lat, lon=e.lon, alt=e.alt, speed=e.speed, course=e.course,
            quality=1, sats=e.sats, hdop=e.hdop)
        for e in epochs(n, rate_hz=10.0)
    ]  # fmt: skip


def test_sqlite_full_holds_fixes_in_memory_then_writes_them(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    stores = []

    def open_db(path, **kw):
        stores.append(open_store(path, **kw))
        return stores[-1]

    db = tmp_path / "tracker.db"
    r = Running(db, open_db)
    try:
        ride = fixes(3000)
        r.feed(ride[:10])
        wait_for(lambda: len(stored_times(db)) == 10)
        conn = stores[0]._conn
        conn.execute(f"PRAGMA max_page_count = {stores[0].pragma('page_count')}")
        r.feed(ride[10:])
        wait_for(lambda: r.recorder.stats.storage_error, what="the storage error")
        assert r.recorder.stats.held == 2990
        assert r.thread.is_alive()
        message = next(m for m in caplog.messages if "holding" in m)
        assert str(db) in message and "full" in message.lower()
        assert "\n" not in message

        conn.execute("PRAGMA max_page_count = 1073741823")  # space is back
        wait_for(lambda: r.recorder.stats.storage_error is None, what="recovery")
    finally:
        r.close()
    times = stored_times(db)
    assert times == sorted(round(f.time, 3) for f in ride)


def test_a_store_that_cannot_be_opened_is_retried(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    blocker = tmp_path / "state"
    blocker.write_text("a file where the database directory should be")
    db = blocker / "tracker.db"
    r = Running(db)
    try:
        r.feed(fixes(20))
        wait_for(lambda: r.recorder.stats.storage_errors >= 2, what="repeated open failures")
        assert r.recorder.stats.held == 20
        assert sum("cannot create its directory" in m for m in caplog.messages) == 1
        blocker.unlink()
        wait_for(lambda: len(stored_times(db)) == 20, what="fixes written once it can open")
    finally:
        r.close()


def test_a_really_full_disk_then_space_again(tiny_disk, caplog):
    caplog.set_level(logging.ERROR)
    db = tiny_disk / "tracker.db"
    r = Running(db)
    try:
        ride = fixes(8000)
        r.feed(ride[:10])
        wait_for(lambda: len(stored_times(db)) == 10)
        (tiny_disk / "filler").write_bytes(b"\0" * 200_000)  # someone else fills the disk
        for i in range(10, 8000, 500):
            r.feed(ride[i : i + 500])
        wait_for(lambda: r.recorder.stats.storage_error, what="the disk-full error")
        assert r.thread.is_alive()
        (tiny_disk / "filler").unlink()
        assert mount("-o", "remount,size=16m", str(tiny_disk))
        wait_for(lambda: r.recorder.stats.storage_error is None, timeout=30, what="recovery")
    finally:
        r.close()
    assert any(str(db) in m for m in caplog.messages)
    store = open_store(db)
    try:
        assert store.integrity_check() == "ok"
        assert store.fix_count() == 8000
    finally:
        store.close()


def test_a_read_only_file_system_then_writable_again(tiny_disk, caplog):
    """Remounting read-only under open files is refused (EBUSY), so the daemon starts on it."""
    caplog.set_level(logging.ERROR)
    db = tiny_disk / "tracker.db"
    ride = fixes(100)
    r = Running(db)
    r.feed(ride[:10])
    wait_for(lambda: len(stored_times(db)) == 10)
    r.close()
    assert mount("-o", "remount,ro", str(tiny_disk))
    r = Running(db)
    try:
        r.feed(ride[10:])
        wait_for(lambda: r.recorder.stats.storage_errors >= 2, what="the read-only errors")
        assert r.recorder.stats.held == 90
        assert r.thread.is_alive()
        assert mount("-o", "remount,rw", str(tiny_disk))
        wait_for(lambda: r.recorder.stats.storage_error is None, timeout=30, what="recovery")
    finally:
        r.close()
    errors = [m for m in caplog.messages if str(db) in m]
    assert len(errors) == 1, errors  # rate-limited: one line, not one per retry
    assert "read-only" in errors[0].lower() or "readonly" in errors[0].lower()
    assert len(stored_times(db)) == 100


def _request_done(db: Path, rid: int) -> bool:
    with open_store(db, check=False) as s:
        req = s.request(rid)
        return req is not None and req.done_at is not None


def test_an_idle_recorder_writes_nothing_yet_takes_requests_and_fixes_at_once(
    tmp_path, monkeypatch
):
    """A silent GPS: no commit, no fsync for the SD card, each commit interval (the runtime row
    is rewritten every RUNTIME_IDLE_S only); a CLI request and new fixes are still taken at the
    next interval."""
    import sqlite3
    import time

    import tracker.recorder

    monkeypatch.setattr(tracker.recorder, "RUNTIME_EVERY_S", 0.2)  # the busy rhythm, fast
    db = tmp_path / "tracker.db"
    r = Running(db)
    try:
        wait_for(lambda: stored_times(db) == [] and db.exists(), what="the store made")
        watch = sqlite3.connect(db, isolation_level=None)
        version = lambda: watch.execute("PRAGMA data_version").fetchone()[0]  # noqa: E731
        time.sleep(0.3)  # the first runtime row is written
        before = version()
        time.sleep(1.0)  # ten commit intervals of 0.1 s, nothing arriving
        assert version() == before, "an idle commit interval wrote to the database"
        with open_store(db) as s:
            rid = s.add_request("activity_stop")
        wait_for(lambda: _request_done(db, rid), timeout=5, what="the request taken while idle")
        r.feed(fixes(5))
        wait_for(lambda: len(stored_times(db)) == 5, timeout=5, what="fixes stored")
        watch.close()
    finally:
        r.close()


def _failing_then_free(tmp_path):
    """A recorder whose store goes full (SQLite's max_page_count) on demand, and the knob."""
    stores = []

    def open_db(path, **kw):
        stores.append(open_store(path, **kw))
        return stores[-1]

    db = tmp_path / "tracker.db"

    def full(on: bool) -> None:
        conn = stores[-1]._conn
        pages = stores[-1].pragma("page_count") if on else 1073741823
        conn.execute(f"PRAGMA max_page_count = {pages}")

    return db, open_db, full


def test_held_fixes_and_a_stop_request_are_applied_in_the_order_they_happened(tmp_path):
    """The fixes offered before `tracker activity stop` belong to the activity, the ones after
    do not, however long the store refused them all (they were once applied stop first)."""
    from tracker.config import ActivityConfig

    db, open_db, full = _failing_then_free(tmp_path)
    r = Running(db, open_db, activity=ActivityConfig(start="always"))
    ride = fixes(300)
    try:
        r.feed(ride[:10])
        wait_for(lambda: len(stored_times(db)) == 10, what="the first fixes")
        full(True)
        r.feed(ride[10:200])
        wait_for(lambda: r.recorder.stats.held == 190, what="fixes held")
        with open_store(db, check=False) as s:  # another connection: not limited
            rid = s.add_request("activity_stop")
        r.feed(ride[200:])
        wait_for(lambda: r.recorder.stats.held == 290 and r.recorder.stats.storage_errors >= 2,
                 what="the rest held, the store still full")  # fmt: skip
        full(False)
        wait_for(lambda: _request_done(db, rid), what="the stop request carried out")
        wait_for(lambda: len(stored_times(db)) == 300, what="every fix stored")
    finally:
        r.close()
    with open_store(db, readonly=True) as s:
        (act,) = s.activities()
        inside = [round(f.time, 3) for f in s.iter_fixes(act.id)]
        assert act.ended_at is not None and act.end_reason == "requested"
    assert inside == [round(f.time, 3) for f in ride[:200]]
    assert act.ended_at == ride[199].time


def test_a_poi_marks_the_first_fix_offered_after_it(tmp_path):
    db, open_db, full = _failing_then_free(tmp_path)
    r = Running(db, open_db)
    ride = fixes(40)
    try:
        r.feed(ride[:10])
        wait_for(lambda: len(stored_times(db)) == 10, what="the first fixes")
        full(True)
        r.feed(ride[10:20])
        wait_for(lambda: r.recorder.stats.held == 10, what="fixes held")
        with open_store(db, check=False) as s:
            s.add_request("poi", "bridge")
        r.feed(ride[20:])
        wait_for(lambda: r.recorder.stats.held == 30, what="all held")
        full(False)
        wait_for(lambda: len(stored_times(db)) == 40, what="every fix stored")
    finally:
        r.close()
    marked = [(i, f.poi) for i, f in enumerate(stored_fixes(db)) if f.poi]
    assert marked == [(20, "bridge")]


def test_stopped_while_the_store_is_unwritable_then_restarted(tiny_disk, tmp_path, monkeypatch):
    """The fixes held at a stop go to a spill file (the runtime directory here: the database's
    file system is read-only) and are stored once at the next start; a spill file that
    outlived its ingestion (a crash before its deletion) adds nothing."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(run_dir))
    db = tiny_disk / "tracker.db"
    ride = fixes(200)
    r = Running(db)
    r.feed(ride[:10])
    wait_for(lambda: len(stored_times(db)) == 10)
    r.close()
    assert mount("-o", "remount,ro", str(tiny_disk))
    r = Running(db)
    r.feed(ride[10:150])
    r.feed([Sample(f.time, "hr", 120.0 + i % 30, "strap") for i, f in enumerate(ride[10:150])])
    wait_for(lambda: r.recorder.stats.held == 140 and r.recorder.stats.storage_error,
             what="fixes held on a read-only disk")  # fmt: skip
    assert r.recorder.stats.storage_state == "read-only"
    r.close()
    (spilled,) = run_dir.glob("*.spill")
    assert r.recorder.stats.spilled == 140
    kept = spilled.read_bytes()
    assert mount("-o", "remount,rw", str(tiny_disk))
    r = Running(db)
    try:
        r.feed(ride[150:])
        wait_for(lambda: len(stored_times(db)) == 200, what="spilled and new fixes stored")
        wait_for(lambda: not spilled.exists(), what="the spill file deleted")
        assert r.recorder.stats.unspilled == 140
    finally:
        r.close()
    spilled.write_bytes(kept)  # as if the daemon had been killed before deleting it
    r = Running(db)
    try:
        wait_for(lambda: not spilled.exists(), what="the stored spill file deleted")
        assert r.recorder.stats.unspilled == 0
    finally:
        r.close()
    assert stored_times(db) == [round(f.time, 3) for f in ride]
    with open_store(db, readonly=True) as s:  # the samples held with them, once too
        samples = s.samples_between(0, 4e9)
    assert [x.time for x in samples] == [f.time for f in ride[10:150]]


def test_a_bad_spill_file_is_named_and_left_alone(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    db = tmp_path / "tracker.db"
    bad = tmp_path / "tracker.db.spill"
    bad.write_text("these are not fixes\n")
    r = Running(db)
    try:
        r.feed(fixes(5))
        wait_for(lambda: len(stored_times(db)) == 5, what="tracking goes on")
    finally:
        r.close()
    (line,) = [m for m in caplog.messages if str(bad) in m]
    assert "not a readable spill file" in line and "\n" not in line
    assert bad.read_text() == "these are not fixes\n"


def test_the_inbox_is_bounded_in_fixes_not_batches(tmp_path, monkeypatch):
    import tracker.recorder

    monkeypatch.setattr(tracker.recorder, "INBOX_MAX", 2500)
    inbox: queue.Queue = queue.Queue()
    rec = Recorder(Config(storage=StorageConfig(path=tmp_path / "t.db")), inbox,
                   threading.Event())  # fmt: skip
    batch = fixes(1000)
    for _ in range(3):
        rec.offer(batch)  # the recorder is not running: nothing takes them
    assert inbox.qsize() == 2 and rec.stats.dropped_inbox == 1000
    rec._receive(0.0)  # taken: room again
    rec.offer(batch)
    assert inbox.qsize() == 1 and rec.stats.dropped_inbox == 1000


def test_a_spill_partly_stored_before_a_crash_adds_only_the_rest(tmp_path, monkeypatch):
    """The spill's fixes go in chunks, each with the marker of how many are stored: after a
    SIGKILL between chunks the next start takes in only what is left; a spill that another
    supersedes (written at a later stop, with the rest) is only deleted."""
    from tracker import spill

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(run_dir))
    db = tmp_path / "tracker.db"
    ride = fixes(100)
    arrived = [float(i) for i in range(100)]
    # An earlier stop's spill, in the runtime directory, taken in and not stored...
    old = spill.write(db, ride[:60], arrived[:60], [], supersedes=[])
    old = old.rename(run_dir / old.name)
    old_id = spill.read(old, db).id
    # ...so the next stop wrote it all again, beside the database, superseding it.
    newer = spill.write(db, ride, arrived, [], supersedes=[old_id])
    sp = spill.read(newer, db)
    s = open_store(db)  # 40 of them stored, with their marker, before a crash
    with s, s.transaction():
        s.add_fixes(None, ride[:40])
        s.put_runtime(spill.MARKER_PREFIX + sp.id, {"fixes": 40, "samples": 0})
    r = Running(db)
    try:
        wait_for(lambda: len(stored_times(db)) == 100, what="the rest of the spill stored")
        wait_for(lambda: not newer.exists() and not old.exists(), what="both files deleted")
        assert r.recorder.stats.unspilled == 60
    finally:
        r.close()
    assert stored_times(db) == [round(f.time, 3) for f in ride]


def test_a_size_check_the_storage_refuses_is_held_like_a_refused_commit(tmp_path):
    """The minutely prune failing (a read-only store here: SQLite's query_only, the narrowest
    real SQLITE_READONLY) is a storage error in the status, not an AttributeError out of the
    recorder's step: it was handed the message where the error was expected (found by mypy)."""
    db = tmp_path / "tracker.db"
    cfg = Config(storage=StorageConfig(path=db, commit_interval_s=0.1))
    recorder = Recorder(cfg, queue.Queue(), threading.Event())
    recorder.store = open_store(db, max_mb=0.001)  # over its limit at once: the prune writes
    try:
        recorder.store._conn.execute("PRAGMA query_only = 1")
        recorder._prune()
        assert "readonly database" in (recorder.stats.storage_error or "")
        assert recorder.stats.storage_state == "read-only"
        assert recorder.stats.storage_errors == 1
    finally:
        recorder.store.close()


def test_a_write_that_fails_now_and_then_is_tried_again_at_once(tmp_path):
    """A card failing a write now and then (SQLite's I/O error, which no machine here gives on
    demand: raised by the store's write of the fixes, the narrowest place): the recorder tries
    the transaction again at once, a few times within one commit, instead of holding the fixes
    a commit interval after each failure (with 3 % of the writes failing, 8 fixes a second got
    through). A store that stays unwritable still waits for its backoff."""
    from tracker.store import StorageUnavailable, Store

    fail = [3]  # the writes of the fixes still to fail

    class FailingNowAndThen(Store):
        def add_fixes(self, *args, **kwargs):
            if fail[0]:
                fail[0] -= 1
                e = StorageUnavailable(f"{self.path}: cannot write: disk I/O error")
                e.code = 10  # SQLITE_IOERR
                raise e
            return super().add_fixes(*args, **kwargs)

    def open_db(path, **kw):
        store = open_store(path, **kw)
        store.__class__ = FailingNowAndThen
        return store

    db = tmp_path / "tracker.db"
    cfg = Config(storage=StorageConfig(path=db, commit_interval_s=0.1))
    recorder = Recorder(cfg, queue.Queue(), threading.Event(), open_db=open_db)
    ride = fixes(40)
    recorder.offer(ride)
    recorder._receive(0.0)
    recorder.commit()  # three failures, then the fourth try goes through: all in this commit
    assert (recorder.stats.storage_errors, fail[0]) == (3, 0)
    assert recorder.stats.held == 0
    assert stored_times(db) == [round(f.time, 3) for f in ride]

    fail[0] = 10  # failing for longer: given up after the retries, held for the next step
    recorder.offer(fixes(50)[40:])
    recorder._receive(0.0)
    recorder.commit()
    assert recorder.stats.storage_errors == 3 + 4 and recorder.stats.held == 10
    recorder.store.close()
