"""`Store`, one connection with every concern of the store, and `open_store()`, the way to
get one."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tracker.store.control import ControlMixin
from tracker.store.db import _connect_readonly, _open_here_lock, connect
from tracker.store.fixes import FixesMixin
from tracker.store.ledger import LedgerMixin
from tracker.store.prune import PRUNE_MODES, PruneMixin


class Store(PruneMixin, LedgerMixin, FixesMixin, ControlMixin):
    """One connection to the tracker database. Use `open_store()` to get one.

    Not thread-safe: one Store per thread (see the package docstring). Write methods run in
    their own transaction, or in the caller's when called inside `transaction()`. The methods
    live in one mixin per concern (tracker.store.fixes, .ledger, .control, .prune, on
    tracker.store.db.StoreBase); senders should depend on `tracker.store.ledger.Ledger`.
    """


def open_store(
    path: str | os.PathLike[str],
    *,
    max_mb: float | None = None,
    prune: str = "drop_oldest",
    readonly: bool = False,
    check: bool = True,
    clock: Callable[[], float] = time.time,
    ride_rules: tuple[float, float] | None = None,
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

    `ride_rules`, (max_hdop, start_speed) from `[activity]`: what the running totals of the
    activities this Store starts are summed with (tracker/store/totals.py); None: the defaults
    of each activity's type.
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
        conn = connect(p, readonly=readonly, check=check, clock=clock)
        store = Store(conn, p, readonly=readonly, max_mb=max_mb, prune=prune, clock=clock)
    store.ride_rules = ride_rules
    return store


def inspect_store(path: str | os.PathLike[str]) -> Store:
    """Open the database at `path` read-only as `open_store(readonly=True)` does, but at any
    schema version: for `tracker doctor`, which reports the version itself (`pragma
    ("user_version")` against SCHEMA_VERSION) and asks for the rest only at SCHEMA_VERSION.
    Never creates, checks or migrates, and leaves no file behind: with no -wal (the daemon
    stopped) the file is read as immutable. A missing or unreadable file is a StoreError with
    SQLite's code (tracker.store.db.storage_state tells a corrupt one)."""
    p = Path(path)
    with _open_here_lock:
        return Store(_connect_readonly(p, leave_no_files=True), p, readonly=True)
