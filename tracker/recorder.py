"""The recorder thread: where a fix is stored.

Sources (the GPS reader, later the sensors) put lists of fixes and samples on the inbox queue.
The recorder is the store's only writer: every `commit_interval_s` it takes what arrived, applies
control requests from the CLI (`tracker activity stop`), decides which activity each fix belongs
to (tracker/activity.py decides; the recorder carries it out in the store), and writes it all
in ONE transaction. A power cut therefore loses at most one interval, and
SQLite's WAL guarantees the file is never corrupted.

When the store cannot be written (full disk, read-only file system, a database that cannot be
opened, I/O errors) the recorder keeps the batch in memory, logs a clear error once a minute, and
retries (at the next commit interval a few times, then with backoff up to RETRY_MAX_S; a plain
I/O error also at once, RETRY_IN_STEP times within the commit); the GPS keeps being read.
The store opens its connection again after an error SQLite does not recover from by itself
(tracker/store/db.py), and what was held goes back in small transactions, in order (the
commit loop below). While failing, the recorder's status also goes to a status file
(tracker/runtime.py) for `tracker status`. Memory is bounded: past MAX_HELD fixes the oldest
held ones are dropped, counted and logged, because an unbounded list would end in the OOM killer
taking everything. Stopped while holding fixes, the recorder writes them to a spill file
(tracker/spill.py) that the next start takes in, once.

Order: every batch is stamped with the wall clock when it is offered, and a CLI request carries
the wall clock when it was made: held fixes and waiting requests are applied in that order, so a
fix captured before an `activity stop` belongs to the activity however long the storage held it.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tracker import spill
from tracker.activity import BACK_JUMP_S, Lifecycle, Place
from tracker.config import Config
from tracker.fix import Fix, Sample
from tracker.gpstime import ASK_EVERY_S, TimeKeeper, default_setter, ntp_synchronized, server_now
from tracker.logutil import RateLimitedLog
from tracker.runtime import (
    DAEMON_KEY,
    BackendStatus,
    DaemonStatus,
    LifecycleStatus,
    RecorderCounters,
    backend_key,
    remove_status_file,
    write_status_file,
)
from tracker.store import Activity, StorageUnavailable, Store, StoreError, open_store
from tracker.store.control import RUNTIME_EVERY_S, RUNTIME_IDLE_S, Request
from tracker.store.db import storage_state
from tracker.worker import run_loop

log = logging.getLogger(__name__)

_FIXES_ONLY = {Fix}

# Fixes held in memory while the store is unwritable: 2.8 hours at 10 Hz, 28 hours at 1 Hz,
# 35 MB at most as measured with tracemalloc (a Fix with seven float fields set; ~45 MB with
# every DOP and GST error too), within the unit's MemoryHigh with the daemon's ~30 MB.
MAX_HELD = 100_000
MAX_HELD_SAMPLES = 400_000  # sensor samples likewise: ~28 h of three sensors at 4 Hz
# Fixes and samples offered by the sources and not yet taken by the recorder (counted in
# items, not batches: a fast port's batches are big). The recorder takes them every commit
# interval, so only a stuck recorder thread ever fills it: 2,000 s at 10 Hz, ~8 MB.
INBOX_MAX = 20_000
# An unwritable store is tried again at the next commit interval RETRY_AT_ONCE times (a
# write that failed at random), then at waits doubling up to RETRY_MAX_S (a read-only or
# full file system: no need to try it five times a second).
RETRY_AT_ONCE = 3
RETRY_IN_STEP = 3  # transactions failed with a plain I/O error tried again at once in a step
RETRY_MAX_S = 5.0
# After a failure the held fixes go in transactions of this many (samples: 4x): one
# transaction of hours of fixes is hundreds of page writes, and on a card failing a few
# percent of its writes it would almost never succeed as a whole (nothing was written for the
# rest of a ride). In order, each chunk with the requests made before its last fix.
CATCH_UP_FIXES = 16
# Chunks written in one step at most this long (the recorder's heartbeat, the next fixes), and
# at a stop (what is left goes to a spill file, well within the daemon's shutdown budget).
CATCH_UP_BUDGET_S = 1.0
FINAL_BUDGET_S = 5.0
TRUST_ASK_EVERY_S = 2.0  # a backend's clock is a cheap store read: ask often until one agrees
PRUNE_EVERY_S = 60.0


@dataclass
class _Activity:
    """The recorder's view of the activities: the store's current one and the lifecycle
    decision's state. Copied before each commit and kept only if the commit succeeds."""

    life: Lifecycle
    current: Activity | None = None
    started: list[str] = field(default_factory=list)  # log lines, once committed
    ended: list[str] = field(default_factory=list)

    def copy(self) -> _Activity:
        return _Activity(self.life.snapshot(), self.current)


class Recorder:
    """The single writer of the store. Run `run()` in its own thread.

    Stops when `stop` is set: it first waits for the `sources` threads (so their last fixes are
    in the inbox), then commits everything still pending and closes the store.
    """

    def __init__(
        self,
        cfg: Config,
        inbox: queue.Queue,
        stop: threading.Event,
        *,
        sources: list[threading.Thread] | None = None,
        runtime: Callable[[], dict[str, Any]] | None = None,
        open_db: Callable[..., Store] = open_store,
        set_clock: Callable[[float], None] = default_setter,
        trusted_now: Callable[[], float | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.stats = RecorderCounters()  # published as they are (tracker/runtime.py)
        self.heartbeat = time.monotonic()
        self.store: Store | None = None
        self.store_open = threading.Event()  # set once the store was opened (for READY=1)
        self._inbox = inbox
        self._stop = stop
        # The same list: the daemon adds its source threads to it after making the recorder.
        self._sources = sources if sources is not None else []
        self._runtime = runtime or (lambda: {})
        self._open_db = open_db
        self._fixes: list[Fix] = []
        self._arrived: list[float] = []  # wall clock each held fix was offered, never going back
        self._samples: list[Sample] = []
        self._inbox_items = 0  # fixes and samples in the inbox (INBOX_MAX)
        self._inbox_lock = threading.Lock()  # offer() runs in every source's thread
        self._failures = 0  # failed tries in a row
        self._retry_at = 0.0  # monotonic time of the next try after a failure
        self._last_status_file = 0.0
        # Spills taken in and not wholly stored, oldest first, their fixes and samples at the
        # front of the held lists: [id, fixes left, samples left, fixes done, samples done].
        self._spills: list[list[Any]] = []
        self._spill_files: list[Path] = []  # deleted once every spill taken in is stored
        self._spill_ids: list[str] = []  # taken in (a new spill at a stop supersedes them)
        self._catching_up = False  # a failure left fixes held: write them in small chunks
        self._act = _Activity(self._new_life())
        # GPS week roll-over, corrected once a trusted clock agrees (tracker/gpstime.py).
        self._time = TimeKeeper(
            trusted_now or self._trusted_now,
            set_system_clock=cfg.time.set_system_clock,
            setter=set_clock,
            ask_every_s=TRUST_ASK_EVERY_S,
        )
        self._ntp: tuple[float, bool | None] | None = None  # (asked at, answer): may be slow
        self._limited = RateLimitedLog(log, 60.0)
        self._last_runtime = 0.0
        self._last_prune = time.monotonic()
        self._next_commit: float | None = None
        self.started_wall = time.time()

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """The thread's body (the shared worker loop around `step`); returns once stopped."""
        try:
            # Open before the first fixes arrive: their time correction asks the store for a
            # backend's clock (and READY=1 waits for it). A failure is retried at each commit.
            self._open()
            run_loop("recorder", self.step, self._stop, beat=self._beat)
            for source in self._sources:
                source.join(timeout=5.0)
            self._receive(0.0)
            self.commit(final=True)
            if self._fixes or self._samples:
                self._spill()
        finally:
            if self.store is not None:
                with contextlib.suppress(StoreError):
                    self.store.close()

    def _beat(self, now: float) -> None:
        self.heartbeat = now

    def step(self) -> float:
        """When the next commit is due, take everything the sources sent meanwhile and commit
        it; the seconds until the next. The recorder wakes once a commit interval, not once a
        batch: the sources' batches wait in the inbox (bounded), and a stop wakes it at once
        (the worker loop's wait). An unexpected error here is logged by the worker loop, and
        the batch, still held, goes in the next commit."""
        now = time.monotonic()
        interval = self.cfg.storage.commit_interval_s
        if self._next_commit is None:
            self._next_commit = now + interval
        if now < self._next_commit:
            return self._next_commit - now
        self._next_commit = now + interval
        self._receive(0.0)
        self.commit()
        return max(0.0, self._next_commit - time.monotonic())

    def offer(self, items: list[Any]) -> None:
        """For the sources: hand over fixes or samples without ever blocking (the GPS must keep
        reading). A full inbox means the recorder has been stuck for a long time: the items are
        dropped, counted and logged, rather than growing memory until the OOM killer comes."""
        arrived = time.time()
        with self._inbox_lock:
            full = self._inbox_items + len(items) > INBOX_MAX
            if not full:
                try:
                    self._inbox.put_nowait((arrived, items))
                    self._inbox_items += len(items)
                except queue.Full:
                    full = True
            if full:
                self.stats.dropped_inbox += len(items)
        if full:
            self._limited.error(
                "inbox", "recorder inbox full (%d fixes and samples): dropped %d, %d so far",
                INBOX_MAX, len(items), self.stats.dropped_inbox,
            )  # fmt: skip

    def _receive(self, timeout: float) -> None:
        """Move what the sources sent into the pending batch, waiting up to `timeout`."""
        items = []
        try:
            first = self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
            items.append(first)
            while True:
                items.append(self._inbox.get_nowait())
        except queue.Empty:
            pass
        now = time.time()
        for entry in items:
            # (wall clock offered, items) from offer(); a bare list from a test's own queue.
            arrived, batch = entry if isinstance(entry, tuple) else (now, entry)
            with self._inbox_lock:
                self._inbox_items = max(0, self._inbox_items - len(batch))
            if not batch:
                continue
            # Never going back, so that a request's time cuts the held fixes in two (the
            # system clock may be set back by the time keeper).
            if self._arrived and arrived < self._arrived[-1]:
                arrived = self._arrived[-1]
            # One roll-over decision for the whole receiver: asked once a batch, not per fix.
            shift = self._time.shift_s(batch[0].time)
            if shift:
                batch = [replace(item, time=item.time + shift) for item in batch]
            if set(map(type, batch)) == _FIXES_ONLY:  # the GPS's batches: in whole, at C speed
                self._fixes += batch
                self._arrived += [arrived] * len(batch)
            else:
                for item in batch:
                    if isinstance(item, Fix):
                        self._fixes.append(item)
                        self._arrived.append(arrived)
                    else:
                        self._samples.append(item)
            if isinstance(batch[-1], Fix):
                self._time.observe(batch[-1].time)
        overflow = len(self._fixes) - MAX_HELD
        if overflow > 0:
            del self._fixes[:overflow]
            del self._arrived[:overflow]
            self.stats.dropped_fixes += overflow
            self._limited.error(
                "dropped",
                "storage unwritable for too long: dropped the %d oldest fixes held in memory",
                overflow,
            )
        overflow = len(self._samples) - MAX_HELD_SAMPLES
        if overflow > 0:
            del self._samples[:overflow]
            self.stats.dropped_samples += overflow
            self._limited.error(
                "dropped-samples",
                "storage unwritable for too long: dropped the %d oldest samples held in memory",
                overflow,
            )
        self.stats.held = len(self._fixes)

    # --- one commit -----------------------------------------------------------------------

    def commit(self, final: bool = False) -> None:
        """Write requests, fixes and samples in one transaction; keep them on failure. After a
        failure the next try waits for its backoff (but a stop tries at once), and what was
        held goes in chunks of CATCH_UP_FIXES, each its own transaction, in order."""
        now = time.monotonic()
        if self._failures and now < self._retry_at and not final:
            return
        if self.store is None and not self._open():
            return
        assert self.store is not None
        # While nothing is stored the row is news to nobody: rewritten less often.
        every = RUNTIME_EVERY_S if self._fixes or self._samples else RUNTIME_IDLE_S
        write_runtime = final or now - self._last_runtime >= every
        if not (self._fixes or self._samples or write_runtime or self._spills
                or self._requests_waiting()):  # fmt: skip
            self._after_commit(now)  # nothing to write: no transaction, no fsync
            return
        held = len(self._fixes)
        budget = FINAL_BUDGET_S if final else CATCH_UP_BUDGET_S
        tries = 0  # failed transactions in this step
        while True:
            nf, ns = len(self._fixes), len(self._samples)
            if self._catching_up:
                nf, ns = min(nf, CATCH_UP_FIXES), min(ns, 4 * CATCH_UP_FIXES)
            last = nf == len(self._fixes) and ns == len(self._samples)
            if not self._commit_once(nf, ns, last, final, write_runtime and last):
                tries += 1
                # A plain I/O error (a card failing a write now and then) is tried again at
                # once, a few times within the step's budget: waiting a commit interval after
                # each let a card failing 3 % of its writes store 8 fixes a second. A full,
                # read-only or corrupt store waits for its backoff.
                if (tries > RETRY_IN_STEP or self.stats.storage_state != "error"
                        or time.monotonic() - now > budget):  # fmt: skip
                    return
                continue
            if last:
                break
            if time.monotonic() - now > budget:
                return  # the rest at the next step (or into the spill file)
        self._catching_up = False
        if write_runtime:
            self._last_runtime = now
        if self.stats.storage_error is not None:
            log.warning("storage writable again: wrote %d held fixes", held)
            self.stats.storage_error = None
            remove_status_file(self.cfg.storage.path)
        self._after_commit(now)

    def _commit_once(self, nf: int, ns: int, last: bool, final: bool, write_runtime: bool) -> bool:
        """One transaction: the first `nf` held fixes and `ns` samples with the requests made
        before them (all waiting requests when `last`), the spill markers, the runtime row.
        Whether it was stored; on failure everything stays held."""
        assert self.store is not None
        fixes, arrived, samples = self._fixes[:nf], self._arrived[:nf], self._samples[:ns]
        act = self._act.copy()
        progress = self._spill_progress(nf, ns)
        try:
            with self.store.transaction():
                stored, done = self._store_in_order(act, fixes, arrived, last)
                if samples:
                    self.store.add_samples(samples)
                for sid, value in progress:  # in the same transaction: taken in once
                    self.store.put_runtime(spill.MARKER_PREFIX + sid, value)
                if write_runtime:
                    row = self.runtime(final, act.life, state="ok")  # what this commit leaves
                    self.store.put_runtime(DAEMON_KEY, row.to_json())
        except StoreError as e:
            if not isinstance(e, StorageUnavailable) and e.code == 0:
                raise  # a bug, not the storage: the worker loop logs it; the batch is kept
            self._storage_failed(e, final)
            return False
        self._act = act
        del self._fixes[:nf], self._arrived[:nf], self._samples[:ns]
        self._spill_stored(progress)
        self.stats.fixes_stored += stored
        self.stats.repeated_fixes += len(fixes) - stored
        self.stats.samples_stored += len(samples)
        self.stats.commits += 1
        self.stats.held = len(self._fixes)
        self.stats.storage_state = "ok"
        self._failures = 0
        for text in done:
            log.info("%s", text)
        for text in act.ended + act.started:  # only what was committed
            log.info("%s", text)
        return True

    def _spill_progress(self, nf: int, ns: int) -> list[tuple[str, dict[str, int]]]:
        """The markers of the spills whose fixes or samples the next `nf` and `ns` held ones
        include: how many of each will be stored once that transaction commits."""
        out = []
        for sid, f_left, s_left, f_done, s_done in self._spills:
            if not (nf or ns):
                break
            tf, ts = min(nf, f_left), min(ns, s_left)
            nf, ns = nf - tf, ns - ts
            out.append((sid, {"fixes": f_done + tf, "samples": s_done + ts}))
        return out

    def _spill_stored(self, progress: list[tuple[str, dict[str, int]]]) -> None:
        if not progress:
            return
        for entry, (_, done) in zip(self._spills, progress, strict=False):
            entry[1] -= done["fixes"] - entry[3]
            entry[2] -= done["samples"] - entry[4]
            entry[3], entry[4] = done["fixes"], done["samples"]
        if all(e[1] == 0 and e[2] == 0 for e in self._spills):
            spill.remove(self._spill_files)
            log.info("stored every fix of the spill files %s",
                     ", ".join(map(str, self._spill_files)))  # fmt: skip
            self._spills, self._spill_files = [], []

    def _store_in_order(
        self, act: _Activity, fixes: list[Fix], arrived: list[float], last: bool = True
    ) -> tuple[int, list[str]]:
        """Store the held fixes and apply the waiting requests in the order they happened:
        the fixes offered before a request's wall-clock time, then the request, and so on.
        Not `last`: more held fixes follow these, and a request made after the last of these
        waits for them. Returns (fixes stored, log lines of the requests done)."""
        assert self.store is not None
        done: list[str] = []
        pos = stored = 0
        pois: list[tuple[Request, int]] = []  # (request, how many fixes were stored before it)
        for req in self.store.take_requests():
            cut = max(pos, bisect.bisect_right(arrived, req.created_at))
            if cut == len(fixes) and not last:
                break
            stored += self._store_fixes(act, fixes[pos:cut])
            pos = cut
            if req.command == "poi":
                pois.append((req, stored))
            else:
                done.append(self._apply_request(act, req))
        stored += self._store_fixes(act, fixes[pos:])
        done += self._mark_poi(pois, stored)
        return stored, done

    def _requests_waiting(self) -> bool:
        """Whether a CLI request waits (a read, no transaction); True when the store cannot
        say, so that the commit runs and handles the failure as it does."""
        assert self.store is not None
        try:
            return bool(self.store.take_requests())
        except StoreError:
            return True

    def _after_commit(self, now: float) -> None:
        if now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            self._prune()

    def _trusted_now(self) -> float | None:
        """A backend server's clock (its get_time offset, which the sender publishes in its
        status row), else an NTP-synchronised system clock (asked once a minute: it may start
        timedatectl)."""
        if self.store is not None:
            for name in self.store.backends():
                row = self.store.get_runtime(backend_key(name))
                offset = BackendStatus.from_json(row[0]).clock_offset_system_s if row else None
                if isinstance(offset, int | float):
                    return server_now(offset)
        now = time.monotonic()
        if self._ntp is None or now - self._ntp[0] >= ASK_EVERY_S:
            self._ntp = (now, ntp_synchronized())
        return time.time() if self._ntp[1] is True else None

    def _open(self) -> bool:
        """Open the store (tried again at each commit until it opens), read the lifecycle
        from it and take in the spill files of an earlier stop. Once open it stays open: the
        store itself opens its connection again after an error that needs it."""
        try:
            self.store = self._open_db(
                self.cfg.storage.path,
                max_mb=self.cfg.storage.max_mb,
                prune=self.cfg.storage.prune,
            )
        except StoreError as e:
            self._storage_failed(e)
            return False
        self.store_open.set()
        try:
            self._act = self._resume(self.store)
            self._take_spills(self.store)
        except StoreError as e:
            self._close_store()
            self._storage_failed(e)
            return False
        if self._act.current is not None:
            log.info(
                "store %s open; current activity %d (%s)",
                self.cfg.storage.path, self._act.current.id, self._act.current.title,
            )  # fmt: skip
        else:
            log.info("store %s open; no current activity", self.cfg.storage.path)
        return True

    def _close_store(self) -> None:
        if self.store is not None:
            with contextlib.suppress(StoreError, sqlite3.Error):
                self.store.close()
            self.store = None

    def _take_spills(self, store: Store) -> None:
        """Put the fixes and samples of earlier stops' spill files before everything held,
        with their markers for the next commit; a spill whose marker is in the store already
        was stored before a crash kept its file: only deleted."""
        spills, stale, problems = spill.find(self.cfg.storage.path)
        for problem in problems:
            log.error("%s; left where it is", problem)
        fixes: list[Fix] = []
        arrived: list[float] = []
        samples: list[Sample] = []
        for sp in spills:
            f_done, s_done = spill.stored(sp, store)
            if f_done >= len(sp.fixes) and s_done >= len(sp.samples):
                log.info("spill %s was stored already: deleting it", sp.paths[0])
                stale += sp.paths
                continue
            fixes += sp.fixes[f_done:]
            arrived += sp.arrived[f_done:]
            samples += sp.samples[s_done:]
            self._spills.append([sp.id, len(sp.fixes) - f_done, len(sp.samples) - s_done,
                                 f_done, s_done])  # fmt: skip
            self._spill_ids += [sp.id, *sp.supersedes]
            self._spill_files += sp.paths
            log.info("taking in %d fixes and %d samples from %s",
                     len(sp.fixes) - f_done, len(sp.samples) - s_done, sp.paths[0])  # fmt: skip
        self._spill_files += stale
        if not self._spills:
            spill.remove(stale)
            return
        self._catching_up = True  # hours of fixes, perhaps: in chunks
        self._fixes = fixes + self._fixes
        self._arrived = arrived + self._arrived
        # The same never-going-back order: later stamps cannot be older than the spill's.
        top = arrived[-1] if arrived else 0.0
        self._arrived = [max(a, top) if i >= len(arrived) else a
                         for i, a in enumerate(self._arrived)]  # fmt: skip
        self._samples = samples + self._samples
        self.stats.unspilled += len(fixes)
        self.stats.held = len(self._fixes)

    def _spill(self) -> None:
        """At a stop with fixes or samples the store would not take: into a spill file."""
        fixes, samples = self._fixes, self._samples
        try:
            path = spill.write(self.cfg.storage.path, fixes, self._arrived, samples,
                               supersedes=self._spill_ids)  # fmt: skip
        except OSError as e:
            log.error(
                "shutting down with %d fixes and %d samples that could not be stored (%s): %s",
                len(fixes), len(samples), self.stats.storage_error, e,
            )  # fmt: skip
            return
        # The spills it supersedes are in it: their files go (a crash before this is harmless).
        spill.remove([f for f in self._spill_files if f != path])
        self.stats.spilled += len(fixes)
        log.warning(
            "shutting down with %d fixes and %d samples the store would not take (%s): "
            "written to %s, taken in at the next start", len(fixes), len(samples),
            self.stats.storage_error, path,
        )  # fmt: skip
        self._write_status_file(final=True)

    def _new_life(self) -> Lifecycle:
        rules = self.cfg.activity.rules()
        return Lifecycle(rules, armed=rules.mode == "always")

    def _resume(self, store: Store) -> _Activity:
        """The lifecycle state for what the store holds: its current activity continues
        (subject to the rules on the next fix), and in "auto" mode its recent fixes are
        replayed, so the idle clock runs from the last movement they show."""
        life = self._new_life()
        last = store.last_fix()
        current = store.current_activity()
        if current is not None:
            own = last if last is not None and last.activity_id == current.id else None
            own = own or store.last_fix(current.id)
            life.resumed(current.started_at, own.time if own is not None else None)
            r = life.rules
            if own is not None and r.idle_stop_s is not None:
                window = r.idle_stop_s + 2 * r.start_after_s + 60.0
                life.replay(store.recent_fixes(current.id, own.time - window))
        elif last is not None and life.rules.mode == "auto":
            # Moving off when the power went: the lead-in stored so far is not lost.
            window = life.rules.start_after_s + 10.0
            life.replay(store.recent_fixes(None, last.time - window))
        if last is not None:
            life.last_time = last.time
        return _Activity(life, current)

    def _storage_failed(self, e: StoreError, final: bool = False) -> None:
        """Hold on: count and log (once a minute), say so in the status file, close a
        connection SQLite will not recover by itself, and wait for the next try."""
        message = str(e)
        self.stats.storage_errors += 1
        self.stats.storage_error = message
        self.stats.storage_state = storage_state(self.cfg.storage.path, e)
        self._failures += 1
        self._catching_up = True
        doubled = 2 ** max(0, self._failures - RETRY_AT_ONCE)
        delay = min(RETRY_MAX_S, self.cfg.storage.commit_interval_s * doubled)
        self._retry_at = time.monotonic() + delay
        self._limited.error(
            "storage",
            "%s; holding %d fixes in memory and still reading the GPS",
            message, len(self._fixes),
        )  # fmt: skip
        self._write_status_file(final)

    def _write_status_file(self, final: bool = False) -> None:
        """The daemon's status where `tracker status` finds it while the row cannot be
        written (tracker/runtime.py), at most once per RUNTIME_EVERY_S."""
        now = time.monotonic()
        if not final and now - self._last_status_file < RUNTIME_EVERY_S:
            return
        self._last_status_file = now
        write_status_file(self.cfg.storage.path, self.runtime(final))

    def _apply_request(self, act: _Activity, req: Request) -> str:
        """Carry out one CLI request (not a poi: _mark_poi); its log line."""
        assert self.store is not None
        if req.command == "activity_stop":
            if act.current is None:
                result = "no activity was running"
            else:
                self._end(act, act.life.last_active, "requested")
                result = f"activity {act.current.id} stopped"
                act.current = None
            act.life.stopped()
        elif req.command == "activity_start":
            if act.current is not None:
                self._end(act, act.life.last_active, "new activity requested")
                result = f"activity {act.current.id} stopped; a new one starts with the next fix"
                act.current = None
            else:
                result = "a new activity starts with the next fix"
            act.life.start_requested()
        else:
            result = f"unknown request {req.command!r}"
        self.store.finish_request(req.id, result)
        return f"request {req.id} ({req.command}): {result}"

    def _end(self, act: _Activity, at: float | None, reason: str) -> None:
        """End the current activity at GPS time `at`; its fixes after that leave it."""
        assert self.store is not None and act.current is not None
        self.store.end_activity(act.current.id, at or act.current.started_at, reason)
        act.ended.append(f"activity {act.current.id} ended: {reason}")
        if at is not None:
            self.store.detach_fixes(act.current.id, at)

    def _mark_poi(self, pois: list[tuple[Request, int]], stored: int) -> list[str]:
        """`tracker poi`: the first fix stored after the request was made carries its note
        (several on one fix are joined with "; "). With no such fix in the commit the request
        stays open, so it also survives a restart; it is finished in the transaction that
        marks. `pois`: each request with how many of this commit's fixes came before it."""
        assert self.store is not None
        at: dict[int, list[Request]] = {}
        for req, before in pois:
            if before < stored:
                at.setdefault(before, []).append(req)
        if not at:
            return []
        last = self.store.last_fix()
        assert last is not None
        # One writer, one transaction: this commit's fixes have consecutive ids.
        first_id = last.id - stored + 1
        done = []
        for before, requests in sorted(at.items()):
            fix_id = first_id + before
            notes = [r.arg.strip() for r in requests if r.arg and r.arg.strip()]
            self.store.mark_poi(fix_id, "; ".join(notes) or "POI")
            for r in requests:
                result = f"the next fix is marked: {(r.arg or '').strip() or 'POI'} (fix {fix_id})"
                self.store.finish_request(r.id, result)
                done.append(f"request {r.id} (poi): {result}")
        return done

    def _store_fixes(self, act: _Activity, fixes: list[Fix]) -> int:
        """Store each fix where the lifecycle decision puts it, starting and ending
        activities as it says; returns how many were stored (repeats are not)."""
        assert self.store is not None
        store, a = self.store, self.cfg.activity
        run: list[Fix] = []
        outside: tuple[int | None, bool] = (None, False)
        run_key = outside
        drop, sent, local = Place.DROP, Place.SENT, Place.LOCAL  # locals: looked up per fix
        stored = 0

        def flush() -> None:
            if run:
                store.add_fixes(run_key[0], run, local=run_key[1])
                run.clear()

        step = act.life.step
        for fix in fixes:
            d = step(fix)
            place = d.place
            if place is drop:
                self._limited.log(
                    logging.INFO, "repeat",
                    "dropped a fix at %.2f: GPS time repeated or up to %g s behind the last",
                    fix.time, BACK_JUMP_S,
                )  # fmt: skip
                continue
            if d.end is not None and act.current is not None:
                flush()
                self._end(act, d.end.at, d.end.reason)
                act.current = None
            if d.start is not None:
                flush()
                act.current = store.start_activity(
                    a.title_for(d.start.at), a.type, a.privacy, a.tags, d.start.at
                )
                store.adopt_fixes(act.current.id, d.start.adopt)
                act.started.append(f"activity {act.current.id} started: {act.current.title}")
            current = act.current
            key: tuple[int | None, bool]
            if (place is sent or place is local) and current is not None:
                key = (current.id, place is local)
            else:
                key = outside
            if key != run_key:
                flush()
                run_key = key
            run.append(fix)
            stored += 1
        flush()
        return stored

    def _prune(self) -> None:
        assert self.store is not None
        try:
            self.store.prune_if_needed()
        except StorageUnavailable as e:
            self._storage_failed(e)

    def runtime(
        self, final: bool = False, life: Lifecycle | None = None, state: str | None = None
    ) -> DaemonStatus:
        """The daemon's runtime row for `tracker status`: the recorder's counters and the
        lifecycle's state, with the sources' part (the GPS, the sensors) from the daemon.
        `state`: the storage state the row is written with (a row in the store says "ok")."""
        life = life or self._act.life
        stats = replace(self.stats)
        if state is not None:
            stats.storage_state, stats.storage_error = state, None
        return DaemonStatus(
            pid=os.getpid(),
            started=self.started_wall,
            running=not final,
            recorder=stats,
            lifecycle=LifecycleStatus(mode=life.rules.mode, state=life.state),
            **self._runtime(),
        )
