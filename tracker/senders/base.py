"""The sender core: the loop every backend's sender thread runs.

Every sender is a `Sender`: the loop, the backoff, the status and the permanent-failure handling
live here, the HTTP in `transport`, the retry policy in `retry`. A protocol module adds only its
encoding, its acknowledgement rule and its protocol calls, in `work()`.

The exactly-once cycle lives here too, whole: a protocol's `work()` takes the next batch and
hands the core one request at a time.
- `reconcile(st, holder)` first: a marker left by an unanswered request is resolved before
  anything else is sent, by asking the protocol's `server_has()` (which of the marked range
  the server holds: acknowledged, the marker dropped, one transaction; or SAME: the very
  request is sent again, the server drops a repeat; or UNKNOWN: the marker is dropped and the
  data sent again, at least once).
- `deliver(...)`: mark (Pending committed) -> send -> settle (the acknowledged fixes and the
  state, marker cleared, in one transaction).
- `narrow(...)`: a refusal halves the batch (`limit`) until the one refused fix is found;
  `quarantine(...)` sets it aside, with the marker drop, in one transaction.

Threads: a sender opens its own Store in its own thread (`open_db` is called there) and reads
only from it; it never touches the GPS or the recorder, so a slow or dead network cannot hold up
ingest. It stops when the shared stop event is set; every wait is `stop.wait()`, and every
blocking network call has a timeout, so shutdown waits at most one request.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Final, Generic, Literal, Protocol, Self, TypeVar

from tracker.credentials import SecretError
from tracker.logutil import RateLimitedLog
from tracker.retry import RetryPolicy
from tracker.runtime import BackendStatus, backend_key
from tracker.senders.settings import LIVE_WINDOW_S, SenderSettings
from tracker.senders.state import Pending, StateError
from tracker.senders.transport import AuthFailed, Rejected, SendError, Unreachable
from tracker.store import Ledger, StoredFix, StoreError
from tracker.words import duration
from tracker.worker import run_loop

log = logging.getLogger(__name__)

R = TypeVar("R")

IDLE_S = 60.0  # a disabled backend wakes up this often (heartbeat only)
HEARTBEAT_S = 5.0  # the longest single wait, so `heartbeat` stays fresh
# After a store error (an ageing SD card failing a few percent of its writes, a full disk):
# the first retry soon, doubling to STORE_RETRY_S. A fixed 5 s after every failure let a
# card failing 3 % of its writes hold a backlog for minutes; a steady failure (a full disk)
# still costs one try every 5 s.
STORE_RETRY_FIRST_S = 0.2
STORE_RETRY_S = 5.0
STATUS_EVERY_S = 30.0  # an unchanged status is written at most this often

# What `server_has()` may answer besides the fix ids the server holds.
SAME: Final = "same"  # cannot ask, but the same request again is dropped by the server
UNKNOWN: Final = "unknown"  # cannot know: the data is sent again (at least once)
Held = list[int] | Literal["same", "unknown"]


class Marked(Protocol):
    """Where a request's marker lives: a backend's state, or one part of it (an activity)."""

    pending: Pending | None


class DeliveryState(Protocol):
    """A backend's delivery state (tracker/senders/state.py): its JSON, versioned."""

    def to_json(self) -> dict[str, Any]: ...

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self: ...


class Transport(Protocol):
    """What the core needs of a backend's connection (HTTP's HttpTransport, or none)."""

    def close(self) -> None: ...


St = TypeVar("St", bound=DeliveryState)


class Sender(ABC, Generic[St]):
    """The loop shared by every backend: `while not stop.is_set(): step()`.

    Subclasses set `name` and implement `open_transport()`, `work()` (one unit of protocol
    work; returns the seconds until the next step, raises SendError when the network or the
    server failed) and, if their server can be asked, `server_has()`; `work()` sends through
    `reconcile()` and `deliver()` and may call `succeeded()` after each good reply (resets the
    backoff). `St` is the backend's delivery state class.

    `heartbeat` (monotonic) is updated at every pass of the loop, at least every HEARTBEAT_S.
    `status` is published as the store runtime row `backend:<name>` for `tracker status`; it
    never holds a secret.
    """

    name = "sender"
    # What the rider should do when the server refuses the credentials (AuthFailed).
    auth_hint = "check username and password, then restart tracker"

    def __init__(
        self,
        options: SenderSettings,
        stop: threading.Event,
        open_db: Callable[[], Ledger],
        *,
        secret: Callable[[], str] | None = None,
        transport: Transport | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`options`: the backend's Settings. `secret` reads its password or token (in the
        thread, when the transport is made). `transport` is made from them unless given (tests
        give an HttpTransport to a test server, or a fake subclass)."""
        self.options = options
        self.stop = stop
        self.store: Ledger | None = None
        self.transport = transport  # else made by open_transport()
        self._secret = secret
        self.retry = RetryPolicy(base_s=1.0, cap_s=options.backoff_max_s)
        self.heartbeat = clock()
        self.disabled: str | None = None  # why this backend stopped for good (until restart)
        self.status = BackendStatus(state="starting")
        self.clock = clock
        self.wall = wall
        self._open_db = open_db
        self._rand = rand
        self._next_attempt = 0.0
        self._store_failures = 0  # store errors in a row (STORE_RETRY_FIRST_S)
        self._transport_ready = False
        self._limited = RateLimitedLog(log, 60.0, clock)
        self._published: tuple[dict[str, Any], float] | None = None
        self.limit = options.batch_max_points  # halved while narrowing down a refused fix
        self.catching_up = False  # the last batch was full: a backlog is being sent

    # -- for subclasses -----------------------------------------------------------------

    @abstractmethod
    def open_transport(self) -> None:
        """Make `self.transport` (reads the secret: SecretError disables the backend)."""

    @abstractmethod
    def work(self) -> float:
        """One unit of protocol work; the seconds until the next, or SendError."""

    def close(self) -> None:
        """Release the transport (the store is closed by run())."""
        if self.transport is not None:
            self.transport.close()

    # -- the exactly-once step (tracker/senders/state.py) ------------------------------

    def load_state(self, cls: type[St]) -> St:
        """This backend's delivery state from the store, as its typed `cls`."""
        assert self.store is not None
        return cls.from_json(self.store.get_state(self.name))

    def save_state(self, st: St) -> None:
        assert self.store is not None
        self.store.set_state(self.name, st.to_json())

    def send_marked(self, st: St, holder: Marked, pending: Pending, send: Callable[[], R]) -> R:
        """Commit `pending` (on `holder`, part of `st`) before the request goes out, then
        `send()`. If it fails where the server surely did not apply it (no connection,
        429/503), the marker is cleared again; otherwise it stays, until `settle` clears it
        with the acknowledgement or the next step reconciles with the server."""
        holder.pending = pending
        self.save_state(st)
        try:
            return send()
        except SendError as e:
            if not e.maybe_applied:
                holder.pending = None
                self.save_state(st)
            raise

    def server_has(self, st: St, holder: Marked, pending: Pending) -> Held:
        """Which fixes of the marked request `pending` the server already holds (they are
        acknowledged), or SAME, or UNKNOWN (see the module docstring). A protocol that can ask
        its server says so here; one that cannot (MQTT) keeps this answer: UNKNOWN."""
        return UNKNOWN

    def reconcile(self, st: St, holder: Marked) -> bool:
        """Resolve the marker on `holder` before anything else is sent. True when this step
        was spent on it; False when there is none, or it is to be sent again as it was (SAME:
        the marker stays, the protocol repeats the request it describes)."""
        pending = holder.pending
        if pending is None:
            return False
        held = self.server_has(st, holder, pending)
        if held == SAME:
            return False
        holder.pending = None
        self.settle(st, held if isinstance(held, list) else [])  # UNKNOWN: none held
        return True

    def deliver(
        self,
        st: St,
        holder: Marked,
        pending: Pending,
        send: Callable[[], R],
        acknowledged: Callable[[R], Iterable[int]],
        batch: Sequence[StoredFix] = (),
        refused: Callable[[str], None] | None = None,
    ) -> R | None:
        """One request through the whole cycle: mark, send, then settle what
        `acknowledged(reply)` returns (it updates the state as the reply says). A refusal
        (Rejected) goes to `refused`, by default `narrow` on `batch`; then None."""
        try:
            reply = self.send_marked(st, holder, pending, send)
        except Rejected as e:
            if refused is None:
                self.narrow(st, holder, batch, str(e))
            else:
                refused(str(e))
            return None
        ids = list(acknowledged(reply))
        holder.pending = None
        self.settle(st, ids)
        if batch:
            # A full batch: more is waiting, and the next one goes at once, however small.
            self.catching_up = len(batch) >= self.limit
        return reply

    def narrow(self, st: St, holder: Marked, batch: Sequence[StoredFix], reason: str) -> None:
        """The server refused the data of `batch`: halve the batch until the one refused fix
        is found, quarantine that one alone, and the rest goes on. A refusal changes nothing
        on the server, so the marker is dropped and the smaller batch is a new request."""
        self.succeeded()  # the server answered: the network is fine
        holder.pending = None
        if len(batch) > 1:
            self.limit = max(1, len(batch) // 2)
            self.save_state(st)
            log.warning("%s: %s; retrying with %d fixes to find the one refused", self.name,
                        reason, self.limit)  # fmt: skip
            return
        self.quarantine(st, [f.id for f in batch], reason)
        if batch:
            log.error("%s: fix %d (time %s) refused for good and quarantined: %s", self.name,
                      batch[0].id, batch[0].time, reason)  # fmt: skip

    def quarantine(
        self, st: St, ids: Iterable[int], reason: str, acknowledge: Iterable[int] = ()
    ) -> None:
        """Set `ids` aside for good (counted in `tracker status`), acknowledge `acknowledge`
        and save `st` (its marker dropped by the caller) in ONE transaction."""
        assert self.store is not None
        with self.store.transaction():
            self.store.acknowledge(self.name, acknowledge)
            self.store.quarantine(self.name, ids, reason)
            self.save_state(st)
        self.status.last_rejected = reason

    def grow(self) -> None:
        """A full batch went through: the batch limit doubles, towards `catch_up_max_points`
        while a backlog lasts (the present is then a few requests away, not dozens), back
        from a refusal's narrowing. A live batch, smaller than the limit, waits for
        `interval_s` whatever the limit."""
        o = self.options
        self.limit = min(max(o.batch_max_points, o.catch_up_max_points), self.limit * 2)

    def hold_back(self, before: float) -> int:
        """`history`: settle unsent what this backend still has to send that is older than
        `before` (GPS time); how many. Map My Tracks narrows it to the ride in progress."""
        assert self.store is not None
        return self.store.hold_back(self.name, before)

    def settle(self, st: St, ack: Iterable[int]) -> None:
        """Acknowledge `ack` and store `st` (its marker cleared by the caller) in ONE
        transaction: what the server confirmed and the state that says so land together."""
        assert self.store is not None
        with self.store.transaction():
            self.store.acknowledge(self.name, ack)
            self.save_state(st)

    def succeeded(self) -> None:
        if self.retry.failures:
            log.info("%s: server reachable again after %d failures", self.name,
                     self.retry.failures)  # fmt: skip
        self.retry = self.retry.succeeded()
        self.status.update(state="ok", last_success_at=self.wall(), failures=0,
                           next_retry_at=None)  # fmt: skip

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        """The thread's body; returns when `stop` is set."""
        log.info("%s sender started", self.name)
        try:
            # A bug is logged at the loop boundary and retried after IDLE_S (tracker/worker.py).
            run_loop(f"sender {self.name}", self._guarded_step, self.stop, beat=self._beat,
                     clock=self.clock, error_wait_s=IDLE_S, max_wait_s=HEARTBEAT_S)  # fmt: skip
        finally:
            try:
                self.close()
            finally:
                self._close_store()
            log.info("%s sender stopped", self.name)

    def _beat(self, now: float) -> None:
        self.heartbeat = now

    def _guarded_step(self) -> float:
        try:
            wait = self.step()
        except StoreError as e:
            self._store_failures += 1
            self._limited.error("store", "%s: store: %s", self.name, e)
            self._close_store()
            return min(STORE_RETRY_S, STORE_RETRY_FIRST_S * 2.0 ** (self._store_failures - 1))
        self._store_failures = 0
        return wait

    def _close_store(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def step(self) -> float:
        """One pass: at most one protocol request (or one check) unless waiting."""
        if self.store is None:
            self.store = self._open_db()
            self.store.register_backend(self.name, self.options.scope())
            self._published = None
        if self.disabled:
            self._publish()
            return IDLE_S
        now = self.clock()
        if now < self._next_attempt:
            return self._next_attempt - now
        if not self._transport_ready:
            try:
                self.open_transport()
            except (SecretError, ValueError) as e:
                self._disable(f"{e}: fix the config and restart tracker", auth=False)
                return IDLE_S
            self._transport_ready = True
        if self.options.history is not None:
            self._hold_back_history()
        try:
            wait = self.work()
        except AuthFailed as e:
            self._disable(f"{e}: {self.auth_hint}", auth=True)
            return IDLE_S
        except StateError as e:  # a ledger from a newer release: keep the data, send nothing
            self._disable(str(e), auth=False)
            return IDLE_S
        except SendError as e:
            self.retry = self.retry.failed(e.retry_after_s, self._rand)
            delay = self.retry.delay_s
            if isinstance(e, Unreachable):
                # No connection was made (no coverage): a try costs a few bytes, so the
                # link's return is noticed within reconnect_max_s, not backoff_max_s later.
                # Server errors (5xx, 429, Retry-After) keep the long backoff.
                delay = min(delay, self._rand() * self.options.reconnect_max_s)
                self.retry = replace(self.retry, delay_s=delay)
            self._next_attempt = self.clock() + delay
            # Once a minute per kind: the error's type, or the server's own error text.
            kind = f"{type(e).__name__}:{getattr(e, 'kind', '')}"
            self._limited.warning(
                kind, "%s (failure %d, next try in %.1f s)",
                e, self.retry.failures, delay,
            )  # fmt: skip
            self.status.update(state="retrying", last_error=str(e), last_error_at=self.wall(),
                               failures=self.retry.failures,
                               next_retry_at=self.wall() + delay)  # fmt: skip
            self._publish()
            return delay
        self._publish()
        return wait

    def _hold_back_history(self) -> None:
        """After an outage, only `history` seconds of the backlog (at least LIVE_WINDOW_S
        behind the newest fix) go to this server; the older fixes stay in the store, counted
        as held back (tracker status)."""
        assert self.store is not None and self.options.history is not None
        newest = self.store.newest_pending(self.name)
        if newest is None:
            return
        keep = max(self.options.history, LIVE_WINDOW_S)
        if n := self.hold_back(newest.time - keep):
            log.info("%s: %d fixes more than %s older than the newest were held back, not "
                     "sent ([%s] history)", self.name, n, duration(keep), self.name)  # fmt: skip

    def _disable(self, reason: str, *, auth: bool) -> None:
        self.disabled = reason
        log.error("%s: %s. Sending to %s is stopped; the data stays stored and is sent once "
                  "this is fixed", self.name, reason, self.name)  # fmt: skip
        self.status.update(state="disabled", last_error=reason, last_error_at=self.wall(),
                           auth_failed=auth,
                           next_retry_at=None)  # fmt: skip
        self._publish(force=True)

    def _publish(self, force: bool = False) -> None:
        if self.store is None:
            return
        now = self.clock()
        snapshot = self.status.to_json()
        if (
            not force
            and self._published is not None
            and self._published[0] == snapshot
            and now - self._published[1] < STATUS_EVERY_S
        ):
            return
        self.store.put_runtime(backend_key(self.name), snapshot)
        self._published = (snapshot, now)
