"""The Traccar sender: the OsmAnd protocol, one position per request (docs/traccar.md).

The pure functions at the top (thinning and encoding) have no I/O; `TraccarSender` below is the
thread.

Encoding (the query parameters of Traccar's OsmAnd decoder, sent as a form POST):

- `id`: `[traccar] device_id`, the device's identifier on the server.
- `timestamp`: whole unix seconds of the GPS time (floor). Only the first fix of each second,
  and then at most one per `min_point_interval_s`, is sent; the fixes in between are
  acknowledged with it (docs/traccar.md says why seconds and not milliseconds).
- `lat`, `lon`: 7 decimals, always written out (1 cm).
- `speed` in knots (Traccar's unit for this protocol), `bearing` in degrees true, `altitude`
  in metres, only when the receiver gave them.
- `accuracy`: the horizontal 1-sigma error in metres, from GST or HDOP x `uere_m`
  (tracker/senders/accuracy.py, as json-gpsr's `ha`); `hdop` as the receiver sent it.
- `hr`, `cad`, `pwr`: the newest sample of each kind at most SAMPLE_MAX_AGE_S before the fix's
  time, whole numbers; Traccar stores unknown parameters as position attributes.

Delivery (in time order by default, one request at a time):

1. The next fix to send is the first stored one newer than the last acknowledged time by at
   least `min_point_interval_s`; those before it are acknowledged with its answer, unsent (a
   fix of an already-sent second, or older than what the server has: a position older than the
   device's latest would not be covered by Traccar's duplicate filter).
2. The `pending` marker (the fix's time and id) and the exact parameters are committed, then the
   POST goes. Only HTTP 200 acknowledges it: the fix, the marker cleared and the new last time
   in one transaction, before anything else is sent.
3. A marker still there at the next step (a lost reply, a 500, an unreadable reply, a SIGKILL
   between the server's receipt and the store's commit) is resolved by sending the very same
   parameters again. The server's duplicate filter (Traccar `filter.duplicate`) drops a
   position whose time equals the device's latest one and which brings no new attribute: since
   the fix in flight is always newer than anything sent before, if it arrived it *is* the
   device's latest, and the resend is dropped. That is the whole reconciliation: OsmAnd has no
   way to ask what arrived.

`catch_up = "live_first"`: when the backlog spans more than LIVE_FIRST_AFTER_S, the newest
pending fix goes first (marker kind "live": it becomes the device's latest, and its marker
reconciles as above), then the history oldest first (kind "history"), thinned among itself,
while every newer fix stored meanwhile again goes first. The state keeps the `runs` of seconds
sent ahead (a fix between two runs is history) and `filled`, the newest history second sent;
a pending fix in a run, or not due after `filled`, is acknowledged unsent, never sent twice by
the planning. A history position whose reply is lost is sent again like any other, but Traccar's
duplicate filter compares with the device's latest position, which is newer: if the first had
arrived the resend is stored twice. One possible repeat per lost reply (or SIGKILL), never a
loss; counted in `repeats` (state and status). A present position left unanswered when an
outage began is resent first only if within PRESENT_LAG_S of the newest; else, with a backlog
there, the newest goes first and the marked fix joins the history (a counted possible
repeat). At MAX_RUNS runs (a link much slower than the fixes come) a fix that would start one
more waits for the history to pass the oldest. A fill once begun is finished whatever
`catch_up` says later: in order, the history would be covered by the present.

HTTP 400 (Traccar's answer to an unknown device; the test server's to a malformed position):
the last position the server accepted is sent again (a duplicate the filter drops). A 200
proves the device is known, so the fix itself was refused: it is quarantined (counted in
`tracker status`) and the rest goes on. A 400 again means the device is not registered: nothing
is quarantined, and the fix is retried with backoff until it is. 413 and 422 count as 400;
401/403 (a proxy's) stop this backend until restart; other 4xx and 5xx are retried.

Thread safety: a sender owns its Ledger and its HttpTransport; run it in its own thread.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from tracker.checks import FAIL, OK, SKIP, Check, Probe, unreachable
from tracker.fix import SAMPLE_KINDS, Sample
from tracker.senders.accuracy import DEFAULT_UERE_M, accuracy
from tracker.senders.base import SAME, Held, Marked, Sender
from tracker.senders.state import Migration, Pending, StateError, upgrade, with_pending_kind
from tracker.senders.transport import Rejected, SendError, Transient
from tracker.senders.wire import (
    LIVE_FIRST_AFTER_S,
    MAX_RUNS,
    ThinnedSettings,
    adjacent,
    due,
    is_finite,
    next_history,
    num,
    stored_runs,
    wire_time,
)
from tracker.store import StoredFix
from tracker.validate import nonempty_str, one_of, pos_float

if TYPE_CHECKING:
    from tracker.senders.http import HttpTransport

log = logging.getLogger(__name__)

NAME = "traccar"
CREDENTIAL = None  # no secret: the device id is an identifier, shown in `tracker status`
KNOTS_PER_MPS = 3600 / 1852
SAMPLE_MAX_AGE_S = 5.0  # a sensor reading older than this is not the rider's current one
SEND_SCOPES = ("all", "activities")
# live_first: a present position left unanswered by an outage further behind the newest than
# this goes after it, with the history (the mark: the present within 2 s).
PRESENT_LAG_S = 2


# --- encoding ------------------------------------------------------------------------------


def next_to_send(
    fixes: Sequence[StoredFix], last_time: int | None, min_interval_s: float = 1.0
) -> tuple[list[StoredFix], StoredFix | None]:
    """(the fixes covered without sending, the fix to send or None) from a batch in id order:
    the first fix at least `min_interval_s` (and at least one whole second) after `last_time`,
    the newest time the server acknowledged; every fix before it is covered by that time."""
    for i, f in enumerate(fixes):
        if due(wire_time(f.time), last_time, min_interval_s):
            return list(fixes[:i]), f
    return list(fixes), None


def current_samples(samples: Iterable[Sample], t: float) -> dict[str, float]:
    """Per kind, the value of the newest sample at most SAMPLE_MAX_AGE_S before `t` (and not
    after it)."""
    out: dict[str, tuple[float, float]] = {}
    for s in samples:
        if s.kind in SAMPLE_KINDS and t - SAMPLE_MAX_AGE_S <= s.time <= t and math.isfinite(
            s.value
        ) and (s.kind not in out or s.time >= out[s.kind][0]):  # fmt: skip
            out[s.kind] = (s.time, s.value)
    return {k: v for k, (_, v) in out.items()}


def position_params(
    fix: StoredFix,
    device_id: str,
    samples: Mapping[str, float] | None = None,
    uere_m: float = DEFAULT_UERE_M,
) -> dict[str, str]:
    """The OsmAnd query parameters of one fix (see the module docstring for each)."""
    p = {"id": device_id, "timestamp": str(wire_time(fix.time)),
         "lat": f"{fix.lat:.7f}", "lon": f"{fix.lon:.7f}"}  # fmt: skip
    if is_finite(fix.speed):
        p["speed"] = num(fix.speed * KNOTS_PER_MPS, 2)
    if is_finite(fix.course):
        p["bearing"] = num(fix.course, 1)
    if is_finite(fix.alt):
        p["altitude"] = num(fix.alt, 1)
    ha, _ = accuracy(fix, uere_m)
    if is_finite(ha):
        p["accuracy"] = num(ha, 1)
    if is_finite(fix.hdop):
        p["hdop"] = num(fix.hdop, 2)
    for kind in SAMPLE_KINDS:
        if samples and kind in samples:
            p[kind] = str(round(samples[kind]))
    return p


# --- the settings --------------------------------------------------------------------------


def _device_id(v: Any) -> str:
    text = nonempty_str(v)
    if any(c.isspace() for c in text):
        raise ValueError(f"a device identifier has no spaces, got {text!r}")
    return text


@dataclass(frozen=True)
class Settings(ThinnedSettings):
    """[traccar] (docs/traccar.md): the config section, and the sender's options.

    `send`: "all" (every stored fix, inside an activity or not: a fleet map shows parked units
    too) or "activities". `interval_s` is how long the sender waits when nothing is queued;
    `batch_max_points` how many fixes it reads from the store at a time (it sends one a
    request)."""

    KEYS: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "device_id": _device_id,
        "send": one_of(*SEND_SCOPES),
        "uere_m": pos_float,
    }

    CATCH_UP: ClassVar[tuple[str, ...]] = ("in_order", "live_first")  # docs: catching up
    REQUIRED: ClassVar[dict[str, str]] = {
        "url": "the Traccar server's OsmAnd address, e.g. http://traccar.example:5055/",
        "device_id": "the device's identifier in Traccar",
    }

    device_id: str = ""
    send: str = "all"
    uere_m: float = DEFAULT_UERE_M

    def scope(self) -> str:
        return self.send




@dataclass
class State:
    """[traccar] delivery state (tracker/senders/state.py).

    `pending` and `sent`: the position in flight and its exact parameters (a resend must be the
    same request, or the duplicate filter would not drop it). `last_time`: the newest time the
    server acknowledged (the device's latest position). `last_accepted`: that position's
    parameters, sent again to tell an unknown device from a refused fix.

    `catch_up = "live_first"` (module docstring): `runs`, the [first, last] seconds of each
    stretch sent ahead of the history, oldest first (empty: nothing out of order, the history
    is filled); `filled`, the newest history second sent (the history's thinning reference);
    `repeats`, history positions sent again after their reply was lost (each may be stored
    twice: the duplicate filter compares with the latest position only)."""

    # Version 0 (no "v"): the same keys, a marker without a kind. Version 1: no live_first keys.
    VERSION: ClassVar[int] = 2
    MIGRATIONS: ClassVar[dict[int, Migration]] = {
        0: lambda d: with_pending_kind(d, "position"),
        1: dict,
    }

    pending: Pending | None = None
    sent: dict[str, str] | None = None
    last_time: int | None = None
    last_accepted: dict[str, str] | None = None
    runs: list[list[int]] = field(default_factory=list)
    filled: int | None = None
    repeats: int = 0

    def to_json(self) -> dict[str, Any]:
        # Parameters as [key, value] pairs: the store sorts object keys, and a resend is to be
        # the same request, in the same order.
        return {"v": self.VERSION, "last_time": self.last_time,
                "last_accepted": _pairs(self.last_accepted),
                "pending": self.pending.to_json() if self.pending else None,
                "sent": _pairs(self.sent) if self.pending else None,
                "runs": self.runs, "filled": self.filled, "repeats": self.repeats}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> State:
        d = upgrade(d, NAME, cls.VERSION, cls.MIGRATIONS)
        last, filled = d.get("last_time"), d.get("filled")
        return cls(Pending.from_json(d.get("pending")), _params(d.get("sent")),
                   None if last is None else int(last), _params(d.get("last_accepted")),
                   stored_runs(d.get("runs"), NAME), None if filled is None else int(filled),
                   int(d.get("repeats") or 0))  # fmt: skip


def _pairs(params: Mapping[str, str] | None) -> list[list[str]] | None:
    return None if params is None else [[k, v] for k, v in params.items()]


def _params(value: Any) -> dict[str, str] | None:
    """Stored parameters ([key, value] pairs) back as a dict, in their order."""
    if not value:
        return None
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
        raise StateError(f"{NAME}: stored parameters that are not [key, value] pairs: {value!r}")
    return {str(k): str(v) for k, v in value}


class DeviceRefused(Transient):
    """HTTP 400 for a position and for the last one accepted: the device is not registered."""


# --- the transport -------------------------------------------------------------------------


def make_transport(settings: Settings, *, probe: bool = False) -> HttpTransport:
    """The sender's transport to `settings.url`, or `tracker doctor`'s (shorter timeouts)."""
    from tracker.senders.http import PROBE_CONNECT_S, PROBE_READ_S, HttpTransport

    connect, read = settings.connect_timeout_s, settings.read_timeout_s
    if probe:
        connect, read = min(connect, PROBE_CONNECT_S), min(read, PROBE_READ_S)
    # Traccar acknowledges a position with an empty 200; the device id is no secret.
    return HttpTransport(settings.url, None, None, connect_timeout_s=connect,
                         read_timeout_s=read, name=NAME, empty_ok=True, secret=None)  # fmt: skip


# --- the sender ----------------------------------------------------------------------------


class TraccarSender(Sender["State"]):
    """Delivers the store to a Traccar server, one position a request (module docstring)."""

    name = NAME
    auth_hint = ("OsmAnd has no login, so a proxy before the server refused the request: "
                 "check [traccar] url, then restart tracker")  # fmt: skip

    options: Settings
    transport: HttpTransport | None

    def __init__(self, *args: Any, **kw: Any) -> None:
        """Sender's arguments (options, stop, open_db, ...)."""
        super().__init__(*args, **kw)
        self.status.update(url=self.options.url, user=self.options.device_id)

    def open_transport(self) -> None:
        if self.transport is None:
            self.transport = make_transport(self.options)

    def _post(self, params: Mapping[str, str]) -> None:
        """One position; returns on HTTP 200 only (any body: Traccar may answer a command)."""
        assert self.transport is not None
        reply = self.transport.post(params, what="position")
        if reply.status != 200:
            raise Transient(f"{NAME} position: HTTP {reply.status}, not 200",
                            maybe_applied=True)  # fmt: skip

    def _samples(self, fix: StoredFix) -> dict[str, float]:
        assert self.store is not None
        return current_samples(self.store.samples_between(fix.time - SAMPLE_MAX_AGE_S, fix.time),
                               fix.time)  # fmt: skip

    def work(self) -> float:
        assert self.store is not None
        st = self.load_state(State)
        if st.pending is not None and self._overtaken(st, st.pending):
            # The present moved on while this one waited for its answer (an outage began
            # mid-request): the newest goes first, and the marked fix joins the history, to be
            # sent again, a repeat if it had arrived: counted.
            log.info("%s: the position of time %s waited out an outage; the newest goes first "
                     "and it follows with the history", NAME, st.pending.last_time)  # fmt: skip
            st.pending, st.sent = None, None
            st.repeats += 1
        self.status.repeats = st.repeats
        if self.reconcile(st, st):
            return 0.0
        if st.pending is not None:  # SAME: the very request again
            return self._send(st, st.pending, st.sent or {})
        o = self.options
        if o.catch_up == "live_first" or st.runs:
            newest = self.store.newest_pending(NAME)
            if newest is not None and self._goes_first(st, wire_time(newest.time)):
                return self._position(st, "live", newest)
        batch = self.store.next_batch(NAME, o.batch_max_points)
        self.status.phase = "sending" if batch else "idle"
        if not batch:
            if st.runs:  # nothing pending, none of it older: the history is filled
                st.runs, st.filled = [], None
                self.save_state(st)
            return o.interval_s
        if st.runs:  # live_first, the present sent: the history, oldest first
            covered, fix, st.runs, st.filled = next_history(batch, st.runs, st.filled,
                                                            o.min_point_interval_s)  # fmt: skip
            if not st.runs:
                log.info("%s: the history is filled in, sending in order again", NAME)
                st.filled = None
            return self._position(st, "history", fix, covered)
        covered, fix = next_to_send(batch, st.last_time, o.min_point_interval_s)
        older = sum(wire_time(f.time) < (st.last_time or 0) for f in covered)
        if older:  # GPS time went back: Traccar keeps the newest position as the device's
            self._limited.warning("older", "%s: %d fixes older than the newest position sent "
                                  "(time %s) were not sent", NAME, older,
                                  st.last_time)  # fmt: skip
        return self._position(st, "position", fix, covered)

    def _overtaken(self, st: State, pending: Pending) -> bool:
        """live_first: whether a present position left unanswered (kind "position" or
        "live") is more than PRESENT_LAG_S behind the newest pending fix while a backlog is
        there (a history being filled, or one spanning more than LIVE_FIRST_AFTER_S). A lost
        reply while live is resent as it was: the duplicate filter drops it."""
        if pending.kind == "history" or pending.last_time is None:
            return False
        if self.options.catch_up != "live_first" and not st.runs:
            return False
        assert self.store is not None
        newest = self.store.newest_pending(NAME)
        if newest is None or wire_time(newest.time) - pending.last_time <= PRESENT_LAG_S:
            return False
        oldest = self.store.next_batch(NAME, 1)
        return bool(st.runs) or (
            bool(oldest) and wire_time(newest.time) - wire_time(oldest[0].time) > LIVE_FIRST_AFTER_S
        )

    def _goes_first(self, st: State, t: int) -> bool:
        """live_first: whether the newest pending fix (at `t`) goes before the backlog: when
        it is due, and a history is being filled (the present stays first, unless the runs
        are at MAX_RUNS and it would start one more) or the backlog spans more than
        LIVE_FIRST_AFTER_S. A history being filled is filled whatever the mode now says."""
        o = self.options
        if not due(t, st.last_time, o.min_point_interval_s):
            return False
        if st.runs:
            return len(st.runs) < MAX_RUNS or adjacent(t, st.runs[-1][1], o.min_point_interval_s)
        if o.catch_up != "live_first":
            return False
        assert self.store is not None
        oldest = self.store.next_batch(NAME, 1)
        return bool(oldest) and t - wire_time(oldest[0].time) > LIVE_FIRST_AFTER_S

    def _position(
        self, st: State, kind: str, fix: StoredFix | None, covered: Sequence[StoredFix] = ()
    ) -> float:
        """Send `fix` as a `kind` position ("position": in order; "live": ahead of the
        history; "history"), the `covered` fixes acknowledged with its answer (one commit, not
        two: an SD card's writes are worth saving), or now when there is nothing to send."""
        ids = [f.id for f in covered]
        if fix is None:
            self.settle(st, ids)
            return 0.0
        o = self.options
        t = wire_time(fix.time)
        st.sent = position_params(fix, o.device_id, self._samples(fix), o.uere_m)
        return self._send(st, Pending(kind, t, t, fix.id), st.sent, ids)

    def _send(
        self, st: State, pending: Pending, params: dict[str, str], covered: Sequence[int] = ()
    ) -> float:
        """One position through the core's cycle; HTTP 200 settles the fixes, the cleared
        marker and the new newest time (or history reference) in one transaction."""
        assert pending.last_id is not None and pending.last_time is not None
        fix_id, t = pending.last_id, pending.last_time

        def accepted(_: None) -> list[int]:
            st.sent = None
            if pending.kind == "history":  # older than the latest: the map stays on it
                st.filled = t if st.filled is None else max(st.filled, t)
                return [*covered, fix_id]
            if pending.kind == "live":
                self._ran_ahead(st, t)
            st.last_time = t if st.last_time is None else max(st.last_time, t)
            st.last_accepted = params
            return [*covered, fix_id]

        refusals: list[str] = []

        def refused(reason: str) -> None:
            refusals.append(reason)
            self._refused(st, fix_id, t, reason, covered)

        self.deliver(st, st, pending, lambda: self._post(params), accepted, refused=refused)
        if refusals:  # quarantined
            return 0.0
        self.status.fixes_sent += 1
        self.succeeded()
        return 0.0

    def _ran_ahead(self, st: State, t: int) -> None:
        """A position at `t` sent ahead of the history was accepted: it extends the newest
        run, or starts one (the fixes between the two are history); the first run starts the
        fill, its history reference the newest time the server had before."""
        step = self.options.min_point_interval_s
        if st.runs and adjacent(t, st.runs[-1][1], step):
            st.runs[-1][1] = max(st.runs[-1][1], t)
            return
        if not st.runs:
            st.filled = st.last_time
            log.info("%s: the present (time %d) went first; the history follows, oldest "
                     "first ([%s] catch_up = \"live_first\")", NAME, t, NAME)  # fmt: skip
        st.runs.append([t, t])

    def server_has(self, st: State, holder: Marked, pending: Pending) -> Held:
        """A marker from a request whose answer never came: OsmAnd cannot be asked what
        arrived, but the same request again is dropped by the server's duplicate filter if
        the first one arrived (SAME). A marker without its request: the fix is encoded
        afresh (nothing acknowledged)."""
        if st.sent is None or pending.last_id is None or pending.last_time is None:
            return []
        if pending.kind == "history":
            # Older than the device's latest: the duplicate filter does not see it, so it is
            # stored twice if the first one arrived. Counted (tracker status).
            st.repeats += 1
            self.status.repeats = st.repeats
            log.info("%s: the history position of time %d may have arrived without its reply; "
                     "sending it again (a repeat if so)", NAME, pending.last_time)  # fmt: skip
            return SAME
        log.info("%s: the position of time %d may have arrived without its reply; sending it "
                 "again (the server's duplicate filter drops it if so)", NAME,
                 pending.last_time)  # fmt: skip
        return SAME

    def _refused(
        self, st: State, fix_id: int, t: int, reason: str, covered: Iterable[int] = ()
    ) -> None:
        """400/413/422 for the fix `fix_id`: quarantined if the server still accepts this
        device (the last accepted position, sent again, gets a 200), and `covered` (fixes
        before it, covered by what the server has) acknowledged; else retried."""
        st.pending, st.sent = None, None
        self.save_state(st)
        if not self._device_known(st):
            raise DeviceRefused(
                f"{NAME}: HTTP 400 for device {self.options.device_id!r}: is it registered in "
                "Traccar (Devices, identifier = [traccar] device_id)? Retrying; nothing is "
                "dropped"
            )
        self.quarantine(st, [fix_id], reason, acknowledge=covered)
        log.error("%s: the position of fix %d (time %d) was refused for good and is "
                  "quarantined: %s", NAME, fix_id, t, reason)  # fmt: skip

    def _device_known(self, st: State) -> bool:
        """Whether the server accepts this device now: the last accepted position, sent again
        (the duplicate filter drops it), answers 200. False if nothing was ever accepted."""
        if st.last_accepted is None or st.last_accepted.get("id") != self.options.device_id:
            return False
        try:
            self._post(st.last_accepted)
        except Rejected:
            return False
        self.succeeded()
        return True


SENDER = TraccarSender  # what tracker/backends.py builds for a [traccar] section


# --- tracker doctor ------------------------------------------------------------------------


def probe(settings: Settings) -> Probe:
    """`tracker doctor`: the URL answers like an OsmAnd endpoint. A request without a device id
    is the only harmless one (any position would be stored), and Traccar answers it 400;
    whether the device is registered cannot be asked without sending a position."""
    from tracker.senders.transport import Unreachable

    s = settings
    transport = make_transport(s, probe=True)
    try:
        transport.get({}, what="probe")
    except Unreachable as e:
        return Probe([unreachable(NAME, s.url, str(e), NAME)])
    except Rejected:
        pass  # 400: what Traccar's OsmAnd port answers a request without `id`
    except SendError as e:
        return Probe([Check(
            NAME, FAIL, f"{s.url}: {e}",
            "set [traccar] url to the server's OsmAnd port (5055 by default, "
            "e.g. http://traccar.example:5055/), not its web interface (8082)",
        )])  # fmt: skip
    else:
        return Probe([Check(
            NAME, FAIL, f"{s.url} accepted a request without a device id (Traccar answers 400)",
            "set [traccar] url to the server's OsmAnd port (5055 by default)",
        )])  # fmt: skip
    finally:
        transport.close()
    return Probe([
        Check(NAME, OK, f"{s.url} answers like Traccar's OsmAnd port"),
        Check(f"{NAME} device", SKIP,
              f"device {s.device_id!r} cannot be checked without sending a position: register "
              "it in Traccar, and set filter.duplicate (docs/traccar.md)"),
    ])  # fmt: skip
