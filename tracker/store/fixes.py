"""Activities, fixes, samples and point-of-interest notes: what the writer stores, what
exports and senders read.

Samples are of two meanings, in two tables: fitness samples (hr, cad, pwr: `samples`, what
`samples_between` and `samples_for_batch` read and the fitness backends send) and boat
instrument readings (depth, wind, heading...: `instruments`, read by `instruments_between`,
`instrument_kinds` and `latest_instruments`). `add_samples` takes both and puts each where it
belongs, so a source hands the recorder one kind of Sample whatever it measures.

An activity is a ride: fixes belong to one (and are then sent), or to none (stored outside any
activity, never sent). At most one activity is current. Fixes are read a page at a time, so a
long ride costs neither memory nor a long read snapshot.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from itertools import chain
from operator import attrgetter
from typing import Any

from tracker.fix import INSTRUMENT_KINDS, Fix, Sample, builder, new_fix
from tracker.store.db import StoreBase, StoreError

# One logger for the whole package, named as before the split: log lines keep "tracker.store"
# and any level set on it still applies.
log = logging.getLogger("tracker.store")

_PAGE = 1000  # rows per page when streaming fixes
_INSTRUMENT_KINDS = frozenset(INSTRUMENT_KINDS)

_FIX_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Fix))
_fix_values = attrgetter(*_FIX_FIELDS)
_FIX_SELECT = "f.id, f.activity_id, f.poi, f.local, " + ", ".join("f." + n for n in _FIX_FIELDS)
_FIX_INSERT = "INSERT INTO fixes (activity_id, local, {}) VALUES (?, ?, {})".format(
    ", ".join(_FIX_FIELDS), ", ".join("?" * len(_FIX_FIELDS))
)
# Fixes go in 32 rows a statement: Python's sqlite3 lets go of the GIL around every step, so
# executemany() of a row at a time hands the GIL to the GPS thread and waits to get it back
# once per fix. 32 rows keep to the 999 variables of older SQLite builds.
_ROWS_PER_INSERT = 32
_FIX_INSERT_MANY = "INSERT INTO fixes (activity_id, local, {}) VALUES {}".format(
    ", ".join(_FIX_FIELDS),
    ", ".join(["(" + ", ".join("?" * (len(_FIX_FIELDS) + 2)) + ")"] * _ROWS_PER_INSERT),
)
_ACTIVITY_COLUMNS = "id, uuid, title, type, privacy, tags, started_at, ended_at, end_reason"


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
        return new_fix(*_fix_values(self))


class FixesMixin(StoreBase):
    """Activities, fixes and samples of a Store. Write methods run in their own transaction,
    or in the caller's inside `transaction()`."""

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
        # Logged at debug: inside a caller's transaction this may still roll back (a full
        # disk), and the recorder logs what it committed.
        log.debug("activity %d started: %s", activity.id, activity.title)
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
            log.debug("activity %d ended: %s", activity_id, reason)

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
            self._admit(len(fixes))
            flag = int(local and activity_id is not None)

            def rows(part: Sequence[Fix]) -> Iterator[tuple[Any, ...]]:
                return ((activity_id, flag, *_fix_values(f)) for f in part)

            # Generators: the parameters of one statement at a time, not of the whole batch
            # (a fast replay hands over thousands of fixes at once).
            n = _ROWS_PER_INSERT
            whole = len(fixes) - len(fixes) % n
            self._conn.executemany(
                _FIX_INSERT_MANY,
                (list(chain.from_iterable(rows(fixes[i : i + n]))) for i in range(0, whole, n)),
            )
            self._conn.executemany(_FIX_INSERT, rows(fixes[whole:]))  # after: ids in order

    def adopt_fixes(self, activity_id: int, count: int) -> int:
        """Move the newest `count` fixes stored outside any activity into `activity_id` (the
        lead-in of an activity that starts at its first moving fix); returns how many moved.

        They are above every backend's cursor: a cursor never passes the newest deliverable
        fix (see LedgerMixin._advance), and these were stored after it.
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
        """Store samples: instrument kinds (INSTRUMENT_KINDS) in `instruments`, the others in
        `samples`, whose CHECK refuses a kind that is neither (StoreError, nothing stored)."""
        if not samples:
            return
        fitness = [(s.time, s.kind, s.value, s.sensor) for s in samples
                   if s.kind not in _INSTRUMENT_KINDS]  # fmt: skip
        boat = [(s.time, s.kind, s.value, s.sensor) for s in samples
                if s.kind in _INSTRUMENT_KINDS] if len(fitness) < len(samples) else []  # fmt: skip
        with self.transaction():
            if fitness:
                self._conn.executemany(
                    "INSERT INTO samples (time, kind, value, sensor) VALUES (?, ?, ?, ?)", fitness
                )
            if boat:
                self._conn.executemany(
                    "INSERT INTO instruments (time, kind, value, sensor) VALUES (?, ?, ?, ?)",
                    boat,
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
        """Fitness samples with t0 <= time <= t1 (GPS unix seconds), by time: never an
        instrument reading (instruments_between)."""
        sql = "SELECT time, kind, value, sensor FROM samples WHERE time BETWEEN ? AND ?"
        params: tuple[Any, ...] = (t0, t1)
        if kind is not None:
            sql += " AND kind = ?"
            params += (kind,)
        return [Sample(*r) for r in self._all(sql + " ORDER BY time, id", params)]

    def samples_for_batch(
        self, lo: float, hi: float, since: float, late_after_id: int | None
    ) -> tuple[list[Sample], int]:
        """The samples to send with a batch of points whose seconds span [lo, hi): those with a
        time in that range, and those that reached the store late (id > `late_after_id`) for a
        second in [since, lo) that had no sample of their kind before (a sensor whose reading
        came in after its second's point was sent). With `late_after_id` None, none late.
        Returns them by time, and the newest sample id now: the next batch's `late_after_id`.
        """
        newest = self._scalar("SELECT max(id) FROM samples") or 0
        late = -1 if late_after_id is None else late_after_id
        rows = self._all(
            "SELECT time, kind, value, sensor FROM samples s WHERE s.id <= :newest AND ("
            "  (s.time >= :lo AND s.time < :hi) OR"
            "  (s.time >= :since AND s.time < :lo AND s.id > :late AND NOT EXISTS ("
            "     SELECT 1 FROM samples o WHERE o.kind = s.kind AND o.id <= :late"
            "     AND o.time >= CAST(s.time AS INTEGER) AND o.time < CAST(s.time AS INTEGER) + 1"
            "  ))"
            ") ORDER BY s.time, s.id",
            {"newest": newest, "lo": lo, "hi": hi, "since": since, "late": late},
        )
        return [Sample(*r) for r in rows], newest

    def instruments_between(self, t0: float, t1: float, kind: str | None = None) -> list[Sample]:
        """Instrument readings with t0 <= time <= t1 (GPS unix seconds), by time."""
        sql = "SELECT time, kind, value, sensor FROM instruments WHERE time BETWEEN ? AND ?"
        params: tuple[Any, ...] = (t0, t1)
        if kind is not None:
            sql += " AND kind = ?"
            params += (kind,)
        return [Sample(*r) for r in self._all(sql + " ORDER BY time, id", params)]

    def instrument_kinds(self, t0: float, t1: float) -> list[str]:
        """The instrument kinds with a reading in [t0, t1], in INSTRUMENT_KINDS order (one
        index seek a kind)."""
        return [
            k
            for k in INSTRUMENT_KINDS
            if self._one(
                "SELECT 1 FROM instruments WHERE kind = ? AND time BETWEEN ? AND ? LIMIT 1",
                (k, t0, t1),
            )
        ]

    def latest_instruments(self, t0: float, t1: float) -> dict[str, Sample]:
        """The newest reading of each instrument kind in [t0, t1], by kind in INSTRUMENT_KINDS
        order; kinds without one are left out."""
        out = {}
        for k in INSTRUMENT_KINDS:
            row = self._one(
                "SELECT time, kind, value, sensor FROM instruments "
                "WHERE kind = ? AND time BETWEEN ? AND ? ORDER BY time DESC, id DESC LIMIT 1",
                (k, t0, t1),
            )
            if row is not None:
                out[k] = Sample(*row)
        return out

    def fix_count(self, activity_id: int | None = None) -> int:
        """Every stored fix, or those of one activity."""
        if activity_id is None:
            return self._scalar("SELECT count(*) FROM fixes")
        return self._scalar("SELECT count(*) FROM fixes WHERE activity_id = ?", (activity_id,))

    def _newest_id(self) -> int:
        return self._scalar("SELECT max(id) FROM fixes") or 0

    def _admit(self, count: int) -> None:
        """Called inside add_fixes' transaction before `count` fixes go in: raise StorageFull to
        refuse them. The size limit is pruning's (PruneMixin overrides this); here none."""


def _activity(row: tuple[Any, ...]) -> Activity:
    tags = tuple(t for t in row[5].split(",") if t) if row[5] else ()
    return Activity(row[0], row[1], row[2], row[3], row[4], tags, row[6], row[7], row[8])


_new_stored_fix = builder(StoredFix)  # the Fix fields, then id, activity_id, poi, local


def _stored_fix(row: tuple[Any, ...]) -> StoredFix:
    return _new_stored_fix(*row[4:], row[0], row[1], row[2], bool(row[3]))
