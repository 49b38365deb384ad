"""The delivery ledger: per backend, which fixes are settled, and the sender's own state.

Senders see only `Ledger`, the part of a Store they may use (tests/test_store.py holds it to
what the senders call); `LedgerMixin` implements the delivery part of it.

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

Fix ids never go back (see tracker.store.db), so a cursor never covers a fix not yet stored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from tracker.fix import Sample
from tracker.store.db import SCOPES, StoreBase, StoreError, deliverable
from tracker.store.fixes import _FIX_SELECT, Activity, StoredFix, _stored_fix

# One logger for the whole package, named as before the split: log lines keep "tracker.store"
# and any level set on it still applies.
log = logging.getLogger("tracker.store")

_NOT_MARKED = "NOT EXISTS (SELECT 1 FROM marks m WHERE m.backend = :b AND m.fix_id = f.id)"
_CURSOR = "(SELECT cursor FROM backends WHERE name = :b)"


class Ledger(Protocol):
    """What a sender calls on its store, and nothing more: its backend's ledger, the reads of
    activities, fixes and samples its protocol sends, its runtime row, and close.

    Each member's contract is the Store method's of the same name. Store satisfies it
    structurally; a fake for a sender test needs only these.
    """

    # -- the backend's ledger
    def transaction(self) -> AbstractContextManager[object]: ...

    def register_backend(self, name: str, scope: str = "activities") -> None: ...

    def next_batch(
        self, backend: str, limit: int, activity_id: int | None = None
    ) -> list[StoredFix]: ...

    def acknowledge(self, backend: str, fix_ids: Iterable[int]) -> None: ...

    def quarantine(self, backend: str, fix_ids: Iterable[int], reason: str) -> None: ...

    def newest_pending(self, backend: str) -> StoredFix | None: ...

    def hold_back(self, backend: str, before: float, activity_id: int | None = None) -> int: ...

    def get_state(self, backend: str) -> dict[str, Any]: ...

    def set_state(self, backend: str, state: dict[str, Any]) -> None: ...

    # -- what the protocols send besides batches of fixes (write_gpx, which the Map My Tracks
    # upload calls with its store, reads activities, iter_fixes and samples_between)
    def activity(self, activity_id: int) -> Activity | None: ...

    def activities(self) -> list[Activity]: ...

    def last_fix(self, activity_id: int | None = None) -> StoredFix | None: ...

    def iter_fixes(self, activity_id: int | None = None) -> Iterator[StoredFix]: ...

    def samples_between(self, t0: float, t1: float, kind: str | None = None) -> list[Sample]: ...

    def samples_for_batch(
        self, lo: float, hi: float, since: float, late_after_id: int | None
    ) -> tuple[list[Sample], int]: ...

    # -- the sender's status for `tracker status`, and its end
    def put_runtime(self, key: str, value: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class LedgerMixin(StoreBase):
    """Delivery state of a Store: backends, cursors, marks, sender state. Each write is one
    transaction, or part of the caller's inside `transaction()`."""

    def register_backend(self, name: str, scope: str = "activities") -> None:
        """Make `name` a delivery target of `scope` (idempotent; a changed scope is kept). A
        new backend starts at cursor 0: it is offered every stored fix of its scope
        ('activities': those in an activity and not kept local; 'all': every fix)."""
        if scope not in SCOPES:
            raise ValueError(f"backend scope {scope!r}: expected one of {', '.join(SCOPES)}")
        with self.transaction():
            self._conn.execute("INSERT OR IGNORE INTO backends (name) VALUES (?)", (name,))
            self._conn.execute("UPDATE backends SET scope = ? WHERE name = ? AND scope != ?",
                               (scope, name, scope))  # fmt: skip

    def backends(self) -> list[str]:
        return [r[0] for r in self._all("SELECT name FROM backends ORDER BY name")]

    def next_batch(
        self, backend: str, limit: int, activity_id: int | None = None
    ) -> list[StoredFix]:
        """Up to `limit` fixes for `backend`, ascending id: fixes of its scope (or of
        `activity_id`), neither acknowledged nor quarantined by this backend.

        Reading does not claim anything: the same fixes come back until acknowledged or
        quarantined. A batch may span two activities; a sender whose protocol works per
        activity cuts it at the first change of activity_id (or passes activity_id).
        """
        sql, params = self._next_batch_query(backend, limit, activity_id)
        return [_stored_fix(r) for r in self._all(sql, params)]

    def _next_batch_query(
        self, backend: str, limit: int, activity_id: int | None
    ) -> tuple[str, dict[str, Any]]:
        # One query, and indexed either way: fixes_deliverable (or the primary key for scope
        # 'all') or fixes_activity give the ids above the cursor in order, marks' primary key
        # answers each NOT EXISTS. An unknown backend is an error, not an empty queue.
        scope = self._scope(backend)
        if activity_id is None:
            where = deliverable(scope)
        else:
            where = "f.activity_id = :a" + (" AND f.local = 0" if scope == "activities" else "")
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

    def hold_back(self, backend: str, before: float, activity_id: int | None = None) -> int:
        """Settle unsent every fix `backend` still has to send that is older than `before` (GPS
        time), and every one stored before the newest of those (ids, not times, decide: a
        cursor passes ids); returns how many. Its `history` key (tracker/senders/settings.py):
        after an outage those are never sent to that server, and stay in the store, counted
        in `held_back()`. Cheap when there is nothing to hold: one index step from the cursor.
        `activity_id`: only that activity's fixes (Map My Tracks holds back within the ride in
        progress only).
        """
        scope = deliverable(self._scope(backend))
        if activity_id is not None:
            scope += " AND f.activity_id = :a"
        pending = f"FROM fixes f WHERE {scope} AND f.id > {_CURSOR} AND {_NOT_MARKED}"
        p: dict[str, Any] = {"b": backend, "t": before, "a": activity_id}
        with self.transaction():
            oldest = self._conn.execute(f"SELECT f.time {pending} ORDER BY f.id LIMIT 1",
                                        p).fetchone()  # fmt: skip
            if oldest is None or oldest[0] >= before:
                return 0
            last = self._conn.execute(f"SELECT max(f.id) {pending} AND f.time < :t",
                                      p).fetchone()[0]  # fmt: skip
            ids = frozenset(r[0] for r in self._all(f"SELECT f.id {pending} AND f.id <= :u",
                                                    {**p, "u": last}))  # fmt: skip
            cursor = self._advance(backend, self._cursor(backend), ids)
            # Above a fix another activity still has to send, the cursor stops: those held are
            # settled by marks, as out-of-order acknowledgements are.
            self._conn.executemany(
                "INSERT OR IGNORE INTO marks (backend, fix_id, state) VALUES (?, ?, 'acked')",
                [(backend, i) for i in sorted(ids) if i > cursor],
            )  # fmt: skip
            self._conn.execute(
                "INSERT INTO held_back (backend, up_to_id, fixes, before_time) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (backend, up_to_id) DO UPDATE SET fixes = fixes + excluded.fixes",
                (backend, last, len(ids), before),
            )  # fmt: skip
        log.info("%s: %d fixes older than its history held back, not sent", backend, len(ids))
        return len(ids)

    def newest_pending(self, backend: str) -> StoredFix | None:
        """The newest fix `backend` still has to send (the present, for a backend that sends
        it before its backlog: `catch_up = "live_first"`), or None."""
        scope = deliverable(self._scope(backend))
        row = self._conn.execute(
            f"SELECT {_FIX_SELECT} FROM fixes f WHERE {scope} AND f.id > {_CURSOR} "
            f"AND {_NOT_MARKED} ORDER BY f.id DESC LIMIT 1", {"b": backend}
        ).fetchone()  # fmt: skip
        return None if row is None else _stored_fix(row)

    def held_back(self) -> dict[str, int]:
        """Backend -> fixes its `history` key kept from being sent (still stored)."""
        return dict(self._all(
            "SELECT b.name, (SELECT coalesce(sum(h.fixes), 0) FROM held_back h "
            "WHERE h.backend = b.name) FROM backends b ORDER BY b.name"
        ))  # fmt: skip

    def _scope(self, backend: str) -> str:
        scope: str | None = self._scalar("SELECT scope FROM backends WHERE name = ?", (backend,))
        if scope is None:
            raise StoreError(f"{self.path}: backend {backend!r} is not registered")
        return scope

    def _cursor(self, backend: str) -> int:
        cursor: int | None = self._scalar("SELECT cursor FROM backends WHERE name = ?", (backend,))
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
        where = deliverable(self._scope(backend))
        rows = self._conn.execute(
            f"SELECT f.id FROM fixes f WHERE {where} AND f.id > :c "
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
        newest = f"SELECT max(f.id) FROM fixes f WHERE {where}"
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
        """Backend -> fixes still to send (of its scope, neither acknowledged nor
        quarantined). Not acknowledged = pending + quarantined. {} with no backend."""
        out: dict[str, int] = {}
        for scope in SCOPES:  # one query per scope, so that each uses its index
            out.update(self._all(
                f"SELECT b.name, (SELECT count(*) FROM fixes f WHERE {deliverable(scope)} "
                "AND f.id > b.cursor AND NOT EXISTS (SELECT 1 FROM marks m "
                "WHERE m.backend = b.name AND m.fix_id = f.id)) FROM backends b "
                "WHERE b.scope = ?", (scope,)
            ))  # fmt: skip
        return dict(sorted(out.items()))

    def gap(self, backend: str) -> dict[str, float | None]:
        """How far `backend`'s server is behind the unit, in GPS time: `server_newest`, the
        time of the newest fix it acknowledged (None before the first, or once that fix is
        pruned); `oldest_pending` and `newest_pending`, the oldest and newest fix still to
        send (None with nothing to send). Each read walks an index from one end."""
        scope = deliverable(self._scope(backend))
        p = {"b": backend}

        def first(sql: str) -> float | None:
            row = self._conn.execute(sql, p).fetchone()
            return None if row is None else row[0]

        pending = f"FROM fixes f WHERE {scope} AND f.id > {_CURSOR} AND {_NOT_MARKED}"
        # Settled under the cursor and not quarantined, or acknowledged above it (out of order).
        under = first(
            f"SELECT f.time FROM fixes f WHERE {scope} AND f.id <= {_CURSOR} AND NOT EXISTS "
            "(SELECT 1 FROM marks m WHERE m.backend = :b AND m.fix_id = f.id "
            "AND m.state = 'quarantined') ORDER BY f.id DESC LIMIT 1"
        )  # fmt: skip
        above = first("SELECT max(f.time) FROM marks m JOIN fixes f ON f.id = m.fix_id "
                      "WHERE m.backend = :b AND m.state = 'acked'")  # fmt: skip
        held = [t for t in (under, above) if t is not None]
        return {
            "server_newest": max(held) if held else None,
            "oldest_pending": first(f"SELECT f.time {pending} ORDER BY f.id LIMIT 1"),
            "newest_pending": first(f"SELECT f.time {pending} ORDER BY f.id DESC LIMIT 1"),
        }

    def pending_in(self, backend: str, activity_id: int) -> int:
        """Fixes of one activity `backend` has still to send (as `pending`, for one activity;
        read through the fixes_activity index)."""
        local = " AND f.local = 0" if self._scope(backend) == "activities" else ""
        return self._int(
            f"SELECT count(*) FROM fixes f WHERE f.activity_id = :a{local} "
            f"AND f.id > {_CURSOR} AND {_NOT_MARKED}",
            {"a": activity_id, "b": backend},
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
        state: dict[str, Any] = json.loads(raw)
        return state

    def set_state(self, backend: str, state: dict[str, Any]) -> None:
        raw = json.dumps(state, separators=(",", ":"), sort_keys=True)
        with self.transaction():
            cur = self._conn.execute("UPDATE backends SET state = ? WHERE name = ?", (raw, backend))
            if cur.rowcount == 0:
                raise StoreError(f"{self.path}: backend {backend!r} is not registered")
