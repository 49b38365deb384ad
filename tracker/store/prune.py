"""The size limit, and pruning to stay under it.

Size limit
----------
`max_mb` bounds the bytes in use: the pages in use, plus the WAL counted at its allowance
(journal_size_limit, 5 % of max_mb up to 4 MiB) rather than its momentary size, which deleting
rows cannot reduce. It is a soft limit, checked when pruning runs. `prune_if_needed()`, which
the writer calls every few commits, first deletes the oldest fixes that no backend still needs
(acknowledged by every registered backend, or outside any activity, or all of them when no
backend is registered), the samples and instrument readings older than the oldest fix left
(counted together as `deleted_samples`), and ended activities left without fixes, down to 90 %
of the limit. When that is not enough it depends on `prune`:

- "drop_oldest" (the default): deletes the oldest undelivered fixes too, with an ERROR line that
  says how many and for which backends, and adds them to persistent counters (`counters()`,
  for `tracker status`). A live tracker must keep tracking the present: the people following
  the ride want where the rider is now, not where the rider was this morning.
- "drop_newest": keeps everything stored and refuses new fixes: `add_fixes` raises StorageFull
  (a StorageUnavailable, and an ERROR line, rate-limited) until acknowledgements make room
  again. For riders who care more about a complete start of the ride than about live tracking.

Either way the newest fix is never deleted (see fix ids in tracker.store.db), so a limit
too small for the samples alone leaves one fix and an ERROR line at each prune rather than
an empty table.

The file does not shrink: freed pages are reused by new data (VACUUM would need twice the space
and lock out every other process while it runs).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from tracker.store.control import ControlMixin
from tracker.store.db import _DELIVERABLE, StorageFull
from tracker.store.fixes import FixesMixin

# One logger for the whole package, named as before the split: log lines keep "tracker.store"
# and any level set on it still applies.
log = logging.getLogger("tracker.store")

PRUNE_MODES = ("drop_oldest", "drop_newest")
PRUNE_TARGET = 0.9  # prune down to this fraction of max_mb, so the next prune is not at once


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


class PruneMixin(FixesMixin, ControlMixin):
    """Size accounting and pruning of a Store (see the module docstring). Builds on the fixes
    (counts, the newest id) and the counters."""

    def size_bytes(self) -> int:
        """Bytes in use: the database's pages in use (not the free ones) plus the WAL file."""
        try:
            wal = os.path.getsize(str(self.path) + "-wal")
        except OSError:
            wal = 0
        return self._pages_in_use_bytes() + wal

    def _pages_in_use_bytes(self) -> int:
        page_count = self._int("PRAGMA page_count")
        free = self._int("PRAGMA freelist_count")
        return (page_count - free) * self._int("PRAGMA page_size")

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
        # Outside any activity: sent to no backend, unless one takes every fix (scope 'all').
        everything = self._scalar("SELECT count(*) FROM backends WHERE scope = 'all'")
        outside = [] if everything else self._all(
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
            f"AND (b.scope = 'all' OR ({_DELIVERABLE})) AND ("
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
        n = max(cur.rowcount, 0)
        # Instrument readings (a table of their own, see db.MIGRATIONS 4) go by the same rule.
        cur = self._conn.execute("DELETE FROM instruments WHERE time < ?", (oldest,))
        return n + max(cur.rowcount, 0)

    def _admit(self, count: int) -> None:
        """With prune = drop_newest and the limit reached: prune what every backend has
        acknowledged and, if that is not enough, refuse the `count` new fixes (StorageFull).
        Runs inside add_fixes' transaction."""
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
                    f"{count} fixes refused (prune = drop_newest)"
                )


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
