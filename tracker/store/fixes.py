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
import math
import uuid as uuidlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from itertools import chain
from operator import attrgetter
from typing import Any

import tracker.store.totals as tot
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
_TIME_AT = 4 + _FIX_FIELDS.index("time")  # the time column in a _FIX_SELECT row
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
    or in the caller's inside `transaction()`.

    Every write of fixes also keeps the activity's running totals (tracker/store/totals.py) in
    the same transaction: one row read and written per activity and commit."""

    # (max_hdop, start_speed) new activities' totals are summed with; None: the defaults of
    # the activity's type (totals.default_rules). open_store sets it from `[activity]`.
    ride_rules: tuple[float, float] | None = None

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
            assert cur.lastrowid is not None  # set by the INSERT
            rules = self.ride_rules or tot.default_rules(type)
            self._put_totals(cur.lastrowid, tot.Totals(*rules))
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
            if activity_id is None:
                self._count_outside(len(fixes))
            else:
                t = self._totals(activity_id)
                tot.fold(t, fixes, bool(flag))
                t.last_id = self._scalar("SELECT last_insert_rowid()")
                self._put_totals(activity_id, t)

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
            moved = self._all(
                f"SELECT {_FIX_SELECT} FROM fixes f WHERE f.id > ? AND f.activity_id IS NULL "
                "ORDER BY f.id",
                (newest - count,),
            )
            cur = self._conn.execute(
                "UPDATE fixes SET activity_id = ?, local = 0 "
                "WHERE id > ? AND activity_id IS NULL",
                (activity_id, newest - count),
            )
            if moved:
                self._count_outside(-len(moved))
                t = self._totals(activity_id)
                if t.last_id is None or t.last_id < moved[0][0]:
                    tot.fold(t, map(_stored_fix, moved))
                    t.last_id = moved[-1][0]
                    self._put_totals(activity_id, t)
                else:  # not after its fixes (the recorder adopts into a new activity only)
                    self._recompute_totals(activity_id)
        return cur.rowcount

    def detach_fixes(self, activity_id: int, after: float) -> int:
        """Take the fixes of `activity_id` later than GPS time `after` out of it (an activity
        that ends at its last movement); returns how many. Those already sent stay sent."""
        with self.transaction():
            keep, gone = self._tail_after(activity_id, after)
            cur = self._conn.execute(
                "UPDATE fixes SET activity_id = NULL, local = 0 "
                "WHERE activity_id = ? AND time > ?",
                (activity_id, after),
            )
            if cur.rowcount:
                self._count_outside(cur.rowcount)
                self._take_tail(activity_id, keep, gone, cur.rowcount)
        return cur.rowcount

    def recent_fixes(self, activity_id: int | None, since: float) -> list[StoredFix]:
        """The fixes of `activity_id` at GPS time `since` or later, oldest first, read from the
        newest back (a long ride costs only the window). None: the newest fixes stored outside
        any activity, back to the first fix of an activity or `since`."""
        where = "f.activity_id = ?" if activity_id is not None else "1"
        params: tuple[Any, ...] = (activity_id,) if activity_id is not None else ()
        rows: list[tuple[Any, ...]] = []
        for r in self._newest_first(where, params):
            if r[_TIME_AT] < since or (activity_id is None and r[1] is not None):
                break
            rows.append(r)
        return [_stored_fix(r) for r in reversed(rows)]

    def _newest_first(self, where: str, params: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        """The rows of the fixes matching `where` (alias `f`), newest first, a page at a time:
        a caller that stops early has read only what it looked at."""
        last = 1 << 62
        while True:
            page = self._all(
                f"SELECT {_FIX_SELECT} FROM fixes f WHERE {where} AND f.id < ? "
                "ORDER BY f.id DESC LIMIT ?",
                (*params, last, _PAGE),
            )
            yield from page
            if len(page) < _PAGE:
                return
            last = page[-1][0]

    def fix_counts(self) -> dict[str, int]:
        """How many fixes are stored: `total`, `outside` any activity (never sent), and
        `local` (paused fixes of an activity kept on the unit)."""
        # From the running totals: one row per activity, however many fixes each holds.
        total, outside, local = self._one(
            "SELECT coalesce(sum(points), 0), coalesce(sum(CASE WHEN activity_id = 0 "
            "THEN points END), 0), coalesce(sum(local_points), 0) FROM ride_totals"
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
        """Every stored fix, or those of one activity (from the running totals)."""
        if activity_id is None:
            return self._int("SELECT coalesce(sum(points), 0) FROM ride_totals")
        return self._int(
            "SELECT coalesce(max(points), 0) FROM ride_totals WHERE activity_id = ?",
            (activity_id,),
        )

    # -- running totals (tracker/store/totals.py) ----------------------------------------------

    def ride_totals(self, activity_id: int) -> tot.Totals | None:
        """The activity's running totals, or None for no such activity. One row read."""
        row = self._one(
            f"SELECT {', '.join(tot.COLUMNS)} FROM ride_totals WHERE activity_id = ?",
            (activity_id,),
        )
        return None if row is None else tot.from_row(row)

    def sample_count(self, t0: float, t1: float) -> int:
        """How many fitness samples have t0 <= time <= t1: len(samples_between(t0, t1)), read
        from the per-minute and per-hour counts (migration 5) and, at the two ends, the samples
        themselves (a minute of them each): a few hundred rows however long the span."""
        if not t0 <= t1:
            return 0
        m0, m1 = _minute(t0), _minute(t1)
        if m1 - m0 <= 2:
            return self._count_samples(t0, t1)
        n = self._count_samples(t0, t1, m0) + self._count_samples(t0, t1, m1)
        a, b = m0 + 1, m1 - 1  # whole minutes in between
        h0, h1 = -(-a // 60), (b + 1) // 60 - 1  # whole hours among them
        if h0 > h1:
            return n + self._bucket_sum(60, a, b)
        return (n + self._bucket_sum(3600, h0, h1) + self._bucket_sum(60, a, h0 * 60 - 1)
                + self._bucket_sum(60, (h1 + 1) * 60, b))  # fmt: skip

    def track(self, activity_id: int, limit: int) -> list[tuple[float, float]]:
        """The activity's track as (lat, lon), oldest first, thinned to at most `limit` points
        at evenly spaced ids, its first and newest fix always among them: `limit` index seeks
        however long the ride (one statement)."""
        t = self.ride_totals(activity_id)
        if t is None or t.points <= 0 or limit <= 0:
            return []
        if t.points <= limit:
            rows = self._all(
                "SELECT id, lat, lon FROM fixes WHERE activity_id = ? ORDER BY id LIMIT ?",
                (activity_id, limit),
            )
        else:
            first = self._scalar(
                "SELECT id FROM fixes WHERE activity_id = ? ORDER BY id LIMIT 1", (activity_id,)
            )
            last = self._scalar(
                "SELECT id FROM fixes WHERE activity_id = ? ORDER BY id DESC LIMIT 1",
                (activity_id,),
            )
            if first is None or last is None:
                return []
            n = max(2, limit)
            rows = self._all(
                "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < :n - 1) "
                "SELECT f.id, f.lat, f.lon FROM k JOIN fixes f ON f.id = (SELECT g.id FROM fixes g "
                "WHERE g.activity_id = :a AND g.id >= :first + (k.i * (:last - :first)) / (:n - 1) "
                "ORDER BY g.id LIMIT 1) ORDER BY k.i",
                {"n": n, "a": activity_id, "first": first, "last": last},
            )
        out: list[tuple[float, float]] = []
        seen = None
        for i, lat, lon in rows:
            if i != seen:  # two spaced ids in one gap of the activity's ids land on one fix
                out.append((lat, lon))
                seen = i
        return out

    def _count_samples(self, t0: float, t1: float, minute: int | None = None) -> int:
        if minute is None:
            return self._int("SELECT count(*) FROM samples WHERE time BETWEEN ? AND ?",
                             (t0, t1))  # fmt: skip
        # The minute's samples as the triggers bucket them (time / 60 rounded, then cut), with
        # a second's margin each side for that rounding.
        return self._int(
            "SELECT count(*) FROM samples WHERE time BETWEEN ? AND ? "
            "AND CAST(time / 60 AS INTEGER) = ?",
            (max(t0, minute * 60 - 1), min(t1, minute * 60 + 61), minute),
        )

    def _bucket_sum(self, size: int, first: int, last: int) -> int:
        if first > last:
            return 0
        return self._int(
            "SELECT coalesce(sum(n), 0) FROM sample_counts "
            "WHERE size = ? AND start BETWEEN ? AND ?",
            (size, first, last),
        )

    def _totals(self, activity_id: int) -> tot.Totals:
        row = self.ride_totals(activity_id)
        if row is not None:
            return row
        # No row: an activity started by a store of before migration 5 in this very
        # transaction cannot happen; a row deleted by hand can. Sum it again.
        return self._recompute_totals(activity_id)

    def _put_totals(self, activity_id: int, t: tot.Totals) -> None:
        self._conn.execute(
            f"INSERT OR REPLACE INTO ride_totals (activity_id, {', '.join(tot.COLUMNS)}) "
            f"VALUES (?{', ?' * len(tot.COLUMNS)})",
            (activity_id, *tot.as_row(t)),
        )

    def _count_outside(self, n: int) -> None:
        self._conn.execute(
            "INSERT INTO ride_totals (activity_id, points) VALUES (0, ?) "
            "ON CONFLICT (activity_id) DO UPDATE SET points = points + excluded.points",
            (n,),
        )

    def _recompute_totals(self, activity_id: int) -> tot.Totals:
        """Sum the activity's totals again from its fixes (a full read: only where the running
        sum cannot follow, see detach_fixes and adopt_fixes), keeping the row's rules."""
        old = self.ride_totals(activity_id)
        if old is not None:
            rules = (old.max_hdop, old.start_speed)
        else:
            a = self.activity(activity_id)
            rules = self.ride_rules or tot.default_rules(a.type if a else "")
        t = tot.Totals(*rules)
        for f in self.iter_fixes(activity_id):
            tot.fold(t, (f,), f.local)
            t.last_id = f.id
        self._put_totals(activity_id, t)
        return t

    def _tail_after(
        self, activity_id: int, after: float
    ) -> tuple[StoredFix | None, list[StoredFix]]:
        """(the newest fix of the activity at `after` or earlier, the fixes after it, oldest
        first), read from the newest back: only the tail is read."""
        rows: list[tuple[Any, ...]] = []
        for r in self._newest_first("f.activity_id = ?", (activity_id,)):
            if not r[_TIME_AT] > after:
                return _stored_fix(r), [_stored_fix(g) for g in reversed(rows)]
            rows.append(r)
        return None, [_stored_fix(g) for g in reversed(rows)]

    def _take_tail(
        self, activity_id: int, keep: StoredFix | None, gone: list[StoredFix], moved: int
    ) -> None:
        """Take the `moved` fixes detach_fixes took out of the activity off its totals: the
        steps into them come off the sums. Where they were not exactly its newest fixes (GPS
        time that went back), or one of them may have held the top speed, sum it again."""
        t = self._totals(activity_id)
        top = t.max_speed
        if len(gone) != moved or any(
            (f.hdop is None or f.hdop <= t.max_hdop) and f.speed is not None
            and math.isfinite(f.speed) and top is not None and f.speed >= top for f in gone
        ):  # fmt: skip
            self._recompute_totals(activity_id)
            return
        prev = keep
        for f in gone:
            if prev is not None:
                before = tot.Totals(t.max_hdop, t.start_speed, last_time=prev.time,
                                    last_lat=prev.lat, last_lon=prev.lon)  # fmt: skip
                got = tot.step(before, f.time, f.lat, f.lon, f.speed, f.hdop)
                if got is not None:
                    t.distance_m -= got[0]
                    t.moving_s -= got[1]
            prev = f
        t.points -= moved
        t.local_points -= sum(f.local for f in gone)
        if t.points <= 1:
            # One fix or none left: no step at all, exactly (no rounding left from the sums).
            t.distance_m = t.moving_s = 0.0
        if keep is None:
            t.max_speed = t.last_id = t.last_time = t.last_lat = t.last_lon = None
        else:
            t.last_id, t.last_time, t.last_lat, t.last_lon = keep.id, keep.time, keep.lat, keep.lon
        self._put_totals(activity_id, t)

    def _newest_id(self) -> int:
        return self._scalar("SELECT max(id) FROM fixes") or 0

    def _admit(self, count: int) -> None:
        """Called inside add_fixes' transaction before `count` fixes go in: raise StorageFull to
        refuse them. The size limit is pruning's (PruneMixin overrides this); here none."""


def _minute(t: float) -> int:
    return int(t / 60)  # as the sample_counts triggers: CAST(time / 60 AS INTEGER)


def _activity(row: tuple[Any, ...]) -> Activity:
    tags = tuple(t for t in row[5].split(",") if t) if row[5] else ()
    return Activity(row[0], row[1], row[2], row[3], row[4], tags, row[6], row[7], row[8])


_new_stored_fix = builder(StoredFix)  # the Fix fields, then id, activity_id, poi, local


def _stored_fix(row: tuple[Any, ...]) -> StoredFix:
    return _new_stored_fix(*row[4:], row[0], row[1], row[2], bool(row[3]))
