"""The durable queue against real SQLite files: schema, delivery state, pruning, failures."""

from __future__ import annotations

import ast
import inspect
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from tracker import store as store_mod
from tracker.fix import Fix, Sample
from tracker.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Ledger,
    StorageFull,
    StorageUnavailable,
    Store,
    StoredFix,
    StoreError,
    open_store,
)
from tracker.store import db as store_db
from tracker.store import fixes as store_fixes

REPO = Path(__file__).resolve().parents[1]


def fix(t: float, **kw: object) -> Fix:
    """A fix with every field set, so the round trip covers them all."""
    values: dict[str, object] = dict(
        lat=48.1 + t * 1e-5,
        lon=11.5 + t * 1e-5,
        alt=520.5,
        speed=5.25,
        course=271.5,
        quality=1,
        sats=9,
        hdop=0.9,
        vdop=1.1,
        pdop=1.4,
        err_lat=2.5,
        err_lon=2.6,
        err_alt=4.1,
    )
    values.update(kw)
    return Fix(time=1_700_000_000.0 + t, **values)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "tracker.db"


@pytest.fixture
def store(db: Path):
    s = open_store(db)
    yield s
    s.close()


def start(s: Store, t: float = 0.0):
    return s.start_activity("Ride", "cycling", "private", ("a", "b"), fix(t).time)


def ids(fixes: list[StoredFix]) -> list[int]:
    return [f.id for f in fixes]


def marks(s: Store) -> list[tuple[str, int, str]]:
    return s._all("SELECT backend, fix_id, state FROM marks ORDER BY backend, fix_id")


def cursor(s: Store, backend: str) -> int:
    return s._cursor(backend)


# -- schema and opening ------------------------------------------------------------------------


def test_new_file_is_created_with_its_directory_at_the_latest_schema(db: Path) -> None:
    with open_store(db) as s:
        assert db.exists()
        assert s.pragma("user_version") == SCHEMA_VERSION == len(MIGRATIONS)
        tables = {r[0] for r in s._all("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"activities", "fixes", "samples", "backends", "marks", "requests", "runtime"} <= (
            tables
        )
        # Every Fix field has its column: a new Fix field without a migration fails here.
        columns = {r[1] for r in s._all("PRAGMA table_info(fixes)")}
        stored = {"id", "activity_id", "poi", "local"}
        assert {f for f in Fix.__dataclass_fields__} | stored == columns


def test_an_empty_existing_file_is_migrated(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"")
    with open_store(db) as s:
        assert s.pragma("user_version") == SCHEMA_VERSION


def _make_v1(db: Path) -> None:
    """A file as the first released schema left it, with data in it."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for statement in store_mod._statements(MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO activities (uuid, started_at) VALUES ('0123456789abcdef0123456789abcdef', 1)"
    )
    conn.execute("INSERT INTO fixes (activity_id, time, lat, lon) VALUES (1, 10.5, 48.0, 11.0)")
    conn.close()


def test_a_v1_file_reaches_the_latest_schema_and_keeps_its_data(db: Path) -> None:
    _make_v1(db)
    with open_store(db) as s:
        assert s.pragma("user_version") == SCHEMA_VERSION
        assert s.fix_count() == 1
        assert s.current_activity().uuid == "0123456789abcdef0123456789abcdef"


def test_a_file_with_4k_pages_is_rewritten_with_small_pages_once_it_is_free(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _make_v1(db)  # SQLite's default page size, as earlier releases made it
    other = sqlite3.connect(db, isolation_level=None)  # a reader in the middle of a read
    other.execute("BEGIN")
    other.execute("SELECT count(*) FROM fixes").fetchone()
    with open_store(db) as s:  # VACUUM needs the file to itself: kept, and said so
        assert s.pragma("page_size") == 4096 and s.fix_count() == 1
        assert s.pragma("journal_mode") == "wal"
    assert "kept 4096-byte pages for now" in caplog.text
    other.close()
    with open_store(db) as s:
        assert s.pragma("page_size") == 512
        assert s.pragma("journal_mode") == "wal" and s.fix_count() == 1
        assert s.current_activity().uuid == "0123456789abcdef0123456789abcdef"
    with open_store(db) as s:  # a new file is made with them
        assert s.pragma("page_size") == 512


def test_pending_migrations_run_in_order(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_v1(db)
    later = [
        "CREATE TABLE later (x INTEGER);\nINSERT INTO later VALUES (2);",
        "-- a comment line\nUPDATE later SET x = x * 10;",
    ]
    monkeypatch.setattr(store_db, "MIGRATIONS", [MIGRATIONS[0], *later])
    with open_store(db) as s:
        assert s.pragma("user_version") == 3
        assert s._scalar("SELECT x FROM later") == 20
    with open_store(db) as s:  # already there: nothing runs twice
        assert s._scalar("SELECT x FROM later") == 20


def test_a_failing_migration_leaves_the_previous_version_whole(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_v1(db)
    broken = "CREATE TABLE later (x INTEGER);\nCREATE TABLE later (y INTEGER);"
    monkeypatch.setattr(store_db, "MIGRATIONS", [MIGRATIONS[0], broken])
    with pytest.raises(StoreError, match="migrate to schema version 2"):
        open_store(db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'later'").fetchone() == (
        0,
    )
    conn.close()


def test_a_newer_schema_is_refused_not_downgraded(db: Path) -> None:
    open_store(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this tracker"):
        open_store(db)


def test_wal_synchronous_full_and_foreign_keys_are_in_effect(store: Store) -> None:
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    assert store.pragma("foreign_keys") == 1
    assert store.pragma("busy_timeout") >= 1000
    with pytest.raises(StoreError):  # the foreign key really is enforced
        store.add_fixes(42, [fix(0)])


def _aside(db: Path) -> list[Path]:
    return sorted(db.parent.glob(db.name + ".corrupt-*"))


def test_a_file_that_is_not_a_database_is_moved_aside(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db.parent.mkdir(parents=True)
    garbage = b"this is not an SQLite database\n" * 1000
    db.write_bytes(garbage)
    Path(str(db) + "-wal").write_bytes(b"stale wal")
    Path(str(db) + "-shm").write_bytes(b"stale shm")
    with caplog.at_level(logging.ERROR, logger="tracker.store"), open_store(db) as s:
        assert s.fix_count() == 0
        s.add_fixes(None, [fix(0)])
    aside = [p for p in _aside(db) if not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1
    assert aside[0].read_bytes() == garbage
    assert Path(str(aside[0]) + "-wal").read_bytes() == b"stale wal"
    assert Path(str(aside[0]) + "-shm").read_bytes() == b"stale shm"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert str(db) in errors[0].getMessage() and str(aside[0]) in errors[0].getMessage()


def test_a_database_with_a_corrupt_page_is_moved_aside(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_store(db) as s:
        a = start(s)
        s.add_fixes(a.id, [fix(i) for i in range(5000)])
        page_size = s.pragma("page_size")
    # Closed: the WAL is checkpointed into the file. Overwrite one page in the middle.
    size = db.stat().st_size
    assert size // page_size > 20
    offset = (size // page_size // 2) * page_size
    with open(db, "r+b") as f:
        f.seek(offset)
        f.write(b"\xa5" * page_size)
    corrupted = db.read_bytes()

    with caplog.at_level(logging.ERROR, logger="tracker.store"), open_store(db) as s:
        assert s.fix_count() == 0
        assert s.integrity_check() == "ok"
    (aside,) = _aside(db)
    assert aside.read_bytes() == corrupted
    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert str(db) in error.getMessage() and str(aside) in error.getMessage()


def test_readonly_reads_beside_a_writer_and_cannot_write(db: Path) -> None:
    writer = open_store(db)
    a = start(writer)
    writer.add_fixes(a.id, [fix(i) for i in range(10)])
    reader = open_store(db, readonly=True)
    try:
        assert reader.fix_count() == 10
        assert reader.current_activity() == a
        with writer.transaction():  # the writer holds the write lock ...
            writer.add_fixes(a.id, [fix(10)])
            assert reader.fix_count() == 10  # ... the reader is not blocked, sees the commit
        assert reader.fix_count() == 11
        with pytest.raises(StoreError, match="read-only"):
            reader.add_fixes(a.id, [fix(11)])
        with pytest.raises(sqlite3.OperationalError, match="readonly"):  # the file, not a flag
            reader._conn.execute("DELETE FROM fixes")
    finally:
        reader.close()
        writer.close()


def test_readonly_in_another_process_while_the_writer_holds_a_transaction(db: Path) -> None:
    with open_store(db) as writer:
        a = start(writer)
        writer.add_fixes(a.id, [fix(i) for i in range(3)])
        code = (
            "import sys; from tracker.store import open_store\n"
            "s = open_store(sys.argv[1], readonly=True); print(s.fix_count(), s.pending())"
        )
        with writer.transaction():
            writer.add_fixes(a.id, [fix(3)])
            out = subprocess.run(
                [sys.executable, "-c", code, str(db)],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3 {}"


def _reader_as_nobody(db: Path) -> subprocess.CompletedProcess[str]:
    """`tracker status`'s open, run as a user who may read the files but write nothing."""
    # A copy of the package nobody may read: the checkout may be somewhere it may not (/root).
    src = db.parent / "src"
    if not src.exists():
        shutil.copytree(REPO / "tracker", src / "tracker",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        for path in [src, *src.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); from tracker.store import open_store\n"
        "s = open_store(sys.argv[1], readonly=True); print(s.fix_count())"
    )
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", code, str(db), str(src)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runuser") or not os.access("/usr/bin/python3", os.X_OK),
    reason="needs root, runuser and a system python3 to run a reader as nobody",
)
def test_readonly_as_a_user_who_may_only_read() -> None:
    if subprocess.run(["/usr/bin/python3", "-c", "import datetime; datetime.UTC"]).returncode:
        pytest.skip("system python3 is older than 3.11")
    top = Path(tempfile.mkdtemp(prefix="tracker-ro-"))  # tmp_path is root's alone
    try:
        top.chmod(0o755)
        db = top / "tracker.db"
        writer = open_store(db)
        writer.add_fixes(None, [fix(0), fix(1)])
        for f in top.glob("tracker.db*"):
            f.chmod(0o644)
        running = _reader_as_nobody(db)  # the daemon runs: -wal and -shm are there
        writer.close()
        assert not Path(str(db) + "-wal").exists()
        stopped = _reader_as_nobody(db)  # it does not: no -shm, and none may be created
        assert (running.returncode, running.stdout.strip()) == (0, "2"), running.stderr
        assert (stopped.returncode, stopped.stdout.strip()) == (0, "2"), stopped.stderr
    finally:
        shutil.rmtree(top)


def test_readonly_of_a_missing_file_is_an_error_and_creates_nothing(db: Path) -> None:
    with pytest.raises(StoreError, match="no database"):
        open_store(db, readonly=True)
    assert not db.exists()


# -- activities and data -----------------------------------------------------------------------


def test_activities(store: Store) -> None:
    assert store.current_activity() is None
    a = start(store, 0)
    assert len(a.uuid) == 32 and int(a.uuid, 16) >= 0
    assert a.tags == ("a", "b") and a.current
    with pytest.raises(StoreError, match="still current"):
        start(store, 1)
    store.end_activity(a.id, fix(100).time, "gap")
    store.end_activity(a.id, fix(200).time, "again")  # no-op: ended already
    ended = store.activity(a.id)
    assert (ended.ended_at, ended.end_reason, ended.uuid) == (fix(100).time, "gap", a.uuid)
    b = start(store, 300)
    assert store.current_activity() == b
    assert [x.id for x in store.activities()] == [a.id, b.id]
    assert b.uuid != a.uuid
    with pytest.raises(StoreError, match="no activity"):
        store.end_activity(999, 0.0, "x")


def test_fixes_round_trip_and_stream(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_fixes, "_PAGE", 7)  # several pages
    a = start(store)
    store.add_fixes(None, [fix(-1, alt=None, quality=None)])
    # Two whole multi-row inserts and a remainder, then a paused (local) batch: in order.
    n = 2 * store_fixes._ROWS_PER_INSERT + 5
    store.add_fixes(a.id, [fix(i) for i in range(n - 2)])
    store.add_fixes(a.id, [fix(n - 2), fix(n - 1)], local=True)
    assert store.fix_count() == n + 1
    every = list(store.iter_fixes())
    assert len(every) == n + 1 and ids(every) == sorted(ids(every))
    assert every[0].activity_id is None and every[0].alt is None and every[0].quality is None
    ride = list(store.iter_fixes(a.id))
    assert [f.fix for f in ride] == [fix(i) for i in range(n)]
    assert [f.local for f in ride[-3:]] == [False, True, True]
    assert isinstance(ride[0], Fix) and ride[0].activity_id == a.id
    assert store.last_fix().fix == fix(n - 1)
    assert store.last_fix(a.id).id == ride[-1].id
    store.mark_poi(ride[5].id, "cafe")
    assert [f.poi for f in store.iter_fixes(a.id)][5] == "cafe"
    with pytest.raises(StoreError, match="no fix"):
        store.mark_poi(10_000, "nowhere")


def test_samples(store: Store) -> None:
    store.add_samples(
        [Sample(10.0, "hr", 120), Sample(11.0, "cad", 85, "crank"), Sample(12.0, "hr", 121)]
    )
    assert store.samples_between(10.0, 11.0) == [
        Sample(10.0, "hr", 120.0),
        Sample(11.0, "cad", 85.0, "crank"),
    ]
    assert [s.value for s in store.samples_between(0, 99, "hr")] == [120.0, 121.0]
    with pytest.raises(StoreError):  # CHECK (kind IN ...)
        store.add_samples([Sample(13.0, "speed", 1.0)])


def test_instrument_readings_are_kept_apart_from_fitness_samples(store: Store) -> None:
    """One add_samples for both; the fitness readers (what Map My Tracks sends: samples_between,
    samples_for_batch) never see a depth, the instrument readers never see a heart rate."""
    store.add_samples([
        Sample(10.0, "hr", 120), Sample(10.2, "depth", 4.1, "nmea0"),
        Sample(10.5, "wind_speed_app", 6.48, "nmea0"), Sample(11.0, "cad", 85),
        Sample(12.0, "depth", 4.3, "nmea0"),
    ])  # fmt: skip
    assert [s.kind for s in store.samples_between(0, 99)] == ["hr", "cad"]
    batch, newest = store.samples_for_batch(0, 99, 0, None)
    assert [s.kind for s in batch] == ["hr", "cad"] and newest == 2  # ids of `samples` only
    assert store.samples_for_batch(0, 99, 0, 0)[0] == batch
    assert store.instruments_between(0, 99) == [
        Sample(10.2, "depth", 4.1, "nmea0"), Sample(10.5, "wind_speed_app", 6.48, "nmea0"),
        Sample(12.0, "depth", 4.3, "nmea0"),
    ]  # fmt: skip
    assert [s.value for s in store.instruments_between(0, 99, "depth")] == [4.1, 4.3]
    assert store.instrument_kinds(0, 99) == ["depth", "wind_speed_app"]
    assert store.instrument_kinds(11.0, 99) == ["depth"]
    latest = store.latest_instruments(0, 11.5)
    assert {k: s.value for k, s in latest.items()} == {"depth": 4.1, "wind_speed_app": 6.48}
    assert store.latest_instruments(0, 99)["depth"] == Sample(12.0, "depth", 4.3, "nmea0")
    assert store.latest_instruments(20, 30) == {}
    # The newest of a kind is one index seek, not a scan of the activity's readings.
    plan = " ".join(r[-1] for r in store._all(
        "EXPLAIN QUERY PLAN SELECT time, kind, value, sensor FROM instruments "
        "WHERE kind = ? AND time BETWEEN ? AND ? ORDER BY time DESC, id DESC LIMIT 1",
        ("depth", 0, 99)))  # fmt: skip
    assert "instruments_kind" in plan and "TEMP B-TREE" not in plan
    with pytest.raises(StoreError):  # neither kind: refused, nothing of the batch stored
        store.add_samples([Sample(13.0, "depth", 5.0), Sample(13.0, "bogus", 1.0)])
    assert len(store.instruments_between(0, 99)) == 3


def test_migration_4_adds_the_instruments_table_and_keeps_the_samples(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:3]:
        for statement in store_mod._statements(script):
            conn.execute(statement)
    conn.execute("INSERT INTO samples (time, kind, value) VALUES (1.0, 'hr', 120)")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    with open_store(path) as s:
        assert s.pragma("user_version") == SCHEMA_VERSION >= 4
        assert s.samples_between(0, 2) == [Sample(1.0, "hr", 120.0)]
        s.add_samples([Sample(2.0, "water_temp", 17.9)])
        assert s.instruments_between(0, 3) == [Sample(2.0, "water_temp", 17.9)]
        indexes = {r[0] for r in s._all("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"instruments_time", "instruments_kind"} <= indexes


# -- delivery ----------------------------------------------------------------------------------


def test_next_batch_is_one_indexed_query(store: Store) -> None:
    a = start(store)
    store.add_fixes(a.id, [fix(i) for i in range(100)])
    store.register_backend("mmt")
    for activity_id in (None, a.id):
        sql, params = store._next_batch_query("mmt", 50, activity_id)
        plan = [r[3] for r in store._conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        # An index, not the rowid range: that one would step over every fix stored outside
        # an activity above the cursor, on every poll.
        assert any(p.startswith("SEARCH f USING INDEX") for p in plan), plan
        assert not any(p.startswith("SCAN") for p in plan), plan  # no full scan of anything
        assert not any("TEMP B-TREE" in p for p in plan), plan  # the index gives the order
        assert any("SEARCH m USING PRIMARY KEY" in p for p in plan), plan


def test_acknowledge_in_order_moves_the_cursor_without_marks(store: Store) -> None:
    a = start(store)
    store.add_fixes(a.id, [fix(i) for i in range(10)])
    store.register_backend("mmt")
    batch = store.next_batch("mmt", 4)
    assert ids(batch) == [1, 2, 3, 4]
    store.acknowledge("mmt", ids(batch))
    assert cursor(store, "mmt") == 4 and marks(store) == []
    assert ids(store.next_batch("mmt", 100)) == [5, 6, 7, 8, 9, 10]
    store.acknowledge("mmt", [1, 2, 5])  # a retried acknowledgement, plus one more
    assert cursor(store, "mmt") == 5
    store.acknowledge("mmt", range(6, 11))
    assert cursor(store, "mmt") == 10 and store.next_batch("mmt", 100) == []
    assert store.pending() == {"mmt": 0}


def test_acknowledge_out_of_order(store: Store) -> None:
    a = start(store)
    store.add_fixes(a.id, [fix(i) for i in range(6)])
    store.register_backend("gpsr")
    store.acknowledge("gpsr", [3, 5])
    assert cursor(store, "gpsr") == 0
    assert marks(store) == [("gpsr", 3, "acked"), ("gpsr", 5, "acked")]
    assert ids(store.next_batch("gpsr", 100)) == [1, 2, 4, 6]
    assert store.pending() == {"gpsr": 4}
    store.acknowledge("gpsr", [2, 1])
    assert cursor(store, "gpsr") == 3 and marks(store) == [("gpsr", 5, "acked")]
    store.acknowledge("gpsr", [4])
    assert cursor(store, "gpsr") == 5 and marks(store) == []
    store.acknowledge("gpsr", [6])
    assert cursor(store, "gpsr") == 6 and store.pending() == {"gpsr": 0}


def test_acknowledging_ids_that_do_not_exist_marks_nothing(store: Store) -> None:
    a = start(store)
    store.add_fixes(a.id, [fix(0), fix(1)])
    store.register_backend("gpsr")
    store.acknowledge("gpsr", [2, 50])  # 50 is a future id: must not pre-acknowledge it
    assert marks(store) == [("gpsr", 2, "acked")]
    store.add_fixes(a.id, [fix(i) for i in range(2, 60)])
    assert 50 in ids(store.next_batch("gpsr", 100))


def test_fixes_outside_an_activity_are_never_sent_and_wait_above_the_cursor(store: Store) -> None:
    store.add_fixes(None, [fix(0), fix(1)])  # 1, 2
    a = start(store, 2)
    store.add_fixes(a.id, [fix(2), fix(3)])  # 3, 4
    store.end_activity(a.id, fix(3).time, "stop")
    store.add_fixes(None, [fix(4), fix(5)])  # 5, 6
    store.register_backend("mmt")
    assert ids(store.next_batch("mmt", 100)) == [3, 4]
    assert store.pending() == {"mmt": 2}
    store.acknowledge("mmt", [3, 4])
    # Not past 5 and 6: a lead-in stored outside may still be adopted by an activity.
    assert cursor(store, "mmt") == 4
    assert store.next_batch("mmt", 100) == [] and store.pending() == {"mmt": 0}
    b = start(store, 6)
    assert store.adopt_fixes(b.id, 2) == 2
    assert ids(store.next_batch("mmt", 100)) == [5, 6]
    assert store.pending() == {"mmt": 2}


def test_a_backend_of_scope_all_is_sent_every_fix_in_an_activity_or_not(store: Store) -> None:
    store.add_fixes(None, [fix(0), fix(1)])  # 1, 2: parked
    a = start(store, 2)
    store.add_fixes(a.id, [fix(2)])  # 3
    store.add_fixes(a.id, [fix(3)], local=True)  # 4: paused, kept local for a rider's map
    store.end_activity(a.id, fix(3).time, "stop")
    store.add_fixes(None, [fix(4)])  # 5
    store.register_backend("mmt")
    store.register_backend("fleet", "all")
    assert ids(store.next_batch("fleet", 100)) == [1, 2, 3, 4, 5]
    assert ids(store.next_batch("fleet", 100, a.id)) == [3, 4]
    assert store.pending() == {"fleet": 5, "mmt": 1}
    assert store.pending_in("fleet", a.id) == 2 and store.pending_in("mmt", a.id) == 1
    store.acknowledge("fleet", [1, 2, 3, 4, 5])
    assert cursor(store, "fleet") == 5 and marks(store) == []  # past fixes outside, too
    assert store.pending() == {"fleet": 0, "mmt": 1}
    # Registered again with another scope (the rider set `send = "activities"`): kept.
    store.register_backend("fleet", "activities")
    store.add_fixes(None, [fix(5)])  # 6
    assert store.next_batch("fleet", 100) == [] and store.pending()["fleet"] == 0
    with pytest.raises(ValueError, match="scope 'some'"):
        store.register_backend("fleet", "some")


def test_prune_keeps_fixes_outside_an_activity_that_a_backend_of_scope_all_still_needs(
    db: Path,
) -> None:
    s = open_store(db, max_mb=LIMIT_MB)
    s.register_backend("fleet", "all")
    fill(s, None, 9000)
    s.acknowledge("fleet", range(1, 3001))
    report = s.prune_if_needed()
    left = {f.id for f in s.iter_fixes()}
    assert set(range(3001, 9001)) <= left and report.dropped_undelivered == 0
    assert report.deleted_fixes == 9000 - len(left) > 0
    s.close()


def test_adopt_takes_only_the_newest_fixes_stored_outside(store: Store) -> None:
    a = start(store)
    store.add_fixes(a.id, [fix(0)])  # 1
    store.end_activity(a.id, fix(0).time, "stop")
    store.add_fixes(None, [fix(1), fix(2), fix(3)])  # 2, 3, 4
    # The newest fixes outside, back to the activity's last fix: a lead-in to replay.
    assert [f.id for f in store.recent_fixes(None, fix(2).time)] == [3, 4]
    assert [f.id for f in store.recent_fixes(None, 0.0)] == [2, 3, 4]
    b = start(store, 2)
    assert store.adopt_fixes(b.id, 2) == 2
    assert [f.activity_id for f in store.iter_fixes()] == [a.id, None, b.id, b.id]
    assert store.recent_fixes(None, 0.0) == []
    assert store.adopt_fixes(b.id, 0) == 0


def test_detach_and_local_fixes_are_never_offered(store: Store) -> None:
    a = start(store)
    store.add_fixes(a.id, [fix(0), fix(1)])  # 1, 2
    store.add_fixes(a.id, [fix(2), fix(3)], local=True)  # 3, 4: paused, kept on the unit
    store.add_fixes(a.id, [fix(4), fix(5)])  # 5, 6
    store.register_backend("mmt")
    assert ids(store.next_batch("mmt", 100)) == [1, 2, 5, 6]
    assert ids(store.next_batch("mmt", 100, a.id)) == [1, 2, 5, 6]
    assert [f.local for f in store.iter_fixes()] == [False, False, True, True, False, False]
    assert store.fix_counts() == {"total": 6, "outside": 0, "local": 2}
    assert store.detach_fixes(a.id, fix(3).time) == 2  # the activity ends at fix(3)
    assert ids(store.next_batch("mmt", 100)) == [1, 2]
    assert store.fix_counts() == {"total": 6, "outside": 2, "local": 2}
    store.acknowledge("mmt", [1, 2])
    assert cursor(store, "mmt") == 2 and store.pending() == {"mmt": 0}
    assert [f.time for f in store.recent_fixes(a.id, fix(1).time)] == [
        fix(1).time, fix(2).time, fix(3).time
    ]


def test_migration_2_adds_local_and_keeps_the_delivery_index(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(MIGRATIONS[0])
    conn.execute("INSERT INTO activities (uuid, started_at) VALUES ('u', 1.0)")
    conn.execute("INSERT INTO fixes (activity_id, time, lat, lon) VALUES (1, 1.0, 48.0, 11.0)")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with open_store(path) as s:
        assert s.pragma("user_version") == SCHEMA_VERSION
        [f] = list(s.iter_fixes())
        assert f.local is False and f.activity_id == 1
        s.register_backend("mmt")
        plan = " ".join(
            r[-1] for r in s._all("EXPLAIN QUERY PLAN " + s._next_batch_query("mmt", 10, None)[0],
                                  s._next_batch_query("mmt", 10, None)[1])
        )
        assert "fixes_deliverable" in plan


def test_next_batch_for_one_activity(store: Store) -> None:
    a = start(store)
    store.add_fixes(a.id, [fix(0), fix(1)])
    store.end_activity(a.id, fix(1).time, "gap")
    b = start(store, 10)
    store.add_fixes(b.id, [fix(10)])
    store.register_backend("mmt")
    assert ids(store.next_batch("mmt", 100, a.id)) == [1, 2]
    assert ids(store.next_batch("mmt", 100, b.id)) == [3]
    assert ids(store.next_batch("mmt", 2)) == [1, 2]


def test_quarantine_is_not_offered_again_but_counted(store: Store) -> None:
    a = start(store)
    store.add_fixes(a.id, [fix(i) for i in range(6)])
    store.register_backend("mmt")
    store.acknowledge("mmt", [1])
    store.quarantine("mmt", [2, 3], "HTTP 400: bad altitude")
    assert ids(store.next_batch("mmt", 100)) == [4, 5, 6]
    assert store.quarantined() == {"mmt": 2}
    assert store.pending() == {"mmt": 3}
    store.acknowledge("mmt", [4, 5, 6])
    # The cursor passes the quarantined fixes; their marks stay, the acknowledged leave none.
    assert cursor(store, "mmt") == 6
    assert marks(store) == [("mmt", 2, "quarantined"), ("mmt", 3, "quarantined")]
    assert store.quarantined() == {"mmt": 2} and store.pending() == {"mmt": 0}
    store.acknowledge("mmt", [2])  # a late acknowledgement lifts the quarantine
    assert store.quarantined() == {"mmt": 1}
    store.quarantine("mmt", [4], "too late")  # acknowledged stays acknowledged
    assert store.quarantined() == {"mmt": 1}


def test_pending_with_two_backends(store: Store) -> None:
    assert store.pending() == {} and store.quarantined() == {}
    a = start(store)
    store.add_fixes(a.id, [fix(i) for i in range(5)])
    store.add_fixes(None, [fix(5)])
    store.register_backend("mmt")
    store.register_backend("gpsr")
    store.register_backend("mmt")  # idempotent
    assert store.backends() == ["gpsr", "mmt"]
    store.acknowledge("mmt", [1, 2, 3])
    store.acknowledge("gpsr", [5])
    store.quarantine("gpsr", [1], "refused")
    assert store.pending() == {"gpsr": 3, "mmt": 2}
    assert store.quarantined() == {"gpsr": 1, "mmt": 0}


def test_a_new_backend_gets_everything_stored_in_an_activity(store: Store) -> None:
    a = start(store)
    store.add_fixes(a.id, [fix(i) for i in range(3)])
    store.register_backend("mmt")
    store.acknowledge("mmt", [1, 2, 3])
    store.register_backend("gpsr")
    assert ids(store.next_batch("gpsr", 100)) == [1, 2, 3]


def test_unknown_backend_is_an_error(store: Store) -> None:
    with pytest.raises(StoreError, match="not registered"):
        store.next_batch("nope", 10)
    with pytest.raises(StoreError, match="not registered"):
        store.acknowledge("nope", [1])
    with pytest.raises(StoreError, match="not registered"):
        store.get_state("nope")


def test_backend_state(store: Store) -> None:
    store.register_backend("mmt")
    assert store.get_state("mmt") == {}
    store.set_state("mmt", {"activity_id": 7, "server_id": "abc"})
    assert store.get_state("mmt") == {"activity_id": 7, "server_id": "abc"}


# The senders get their store as a Ledger: Store must satisfy it, and the senders must call
# nothing on their store that Ledger lacks (else the interface is not their real contract).
SENDERS = REPO / "tracker" / "senders"

def _sender_modules() -> list[Path]:
    """The sender core and every backend the registry names: a new backend is held to the
    Ledger without this test being told (it listed three modules by hand and missed two)."""
    from tracker.backends import REGISTRY

    names = ["base", *(m.rsplit(".", 1)[1] for m in REGISTRY.values())]
    return [SENDERS / f"{n}.py" for n in names]


def _ledger_members() -> set[str]:
    return {n for n in vars(Ledger) if not n.startswith("_")}


def _deliver_one(ledger: Ledger, backend: str) -> list[int]:
    """A sender's round through the Ledger alone; typed so a checker rejects a Store that
    stops satisfying it."""
    ledger.register_backend(backend)
    batch = ledger.next_batch(backend, 10)
    with ledger.transaction():
        ledger.acknowledge(backend, [f.id for f in batch[:1]])
        ledger.set_state(backend, {"sent": len(batch[:1])})
    ledger.put_runtime(f"backend:{backend}", {"ok": True})
    return [f.id for f in ledger.next_batch(backend, 10)]


def test_store_satisfies_the_ledger_protocol(store: Store) -> None:
    members = _ledger_members()
    assert {"next_batch", "acknowledge", "quarantine", "get_state", "set_state"} <= members
    for name in sorted(members):
        assert callable(getattr(Store, name, None)), f"Store has no {name}()"
        # Same parameters (names, kinds, which have defaults): keyword calls work on both.
        want = inspect.signature(getattr(Ledger, name))
        got = inspect.signature(getattr(Store, name))
        shape = [(p.name, p.kind, p.default is p.empty) for p in want.parameters.values()]
        assert [(p.name, p.kind, p.default is p.empty) for p in got.parameters.values()] == shape, (
            f"Store.{name}{got} does not match Ledger.{name}{want}"
        )
    a = start(store)
    store.add_fixes(a.id, [fix(0), fix(1)])
    assert _deliver_one(store, "proto") == [2]
    assert store.get_state("proto") == {"sent": 1}


def _store_attributes(source: str) -> set[str]:
    """Every attribute taken of `self.store` in a module's source."""
    return {
        node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "store"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }


def test_the_senders_use_their_store_only_through_the_ledger() -> None:
    members = _ledger_members()
    used: set[str] = set()
    for path in _sender_modules():
        mine = _store_attributes(path.read_text())
        assert mine <= members, f"{path.name} calls {sorted(mine - members)} not in Ledger"
        used |= mine
    # The GPX upload hands the sender's store to export.write_gpx, which reads these.
    used |= {"activities", "iter_fixes", "samples_between"}
    # Not vacuous: the senders are found using their store (and each member has a user).
    assert used == members, f"Ledger members no sender uses: {sorted(members - used)}"


# -- control requests and runtime --------------------------------------------------------------


def test_requests_round_trip_between_two_connections(db: Path) -> None:
    daemon = open_store(db, clock=lambda: 1000.0)
    cli = open_store(db, check=False, clock=lambda: 999.0)
    try:
        assert daemon.take_requests() == []
        first = cli.add_request("activity_stop")
        second = cli.add_request("poi", "summit")
        taken = daemon.take_requests()
        assert [(r.id, r.command, r.arg, r.created_at) for r in taken] == [
            (first, "activity_stop", None, 999.0),
            (second, "poi", "summit", 999.0),
        ]
        daemon.finish_request(first, "stopped activity 3")
        done = cli.request(first)
        assert done.done and done.done_at == 1000.0 and done.result == "stopped activity 3"
        assert [r.id for r in daemon.take_requests()] == [second]
        assert cli.request(12345) is None
        with pytest.raises(ValueError):
            cli.add_request("reboot")
    finally:
        cli.close()
        daemon.close()


def test_runtime_round_trip(db: Path) -> None:
    with open_store(db, clock=lambda: 1234.5) as daemon:
        assert daemon.get_runtime("gps") is None
        daemon.put_runtime("gps", {"state": "fix", "rejected": 3})
        daemon.put_runtime("gps", {"state": "fix", "rejected": 4})
        with open_store(db, readonly=True) as status:
            assert status.get_runtime("gps") == ({"rejected": 4, "state": "fix"}, 1234.5)


# -- transactions ------------------------------------------------------------------------------


def test_transaction_rolls_back_on_error_and_the_store_goes_on(store: Store) -> None:
    a = start(store)
    with pytest.raises(RuntimeError), store.transaction():
        store.add_fixes(a.id, [fix(0)])
        store.add_samples([Sample(0.0, "hr", 100)])
        raise RuntimeError("writer died")
    assert store.fix_count() == 0 and store.samples_between(-1, 1) == []
    store.add_fixes(a.id, [fix(1)])
    assert store.fix_count() == 1


def test_an_sqlite_error_inside_a_transaction_cannot_be_half_committed(store: Store) -> None:
    a = start(store)
    with pytest.raises(StoreError, match="rolled back"), store.transaction():
        store.add_fixes(a.id, [fix(0)])
        with pytest.raises(StoreError):
            store.add_samples([Sample(1.0, "bogus", 1.0)])  # CHECK fails: all rolled back
        with pytest.raises(StoreError, match="rolled back"):
            store.add_fixes(a.id, [fix(2)])  # went on after the error: must not commit
    assert store.fix_count() == 0
    assert not store._conn.in_transaction


# -- size and pruning --------------------------------------------------------------------------

LIMIT_MB = 1.0


def fill(s: Store, activity_id: int | None, n: int, t0: float = 0.0) -> None:
    """n fixes, 25 a commit like the writer at 25 Hz."""
    for k in range(0, n, 25):
        s.add_fixes(activity_id, [fix(t0 + (k + i) * 0.04) for i in range(min(25, n - k))])


def test_prune_deletes_only_what_every_backend_acknowledged(db: Path) -> None:
    s = open_store(db, max_mb=LIMIT_MB)
    a = start(s)
    s.register_backend("mmt")
    s.register_backend("gpsr")
    fill(s, a.id, 9000)
    assert s._budget_bytes() > LIMIT_MB * 2**20  # the test is over the limit
    s.quarantine("mmt", range(10, 20), "refused")  # refused is not delivered: kept
    s.acknowledge("mmt", [*range(1, 10), *range(20, 6001)])
    s.acknowledge("gpsr", range(1, 4001))
    s.acknowledge("gpsr", range(5001, 5501))  # out of order: a mark per fix
    unacked_by_someone = set(range(10, 20)) | set(range(4001, 5001)) | set(range(5501, 9001))
    report = s.prune_if_needed()
    left = {f.id for f in s.iter_fixes()}
    assert unacked_by_someone <= left  # nothing anyone still needs is gone
    assert report.deleted_fixes == 9000 - len(left) > 0
    assert report.dropped_undelivered == 0
    assert 1 not in left and 9 not in left  # the oldest went first
    assert report.after_bytes <= store_mod.PRUNE_TARGET * LIMIT_MB * 2**20 or (
        left == unacked_by_someone
    )
    assert s.counters()["pruned_fixes"] == report.deleted_fixes
    assert s.pending() == {"gpsr": 4500, "mmt": 3000}
    s.close()


def test_prune_without_backends_deletes_oldest_but_never_the_newest(db: Path) -> None:
    s = open_store(db, max_mb=LIMIT_MB)
    fill(s, None, 9000)
    report = s.prune_if_needed()
    assert report.deleted_fixes > 0 and not report.over_limit
    assert s.last_fix().id == 9000
    s.close()


def test_ids_are_not_reused_when_pruning_empties_the_table(db: Path) -> None:
    s = open_store(db, max_mb=LIMIT_MB)
    a = start(s)
    s.register_backend("mmt")
    fill(s, a.id, 9000)
    s.acknowledge("mmt", range(1, 9001))
    s.prune_if_needed()
    s.add_fixes(a.id, [fix(10_000)])
    # Id 9001: above the cursor, so offered. A reused low id would count as delivered.
    assert ids(s.next_batch("mmt", 10)) == [9001]
    s.close()


def test_prune_removes_old_samples_and_empty_ended_activities(db: Path) -> None:
    s = open_store(db, max_mb=LIMIT_MB)
    empty = start(s)
    s.end_activity(empty.id, 1.0, "no fix ever")
    a = start(s)
    s.add_samples([Sample(fix(-100).time, "hr", 90), Sample(fix(8999).time, "hr", 150)])
    fill(s, a.id, 9000)
    s.end_activity(a.id, fix(9000).time, "stop")
    current = start(s, 9001)
    report = s.prune_if_needed()  # no backend: all but the newest fix may go
    assert report.deleted_samples == 1 and report.deleted_activities == 1
    assert [x.id for x in s.activities()] == [a.id, current.id]
    assert [x.value for x in s.samples_between(0, 2e9)] == [150.0]
    s.close()


def test_prune_removes_old_instrument_readings_too(db: Path) -> None:
    s = open_store(db, max_mb=LIMIT_MB)
    a = start(s)
    s.add_samples([Sample(fix(-100).time, "depth", 3.0), Sample(fix(-50).time, "hr", 90),
                   Sample(fix(8999).time, "depth", 4.0)])  # fmt: skip
    fill(s, a.id, 9000)
    report = s.prune_if_needed()
    assert report.deleted_samples == 2  # one of each table, counted together
    assert [x.value for x in s.instruments_between(0, 2e9)] == [4.0]
    assert s.samples_between(0, 2e9) == []
    s.close()


def test_drop_newest_refuses_fixes_and_loses_none(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = open_store(db, max_mb=LIMIT_MB, prune="drop_newest")
    a = start(s)
    s.register_backend("mmt")
    with caplog.at_level(logging.ERROR, logger="tracker.store"), pytest.raises(StorageFull):
        fill(s, a.id, 20_000)
    stored = s.fix_count()
    assert 0 < stored < 20_000
    assert issubclass(StorageFull, StorageUnavailable)  # the writer holds the batch and retries
    assert ids(list(s.iter_fixes())) == list(range(1, stored + 1))  # nothing deleted
    assert any("refusing new fixes" in r.getMessage() for r in caplog.records)
    report = s.prune_if_needed()
    assert report.over_limit and report.dropped_undelivered == 0
    assert s.fix_count() == stored
    # Once the server acknowledges, there is room again.
    s.acknowledge("mmt", range(1, stored // 2))
    s.add_fixes(a.id, [fix(50_000)])
    assert s.last_fix().fix == fix(50_000)
    s.close()


def test_drop_oldest_drops_undelivered_loudly_and_counts(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = open_store(db, max_mb=LIMIT_MB)
    a = start(s)
    s.register_backend("mmt")
    s.register_backend("gpsr")
    fill(s, a.id, 9000)
    s.acknowledge("gpsr", range(1, 9001))  # gpsr has everything, mmt nothing
    with caplog.at_level(logging.ERROR, logger="tracker.store"):
        report = s.prune_if_needed()
    dropped = report.dropped_undelivered
    assert dropped > 0 and not report.over_limit
    assert ids(list(s.iter_fixes())) == list(range(dropped + 1, 9001))  # the oldest went
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert f"{dropped} oldest UNDELIVERED" in errors[0] and f"mmt {dropped}" in errors[0]
    assert "gpsr" not in errors[0]
    counters = s.counters()
    assert counters["dropped_undelivered"] == dropped
    assert counters["dropped_undelivered:mmt"] == dropped
    assert "dropped_undelivered:gpsr" not in counters
    assert s.pending() == {"gpsr": 0, "mmt": 9000 - dropped}
    s.close()
    with open_store(db, readonly=True) as status:  # persistent, visible to `tracker status`
        assert status.counters()["dropped_undelivered"] == dropped


def test_a_limit_that_cannot_be_met_keeps_the_newest_fix(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = open_store(db, max_mb=0.5)
    a = start(s)
    s.register_backend("mmt")
    fill(s, a.id, 1000)
    # Samples newer than every fix: pruning may not delete them, and they alone exceed 0.5 MB.
    s.add_samples([Sample(fix(5000 + i).time, "hr", 100) for i in range(30_000)])
    with caplog.at_level(logging.ERROR, logger="tracker.store"):
        report = s.prune_if_needed()
    assert report.over_limit and report.dropped_undelivered == 999
    assert ids(list(s.iter_fixes())) == [1000]  # so ids go on from 1001, never reused
    assert any("still" in r.getMessage() for r in caplog.records)
    s.add_fixes(a.id, [fix(6000)])
    assert ids(s.next_batch("mmt", 10)) == [1000, 1001]
    s.close()


def test_under_the_limit_prune_does_nothing(db: Path) -> None:
    with open_store(db, max_mb=50) as s:
        fill(s, None, 100)
        report = s.prune_if_needed()
        assert report.deleted_fixes == 0 and s.fix_count() == 100
    with open_store(db) as s:
        assert s.prune_if_needed().limit_bytes is None


# -- failures ----------------------------------------------------------------------------------


def test_full_disk_raises_storage_unavailable_and_the_store_recovers(store: Store) -> None:
    a = start(store)
    store.add_fixes(a.id, [fix(i) for i in range(10)])
    # SQLite's own boundary: no page beyond the current ones gives a real SQLITE_FULL.
    store._conn.execute(f"PRAGMA max_page_count = {store.pragma('page_count')}")
    batch = [fix(i) for i in range(10, 5000)]
    with pytest.raises(StorageUnavailable) as err:
        store.add_fixes(a.id, batch)
    message = str(err.value)
    assert str(store.path) in message and "full" in message and "\n" not in message
    assert not store._conn.in_transaction
    with pytest.raises(StorageUnavailable), store.transaction():  # the writer's way
        store.add_samples([Sample(1.0, "hr", 100)])
        store.add_fixes(a.id, batch)
    assert store.fix_count() == 10  # everything committed before is there, nothing else
    assert store.samples_between(0, 2) == []
    store._conn.execute("PRAGMA max_page_count = 1073741823")  # space is back
    store.add_fixes(a.id, batch)
    assert store.fix_count() == 5000
    assert store.integrity_check() == "ok"


def test_a_read_only_file_raises_storage_unavailable(db: Path) -> None:
    with open_store(db) as s:
        start(s)
    # The same file opened the way SQLite opens it on a read-only mount (tests run as root,
    # so permissions would not stop a write).
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    s = Store(conn, db)
    try:
        with pytest.raises(StorageUnavailable) as err:
            s.add_fixes(1, [fix(0)])
        assert str(db) in str(err.value) and "readonly" in str(err.value).lower()
        assert s.fix_count() == 0  # still usable for reads
    finally:
        s.close()


_CLI_WRITE = (
    "import sys; from tracker.store import open_store; "
    "s = open_store(sys.argv[1], check=False); s.add_request('activity_stop'); s.close()"
)
_COUNT_REQUESTS = (
    "import sys; from tracker.store import open_store; "
    "print(len(open_store(sys.argv[1], readonly=True).take_requests()))"
)


def _python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=30, check=True)  # fmt: skip
    return done.stdout.strip()


def test_a_second_store_in_the_daemon_keeps_the_first_ones_locks(tmp_path):
    """The daemon opens the file twice (recorder, sender). Reading the header with Python's
    open()/close() for the second dropped every POSIX lock of the first: a CLI write from
    another process then took the database for unused and deleted the -wal the daemon was
    still writing to, so its later commits were invisible to others and lost on SIGKILL."""
    db = tmp_path / "tracker.db"
    recorder = open_store(db)
    sender = open_store(db)
    try:
        _python(_CLI_WRITE, str(db))
        assert Path(str(db) + "-wal").exists(), "the live -wal was deleted by the CLI"
        recorder.add_request("activity_start")
        assert _python(_COUNT_REQUESTS, str(db)) == "2"
    finally:
        sender.close()
        recorder.close()


def test_stores_opened_by_threads_at_once_all_keep_their_locks(tmp_path):
    """The daemon's recorder and senders open the file at the same moment. One thread's
    header read must not close a descriptor while another thread's connection is open but not
    yet counted: that dropped its locks, with the consequence described above (the race hit
    about one start in seven before opens were serialised)."""
    for trial in range(20):
        db = tmp_path / f"t{trial}.db"
        open_store(db).close()  # the file exists, as after a first start
        barrier = threading.Barrier(3)
        stores: list = [None] * 3

        def open_one(i: int, db: Path = db, barrier=barrier, stores: list = stores) -> None:
            barrier.wait()
            stores[i] = open_store(db, check=(i == 0))

        threads = [threading.Thread(target=open_one, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            _python(_CLI_WRITE, str(db))
            assert Path(str(db) + "-wal").exists(), f"trial {trial}: the live -wal was deleted"
            stores[0].add_request("activity_start")
            assert _python(_COUNT_REQUESTS, str(db)) == "2", f"trial {trial}"
        finally:
            for s in stores:
                s.close()


def test_a_read_only_file_system_is_refused_at_open_not_opened_read_only(tiny_disk):
    """SQLite opens a database on a read-only file system read-only without a word (when a
    power cut left its -wal and -shm), and it stays so, with the -shm mapping every connection
    of the process shares: open_store refuses it instead, and opens it once it is writable."""
    from support import mount

    from tracker.store import StorageUnavailable

    db = tiny_disk / "tracker.db"
    # A writer killed with its database open: the -wal and -shm stay (a power cut).
    code = f"import os; from tracker.store import open_store; s = open_store({str(db)!r}); " \
        "s.put_runtime('k', {'v': 0}); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
    assert Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists()
    assert mount("-o", "remount,ro", str(tiny_disk))
    with pytest.raises(StorageUnavailable, match="read-only"):
        open_store(db)
    with open_store(db, readonly=True) as r:  # `tracker status` still reads it
        assert r.get_runtime("k")[0] == {"v": 0}
    assert mount("-o", "remount,rw", str(tiny_disk))
    with open_store(db) as s:
        s.put_runtime("k", {"v": 2})
    with open_store(db, readonly=True) as r:
        assert r.get_runtime("k")[0] == {"v": 2}


def test_the_storage_state_names_what_went_wrong(tmp_path):
    """What `tracker status` shows: from the SQLite code of the error (and the file system,
    which says read-only when SQLite says only CANTOPEN or IOERR)."""
    from tracker.store import StorageFull, StorageUnavailable, StoreError
    from tracker.store.db import storage_state

    def err(cls, code):
        e = cls("x")
        e.code = code
        return e

    db = tmp_path / "tracker.db"
    assert storage_state(db) == "ok"
    assert storage_state(db, err(StorageUnavailable, 8)) == "read-only"  # READONLY
    assert storage_state(db, err(StorageUnavailable, 13)) == "full"  # FULL
    assert storage_state(db, err(StorageFull, 0)) == "full"  # prune = "drop_newest"
    assert storage_state(db, err(StoreError, 11)) == "corrupt"  # CORRUPT
    assert storage_state(db, err(StoreError, 26)) == "corrupt"  # NOTADB
    assert storage_state(db, err(StorageUnavailable, 10)) == "error"  # IOERR


def test_a_real_write_error_carries_its_code(tmp_path):
    from tracker.store import StorageUnavailable
    from tracker.store.db import storage_state

    with open_store(tmp_path / "tracker.db") as s:
        s._conn.execute(f"PRAGMA max_page_count = {s.pragma('page_count')}")
        with pytest.raises(StorageUnavailable) as caught:
            s.add_fixes(None, [Fix(1_780_000_000.0 + i, 47.0, 7.0) for i in range(2000)])
        assert caught.value.code == 13 and storage_state(s.path, caught.value) == "full"
