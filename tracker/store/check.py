"""`tracker doctor`'s look at the storage (tracker/checks.py): what a long ride needs of the
database at `[storage] path`, which it only reads, opened as `tracker status` opens it.

- "storage permissions": the directory exists or the daemon can make it, and the service user
  may create files in it (SQLite's WAL puts <name>-wal and <name>-shm beside the database) and
  write the database and those files where they exist; with the unit installed, its sandbox
  lets the service write there (ProtectSystem=strict, PrivateTmp=, StateDirectory=).
- "database": none yet is fine (the daemon creates it); else it opens read-only and its schema
  version is this release's or an older one the daemon migrates.
- "database integrity": `PRAGMA quick_check`, for at most QUICK_CHECK_S.
- "queue": fixes stored, how many each backend has still to send, fixes in spill files
  (tracker/spill.py) the next start stores; "spill": a spill file that cannot be read.
- "disk": room on the card for the queue.

Read only: no write, no write lock and no checkpoint, so it may run beside the daemon (a
quick_check holds a read snapshot, which only keeps the daemon's WAL from being emptied
meanwhile). With the daemon stopped (no -wal) the file is read as immutable (store.
inspect_store), so that no -wal and -shm are left behind; a daemon started during those
seconds rewrites pages under such a reader, which may then see damage that is not there: the
fix line says to keep the file, and the next run of the doctor says again. Kept out of the
store's package imports: `tracker status` opens the store without it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tracker import spill
from tracker.checks import (
    FAIL,
    OK,
    SKIP,
    UNIT,
    Check,
    Context,
    group_name,
    may_open,
    user_name,
)
from tracker.store.db import SCHEMA_VERSION, StoreError, storage_state
from tracker.store.facade import Store, inspect_store

MIN_FREE_MB = 64.0
# quick_check reads every page: roughly a minute a GB on a Pi (README, `tracker doctor`). The
# daemon checks the whole file at each start anyway (and moves a corrupt one aside), so the
# doctor's look is bounded, and says when it stopped before the end.
QUICK_CHECK_S = 20.0


def check(ctx: Context, *, quick_check_s: float = QUICK_CHECK_S) -> Iterator[Check]:
    """The directory and the service user's rights, the database (version, integrity, what
    it holds), then the room left on the card."""
    path = Path(ctx.cfg.storage.path)
    yield check_permissions(ctx, path)
    yield from check_database(path, quick_check_s)
    yield check_disk(ctx, path)


def _owned(st: os.stat_result) -> str:
    mode = stat.S_IMODE(st.st_mode)
    return f"owner {user_name(st.st_uid)}, group {group_name(st.st_gid)}, mode {mode:o}"


def _nearest(directory: Path) -> Path:
    """`directory`, or its nearest ancestor that exists (where the daemon's mkdir starts)."""
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return directory


@dataclass
class Service:
    """What the installed unit (and its drop-ins) lets the service write."""

    strict: bool  # ProtectSystem=strict: every file system read-only but `writable`
    private_tmp: bool  # PrivateTmp=: its /tmp and /var/tmp are its own, emptied at each start
    state: list[Path]  # StateDirectory=: systemd makes them, owned by User=, at each start
    writable: list[Path]  # those, RuntimeDirectory= and ReadWritePaths=


def service(ctx: Context) -> Service | None:
    """The installed unit's sandbox for the storage; None when no unit is installed."""
    unit = ctx.root / UNIT
    if not unit.exists():
        return None
    out = Service(False, False, [], [])
    runtime: list[Path] = []
    for f in [unit, *sorted((ctx.root / f"{UNIT}.d").glob("*.conf"))]:
        try:
            lines = f.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = (part.strip() for part in line.partition("="))
            words = value.split()  # an empty assignment resets a list
            if key == "ProtectSystem":
                out.strict = value == "strict"
            elif key == "PrivateTmp":
                out.private_tmp = value in ("yes", "true", "1", "on")
            elif key == "StateDirectory":
                out.state = out.state + [Path("/var/lib", w.split(":")[0]) for w in words] \
                    if words else []  # fmt: skip
            elif key == "RuntimeDirectory":
                runtime = runtime + [Path("/run", w.split(":")[0]) for w in words] if words else []
            elif key == "ReadWritePaths":
                out.writable = out.writable + [Path(w.lstrip("-+")) for w in words] \
                    if words else []  # fmt: skip
    out.writable = out.state + runtime + out.writable
    return out


def _under(directory: Path, roots: list[Path]) -> bool:
    return any(directory == r or r in directory.parents for r in roots)


def _sandboxed(unit: Service, directory: Path) -> Check | None:
    """The installed service may not write `directory` whatever its mode bits say."""
    name = "storage permissions"
    if unit.private_tmp and _under(directory, [Path("/tmp"), Path("/var/tmp")]):
        return Check(name, FAIL, f"the installed service has a /tmp of its own, emptied at each "
                     f"start (PrivateTmp= in its unit): the queue in {directory} would be lost",
                     "set [storage] path under /var/lib/tracker")  # fmt: skip
    if unit.strict and not _under(directory, unit.writable):
        where = ", ".join(map(str, unit.writable)) or "nothing"
        return Check(name, FAIL, f"the installed service may write only {where}, not "
                     f"{directory} (ProtectSystem=strict in its unit)",
                     f"set [storage] path under /var/lib/tracker, or let the service write "
                     f"there: systemctl edit tracker, then ReadWritePaths={directory}")  # fmt: skip
    return None


def check_permissions(ctx: Context, path: Path) -> Check:
    """The service user may write the database's directory (or make it) and its files."""
    name, directory = "storage permissions", path.parent
    try:
        user = pwd.getpwnam(ctx.user)
    except KeyError:
        return Check(name, FAIL, f"cannot tell whether {ctx.user!r} may write {directory}: "
                     "no such user", "create the service user (scripts/install-pi.sh) or "
                     "pass --user")  # fmt: skip
    unit = service(ctx)
    if unit is not None:
        refused = _sandboxed(unit, directory)
        if refused is not None:
            return refused
        made = [d for d in unit.state if _under(directory, [d]) and not d.exists()]
        if made:
            return Check(name, OK, f"{made[0]} does not exist yet: systemd makes it for "
                         f"{ctx.user} at the service's start (StateDirectory=)")  # fmt: skip
    existing = _nearest(directory)
    try:
        st = existing.stat()
    except OSError as e:
        return Check(name, FAIL, f"{existing}: {e.strerror or e}", "set [storage] path")
    if not stat.S_ISDIR(st.st_mode):
        return Check(name, FAIL, f"{existing} is not a directory ([storage] path is {path})",
                     "set [storage] path to a file in a directory")  # fmt: skip
    group = group_name(user.pw_gid)
    if existing != directory:
        if may_open(st, user, directory=True):
            return Check(name, OK, f"{directory} does not exist yet: the daemon makes it "
                         f"({ctx.user} may write {existing})")  # fmt: skip
        return Check(
            name, FAIL,
            f"{directory} does not exist and {ctx.user} may not make it in {existing} "
            f"({_owned(st)})",
            f"sudo install -d -o {ctx.user} -g {group} -m 750 {directory}",
        )  # fmt: skip
    barred = []  # the database and its -wal and -shm, where they exist, with their stat
    for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            fst = f.stat()
        except OSError:
            continue  # not there (the daemon makes it)
        if not may_open(fst, user):
            barred.append((f, fst))
    # One chown for everything in the way, not one failure a run of the doctor.
    chown = " ".join(map(str, [f for f, _ in barred]))
    if not may_open(st, user, directory=True):
        return Check(
            name, FAIL,
            f"{ctx.user} may not create files in {directory} ({_owned(st)}): SQLite makes "
            f"{path.name}-wal and {path.name}-shm beside the database",
            f"sudo chown {ctx.user}:{group} {directory} {chown}".rstrip(),
        )  # fmt: skip
    if barred:
        f, fst = barred[0]
        return Check(name, FAIL, f"{ctx.user} may not write {f} ({_owned(fst)})",
                     f"sudo chown {ctx.user}:{group} {chown}")  # fmt: skip
    what = f"{directory} and {path.name}" if path.exists() else str(directory)
    return Check(name, OK, f"{ctx.user} may write {what}")


def check_database(path: Path, quick_check_s: float = QUICK_CHECK_S) -> Iterator[Check]:
    """The file opens read-only at a version this release knows, passes quick_check, and
    what it holds."""
    if not path.exists():
        yield Check("database", OK, f"none at {path} yet: the daemon creates it at its start")
        return
    try:
        store = inspect_store(path)
    except StoreError as e:
        yield _unreadable(path, e, "database")
        return
    try:
        yield from _inspect(store, path, quick_check_s)
    finally:
        store.close()


def _inspect(store: Store, path: Path, quick_check_s: float) -> Iterator[Check]:
    try:
        version = int(store.pragma("user_version"))
    except StoreError as e:
        yield _unreadable(path, e, "database")
        return
    size = f"{path.stat().st_size / 1e6:.1f} MB"
    if version > SCHEMA_VERSION:
        yield Check(
            "database", FAIL,
            f"{path} was written by a newer tracker (schema version {version}; this release "
            f"knows up to {SCHEMA_VERSION}) and this release will not store into it",
            "keep the file (it holds the rides): install the newer release again "
            "(scripts/install-pi.sh from its checkout)",
        )  # fmt: skip
        return
    if version < SCHEMA_VERSION:
        yield Check("database", OK, f"{path} ({size}), schema version {version}: the daemon "
                    f"migrates it to {SCHEMA_VERSION} at its next start")  # fmt: skip
    else:
        yield Check("database", OK, f"{path} ({size}), schema version {version}")
    try:
        problems = store.quick_check(quick_check_s)
    except StoreError as e:
        yield _unreadable(path, e, "database integrity")
        return
    if problems:
        yield _corrupt(path, "quick_check: " + "; ".join(problems[:3]))
        return
    if problems is None:
        yield Check(
            "database integrity", SKIP,
            f"quick_check stopped after {quick_check_s:g} s with nothing found so far; the "
            "daemon checks the whole file at each start",
        )  # fmt: skip
    else:
        yield Check("database integrity", OK, "quick_check ok")
    if version == SCHEMA_VERSION:  # an older schema has not every table the counts read
        try:
            queue = _queue(store, path)
        except StoreError as e:
            queue = [_unreadable(path, e, "queue")]
        yield from queue


def _queue(store: Store, path: Path) -> list[Check]:
    """What is stored and still to send, as one line; a spill file that cannot be read."""
    total = store.fix_counts()["total"]
    pending = store.pending()
    waiting = ", ".join(f"{b} {n}" for b, n in pending.items()) or "no backend registered yet"
    detail = f"{total} fixes stored; still to send: {waiting}"
    spills, _stale, problems = spill.find(path)
    files = fixes = 0
    for sp in spills:  # less what a daemon killed after storing it (its marker) holds
        left = len(sp.fixes) - spill.stored(sp, store)[0]
        if left > 0:
            files, fixes = files + 1, fixes + left
    if files:
        detail += f"; {fixes} fixes in {files} spill file(s), stored at the next start"
    return [Check("queue", OK, detail)] + [
        Check("spill", FAIL, problem, "the daemon leaves it where it is and cannot store its "
              "fixes: keep a copy for a bug report, then delete it")
        for problem in problems
    ]  # fmt: skip


def _corrupt(path: Path, why: str) -> Check:
    return Check(
        "database integrity", FAIL, f"{path} is damaged ({why})",
        f"keep the file: stop the daemon, copy {path.name} with its -wal and -shm off the card "
        f"(sqlite3 {path.name} .recover > rescued.sql gets back what can be read); at its next "
        "start the daemon moves it aside as .corrupt-<time> and starts an empty one; replace "
        "the SD card if it happens again",
    )  # fmt: skip


def _unreadable(path: Path, e: StoreError, name: str) -> Check:
    """A read that failed: a corrupt file, or what keeps the doctor from reading it."""
    if storage_state(path, e) == "corrupt":
        return _corrupt(path, str(e).removeprefix(f"{path}: "))
    return Check(name, FAIL, str(e), "run tracker doctor as root or as the service user "
                 "(sudo); after an I/O error, look for the SD card's errors: dmesg | grep "
                 "mmc")  # fmt: skip


def check_disk(ctx: Context, path: Path) -> Check:
    """The partition of `[storage] path` has room: MIN_FREE_MB free, and `max_mb` fits."""
    usage = shutil.disk_usage(_nearest(path.parent))
    free_mb = usage.free / 1e6
    used_mb = path.stat().st_size / 1e6 if path.exists() else 0.0
    room = free_mb + used_mb
    max_mb = ctx.cfg.storage.max_mb
    if free_mb < MIN_FREE_MB:
        return Check(
            "disk", FAIL, f"only {free_mb:.0f} MB free on the partition of {path}",
            "free space (journalctl --vacuum-size=50M, apt-get clean) or use a larger card",
        )  # fmt: skip
    if room < max_mb:
        return Check(
            "disk", FAIL,
            f"[storage] max_mb is {max_mb:g} MB but only {room:.0f} MB can be used at {path}",
            f"set [storage] max_mb = {int(room * 0.8)} (the queue must fit on the card)",
        )  # fmt: skip
    return Check("disk", OK, f"{free_mb:.0f} MB free for {path} (max_mb {max_mb:g})")
