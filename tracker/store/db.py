"""The database file and the connection every part of the store builds on.

Opening: create, check (`PRAGMA quick_check`), move a corrupt file aside, apply the schema
migrations; translate SQLite's errors into StoreError and its subclasses; `StoreBase`, the
connection wrapper with its pragmas, nested transactions and reads.

Fix ids
-------
Fix ids are monotonic and never reused: pruning never deletes the newest fix, so SQLite's
max(rowid) + 1 never goes back (cheaper than AUTOINCREMENT, which writes one more page per
commit; and a reused id below a cursor would count as delivered without being sent).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from tracker.logutil import RateLimitedLog

# One logger for the whole package, named as before the split: log lines keep "tracker.store"
# and any level set on it still applies.
log = logging.getLogger("tracker.store")

BUSY_TIMEOUT_S = 5.0
_SQLITE_HEADER = b"SQLite format 3\x00"
# Small pages for small commits. Linux accounts (and an SD card wears by) every 4 KiB page of
# a file dirtied, and a commit of one fix appends one WAL frame of a page per b-tree it touches
# (the fixes table and its two indexes): 3 x 4 KiB pages before, under one 4 KiB page now.
# scripts/bench.py's `wear` row measures it against the leanest durable design.
PAGE_SIZE = 512
CACHE_KIB = 128  # page cache per connection: see _configure
_WAL_LIMIT_BYTES = 4 * 1024 * 1024  # keep the WAL file at most this big after a checkpoint
QUICK_CHECK_STEP = 1000  # virtual machine steps between looks at quick_check's deadline


class StoreError(Exception):
    """Anything the store cannot do; the message names the database file. `code` is SQLite's
    primary result code when SQLite raised it (0 otherwise): what a writer needs to tell a
    connection SQLite recovers by itself (FULL, BUSY) from one it must reopen."""

    code: int = 0


class StorageUnavailable(StoreError):
    """A write failed for a reason outside the program (full disk, read-only file or file
    system, I/O error, database locked). The transaction was rolled back; retry later."""


class StoreBusy(StorageUnavailable):
    """Another connection held the write lock for longer than BUSY_TIMEOUT_S."""


class StorageFull(StorageUnavailable):
    """prune="drop_newest" and the size limit is reached with nothing delivered to delete:
    the fixes were not stored. A StorageUnavailable, so a writer that holds its batch and
    retries on StorageUnavailable does so here too (until acknowledgements make room); it
    can count these apart with isinstance."""


# Schema migrations: MIGRATIONS[n] takes a database from `PRAGMA user_version` n to n + 1, in
# one transaction. Append, never edit a released entry: files in the field are at every version.
MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE activities (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- senders key their state by it: never reused
        uuid TEXT NOT NULL UNIQUE,             -- made once; Map My Tracks' unique_token
        title TEXT NOT NULL DEFAULT '',
        type TEXT NOT NULL DEFAULT '',
        privacy TEXT NOT NULL DEFAULT '',
        tags TEXT NOT NULL DEFAULT '',         -- comma-joined (tags cannot contain commas)
        started_at REAL NOT NULL,              -- GPS unix time of the first fix
        ended_at REAL,                         -- NULL: the current activity
        end_reason TEXT
    );
    -- At most one current activity.
    CREATE UNIQUE INDEX activities_one_current ON activities ((ended_at IS NULL))
        WHERE ended_at IS NULL;

    CREATE TABLE fixes (
        id INTEGER PRIMARY KEY,                -- monotonic, see the module docstring
        activity_id INTEGER REFERENCES activities (id),  -- NULL: outside any activity, never sent
        time REAL NOT NULL,                    -- UTC unix seconds from the receiver
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        alt REAL,
        speed REAL,
        course REAL,
        quality INTEGER,
        sats INTEGER,
        hdop REAL,
        vdop REAL,
        pdop REAL,
        err_lat REAL,
        err_lon REAL,
        err_alt REAL,
        poi TEXT
    );
    CREATE INDEX fixes_activity ON fixes (activity_id, id);
    -- Delivery reads "the next fixes above a cursor that belong to an activity". Without this
    -- index those reads would step over every fix stored outside an activity (hours of them
    -- after `tracker activity stop`) on every poll.
    CREATE INDEX fixes_deliverable ON fixes (id) WHERE activity_id IS NOT NULL;

    CREATE TABLE samples (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('hr', 'cad', 'pwr')),
        value REAL NOT NULL,
        sensor TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX samples_time ON samples (time);

    CREATE TABLE backends (
        name TEXT PRIMARY KEY,
        cursor INTEGER NOT NULL DEFAULT 0,     -- every fix with id <= cursor is settled
        state TEXT NOT NULL DEFAULT '{}'       -- JSON, the sender's own
    );

    CREATE TABLE marks (
        backend TEXT NOT NULL REFERENCES backends (name) ON DELETE CASCADE,
        fix_id INTEGER NOT NULL,               -- no foreign key: pruning deletes fixes first
        state TEXT NOT NULL CHECK (state IN ('acked', 'quarantined')),
        reason TEXT,
        PRIMARY KEY (backend, fix_id)
    ) WITHOUT ROWID;
    CREATE INDEX marks_fix ON marks (fix_id);

    -- Control requests from the CLI to the running daemon. No CHECK on command: SQLite cannot
    -- change a CHECK without rebuilding the table; the store validates it.
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,              -- wall clock
        command TEXT NOT NULL,
        arg TEXT,
        done_at REAL,
        result TEXT
    );
    CREATE INDEX requests_open ON requests (id) WHERE done_at IS NULL;

    CREATE TABLE runtime (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,                   -- JSON object
        updated_at REAL NOT NULL               -- wall clock
    );

    -- Persistent counters the store keeps itself (fixes pruned or dropped).
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL
    );
    """,
    # 2: paused fixes kept on the unit (tracker/activity.py, paused_points): in their activity
    # (exports, distance, moving time) but never offered to a backend.
    """
    ALTER TABLE fixes ADD COLUMN local INTEGER NOT NULL DEFAULT 0;
    DROP INDEX fixes_deliverable;
    CREATE INDEX fixes_deliverable ON fixes (id) WHERE activity_id IS NOT NULL AND local = 0;
    """,
    # 3: what a backend is sent. 'activities': the fixes of activities, not paused ones kept on
    # the unit (a rider's live map). 'all': every stored fix, in an activity or not (a fleet
    # map shows parked units too: Traccar, MQTT with their default `send = "all"`).
    """
    ALTER TABLE backends ADD COLUMN scope TEXT NOT NULL DEFAULT 'activities'
        CHECK (scope IN ('activities', 'all'));
    """,
    # 4: boat instrument readings (depth, wind, heading...: tracker/instruments.py), in GPS time
    # like the samples but a table of their own: `samples` stays the fitness readings (hr, cad,
    # pwr) that the fitness backends send, and no reader of it ever meets a depth. No CHECK on
    # kind (SQLite cannot change one without rebuilding the table): the store validates it
    # against tracker.fix.INSTRUMENT_KINDS. Values in SI units (temperatures in Celsius).
    """
    CREATE TABLE instruments (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,                    -- GPS unix seconds (tracker/sensors/clock.py)
        kind TEXT NOT NULL,
        value REAL NOT NULL,
        sensor TEXT NOT NULL DEFAULT ''        -- the input it came from
    );
    CREATE INDEX instruments_time ON instruments (time);
    -- The latest value of each kind (the status page, `tracker activities`): one seek a kind.
    CREATE INDEX instruments_kind ON instruments (kind, time);
    """,
    # 5: running totals, so that the status page and `tracker activities` cost the same however
    # long a ride is (tracker/store/totals.py). `ride_totals` holds, per activity, what
    # tracker/rides.py's figures need, summed as fixes are stored, and with the rules they were
    # summed with (max_hdop, start_speed: a reader with other rules reads the fixes instead);
    # row 0 counts the fixes outside any activity. `sample_counts` counts the fitness samples
    # per minute (size 60) and per hour (size 3600, of the minute buckets), kept by triggers.
    # The fill below is the same computation as totals.fold, in SQL: distance is the haversine
    # of activity.distance_m (radians as Python's math.radians, x * (pi / 180)), MAX_GAP_S 10 s,
    # max_hdop 5.0 and the start speed of the activity's type (activity.START_SPEEDS).
    """
    CREATE TABLE ride_totals (
        activity_id INTEGER PRIMARY KEY,       -- 0: the fixes outside any activity
        max_hdop REAL,                         -- the rules the figures were summed with
        start_speed REAL,
        points INTEGER NOT NULL DEFAULT 0,     -- fixes stored in it now
        local_points INTEGER NOT NULL DEFAULT 0,
        distance_m REAL NOT NULL DEFAULT 0,
        moving_s REAL NOT NULL DEFAULT 0,
        max_speed REAL,
        last_id INTEGER,                       -- its newest fix, to sum on from
        last_time REAL,
        last_lat REAL,
        last_lon REAL
    );
    INSERT INTO ride_totals (activity_id, points)
        SELECT 0, count(*) FROM fixes WHERE activity_id IS NULL;
    INSERT INTO ride_totals (activity_id, max_hdop, start_speed)
        SELECT id, 5.0, CASE
            WHEN type IN ('running', 'walking', 'hiking', 'nordic walking', 'orienteering',
                          'mountaineering') THEN 0.8
            WHEN type IN ('sailing', 'rowing', 'kayaking', 'sea kayaking', 'canoeing',
                          'stand up paddle boarding', 'windsurfing', 'kiteboarding',
                          'hot air ballooning') THEN 0.5
            WHEN type IN ('driving', 'motor racing', 'off road driving', 'motorcycling',
                          'enduro') THEN 3.0
            ELSE 1.5 END
        FROM activities;
    WITH p AS (
        SELECT f.activity_id AS a, f.time, f.speed, f.local,
               (f.hdop IS NULL OR f.hdop <= 5.0) AS good,
               f.time - lag(f.time) OVER w AS dt,
               2 * 6371008.8 * asin(min(1.0, sqrt(
                   pow(sin((f.lat * 0.017453292519943295
                            - lag(f.lat) OVER w * 0.017453292519943295) / 2), 2)
                   + cos(lag(f.lat) OVER w * 0.017453292519943295)
                     * cos(f.lat * 0.017453292519943295)
                     * pow(sin(((f.lon - lag(f.lon) OVER w) * 0.017453292519943295) / 2), 2)
               ))) AS d
        FROM fixes f WHERE f.activity_id IS NOT NULL
        WINDOW w AS (PARTITION BY f.activity_id ORDER BY f.id)
    ), s AS (
        SELECT p.a, count(*) AS points, sum(p.local) AS local_points,
            total(CASE WHEN p.good AND p.dt > 0 AND p.dt <= 10.0 AND coalesce(p.speed,
                CASE WHEN p.dt > 0 THEN p.d / p.dt ELSE 0.0 END) >= t.start_speed
                THEN p.d END) AS distance_m,
            total(CASE WHEN p.good AND p.dt > 0 AND p.dt <= 10.0 AND coalesce(p.speed,
                CASE WHEN p.dt > 0 THEN p.d / p.dt ELSE 0.0 END) >= t.start_speed
                THEN p.dt END) AS moving_s,
            max(CASE WHEN p.good AND abs(p.speed) <= 1.7976931348623157e308
                THEN p.speed END) AS max_speed
        FROM p JOIN ride_totals t ON t.activity_id = p.a GROUP BY p.a
    )
    UPDATE ride_totals SET points = s.points, local_points = s.local_points,
        distance_m = s.distance_m, moving_s = s.moving_s, max_speed = s.max_speed
        FROM s WHERE ride_totals.activity_id = s.a;
    UPDATE ride_totals SET last_id = (SELECT max(id) FROM fixes f
        WHERE f.activity_id = ride_totals.activity_id) WHERE activity_id > 0;
    UPDATE ride_totals SET (last_time, last_lat, last_lon) = (SELECT time, lat, lon FROM fixes
        WHERE id = ride_totals.last_id) WHERE last_id IS NOT NULL;
    -- Pruning deletes fixes and activities (tracker/store/prune.py): rare, and never on the
    -- write hot path, so a trigger per deleted row keeps the counts.
    CREATE TRIGGER ride_totals_fix_deleted AFTER DELETE ON fixes BEGIN
        UPDATE ride_totals SET points = points - 1, local_points = local_points - old.local
        WHERE activity_id = coalesce(old.activity_id, 0);
    END;
    CREATE TRIGGER ride_totals_activity_deleted AFTER DELETE ON activities BEGIN
        DELETE FROM ride_totals WHERE activity_id = old.id;
    END;

    CREATE TABLE sample_counts (
        size INTEGER NOT NULL,                 -- 60: minutes, 3600: hours
        start INTEGER NOT NULL,                -- CAST(time / 60 AS INTEGER), hours: / 60
        n INTEGER NOT NULL,
        PRIMARY KEY (size, start)
    ) WITHOUT ROWID;
    INSERT INTO sample_counts (size, start, n)
        SELECT 60, CAST(time / 60 AS INTEGER), count(*) FROM samples GROUP BY 2;
    INSERT INTO sample_counts (size, start, n)
        SELECT 3600, CAST(time / 60 AS INTEGER) / 60, count(*) FROM samples GROUP BY 2;
    CREATE TRIGGER sample_counts_added AFTER INSERT ON samples BEGIN
        INSERT INTO sample_counts (size, start, n) VALUES (60, CAST(new.time / 60 AS INTEGER), 1)
            ON CONFLICT (size, start) DO UPDATE SET n = n + 1;
        INSERT INTO sample_counts (size, start, n)
            VALUES (3600, CAST(new.time / 60 AS INTEGER) / 60, 1)
            ON CONFLICT (size, start) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER sample_counts_deleted AFTER DELETE ON samples BEGIN
        UPDATE sample_counts SET n = n - 1
        WHERE (size = 60 AND start = CAST(old.time / 60 AS INTEGER))
           OR (size = 3600 AND start = CAST(old.time / 60 AS INTEGER) / 60);
    END;
    """,
    # 6: fixes a backend was never to send, by its `history` key (issue 24): after an outage
    # only the recent ones go; the older ones pass its cursor like acknowledged ones, and
    # this counts them for `tracker status`. One row per hold, not per fix.
    """
    CREATE TABLE held_back (
        backend TEXT NOT NULL REFERENCES backends (name) ON DELETE CASCADE,
        up_to_id INTEGER NOT NULL,             -- the newest fix id of this hold
        fixes INTEGER NOT NULL,                -- how many it settled unsent
        before_time REAL NOT NULL,             -- GPS time: the fixes were older than this
        PRIMARY KEY (backend, up_to_id)
    ) WITHOUT ROWID;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# A fix a backend of scope 'activities' is to be sent: in an activity, and not a paused fix
# kept on the unit. The same words as the fixes_deliverable index, so that SQLite uses it.
_DELIVERABLE = "f.activity_id IS NOT NULL AND f.local = 0"
SCOPES = ("activities", "all")


def deliverable(scope: str) -> str:
    """The WHERE term for the fixes a backend of `scope` is to be sent (alias `f`)."""
    return _DELIVERABLE if scope == "activities" else "1"

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_INTERRUPT = 3, 5, 6, 9
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = 8, 10, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 13, 14, 26
_UNAVAILABLE = {_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN}
_BUSY = {_SQLITE_BUSY, _SQLITE_LOCKED}
_BROKEN = {_SQLITE_CORRUPT, _SQLITE_NOTADB}
# Errors after which a connection stays as it is until it is closed: a database SQLite opened
# read-only (the file system was read-only at open) stays read-only, a failed WAL or -shm
# mapping stays failed. FULL and BUSY clear by themselves once space or the lock is back.
_REOPEN = {_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CANTOPEN, *_BROKEN}

# What `storage_state()` says, for the recorder's runtime row and `tracker status`.
STORAGE_STATES = ("ok", "read-only", "full", "corrupt", "error")


def connect(
    path: Path, *, readonly: bool, check: bool, clock: Callable[[], float]
) -> sqlite3.Connection:
    """Open the file as `open_store()` describes and apply pending migrations; the caller
    holds `_open_here_lock` until the connection is wrapped in a StoreBase (and so counted in
    `_open_here`)."""
    conn = _connect_readonly(path) if readonly else _open_readwrite(path, check=check, clock=clock)
    try:
        _migrate(conn, path, readonly=readonly)
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_readonly(path: Path, *, leave_no_files: bool = False) -> sqlite3.Connection:
    """A read-only connection. `leave_no_files`: with no -wal beside the database (no
    connection has it open) read it as immutable at once, instead of letting SQLite create a
    -wal and -shm that a read-only connection cannot delete when it closes."""
    if not path.exists():
        raise StoreError(f"{path}: no database there (is the daemon's storage.path another one?)")
    uri = path.resolve().as_uri() + "?mode=ro"
    wal = Path(str(path) + "-wal")
    immutable = leave_no_files and not wal.exists()
    conn = None
    try:
        conn = _connect(uri + "&immutable=1" if immutable else uri)
        conn.execute("PRAGMA user_version").fetchone()  # reads the header
        return conn
    except sqlite3.Error as e:
        if conn is not None:
            conn.close()
        # With the daemon stopped there is no -wal and no -shm, and a reader that may not
        # write the directory (or a full or read-only file system: IOERR) cannot create the
        # -shm a WAL database needs. No -wal means all the data is in the file: read it as
        # immutable (no locks, no -shm).
        if immutable or wal.exists() or _code(e) not in (
            _SQLITE_READONLY,
            _SQLITE_CANTOPEN,
            _SQLITE_IOERR,
        ):
            raise _readonly_error(e, path) from e
    try:
        return _connect(uri + "&immutable=1")
    except sqlite3.Error as e:
        raise _readonly_error(e, path) from e


def _readonly_error(e: sqlite3.Error, path: Path) -> StoreError:
    # With SQLite's code, so that a reader can tell a corrupt file (storage_state) apart.
    err = StoreError(f"{path}: cannot open read-only: {e} ({_name(e)})")
    err.code = _code(e)
    return err


def _connect(database: str | Path) -> sqlite3.Connection:
    return sqlite3.connect(
        database,
        uri=isinstance(database, str),
        timeout=BUSY_TIMEOUT_S,
        isolation_level=None,
        check_same_thread=False,
    )


def _open_readwrite(path: Path, *, check: bool, clock: Callable[[], float]) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageUnavailable(f"{path}: cannot create its directory: {e}") from e
    for attempt in (1, 2):
        created = not path.exists()
        _refuse_read_only(path)
        conn, problem = _try_open(path, check=check)
        if conn is not None:
            if created:
                _match_owner(path)
            return conn
        if attempt == 2:
            raise StoreError(f"{path}: a freshly created database fails its check: {problem}")
        aside = _move_aside(path, clock)
        log.error(
            "database %s is corrupt (%s): moved it to %s and started an empty one",
            path,
            problem,
            aside,
        )
    raise AssertionError("unreachable")


def _refuse_read_only(path: Path) -> None:
    """SQLite opens a file it may not write (a read-only file system after a power cut left
    the -wal and -shm) read-only without a word, and that connection, and the -shm mapping
    every connection of this process then shares, stay read-only until all are closed: a
    writer must not get one. StorageUnavailable, to be tried again later."""
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists() and not os.access(p, os.W_OK):
            err = StorageUnavailable(f"{path}: cannot open for writing: {p.name} is not "
                                     f"writable{_disk_problem(path)}")  # fmt: skip
            err.code = _SQLITE_READONLY
            raise err


# Database files this process has open through a Store, by (device, inode), with a count.
# Closing ANY descriptor of a file drops every POSIX lock the process holds on it, SQLite's
# locks of its other connections included; another process (a CLI command) would then think
# the database unused, checkpoint and delete the -wal under the daemon's feet, and every later
# commit of the daemon would go to a deleted file. So Python never opens a file this process
# already has open through SQLite.
_open_here: dict[tuple[int, int], int] = {}
_open_here_lock = threading.RLock()


def _file_key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _read_header(path: Path) -> bytes:
    """The first 16 bytes, or those of a valid database when this process has it open."""
    key = _file_key(path)
    with _open_here_lock:
        if key is not None and _open_here.get(key):
            return _SQLITE_HEADER  # checked when this process first opened it
    try:
        with open(path, "rb") as f:
            return f.read(16)
    except FileNotFoundError:
        return b""
    except OSError as e:
        raise StorageUnavailable(f"{path}: cannot read: {e}") from e


def _try_open(path: Path, *, check: bool) -> tuple[sqlite3.Connection | None, str]:
    """(connection, "") or (None, what is wrong with the file)."""
    # Look at the header before SQLite does: on a file that is no database, SQLite's close
    # deletes the -wal and -shm beside it, and they are part of what gets moved aside.
    header = _read_header(path)
    if header and header != _SQLITE_HEADER:
        return None, f"not an SQLite database: starts with {header!r}"
    conn = None
    try:
        conn = _connect(path)
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # takes effect on a new file only
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            log.warning("%s: journal_mode is %s, not wal (file system without mmap?)", path, mode)
        if check:
            rows = [r[0] for r in conn.execute("PRAGMA quick_check")]
            if rows != ["ok"]:
                # Closing checkpoints the committed WAL frames into the file that is moved
                # aside: they belong to it.
                conn.close()
                return None, "quick_check: " + "; ".join(rows[:3])
            _convert_page_size(conn, path)
        return conn, ""
    except sqlite3.Error as e:
        if conn is not None:
            conn.close()
        if _code(e) not in _BROKEN:
            raise _translate(e, path, "open") from e
        return None, f"{e} ({_name(e)})"


def _convert_page_size(conn: sqlite3.Connection, path: Path) -> None:
    """Rewrite a database made with another page size (SQLite's default 4 KiB, which earlier
    releases used) with PAGE_SIZE, once: VACUUM in rollback-journal mode, the only way SQLite
    changes it. Needs the file to itself
    and as much free space as the database; when either is missing the old size is kept (it
    works, it only writes more per commit) and the next start tries again."""
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    if size == PAGE_SIZE:
        return
    log.warning("%s: rewriting the database with %d-byte pages instead of %d (once: each "
                "commit then writes less to the SD card)", path, PAGE_SIZE, size)  # fmt: skip
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("VACUUM")
    except sqlite3.Error as e:
        log.warning("%s: kept %d-byte pages for now (%s); trying again at the next start",
                    path, size, e)  # fmt: skip
    finally:
        conn.execute("PRAGMA journal_mode=WAL")


def _move_aside(path: Path, clock: Callable[[], float]) -> Path:
    stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}.{n}")
    try:
        # The -wal and -shm keep their suffixes so that `sqlite3 <aside>` reads the pair.
        for suffix in ("-wal", "-shm", ""):
            src = Path(str(path) + suffix)
            if src.exists():
                src.rename(str(aside) + suffix)
    except OSError as e:
        raise StoreError(f"{path} is corrupt and cannot be moved aside: {e}") from e
    return aside


def _match_owner(path: Path) -> None:
    """A file root creates (the CLI run with sudo before the daemon ever ran) goes to the
    owner of its directory, or the daemon's user could not write it. SQLite does the same for
    the -wal and -shm files it creates as root."""
    if os.geteuid() != 0:
        return
    try:
        st = path.parent.stat()
        if st.st_uid != 0 or st.st_gid != 0:
            os.chown(path, st.st_uid, st.st_gid)
    except OSError as e:
        log.warning("%s: cannot give it to the owner of its directory: %s", path, e)


def _migrate(conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
    latest = len(MIGRATIONS)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as e:
        raise _translate(e, path, "read the schema version") from e
    if version > latest:
        raise StoreError(
            f"{path}: schema version {version} is newer than this tracker's ({latest}); "
            "upgrade tracker"
        )
    if readonly:
        if version != latest:
            raise StoreError(
                f"{path}: schema version {version}, this tracker reads {latest}; "
                "start the daemon once to migrate it"
            )
        return
    while version < latest:
        try:
            # IMMEDIATE, then read the version again: another process may have migrated while
            # we waited for the lock.
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < latest:
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
                conn.execute("COMMIT")
                version += 1
                log.info("%s: schema migrated to version %d", path, version)
            else:
                conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _translate(e, path, f"migrate to schema version {version + 1}") from e


def _statements(script: str) -> Iterator[str]:
    # executescript() would COMMIT first; a migration must run inside its own transaction.
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                yield buf
            buf = ""
    if buf.strip() and not buf.strip().startswith("--"):
        yield buf


def _code(e: sqlite3.Error) -> int:
    return (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF


def _name(e: sqlite3.Error) -> str:
    return getattr(e, "sqlite_errorname", None) or type(e).__name__


def file_system(path: Path) -> str:
    """What the file system holding the database says: "read-only", "full" (less than 64 KiB
    free to its user) or "ok"; "" when it cannot be asked."""
    try:
        st = os.statvfs(Path(path).parent)
    except OSError:
        return ""
    if st.f_flag & os.ST_RDONLY:
        return "read-only"
    if st.f_bavail * st.f_frsize < 64 * 1024:
        return "full"
    return "ok"


def _disk_problem(path: Path) -> str:
    """What the file system says, for SQLite errors that do not (CANTOPEN on a read-only one)."""
    fs = file_system(path)
    return f"; the file system is {fs}" if fs in ("read-only", "full") else ""


def _translate(e: sqlite3.Error, path: Path, action: str) -> StoreError:
    code = _code(e)
    msg = f"{path}: cannot {action}: {e} ({_name(e)}){_disk_problem(path)}"
    err = StoreBusy(msg) if code in _BUSY else (
        StorageUnavailable(msg) if code in _UNAVAILABLE else StoreError(msg))
    err.code = code
    return err


def storage_state(path: Path, e: StoreError | None = None) -> str:
    """One of STORAGE_STATES for the database at `path`: what the file system says first (a
    read-only mount gives CANTOPEN or IOERR as often as READONLY), then the error's code."""
    if e is None:
        return "ok"
    try:
        st = os.statvfs(path.parent if path.parent.exists() else path.parent.parent)
        if st.f_flag & os.ST_RDONLY:
            return "read-only"
    except OSError:
        st = None
    if e.code == _SQLITE_FULL or isinstance(e, StorageFull):
        return "full"
    if e.code in (_SQLITE_READONLY, _SQLITE_PERM):
        return "read-only"
    if e.code in _BROKEN:
        return "corrupt"
    if st is not None and st.f_bavail * st.f_frsize < 64 * 1024:
        return "full"
    return "error"


class StoreBase:
    """One connection to the tracker database: its configuration, transactions and reads.
    Every concern's mixin builds on it; `Store` (tracker.store.facade) is them all together.

    Not thread-safe: one Store per thread (see the package docstring). Write methods run in
    their own transaction, or in the caller's when called inside `transaction()`.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        max_mb: float | None = None,
        prune: str = "drop_oldest",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Wrap an open connection (open_store does; tests wrap special ones).

        Also holds the size-limit settings: the WAL allowance below depends on them.
        """
        self.path = Path(path)
        self.readonly = readonly
        self.max_mb = max_mb
        self.prune_mode = prune
        self._max_bytes = None if max_mb is None else int(max_mb * 1024 * 1024)
        self._clock = clock
        self._conn = conn
        self._file_key = _file_key(self.path)
        if self._file_key is not None:
            with _open_here_lock:
                _open_here[self._file_key] = _open_here.get(self._file_key, 0) + 1
        self._depth = 0  # transaction() nesting
        self._aborted = False  # an error inside a nested transaction rolled it all back
        # A write failed in a way SQLite does not recover by itself (_REOPEN): the next
        # transaction opens the file again first.
        self._stale = False
        self._full_log = RateLimitedLog(log)  # drop_newest refusals (PruneMixin._admit)
        self._configure(conn)

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.isolation_level = None  # we send BEGIN and COMMIT ourselves
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            # In WAL mode NORMAL may lose committed transactions on a power cut; FULL does not.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            # Every thread has its own connection and each would cache up to 2 MB of pages
            # (SQLite's default). 128 KiB (256 pages) holds the path of every b-tree an append
            # touches and the inner pages of a streamed read; the OS page cache holds the rest.
            # 512 KiB cost a megabyte of RSS once the senders read fast (catching up) and no
            # CPU was saved by it (callgrind, ingest; scripts/bench, memory).
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            # The default here (SECURE_DELETE builds) zeroes every freed page: extra writes to
            # an SD card on every prune. FAST zeroes only what is written anyway.
            conn.execute("PRAGMA secure_delete = FAST")
            # Without a limit the WAL file keeps the size of its biggest burst (a prune, a
            # long export holding back checkpoints) for good.
            wal_limit = _WAL_LIMIT_BYTES
            if self._max_bytes is not None:
                wal_limit = max(64 * 1024, min(wal_limit, self._max_bytes // 20))
            self._wal_limit = wal_limit
            conn.execute(f"PRAGMA journal_size_limit = {wal_limit}")
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(
                f"PRAGMA wal_autocheckpoint = {max(16, min(1000, wal_limit // page_size))}"
            )
        except sqlite3.Error as e:
            raise _translate(e, self.path, "configure the connection") from e

    # -- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent). The last one to close checkpoints the WAL."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]
            if self._file_key is not None:
                with _open_here_lock:
                    left = _open_here.pop(self._file_key, 1) - 1
                    if left:
                        _open_here[self._file_key] = left

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.path}{' readonly' if self.readonly else ''}>"

    @contextmanager
    def transaction(self) -> Iterator[Self]:
        """BEGIN IMMEDIATE ... COMMIT; ROLLBACK on any error, then the error is raised.

        Nested calls join the outer transaction. A SQLite error at any depth rolls back the
        whole transaction at once (SQLite may already have) and raises a StoreError; if the
        caller swallows it, the outer block raises StoreError instead of committing. Errors
        from SQLite come out as StorageUnavailable / StoreBusy / StoreError.
        """
        self._writable()
        if self._stale and not self._depth:
            self._reconnect()
        if self._depth:
            if self._aborted:
                # Running on would write outside any transaction, committing piecemeal.
                raise StoreError(f"{self.path}: the transaction was rolled back after an error")
            self._depth += 1
            try:
                yield self
            except sqlite3.Error as e:
                self._abort()
                raise _translate(e, self.path, "write") from e
            finally:
                self._depth -= 1
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            self._stale = _code(e) in _REOPEN or self._conn.in_transaction
            raise _translate(e, self.path, "begin a transaction") from e
        self._depth, self._aborted = 1, False
        try:
            yield self
            if self._aborted:
                raise StoreError(f"{self.path}: the transaction was rolled back after an error")
            self._conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._abort()
            self._stale = _code(e) in _REOPEN or self._conn.in_transaction
            raise _translate(e, self.path, "write") from e
        except BaseException:
            self._abort()
            self._stale = self._conn.in_transaction  # a rollback that failed: start afresh
            raise
        finally:
            self._depth, self._aborted = 0, False

    def _reconnect(self) -> None:
        """Replace the connection by a new one to the same file: a connection SQLite opened
        read-only (the file system was read-only then) stays so until it is closed, and one
        that failed a write with an I/O error is not trusted to be right. When the file cannot
        be opened yet the old connection stays (it still reads) and the error is raised."""
        with _open_here_lock:
            conn = connect(self.path, readonly=False, check=False, clock=self._clock)
        try:
            self._configure(conn)
        except StoreError:
            conn.close()
            raise
        old, self._conn = self._conn, conn
        self._stale = False
        try:
            old.close()
        except sqlite3.Error as e:
            log.debug("%s: closing the old connection: %s", self.path, e)
        self._full_log.log(logging.INFO, "reopen", "%s: opened the database again after a write "
                           "error", self.path)  # fmt: skip

    def _abort(self) -> None:
        self._aborted = True
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error as e:  # SQLite rolls back itself on some errors
                log.debug("%s: rollback: %s", self.path, e)

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only")
        if self._conn is None:
            raise StoreError(f"{self.path}: store is closed")

    def _all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise _translate(e, self.path, "read") from e
        except AttributeError:
            if self._conn is None:
                raise StoreError(f"{self.path}: store is closed") from None
            raise

    def _one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple[Any, ...] | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        row = self._one(sql, params)
        return None if row is None else row[0]

    def _int(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """The integer a query always yields (a count, a coalesce()d sum, a PRAGMA)."""
        return int(self._scalar(sql, params))

    def pragma(self, name: str) -> Any:
        """The value of a read-only PRAGMA (journal_mode, synchronous, user_version, ...)."""
        if not name.replace("_", "").isalnum():
            raise ValueError(name)
        return self._scalar(f"PRAGMA {name}")

    def integrity_check(self) -> str:
        """`PRAGMA integrity_check`: "ok", or the problems found, one a line. Slow on big files."""
        return "\n".join(r[0] for r in self._all("PRAGMA integrity_check"))

    def quick_check(self, limit_s: float) -> list[str] | None:
        """`PRAGMA quick_check`'s problems ([] for none), or None when it did not end within
        `limit_s` seconds: it reads every page, roughly a minute a GB on a Pi. Read
        only: on a WAL database it holds a read snapshot, never a lock a writer waits for."""
        deadline = time.monotonic() + limit_s
        # SQLite calls the handler every QUICK_CHECK_STEP virtual machine steps, also within
        # the check's walk of the b-trees; a true answer interrupts the statement.
        self._conn.set_progress_handler(lambda: time.monotonic() > deadline, QUICK_CHECK_STEP)
        try:
            rows = [r[0] for r in self._conn.execute("PRAGMA quick_check")]
        except sqlite3.Error as e:
            if _code(e) == _SQLITE_INTERRUPT:
                return None
            if _code(e) in _BROKEN:  # a page the check itself cannot read
                return [f"{e} ({_name(e)})"]
            raise _translate(e, self.path, "check") from e
        finally:
            self._conn.set_progress_handler(None, 0)
        return [] if rows == ["ok"] else rows
