"""The durable local queue: every fix, sample and control request goes through this SQLite file.

Nothing is sent from anywhere but here. The GPS writer stores fixes; each sender reads batches
for its backend and acknowledges them only after its server said yes (at-least-once: a crash
between the upload and the acknowledgement sends the batch again, it never loses it).

Contracts
---------
Threads: one Store per thread. A Store may be created in one thread and handed to the thread
that uses it, but two threads must never use the same Store at once (one connection, one
transaction state). The daemon's writer thread owns one; each sender thread opens its own.

Processes: any number of processes may open the same file at the same time (the daemon, and
`tracker status` / `export` / `activity stop` from a shell, possibly as another user). SQLite's
WAL mode lets readers run beside the one writer; writers wait up to BUSY_TIMEOUT_S for each
other, then get StoreBusy.

Durability: journal_mode=WAL with synchronous=FULL, so a transaction is on the storage once
COMMIT returns (with NORMAL, WAL mode may lose the last transactions on a power cut). The
writer commits a batch every commit interval, so a power cut loses at most that interval.

Errors: everything SQLite raises enters the rest of the code as StoreError or a subclass, with
the database path in the message. A full disk, a read-only file or file system, or an I/O error
during a write rolls the transaction back and raises StorageUnavailable: nothing of that
transaction was stored, everything committed before is intact, and the same Store works again
once the cause is gone (the caller keeps its batch in memory and retries).

Delivery state
--------------
Per backend, `backends.cursor` says every fix with id <= cursor is settled for that backend:
acknowledged, or quarantined (and then a 'quarantined' row in `marks` says so). Above the
cursor, `marks` holds the sparse per-fix state: 'acked' (json-gpsr acknowledges single fixes
out of order) or 'quarantined' (the server refused a batch for good; it is not offered again
but stays counted). When the settled fixes above the cursor become contiguous the cursor moves
up and their 'acked' marks are deleted. Quarantined fixes let the cursor pass and keep their
mark below it; that keeps `marks` sparse even when a backend quarantines a batch early in a long
ride and acknowledges everything after it (if quarantined fixes blocked the cursor, every later
acknowledgement would stay a row in `marks`).

Fix ids are monotonic and never reused: pruning never deletes the newest fix, so SQLite's
max(rowid) + 1 never goes back (cheaper than AUTOINCREMENT, which writes one more page per
commit; and a reused id below a cursor would count as delivered without being sent).

Size limit
----------
`max_mb` bounds the bytes in use: the pages in use, plus the WAL counted at its allowance
(journal_size_limit, 5 % of max_mb up to 4 MiB) rather than its momentary size, which deleting
rows cannot reduce. It is a soft limit, checked when pruning runs. `prune_if_needed()`, which
the writer calls every few commits, first deletes the oldest fixes that no backend still needs
(acknowledged by every registered backend, or outside any activity, or all of them when no
backend is registered), the samples older than the oldest fix left, and ended activities left
without fixes, down to 90 % of the limit. When that is not enough it depends on `prune`:

- "drop_oldest" (the default): deletes the oldest undelivered fixes too, with an ERROR line that
  says how many and for which backends, and adds them to persistent counters (`counters()`,
  for `tracker status`). A live tracker must keep tracking the present: the people following
  the ride want where the rider is now, not where the rider was this morning.
- "drop_newest": keeps everything stored and refuses new fixes: `add_fixes` raises StorageFull
  (a StorageUnavailable, and an ERROR line, rate-limited) until acknowledgements make room
  again. For riders who care more about a complete start of the ride than about live tracking.

Either way the newest fix is never deleted (see fix ids above), so a limit too small for the
samples alone leaves one fix and an ERROR line at each prune rather than an empty table.

The file does not shrink: freed pages are reused by new data (VACUUM would need twice the space
and lock out every other process while it runs).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

from tracker.fix import Fix, Sample
from tracker.logutil import RateLimitedLog

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0
_SQLITE_HEADER = b"SQLite format 3\x00"
PRUNE_MODES = ("drop_oldest", "drop_newest")
REQUEST_COMMANDS = ("activity_start", "activity_stop", "poi")
PRUNE_TARGET = 0.9  # prune down to this fraction of max_mb, so the next prune is not at once
_PAGE = 1000  # rows per page when streaming fixes
_WAL_LIMIT_BYTES = 4 * 1024 * 1024  # keep the WAL file at most this big after a checkpoint


class StoreError(Exception):
    """Anything the store cannot do; the message names the database file."""


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
]
SCHEMA_VERSION = len(MIGRATIONS)

_FIX_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Fix))
_fix_values = attrgetter(*_FIX_FIELDS)
_FIX_SELECT = "f.id, f.activity_id, f.poi, f.local, " + ", ".join("f." + n for n in _FIX_FIELDS)
_FIX_INSERT = "INSERT INTO fixes (activity_id, local, {}) VALUES (?, ?, {})".format(
    ", ".join(_FIX_FIELDS), ", ".join("?" * len(_FIX_FIELDS))
)
# A fix some backend is to be sent: in an activity, and not a paused fix kept on the unit. The
# same words as the fixes_deliverable index, so that SQLite uses it.
_DELIVERABLE = "f.activity_id IS NOT NULL AND f.local = 0"
_NOT_MARKED = "NOT EXISTS (SELECT 1 FROM marks m WHERE m.backend = :b AND m.fix_id = f.id)"
_CURSOR = "(SELECT cursor FROM backends WHERE name = :b)"
_ACTIVITY_COLUMNS = "id, uuid, title, type, privacy, tags, started_at, ended_at, end_reason"
_REQUEST_COLUMNS = "id, created_at, command, arg, done_at, result"

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED = 3, 5, 6
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = 8, 10, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 13, 14, 26
_UNAVAILABLE = {_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN}
_BUSY = {_SQLITE_BUSY, _SQLITE_LOCKED}
_BROKEN = {_SQLITE_CORRUPT, _SQLITE_NOTADB}


@dataclass(frozen=True, slots=True)
class Activity:
    id: int
    uuid: str  # uuid4 hex, made once; Map My Tracks' unique_token
    title: str
    type: str
    privacy: str
    tags: tuple[str, ...]
    started_at: float  # GPS unix time
    ended_at: float | None  # None: the current activity
    end_reason: str | None

    @property
    def current(self) -> bool:
        return self.ended_at is None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredFix(Fix):
    """A Fix as stored: the Fix fields (positional, as in Fix) plus its row id, its activity
    (None: stored outside any activity, never sent), its point-of-interest note, and `local`:
    a paused fix of its activity that is never sent (paused_points)."""

    id: int
    activity_id: int | None
    poi: str | None = None
    local: bool = False

    @property
    def fix(self) -> Fix:
        """The plain Fix (a StoredFix is a Fix already; this drops the storage fields)."""
        return Fix(*_fix_values(self))


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    created_at: float  # wall clock
    command: str  # one of REQUEST_COMMANDS
    arg: str | None
    done_at: float | None
    result: str | None

    @property
    def done(self) -> bool:
        return self.done_at is not None


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What one `prune_if_needed()` did. Sizes in bytes, as held against the limit: pages in
    use plus the WAL's allowance (see `Store.size_bytes` for the momentary size). The limit is
    None when there is none."""

    limit_bytes: int | None
    before_bytes: int
    after_bytes: int
    deleted_fixes: int = 0  # fixes no backend needed any more
    dropped_undelivered: int = 0  # fixes some backend had not acknowledged (drop_oldest)
    deleted_samples: int = 0
    deleted_activities: int = 0
    over_limit: bool = False  # still above the limit afterwards (drop_newest: refusing fixes)


def open_store(
    path: str | os.PathLike[str],
    *,
    max_mb: float | None = None,
    prune: str = "drop_oldest",
    readonly: bool = False,
    check: bool = True,
    clock: Callable[[], float] = time.time,
) -> Store:
    """Open (and create, migrate, check) the database at `path`.

    Read-write: creates the parent directory and the file, switches to WAL, and with `check`
    runs `PRAGMA quick_check`. A file that fails it, or is not a database at all, is renamed
    `<name>.corrupt-<UTC time>` together with its -wal and -shm, one ERROR line names both
    paths, and a fresh database is created in its place. Then pending migrations are applied.
    The daemon opens with `check=True` at start; CLI commands that open read-write while the
    daemon runs should pass `check=False`: moving aside a file the daemon is writing to would
    split the data in two (and the check of a big file takes seconds).

    Readonly: opens `file:...?mode=ro`, so a user who may only read the files can run `tracker
    status` (SQLite gives the -wal and -shm the database file's permissions). When the daemon
    is stopped there is no -shm and such a user cannot create one: with no -wal either, all
    the data is in the file, and it is opened `immutable=1`. Never creates, checks or
    migrates. A missing file, or one at another schema version, is a StoreError. Every write
    method of a readonly Store raises StoreError.

    `clock` gives wall-clock time for requests and runtime rows (injectable for tests).
    """
    if prune not in PRUNE_MODES:
        raise ValueError(f"prune must be one of {PRUNE_MODES}, not {prune!r}")
    if max_mb is not None and max_mb <= 0:
        raise ValueError(f"max_mb must be positive, not {max_mb!r}")
    p = Path(path)
    # One open at a time in this process, from the header read until the Store is counted in
    # _open_here: another thread's connection, opened but not yet counted, would otherwise lose
    # its locks when the header read closes its descriptor (and two threads switching a new
    # file to WAL at once get SQLITE_BUSY without waiting).
    with _open_here_lock:
        conn = _connect_readonly(p) if readonly else _open_readwrite(p, check=check, clock=clock)
        try:
            _migrate(conn, p, readonly=readonly)
        except BaseException:
            conn.close()
            raise
        return Store(conn, p, readonly=readonly, max_mb=max_mb, prune=prune, clock=clock)


def _connect_readonly(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise StoreError(f"{path}: no database there (is the daemon's storage.path another one?)")
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = None
    try:
        conn = _connect(uri)
        conn.execute("PRAGMA user_version").fetchone()
        return conn
    except sqlite3.Error as e:
        if conn is not None:
            conn.close()
        # With the daemon stopped there is no -wal and no -shm, and a reader that may not
        # write the directory cannot create the -shm a WAL database needs. No -wal means all
        # the data is in the file: read it as immutable (no locks, no -shm).
        if Path(str(path) + "-wal").exists() or _code(e) not in (
            _SQLITE_READONLY,
            _SQLITE_CANTOPEN,
        ):
            raise StoreError(f"{path}: cannot open read-only: {e} ({_name(e)})") from e
    try:
        return _connect(uri + "&immutable=1")
    except sqlite3.Error as e:
        raise StoreError(f"{path}: cannot open read-only: {e} ({_name(e)})") from e


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
        return conn, ""
    except sqlite3.Error as e:
        if conn is not None:
            conn.close()
        if _code(e) not in _BROKEN:
            raise _translate(e, path, "open") from e
        return None, f"{e} ({_name(e)})"


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


def _disk_problem(path: Path) -> str:
    """What the file system says, for SQLite errors that do not (CANTOPEN on a read-only one)."""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return ""
    if st.f_flag & os.ST_RDONLY:
        return "; the file system is read-only"
    if st.f_bavail * st.f_frsize < 64 * 1024:
        return "; the file system is full"
    return ""


def _translate(e: sqlite3.Error, path: Path, action: str) -> StoreError:
    code = _code(e)
    msg = f"{path}: cannot {action}: {e} ({_name(e)}){_disk_problem(path)}"
    if code in _BUSY:
        return StoreBusy(msg)
    if code in _UNAVAILABLE:
        return StorageUnavailable(msg)
    return StoreError(msg)


class Store:
    """One connection to the tracker database. Use `open_store()` to get one.

    Not thread-safe: one Store per thread (see the module docstring). Write methods run in
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
        """Wrap an open connection (open_store does; tests wrap special ones)."""
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
        self._full_log = RateLimitedLog(log)
        conn.isolation_level = None  # we send BEGIN and COMMIT ourselves
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            # In WAL mode NORMAL may lose committed transactions on a power cut; FULL does not.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
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

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.path}{' readonly' if self.readonly else ''}>"

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """BEGIN IMMEDIATE ... COMMIT; ROLLBACK on any error, then the error is raised.

        Nested calls join the outer transaction. A SQLite error at any depth rolls back the
        whole transaction at once (SQLite may already have) and raises a StoreError; if the
        caller swallows it, the outer block raises StoreError instead of committing. Errors
        from SQLite come out as StorageUnavailable / StoreBusy / StoreError.
        """
        self._writable()
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
            raise _translate(e, self.path, "begin a transaction") from e
        self._depth, self._aborted = 1, False
        try:
            yield self
            if self._aborted:
                raise StoreError(f"{self.path}: the transaction was rolled back after an error")
            self._conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._abort()
            raise _translate(e, self.path, "write") from e
        except BaseException:
            self._abort()
            raise
        finally:
            self._depth, self._aborted = 0, False

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

    def pragma(self, name: str) -> Any:
        """The value of a read-only PRAGMA (journal_mode, synchronous, user_version, ...)."""
        if not name.replace("_", "").isalnum():
            raise ValueError(name)
        return self._scalar(f"PRAGMA {name}")

    def integrity_check(self) -> str:
        """`PRAGMA integrity_check`: "ok", or the problems found, one a line. Slow on big files."""
        return "\n".join(r[0] for r in self._all("PRAGMA integrity_check"))

    # -- activities ----------------------------------------------------------------------------

    def current_activity(self) -> Activity | None:
        row = self._one(
            f"SELECT {_ACTIVITY_COLUMNS} FROM activities WHERE ended_at IS NULL "
            "ORDER BY id DESC LIMIT 1"
        )
        return None if row is None else _activity(row)

    def start_activity(
        self,
        title: str,
        type: str,
        privacy: str,
        tags: Iterable[str],
        started_at: float,
    ) -> Activity:
        """Start the current activity, with a new uuid. StoreError if one is still current:
        end it first (both may go in one transaction())."""
        tags = tuple(tags)
        if any("," in t for t in tags):
            raise ValueError(f"tags cannot contain commas: {tags!r}")
        with self.transaction():
            current = self.current_activity()
            if current is not None:
                raise StoreError(f"{self.path}: activity {current.id} is still current")
            cur = self._conn.execute(
                "INSERT INTO activities (uuid, title, type, privacy, tags, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (uuidlib.uuid4().hex, title, type, privacy, ",".join(tags), started_at),
            )
            activity = self.activity(cur.lastrowid)
        assert activity is not None
        log.info("activity %d started: %s", activity.id, activity.title)
        return activity

    def end_activity(self, activity_id: int, ended_at: float, reason: str) -> None:
        """End an activity. Ending one that has ended already changes nothing."""
        with self.transaction():
            cur = self._conn.execute(
                "UPDATE activities SET ended_at = ?, end_reason = ? "
                "WHERE id = ? AND ended_at IS NULL",
                (ended_at, reason, activity_id),
            )
            if cur.rowcount == 0 and self.activity(activity_id) is None:
                raise StoreError(f"{self.path}: no activity {activity_id}")
        if cur.rowcount:
            log.info("activity %d ended: %s", activity_id, reason)

    def activity(self, activity_id: int) -> Activity | None:
        row = self._one(f"SELECT {_ACTIVITY_COLUMNS} FROM activities WHERE id = ?", (activity_id,))
        return None if row is None else _activity(row)

    def activities(self) -> list[Activity]:
        """Every activity still stored, oldest first."""
        return [
            _activity(r)
            for r in self._all(f"SELECT {_ACTIVITY_COLUMNS} FROM activities ORDER BY id")
        ]

    def last_fix(self, activity_id: int | None = None) -> StoredFix | None:
        """The newest fix stored, or the newest of one activity."""
        if activity_id is None:
            sql = f"SELECT {_FIX_SELECT} FROM fixes f ORDER BY f.id DESC LIMIT 1"
            row = self._one(sql)
        else:
            sql = (
                f"SELECT {_FIX_SELECT} FROM fixes f WHERE f.activity_id = ? "
                "ORDER BY f.id DESC LIMIT 1"
            )
            row = self._one(sql, (activity_id,))
        return None if row is None else _stored_fix(row)

    # -- data ----------------------------------------------------------------------------------

    def add_fixes(
        self, activity_id: int | None, fixes: Sequence[Fix], *, local: bool = False
    ) -> None:
        """Store fixes, in the order given, for an activity (None: outside any activity);
        `local`: in the activity but never sent (paused fixes kept on the unit).

        With prune="drop_newest" and the size limit reached, first prunes what every backend
        has acknowledged; if that is not enough, raises StorageFull and stores nothing.
        """
        if not fixes:
            return
        self._writable()
        with self.transaction():
            if (
                self._max_bytes is not None
                and self.prune_mode == "drop_newest"
                and self._budget_bytes() > self._max_bytes
            ):
                self._prune(allow_undelivered=False)
                if self._budget_bytes() > self._max_bytes:
                    self._full_log.error(
                        "full",
                        "%s: storage limit of %.1f MB reached and every stored fix is still "
                        "undelivered: refusing new fixes (prune = drop_newest)",
                        self.path,
                        self.max_mb,
                    )
                    raise StorageFull(
                        f"{self.path}: storage limit of {self.max_mb} MB reached, "
                        f"{len(fixes)} fixes refused (prune = drop_newest)"
                    )
            flag = int(local and activity_id is not None)
            self._conn.executemany(
                _FIX_INSERT, [(activity_id, flag, *_fix_values(f)) for f in fixes]
            )

    def adopt_fixes(self, activity_id: int, count: int) -> int:
        """Move the newest `count` fixes stored outside any activity into `activity_id` (the
        lead-in of an activity that starts at its first moving fix); returns how many moved.

        They are above every backend's cursor: a cursor never passes the newest deliverable
        fix (see _advance), and these were stored after it.
        """
        if count <= 0:
            return 0
        with self.transaction():
            newest = self._newest_id()
            cur = self._conn.execute(
                "UPDATE fixes SET activity_id = ?, local = 0 "
                "WHERE id > ? AND activity_id IS NULL",
                (activity_id, newest - count),
            )
        return cur.rowcount

    def detach_fixes(self, activity_id: int, after: float) -> int:
        """Take the fixes of `activity_id` later than GPS time `after` out of it (an activity
        that ends at its last movement); returns how many. Those already sent stay sent."""
        with self.transaction():
            cur = self._conn.execute(
                "UPDATE fixes SET activity_id = NULL, local = 0 "
                "WHERE activity_id = ? AND time > ?",
                (activity_id, after),
            )
        return cur.rowcount

    def recent_fixes(self, activity_id: int | None, since: float) -> list[StoredFix]:
        """The fixes of `activity_id` at GPS time `since` or later, oldest first, read from the
        newest back (a long ride costs only the window). None: the newest fixes stored outside
        any activity, back to the first fix of an activity or `since`."""
        where = "f.activity_id = ?" if activity_id is not None else "1"
        params: tuple[Any, ...] = (activity_id,) if activity_id is not None else ()
        rows: list[tuple[Any, ...]] = []
        last = 1 << 62
        time_at = 4 + _FIX_FIELDS.index("time")
        while True:
            page = self._all(
                f"SELECT {_FIX_SELECT} FROM fixes f WHERE {where} AND f.id < ? "
                "ORDER BY f.id DESC LIMIT ?",
                (*params, last, _PAGE),
            )
            kept = []
            for r in page:
                if r[time_at] < since or (activity_id is None and r[1] is not None):
                    break
                kept.append(r)
            rows.extend(kept)
            if len(page) < _PAGE or len(kept) < len(page):
                break
            last = page[-1][0]
        return [_stored_fix(r) for r in reversed(rows)]

    def fix_counts(self) -> dict[str, int]:
        """How many fixes are stored: `total`, `outside` any activity (never sent), and
        `local` (paused fixes of an activity kept on the unit)."""
        total, outside, local = self._one(
            "SELECT count(*), coalesce(sum(activity_id IS NULL), 0), coalesce(sum(local), 0) "
            "FROM fixes"
        ) or (0, 0, 0)
        return {"total": total, "outside": outside, "local": local}

    def add_samples(self, samples: Sequence[Sample]) -> None:
        if not samples:
            return
        with self.transaction():
            self._conn.executemany(
                "INSERT INTO samples (time, kind, value, sensor) VALUES (?, ?, ?, ?)",
                [(s.time, s.kind, s.value, s.sensor) for s in samples],
            )

    def mark_poi(self, fix_id: int, text: str) -> None:
        """Attach a point-of-interest note to a fix (replacing any earlier note)."""
        with self.transaction():
            cur = self._conn.execute("UPDATE fixes SET poi = ? WHERE id = ?", (text, fix_id))
            if cur.rowcount == 0:
                raise StoreError(f"{self.path}: no fix {fix_id}")

    def iter_fixes(self, activity_id: int | None = None) -> Iterator[StoredFix]:
        """Every fix (or every fix of one activity) in id order, read a page at a time.

        Each page is its own short read, so a long export neither holds memory for the whole
        ride nor keeps a read snapshot open that stops the WAL from being checkpointed. Fixes
        added meanwhile are included; fixes pruned meanwhile may be missing.
        """
        last = 0
        while True:
            if activity_id is None:
                rows = self._all(
                    f"SELECT {_FIX_SELECT} FROM fixes f WHERE f.id > ? ORDER BY f.id LIMIT ?",
                    (last, _PAGE),
                )
            else:
                rows = self._all(
                    f"SELECT {_FIX_SELECT} FROM fixes f WHERE f.activity_id = ? AND f.id > ? "
                    "ORDER BY f.id LIMIT ?",
                    (activity_id, last, _PAGE),
                )
            for row in rows:
                yield _stored_fix(row)
            if len(rows) < _PAGE:
                return
            last = rows[-1][0]

    def samples_between(self, t0: float, t1: float, kind: str | None = None) -> list[Sample]:
        """Samples with t0 <= time <= t1 (GPS unix seconds), by time."""
        sql = "SELECT time, kind, value, sensor FROM samples WHERE time BETWEEN ? AND ?"
        params: tuple[Any, ...] = (t0, t1)
        if kind is not None:
            sql += " AND kind = ?"
            params += (kind,)
        return [Sample(*r) for r in self._all(sql + " ORDER BY time, id", params)]

    def fix_count(self) -> int:
        return self._scalar("SELECT count(*) FROM fixes")

    # -- delivery ------------------------------------------------------------------------------

    def register_backend(self, name: str) -> None:
        """Make `name` a delivery target (idempotent). A new backend starts at cursor 0: it
        is offered every stored fix that belongs to an activity."""
        with self.transaction():
            self._conn.execute("INSERT OR IGNORE INTO backends (name) VALUES (?)", (name,))

    def backends(self) -> list[str]:
        return [r[0] for r in self._all("SELECT name FROM backends ORDER BY name")]

    def next_batch(
        self, backend: str, limit: int, activity_id: int | None = None
    ) -> list[StoredFix]:
        """Up to `limit` fixes for `backend`, ascending id: fixes that belong to an activity
        (or to `activity_id`), neither acknowledged nor quarantined by this backend.

        Reading does not claim anything: the same fixes come back until acknowledged or
        quarantined. A batch may span two activities; a sender whose protocol works per
        activity cuts it at the first change of activity_id (or passes activity_id).
        """
        sql, params = self._next_batch_query(backend, limit, activity_id)
        rows = self._all(sql, params)
        if not rows:
            self._cursor(backend)  # an unknown backend is an error, not an empty queue
        return [_stored_fix(r) for r in rows]

    def _next_batch_query(
        self, backend: str, limit: int, activity_id: int | None
    ) -> tuple[str, dict[str, Any]]:
        # One query, and indexed either way: fixes_deliverable or fixes_activity give the ids
        # above the cursor in order, marks' primary key answers each NOT EXISTS.
        where = _DELIVERABLE if activity_id is None else "f.activity_id = :a AND f.local = 0"
        sql = (
            f"SELECT {_FIX_SELECT} FROM fixes f "
            f"WHERE {where} AND f.id > {_CURSOR} AND {_NOT_MARKED} "
            "ORDER BY f.id LIMIT :n"
        )
        return sql, {"b": backend, "a": activity_id, "n": limit}

    def acknowledge(self, backend: str, fix_ids: Iterable[int]) -> None:
        """Record that `backend`'s server accepted these fixes, in one transaction.

        Ids already settled, or no longer stored, are ignored (a retried request acknowledges
        twice). A late acknowledgement of a quarantined fix lifts the quarantine.
        """
        ids = sorted(set(fix_ids))
        if not ids:
            return
        with self.transaction():
            cursor = self._cursor(backend)
            # Move the cursor first, counting these ids as settled: acknowledgements in order
            # (the usual case) then write no mark at all, only the cursor.
            new = self._advance(backend, cursor, frozenset(i for i in ids if i > cursor))
            settled = [(backend, i) for i in ids if i <= new]
            rest = [(backend, i) for i in ids if i > new]
            # A quarantine these ids had is lifted (no-op lookups when there was none).
            self._conn.executemany("DELETE FROM marks WHERE backend = ? AND fix_id = ?", settled)
            if rest:
                # Only ids of stored fixes: a mark for an id not yet used would count that
                # future fix as delivered.
                self._conn.executemany(
                    "INSERT INTO marks (backend, fix_id, state) "
                    "SELECT ?1, id, 'acked' FROM fixes WHERE id = ?2 "
                    "ON CONFLICT (backend, fix_id) DO UPDATE SET state = 'acked', reason = NULL",
                    rest,
                )

    def quarantine(self, backend: str, fix_ids: Iterable[int], reason: str) -> None:
        """Record that `backend`'s server refused these fixes for good: they are not offered
        again but stay counted in `quarantined()`. Acknowledged fixes stay acknowledged."""
        ids = sorted(set(fix_ids))
        with self.transaction():
            cursor = self._cursor(backend)
            rows = [(backend, i, reason) for i in ids if i > cursor]
            if rows:
                self._conn.executemany(
                    "INSERT INTO marks (backend, fix_id, state, reason) "
                    "SELECT ?1, id, 'quarantined', ?3 FROM fixes WHERE id = ?2 "
                    "ON CONFLICT (backend, fix_id) DO UPDATE SET reason = excluded.reason "
                    "WHERE state = 'quarantined'",
                    rows,
                )
            self._advance(backend, cursor)
        if ids:
            log.warning(
                "%s quarantined %d fixes (ids %d-%d): %s",
                backend,
                len(ids),
                ids[0],
                ids[-1],
                reason,
            )

    def _cursor(self, backend: str) -> int:
        cursor = self._scalar("SELECT cursor FROM backends WHERE name = ?", (backend,))
        if cursor is None:
            raise StoreError(f"{self.path}: backend {backend!r} is not registered")
        return cursor

    def _advance(self, backend: str, cursor: int, acked: frozenset[int] = frozenset()) -> int:
        """Move `backend`'s cursor up to just below the first fix it still has to settle
        (counting `acked` as settled), or to the newest fix; returns the new cursor.

        Inside the write transaction, so no fix can appear below the new cursor afterwards.
        Reads the unsettled fixes above the cursor one by one and stops at the first not in
        `acked`: as many rows as the cursor moves, plus one.
        """
        rows = self._conn.execute(
            f"SELECT f.id FROM fixes f WHERE {_DELIVERABLE} AND f.id > :c "
            f"AND {_NOT_MARKED} ORDER BY f.id",
            {"b": backend, "c": cursor},
        )
        blocker = None
        try:
            for (fix_id,) in rows:
                if fix_id not in acked:
                    blocker = fix_id
                    break
        finally:
            rows.close()
        # Never past the newest deliverable fix: fixes stored outside an activity after it may
        # still be adopted by one (a lead-in), and must then be above the cursor.
        newest = f"SELECT max(f.id) FROM fixes f WHERE {_DELIVERABLE}"
        new = (self._scalar(newest) or 0) if blocker is None else blocker - 1
        if new <= cursor:
            return cursor
        self._conn.execute("UPDATE backends SET cursor = ? WHERE name = ?", (new, backend))
        self._conn.execute(
            "DELETE FROM marks WHERE backend = ? AND fix_id <= ? AND state = 'acked'",
            (backend, new),
        )
        return new

    def pending(self) -> dict[str, int]:
        """Backend -> fixes still to send (in an activity, neither acknowledged nor
        quarantined). Not acknowledged = pending + quarantined. {} with no backend."""
        return dict(
            self._all(
                f"SELECT b.name, (SELECT count(*) FROM fixes f WHERE {_DELIVERABLE} "
                "AND f.id > b.cursor AND NOT EXISTS (SELECT 1 FROM marks m "
                "WHERE m.backend = b.name AND m.fix_id = f.id)) FROM backends b ORDER BY b.name"
            )
        )

    def quarantined(self) -> dict[str, int]:
        """Backend -> fixes its server refused for good and that are still stored."""
        return dict(
            self._all(
                "SELECT b.name, (SELECT count(*) FROM marks m WHERE m.backend = b.name "
                "AND m.state = 'quarantined') FROM backends b ORDER BY b.name"
            )
        )

    def get_state(self, backend: str) -> dict[str, Any]:
        """The sender's own JSON state ({} until set)."""
        raw = self._scalar("SELECT state FROM backends WHERE name = ?", (backend,))
        if raw is None:
            raise StoreError(f"{self.path}: backend {backend!r} is not registered")
        return json.loads(raw)

    def set_state(self, backend: str, state: dict[str, Any]) -> None:
        raw = json.dumps(state, separators=(",", ":"), sort_keys=True)
        with self.transaction():
            cur = self._conn.execute("UPDATE backends SET state = ? WHERE name = ?", (raw, backend))
            if cur.rowcount == 0:
                raise StoreError(f"{self.path}: backend {backend!r} is not registered")

    # -- control requests ----------------------------------------------------------------------

    def add_request(self, command: str, arg: str | None = None) -> int:
        """Queue a request for the running daemon; returns its id (poll `request(id)`)."""
        if command not in REQUEST_COMMANDS:
            raise ValueError(f"command must be one of {REQUEST_COMMANDS}, not {command!r}")
        with self.transaction():
            cur = self._conn.execute(
                "INSERT INTO requests (created_at, command, arg) VALUES (?, ?, ?)",
                (self._clock(), command, arg),
            )
        return cur.lastrowid

    def take_requests(self) -> list[Request]:
        """Unfinished requests, oldest first. Taking claims nothing: a request stays here until
        `finish_request`, so one the daemon crashed on is taken again after the restart."""
        return [
            Request(*r)
            for r in self._all(
                f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE done_at IS NULL ORDER BY id"
            )
        ]

    def finish_request(self, request_id: int, result: str) -> None:
        with self.transaction():
            cur = self._conn.execute(
                "UPDATE requests SET done_at = ?, result = ? WHERE id = ?",
                (self._clock(), result, request_id),
            )
            if cur.rowcount == 0:
                raise StoreError(f"{self.path}: no request {request_id}")

    def request(self, request_id: int) -> Request | None:
        row = self._one(f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE id = ?", (request_id,))
        return None if row is None else Request(*row)

    # -- runtime -------------------------------------------------------------------------------

    def put_runtime(self, key: str, value: dict[str, Any]) -> None:
        """Publish a live value for `tracker status` (another process). Each call is a write:
        the daemon should put runtime rows in the writer's batch transaction, not alone."""
        raw = json.dumps(value, separators=(",", ":"), sort_keys=True)
        with self.transaction():
            self._conn.execute(
                "INSERT INTO runtime (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (key, raw, self._clock()),
            )

    def get_runtime(self, key: str) -> tuple[dict[str, Any], float] | None:
        """(value, wall-clock time it was put) or None."""
        row = self._one("SELECT value, updated_at FROM runtime WHERE key = ?", (key,))
        return None if row is None else (json.loads(row[0]), row[1])

    def counters(self) -> dict[str, int]:
        """The store's persistent counters: "pruned_fixes" (deleted once no backend needed
        them), "dropped_undelivered" and "dropped_undelivered:<backend>" (deleted before being
        delivered, prune = drop_oldest)."""
        return dict(self._all("SELECT name, value FROM counters ORDER BY name"))

    def _count(self, name: str, n: int) -> None:
        self._conn.execute(
            "INSERT INTO counters (name, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value, "
            "updated_at = excluded.updated_at",
            (name, n, self._clock()),
        )

    # -- size and pruning ----------------------------------------------------------------------

    def size_bytes(self) -> int:
        """Bytes in use: the database's pages in use (not the free ones) plus the WAL file."""
        try:
            wal = os.path.getsize(str(self.path) + "-wal")
        except OSError:
            wal = 0
        return self._pages_in_use_bytes() + wal

    def _pages_in_use_bytes(self) -> int:
        page_count = self._scalar("PRAGMA page_count")
        free = self._scalar("PRAGMA freelist_count")
        return (page_count - free) * self._scalar("PRAGMA page_size")

    def _budget_bytes(self) -> int:
        # What the size limit is held against: the pages in use plus the WAL's allowance
        # (journal_size_limit), not the WAL's momentary size. Deleting rows cannot shrink the
        # WAL (it writes to it), and a reader may hold a checkpoint back for a while: dropping
        # undelivered fixes for a WAL burst would lose data and gain nothing.
        return self._pages_in_use_bytes() + self._wal_limit

    def prune_if_needed(self) -> PruneReport:
        """Keep the database under max_mb (see the module docstring). The writer calls this
        every few commits, outside its batch transaction: each chunk is its own transaction so
        senders are not held up."""
        self._writable()
        return self._prune(allow_undelivered=self.prune_mode == "drop_oldest")

    def _prune(self, *, allow_undelivered: bool) -> PruneReport:
        before = self._budget_bytes()
        limit = self._max_bytes
        if limit is None or before <= limit:
            return PruneReport(limit, before, before)
        if not self._conn.in_transaction:
            # Copy the WAL into the database so journal_size_limit can cut it down; PASSIVE
            # never waits for readers.
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        target = int(limit * PRUNE_TARGET)
        # Average bytes per fix, to size the chunks so that one or two usually do.
        per_fix = max(1, before // max(1, self.fix_count()))
        tally = _Tally()
        self._prune_loop(target, per_fix, self._settled_chunk, tally, undelivered=False)
        if allow_undelivered and self._budget_bytes() > limit:
            self._prune_loop(target, per_fix, self._oldest_chunk, tally, undelivered=True)
        with self.transaction():
            # Ended activities left without fixes: nothing to send, nothing to export.
            cur = self._conn.execute(
                "DELETE FROM activities WHERE ended_at IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM fixes f WHERE f.activity_id = activities.id)"
            )
            tally.activities += max(cur.rowcount, 0)
        after = self._budget_bytes()
        report = PruneReport(
            limit_bytes=limit,
            before_bytes=before,
            after_bytes=after,
            deleted_fixes=tally.fixes,
            dropped_undelivered=tally.undelivered,
            deleted_samples=tally.samples,
            deleted_activities=tally.activities,
            over_limit=after > limit,
        )
        if tally.fixes or tally.samples:
            log.info(
                "%s: pruned %d delivered fixes and %d samples (%.1f MB -> %.1f MB, limit %.1f MB)",
                self.path,
                tally.fixes,
                tally.samples,
                before / 2**20,
                after / 2**20,
                limit / 2**20,
            )
        if tally.undelivered:
            log.error(
                "%s: storage limit of %.1f MB reached with nothing delivered left to prune: "
                "deleted the %d oldest UNDELIVERED fixes (ids %d-%d), not delivered to: %s "
                "(prune = drop_oldest; see `tracker status`)",
                self.path,
                limit / 2**20,
                tally.undelivered,
                tally.first_dropped,
                tally.last_dropped,
                ", ".join(f"{name} {k}" for name, k in sorted(tally.per_backend.items()) if k)
                or "no backend",
            )
        if report.over_limit and allow_undelivered:
            log.error(
                "%s: still %.1f MB in use after pruning all it may (limit %.1f MB)",
                self.path,
                after / 2**20,
                limit / 2**20,
            )
        return report

    def _prune_loop(
        self,
        target: int,
        per_fix: int,
        chunk: Callable[[int], list[int]],
        tally: _Tally,
        *,
        undelivered: bool,
    ) -> None:
        # One transaction per chunk: senders and the writer get the lock between chunks.
        while (size := self._budget_bytes()) > target:
            n = max(64, min(5000, math.ceil((size - target) / per_fix)))
            with self.transaction():
                ids = chunk(n)
                if not ids:
                    return
                if undelivered:
                    self._count_undelivered(ids, tally)
                else:
                    tally.fixes += len(ids)
                    self._count("pruned_fixes", len(ids))
                self._delete_fixes(ids)
                tally.samples += self._delete_old_samples()

    def _newest_id(self) -> int:
        return self._scalar("SELECT max(id) FROM fixes") or 0

    def _settled_chunk(self, n: int) -> list[int]:
        """Up to n of the oldest fixes no backend needs, never the newest fix."""
        newest = self._newest_id()
        backends = self._all("SELECT name, cursor FROM backends ORDER BY cursor, name")
        if not backends:
            return [
                r[0]
                for r in self._all(
                    "SELECT id FROM fixes WHERE id < ? ORDER BY id LIMIT ?", (newest, n)
                )
            ]
        first_name, low = backends[0]
        params = {"low": low, "newest": newest, "n": n, "b0": first_name}
        # At or below the lowest cursor everything is settled for everyone: all of it goes
        # but what some backend quarantined (refused is not delivered).
        below = self._all(
            "SELECT id FROM fixes WHERE id <= :low AND id < :newest AND id NOT IN "
            "(SELECT fix_id FROM marks WHERE state = 'quarantined') ORDER BY id LIMIT :n",
            params,
        )
        # Outside any activity: never sent to anyone.
        outside = self._all(
            "SELECT id FROM fixes WHERE (activity_id IS NULL OR local = 1) AND id > :low "
            "AND id < :newest ORDER BY id LIMIT :n",
            params,
        )
        # Above the lowest cursor, acknowledged by every backend one by one (sparse marks).
        acked = self._all(
            "SELECT m.fix_id FROM marks m WHERE m.backend = :b0 AND m.state = 'acked' "
            "AND m.fix_id < :newest AND NOT EXISTS (SELECT 1 FROM backends b WHERE NOT ("
            "  (m.fix_id <= b.cursor AND NOT EXISTS (SELECT 1 FROM marks q "
            "     WHERE q.backend = b.name AND q.fix_id = m.fix_id AND q.state = 'quarantined'))"
            "  OR EXISTS (SELECT 1 FROM marks a WHERE a.backend = b.name "
            "     AND a.fix_id = m.fix_id AND a.state = 'acked'))) "
            "ORDER BY m.fix_id LIMIT :n",
            params,
        )
        return sorted({r[0] for r in below + outside + acked})[:n]

    def _oldest_chunk(self, n: int) -> list[int]:
        """Up to n of the oldest fixes whatever their state, never the newest fix."""
        return [
            r[0]
            for r in self._all(
                "SELECT id FROM fixes WHERE id < ? ORDER BY id LIMIT ?", (self._newest_id(), n)
            )
        ]

    def _count_undelivered(self, ids: list[int], tally: _Tally) -> None:
        # Called only once everything settled is gone, so every id here is one that some
        # backend still wanted: count them per backend, persistently, in the same transaction
        # as the delete.
        lo, hi = ids[0], ids[-1]  # ids are the oldest stored, so every stored id in between
        per_backend = self._all(
            "SELECT b.name, (SELECT count(*) FROM fixes f WHERE f.id BETWEEN :lo AND :hi "
            f"AND {_DELIVERABLE} AND ("
            "  (f.id > b.cursor AND NOT EXISTS (SELECT 1 FROM marks m WHERE m.backend = b.name "
            "     AND m.fix_id = f.id AND m.state = 'acked'))"
            "  OR EXISTS (SELECT 1 FROM marks q WHERE q.backend = b.name AND q.fix_id = f.id "
            "     AND q.state = 'quarantined'))) FROM backends b",
            {"lo": lo, "hi": hi},
        )
        self._count("dropped_undelivered", len(ids))
        for name, k in per_backend:
            if k:
                self._count(f"dropped_undelivered:{name}", k)
                tally.per_backend[name] = tally.per_backend.get(name, 0) + k
        tally.undelivered += len(ids)
        tally.first_dropped = lo if tally.first_dropped is None else tally.first_dropped
        tally.last_dropped = hi

    def _delete_fixes(self, ids: list[int]) -> None:
        rows = [(i,) for i in ids]
        self._conn.executemany("DELETE FROM marks WHERE fix_id = ?", rows)
        self._conn.executemany("DELETE FROM fixes WHERE id = ?", rows)

    def _delete_old_samples(self) -> int:
        oldest = self._scalar("SELECT time FROM fixes ORDER BY id LIMIT 1")
        if oldest is None:
            return 0
        cur = self._conn.execute("DELETE FROM samples WHERE time < ?", (oldest,))
        return max(cur.rowcount, 0)


@dataclass
class _Tally:
    """What one prune deleted so far (mutable, private)."""

    fixes: int = 0
    undelivered: int = 0
    samples: int = 0
    activities: int = 0
    first_dropped: int | None = None
    last_dropped: int | None = None
    per_backend: dict[str, int] = field(default_factory=dict)


def _activity(row: tuple[Any, ...]) -> Activity:
    tags = tuple(t for t in row[5].split(",") if t) if row[5] else ()
    return Activity(row[0], row[1], row[2], row[3], row[4], tags, row[6], row[7], row[8])


def _stored_fix(row: tuple[Any, ...]) -> StoredFix:
    return StoredFix(*row[4:], id=row[0], activity_id=row[1], poi=row[2], local=bool(row[3]))
