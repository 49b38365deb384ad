"""The sender core: the loop every backend's sender thread runs.

Every sender is a `Sender`: the loop, the backoff, the status and the permanent-failure handling
live here, the HTTP in `transport`, the retry policy in `retry`. A protocol module adds only its
encoding, its acknowledgement rule and its protocol calls, in `work()`.

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
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from tracker.logutil import RateLimitedLog
from tracker.retry import RetryPolicy
from tracker.runtime import BackendStatus, backend_key
from tracker.senders.settings import SenderSettings
from tracker.senders.state import Pending, StateError
from tracker.senders.transport import AuthFailed, SecretError, SendError
from tracker.store import Store, StoreError
from tracker.worker import run_loop

if TYPE_CHECKING:
    from tracker.senders.http import HttpTransport

log = logging.getLogger(__name__)

S = TypeVar("S")
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


class Sender(ABC):
    """The loop shared by every backend: `while not stop.is_set(): step()`.

    Subclasses set `name` and implement `open_transport()`, `work()` (one unit of protocol
    work; returns the seconds until the next step, raises SendError when the network or the
    server failed) and may call `succeeded()` after each good reply (resets the backoff).

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
        open_db: Callable[[], Store],
        *,
        secret: Callable[[], str] | None = None,
        transport: HttpTransport | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`options`: the backend's Settings. `secret` reads its password or token (in the
        thread, when the transport is made). `transport` is made from them unless given (tests
        give an HttpTransport to a test server, or a fake subclass)."""
        self.options = options
        self.stop = stop
        self.store: Store | None = None
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

    def load_state(self, cls: type[S]) -> S:
        """This backend's delivery state from the store, as its typed `cls`."""
        assert self.store is not None
        return cls.from_json(self.store.get_state(self.name))

    def save_state(self, st: Any) -> None:
        assert self.store is not None
        self.store.set_state(self.name, st.to_json())

    def send_marked(self, st: Any, holder: Any, pending: Pending, send: Callable[[], R]) -> R:
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

    def settle(self, st: Any, ack: Iterable[int]) -> None:
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
            return min(STORE_RETRY_S, STORE_RETRY_FIRST_S * 2 ** (self._store_failures - 1))
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
