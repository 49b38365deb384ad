"""The Map My Tracks sender: encoding, reply parsing, and the loop that delivers the store.

Protocol readings follow docs/mapmytracks.md. The pure functions at the top (encoding and
parsing) have no I/O; `MapMyTracksSender` below is the thread.

Delivery, per activity, oldest first (a later activity is not touched before the earlier one is
finished, so the parameterless stop_activity can only ever stop our own newest activity):

1. new: the state entry (token = the activity's uuid, made once by the store) is written before
   the first attempt. If the activity has ended and no start was ever sent, and
   offline_upload = "gpx", the whole activity goes as one upload_activity; else start_activity
   with the first batch. A start whose reply was lost is simply sent again with the same token
   and exactly the same points: the server answers the first activity's id and creates nothing.
2. started: update_activity with the next batch, one request in flight. Before each request a
   `pending` marker (first/last point time, last fix id) is committed; on success the batch is
   acknowledged and the marker cleared in one transaction. A marker still there on the next
   step (lost reply, a maybe-applied error, or a SIGKILL mid-request) means "ambiguous": the
   sender pages get_activity from the batch's first time, acknowledges the batch's fixes up to
   the newest time the server has, and sends only the rest.
3. ended and every fix settled: stop_activity, then the activity is finished (state entry
   dropped, `done_through` moved to its id). A stop refused because nothing is live counts as
   stopped (a retried stop whose first reply was lost gets exactly that answer).

Time is sent in whole seconds and at most one point per `min_point_interval_s` (the first fix of
each second at the default): the fixes thinned out are acknowledged with the batch that covers
them. Because sent times are strictly increasing, "the newest time the server has" identifies
exactly what of a batch arrived.

Thread safety: a sender owns its Ledger and its HttpTransport; run it in its own thread.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tracker import __version__
from tracker.fix import SAMPLE_KINDS, Sample
from tracker.plausible import finite
from tracker.senders.base import SAME, UNKNOWN, Held, Marked, Sender
from tracker.senders.settings import secret
from tracker.senders.state import Migration, Pending, StateError, upgrade, with_pending_kind
from tracker.senders.transport import Rejected, Reply, SendError, Transient
from tracker.senders.wire import ThinnedSettings, num, thin, wire_time
from tracker.store import Activity, StoredFix
from tracker.validate import nonempty_str, one_of, user_path

if TYPE_CHECKING:
    from tracker.checks import Probe
    from tracker.senders.http import HttpTransport

log = logging.getLogger(__name__)

NAME = "mapmytracks"
CREDENTIAL = "mapmytracks-password"
SOURCE = "tracker"
TITLE_MAX = 100
TAG_MAX = 50
PAGE_POINTS = 100  # get_activity returns at most this many points a page
MAX_PAGES = 1000  # a server that never says "complete" cannot keep a check going forever
TIME_CHECK_EVERY_S = 3600.0
TIME_CHECK_RETRY_S = 300.0


# --- encoding ------------------------------------------------------------------------------


def encode_points(fixes: Iterable[StoredFix]) -> str:
    """`lat lon alt time` per point, all space-separated (a missing altitude is sent as 0, and
    so is one that is not finite: a value an older release stored unchecked)."""
    return " ".join(
        f"{num(f.lat, 7)} {num(f.lon, 7)} {num(finite(f.alt) or 0.0, 1)} {wire_time(f.time)}"
        for f in fixes
    )


def encode_samples(samples: Iterable[Sample]) -> dict[str, str]:
    """hr/cad/pwr fields: `value time` pairs, whole numbers, the first sample of each second
    per kind. Kinds without samples are left out."""
    out: dict[str, list[str]] = {}
    last: dict[str, int] = {}
    for s in sorted(samples, key=lambda s: s.time):
        if s.kind not in SAMPLE_KINDS or not math.isfinite(s.value):
            continue
        t = wire_time(s.time)
        if last.get(s.kind) == t:
            continue
        last[s.kind] = t
        out.setdefault(s.kind, []).extend((str(round(s.value)), str(t)))
    return {k: " ".join(v) for k, v in out.items()}


def encode_tags(tags: Iterable[str]) -> str:
    """Comma-joined, no spaces added; each tag cut to 50 characters, commas removed."""
    clean = (t.replace(",", " ").strip()[:TAG_MAX].strip() for t in tags)
    return ",".join(t for t in clean if t)


def start_fields(
    activity: Activity,
    token: str,
    fixes: Sequence[StoredFix],
    samples: Iterable[Sample] = (),
    version: str = __version__,
) -> dict[str, str]:
    fields = {
        "request": "start_activity",
        "title": activity.title[:TITLE_MAX],
        "privacy": activity.privacy or "private",
        "activity": activity.type or "cycling",
        "source": SOURCE,
        "version": version,
        "unique_token": token,
        "points": encode_points(fixes),
    }
    tags = encode_tags(activity.tags)
    if tags:
        fields["tags"] = tags
    fields.update(encode_samples(samples))
    return fields


def update_fields(
    remote_id: int, fixes: Sequence[StoredFix], samples: Iterable[Sample] = ()
) -> dict[str, str]:
    fields = {
        "request": "update_activity",
        "activity_id": str(remote_id),
        "points": encode_points(fixes),
    }
    fields.update(encode_samples(samples))
    return fields


# --- replies -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed `<message>`: its direct children's text by tag (nested ones flattened into
    `items`, for get_activities)."""

    fields: dict[str, str]
    items: tuple[dict[str, str], ...] = ()

    @property
    def type(self) -> str | None:
        return self.fields.get("type")


def parse_reply(body: bytes, where: str = "reply", *, maybe_applied: bool = True) -> Message:
    """Parse a reply with defusedxml. Not XML, not a `<message>`, or a forbidden construct
    (entities, DTD): Transient. `<type>error</type>`: Rejected with the server's reason."""
    if not body.strip():
        raise Transient(f"{where}: empty reply", maybe_applied=maybe_applied)
    head = body[:256].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        raise Transient(f"{where}: HTML page instead of XML", maybe_applied=maybe_applied)
    # Loaded with the first reply: `tracker status` parses [mapmytracks] without it.
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, fromstring

    try:
        root = fromstring(body)
    except (ParseError, DefusedXmlException, ValueError, LookupError) as e:  # Lookup: encoding
        raise Transient(
            f"{where}: unreadable XML reply ({type(e).__name__}: {str(e)[:80]}); truncated?",
            maybe_applied=maybe_applied,
        ) from None
    if root.tag != "message":
        raise Transient(f"{where}: reply is <{root.tag}>, not <message>", maybe_applied=True)
    fields: dict[str, str] = {}
    items: list[dict[str, str]] = []
    for child in root:
        if len(child):
            for grandchild in child:
                if len(grandchild):
                    items.append({g.tag: (g.text or "").strip() for g in grandchild})
        fields[child.tag] = (child.text or "").strip()
    msg = Message(fields, tuple(items))
    if msg.type == "error":
        reason = " ".join(fields.get("reason", "").split()) or "no reason given"  # one line
        raise Rejected(f"{where}: server error: {reason[:200]}")
    return msg


def expect_type(msg: Message, wanted: str, where: str) -> Message:
    if msg.type != wanted:
        raise Transient(
            f"{where}: reply type {msg.type!r}, expected {wanted!r}", maybe_applied=True
        )
    return msg


def parse_activity_id(msg: Message, where: str) -> int:
    expect_type(msg, "activity_started", where)
    raw = msg.fields.get("activity_id", "")
    if not raw.isdigit():
        raise Transient(f"{where}: no activity_id in the reply", maybe_applied=True)
    return int(raw)


def parse_server_time(msg: Message, where: str = "get_time") -> int:
    raw = msg.fields.get("server_time", "")
    try:
        return int(float(raw))
    except (ValueError, OverflowError):  # OverflowError: "inf", "1e999"
        raise Transient(f"{where}: no server_time in the reply") from None


def parse_points(text: str) -> list[tuple[int, float, float, float]]:
    """get_activity's `<points>`: `time,lat,lon,alt` blocks separated by whitespace."""
    points = []
    for block in text.split():
        parts = block.split(",")
        try:
            t = int(float(parts[0]))
            lat, lon = float(parts[1]), float(parts[2])
            alt = float(parts[3]) if len(parts) > 3 and parts[3] else 0.0
        except (IndexError, ValueError, OverflowError):
            raise Transient(f"get_activity: unreadable point {block[:60]!r}") from None
        points.append((t, lat, lon, alt))
    return points


# --- the sender ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings(ThinnedSettings):
    """[mapmytracks] (docs/mapmytracks.md): the config section, and the sender's options."""

    KEYS: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "username": nonempty_str,
        "password": secret,
        "password_file": user_path,
        "offline_upload": one_of("gpx", "off"),
    }

    REQUIRED: ClassVar[dict[str, str]] = {"username": "the Map My Tracks account name"}
    SECRET: ClassVar[tuple[str, str] | None] = ("password", CREDENTIAL)

    url: str = "https://www.mapmytracks.com/api/"
    username: str = ""
    password: str = field(default="", repr=False)
    password_file: Path | None = None
    offline_upload: str = "gpx"





@dataclass
class ActivityState:
    """One activity on its way: its token (the activity's uuid, stored before the first
    attempt), how far it got, and the request in flight."""

    token: str
    phase: str = "new"  # new, started (live), uploaded
    remote_id: int | None = None
    last_time: int | None = None  # the newest point time on the server
    pending: Pending | None = None
    start_sent: bool = False  # a start may have reached the server: never upload it whole
    # The newest sample id when the last batch went: a sample stored after it for a second
    # already sent goes with the next batch. None (a state from before): from the next batch.
    samples_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "phase": self.phase, "remote_id": self.remote_id,
                "last_time": self.last_time, "start_sent": self.start_sent,
                "samples_id": self.samples_id,
                "pending": self.pending.to_json() if self.pending else None}  # fmt: skip


def _from_v0(d: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (no "v"): the same keys; an activity had no `samples_id` (unknown: late
    samples go from the next batch) and its marker no kind (an update)."""
    acts = d.get("activities") or {}
    if not isinstance(acts, dict):
        raise StateError(f"{NAME}: stored activities that are not an object: {acts!r}")
    return {**d, "activities": {
        k: {"samples_id": None, **with_pending_kind(a, "update")} if isinstance(a, dict) else a
        for k, a in acts.items()
    }}  # fmt: skip


@dataclass
class State:
    """[mapmytracks] delivery state (tracker/senders/state.py): every activity up to
    `done_through` is finished; those in `activities` are on their way, oldest first."""

    VERSION: ClassVar[int] = 1
    MIGRATIONS: ClassVar[dict[int, Migration]] = {0: _from_v0}

    done_through: int = 0
    activities: dict[int, ActivityState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        acts = {str(k): a.to_json() for k, a in self.activities.items()}
        return {"v": self.VERSION, "done_through": self.done_through, "activities": acts}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> State:
        d = upgrade(d, NAME, cls.VERSION, cls.MIGRATIONS)
        acts = {}
        for key, a in (d.get("activities") or {}).items():
            acts[int(key)] = ActivityState(
                token=str(a["token"]), phase=str(a.get("phase", "new")),
                remote_id=a.get("remote_id"), last_time=a.get("last_time"),
                pending=Pending.from_json(a.get("pending")),
                start_sent=bool(a.get("start_sent", False)),
                samples_id=a.get("samples_id"),
            )  # fmt: skip
        return cls(done_through=int(d.get("done_through", 0)), activities=acts)


class MapMyTracksSender(Sender["State"]):
    """Delivers every activity in the store to Map My Tracks (see the module docstring).

    `transport` is made in the thread from the config and the password unless given (tests
    give an HttpTransport to a test server, or a fake subclass).
    """

    name = NAME

    options: Settings
    transport: HttpTransport | None

    def __init__(self, *args: Any, **kw: Any) -> None:
        """Sender's arguments (options, stop, open_db, secret=<reads the password>, ...)."""
        super().__init__(*args, **kw)
        self._next_time_check = 0.0
        self._last_update = -math.inf
        self.status.update(url=self.options.url, user=self.options.username)

    # -- plumbing -------------------------------------------------------------------------

    def open_transport(self) -> None:
        if self.transport is not None:
            return
        o = self.options
        secret = self._secret() if self._secret else ""
        from tracker.senders.http import HttpTransport  # ssl: only for a running sender

        self.transport = HttpTransport(
            o.url,
            o.username,
            secret,
            connect_timeout_s=o.connect_timeout_s,
            read_timeout_s=o.read_timeout_s,
            name=NAME,
        )

    def _call(self, fields: dict[str, str], files: Any = None) -> Message:
        """One request: POST, parse, and on success reset the backoff."""
        assert self.transport is not None
        what = fields["request"]
        reply: Reply = self.transport.post(fields, files)
        msg = parse_reply(reply.body, f"{NAME} {what}")
        self.succeeded()
        return msg

    # -- one step -------------------------------------------------------------------------

    def work(self) -> float:
        assert self.store is not None
        if self.clock() >= self._next_time_check:
            self._check_time()
        st = self.load_state(State)
        aid = self._next_activity(st)
        if aid is None:
            self.status.update(activity_id=None, remote_activity_id=None, phase="idle")
            return self.options.interval_s
        a = self.store.activity(aid)
        ast = st.activities.get(aid)
        if ast is None:
            if a is None:  # pruned before we ever got to it
                return self._finish(st, aid, "pruned before it was sent")
            ast = st.activities[aid] = ActivityState(token=a.uuid)
            self.save_state(st)  # the token is stored before the first attempt
        self.status.update(activity_id=aid, remote_activity_id=ast.remote_id, phase=ast.phase)
        ended = a is None or not a.current
        if ast.phase == "new":
            if a is None:
                return self._finish(st, aid, "pruned before it was started")
            upload = self.options.offline_upload == "gpx" and not ast.start_sent
            if ended and upload:
                return self._upload(st, ast, a)
            return self._start(st, ast, a)
        return self._update(st, ast, aid, ended, a.started_at if a is not None else 0.0)

    def hold_back(self, before: float) -> int:
        """`history` within the ride in progress only: a ride that ended during the outage is
        completed as ever (its updates and stop, or its GPX upload), not left half sent."""
        assert self.store is not None
        current = next((a for a in reversed(self.store.activities()) if a.current), None)
        if current is None:
            return 0
        return self.store.hold_back(NAME, before, activity_id=current.id)

    def _next_activity(self, st: State) -> int | None:
        if st.activities:
            return min(st.activities)
        assert self.store is not None
        for a in self.store.activities():
            if a.id > st.done_through:
                return a.id
        return None

    def _finish(self, st: State, aid: int, how: str) -> float:
        st.activities.pop(aid, None)
        st.done_through = max(st.done_through, aid)
        self.save_state(st)
        log.info("%s: activity %d done (%s)", NAME, aid, how)
        self.status.update(activity_id=None, remote_activity_id=None, phase="idle")
        return 0.0

    def _batch(self, aid: int) -> list[StoredFix]:
        assert self.store is not None
        return self.store.next_batch(NAME, self.limit, activity_id=aid)

    def _samples(
        self, ast: ActivityState, t0: int, t1: int, since: float
    ) -> tuple[list[Sample], int]:
        """The samples for points in whole seconds [t0, t1], with those that came late for
        earlier seconds of the activity (from `since`); and the newest sample id."""
        assert self.store is not None
        return self.store.samples_for_batch(t0, t1 + 1, since, ast.samples_id)

    # -- start ----------------------------------------------------------------------------

    def _start(self, st: State, ast: ActivityState, a: Activity) -> float:
        batch = self._batch(a.id)
        pending = ast.pending
        if pending and pending.kind == "start" and pending.last_id is not None:
            # Resend exactly what the unanswered start carried: a token repeat adds nothing.
            batch = [f for f in batch if f.id <= pending.last_id] or batch
        if not batch:
            if not a.current:
                return self._finish(st, a.id, "nothing left to send")
            return self.options.interval_s
        kept = thin(batch, None, self.options.min_point_interval_s)
        t0, t1 = wire_time(kept[0].time), wire_time(kept[-1].time)
        samples, newest = self._samples(ast, wire_time(a.started_at), t1, a.started_at)
        fields = start_fields(a, ast.token, kept, samples)
        sent_before = ast.start_sent
        ast.start_sent = True

        def started(remote_id: int) -> list[int]:
            ast.phase, ast.remote_id, ast.last_time = "started", remote_id, t1
            ast.samples_id = newest
            return [f.id for f in batch]

        try:
            remote_id = self.deliver(
                st, ast, Pending("start", t0, t1, batch[-1].id),
                lambda: parse_activity_id(self._call(fields), f"{NAME} start_activity"),
                started, batch,
            )  # fmt: skip
        except SendError as e:
            if not e.maybe_applied and not sent_before:
                # The server surely never saw it (refused connection, 429/503): the ride has
                # still never been online, so if it ends so, it goes as one upload.
                ast.start_sent = False
                self.save_state(st)
            raise
        if remote_id is None:  # refused: narrowed down
            return 0.0
        self.grow()
        self._last_update = self.clock()
        self.status.update(remote_activity_id=remote_id, phase="started")
        log.info(
            "%s: activity %d started as %d (%d points)", NAME, a.id, remote_id, len(kept)
        )
        return 0.0

    # -- update ---------------------------------------------------------------------------

    def _update(
        self, st: State, ast: ActivityState, aid: int, ended: bool, since: float
    ) -> float:
        if self.reconcile(st, ast):
            return 0.0
        batch = self._batch(aid)
        if not batch:
            if ended:
                return self._stop(st, ast, aid)
            return self.options.interval_s
        wait = self._last_update + self.options.interval_s - self.clock()
        if not ended and len(batch) < self.limit and wait > 0 and not self.catching_up:
            return wait  # live: one update per interval, unless there is a backlog
        kept = thin(batch, ast.last_time, self.options.min_point_interval_s)
        ids = [f.id for f in batch]
        if not kept:  # all within the last interval sent: covered by it
            self.settle(st, ids)
            return 0.0
        t0, t1 = wire_time(kept[0].time), wire_time(kept[-1].time)
        window_start = t0 if ast.last_time is None else ast.last_time + 1
        samples, newest = self._samples(ast, window_start, t1, since)
        assert ast.remote_id is not None
        fields = update_fields(ast.remote_id, kept, samples)

        def updated(_: Message) -> list[int]:
            ast.last_time, ast.samples_id = t1, newest
            return ids

        if self.deliver(
            st, ast, Pending("update", t0, t1, batch[-1].id),
            lambda: expect_type(self._call(fields), "activity_updated",
                                f"{NAME} update_activity"),
            updated, batch,
        ) is None:  # fmt: skip
            return 0.0  # refused: narrowed down
        self.grow()
        self._last_update = self.clock()
        self.status.points_sent += len(kept)
        return 0.0

    def server_has(self, st: State, holder: Marked, pending: Pending) -> Held:
        """A request whose reply never came. A start is sent again as it was (SAME: its
        token makes a repeat add nothing); for an update, get_activity says up to which time
        the points arrived; for an upload, get_activities whether it is there."""
        assert self.store is not None and isinstance(holder, ActivityState)
        ast = holder
        aid = next(k for k, v in st.activities.items() if v is ast)
        if pending.kind == "upload":
            return self._upload_held(ast, aid)
        if pending.kind != "update":
            return SAME
        assert pending.first_time is not None and pending.last_time is not None
        assert ast.remote_id is not None and self.store is not None
        t0, t1, last_id = pending.first_time, pending.last_time, pending.last_id or 0
        try:
            have = self._server_times(ast.remote_id, t0, t1)
        except Rejected as e:
            log.warning("%s: cannot check activity %s (%s); resending", NAME, ast.remote_id, e)
            have = []
        if not have:
            log.info("%s: the unanswered update had not arrived; sending it again", NAME)
            return []
        batch = [f for f in self._batch(aid) if f.id <= last_id]
        newest = max(have)
        done = [f.id for f in batch if wire_time(f.time) <= newest]
        ast.last_time = newest if ast.last_time is None else max(ast.last_time, newest)
        # Its samples arrived with it: late ones count from now (an empty range gives the
        # newest sample id), or they would be sent again as late.
        _, ast.samples_id = self.store.samples_for_batch(0, 0, 0, None)
        self._last_update = self.clock()
        log.info(
            "%s: the unanswered update had arrived (%d of %d fixes); not resending them",
            NAME, len(done), len(batch),
        )  # fmt: skip
        return done

    def _server_times(self, remote_id: int, t0: int, t1: int) -> list[int]:
        """Point times the server has for the activity in [t0, t1], from get_activity pages."""
        times: list[int] = []
        from_time = t0
        for _ in range(MAX_PAGES):
            msg = self._call(
                {"request": "get_activity", "activity_id": str(remote_id),
                 "from_time": str(from_time)}  # fmt: skip
            )
            page = parse_points(msg.fields.get("points", ""))
            times.extend(p[0] for p in page if t0 <= p[0] <= t1)
            if not page or msg.fields.get("complete", "").lower() == "yes":
                break
            newest = max(p[0] for p in page)
            if newest >= t1 or len(page) < PAGE_POINTS:
                break
            from_time = newest + 1 if newest >= from_time else from_time + 1
        return times

    # -- stop -----------------------------------------------------------------------------

    def _stop(self, st: State, ast: ActivityState, aid: int) -> float:
        try:
            expect_type(self._call({"request": "stop_activity"}), "activity_stopped",
                        f"{NAME} stop_activity")  # fmt: skip
        except Rejected as e:
            # Nothing live: our earlier stop went through and its reply was lost.
            log.info("%s: stop_activity answered %s; taking it as stopped", NAME, e)
            self.succeeded()
        return self._finish(st, aid, f"stopped as {ast.remote_id}")

    # -- upload ---------------------------------------------------------------------------

    def _upload(self, st: State, ast: ActivityState, a: Activity) -> float:
        from tracker.export import write_gpx

        assert self.store is not None
        store = self.store
        where = f"{NAME} upload_activity"
        ids = self._uploadable(a.id)
        if not ids or not self._batch(a.id):
            return self._finish(st, a.id, "nothing left to upload")
        if self.reconcile(st, ast) and ast.phase == "uploaded":
            return self._finish(st, a.id, f"the unanswered upload had arrived as {ast.remote_id}")
        # else it did not arrive (the marker is dropped): uploaded again
        buf = io.StringIO()
        write_gpx(store, buf, [a.id], sent_only=True)
        gpx = buf.getvalue().encode("utf-8")
        fields = {
            "request": "upload_activity",
            "status": a.privacy or "private",
            "description": a.title[:TITLE_MAX],
            "activity": a.type or "cycling",
        }
        gpx_file = {"gpx_file": (f"{a.uuid}.gpx", gpx, "application/gpx+xml")}

        def uploaded(msg: Message) -> list[int]:
            # The id as <activity_id> (the test server's extension) or <id>; a real server
            # may send neither, and the upload still counts.
            raw = msg.fields.get("activity_id") or msg.fields.get("id") or ""
            ast.phase, ast.remote_id = "uploaded", int(raw) if raw.isdigit() else None
            return ids

        def refused(reason: str) -> None:
            ast.pending = None
            self.quarantine(st, [f.id for f in store.next_batch(NAME, len(ids) + 1, a.id)],
                            reason)  # fmt: skip
            self.succeeded()  # the server answered: the network is fine

        if self.deliver(
            st, ast, Pending("upload"),
            lambda: expect_type(self._call(fields, gpx_file), "success", where),
            uploaded, refused=refused,
        ) is None:  # fmt: skip
            return self._finish(st, a.id, "upload refused; quarantined")
        log.info("%s: activity %d uploaded whole (%d fixes, %d bytes of GPX)",
                 NAME, a.id, len(ids), len(gpx))  # fmt: skip
        return self._finish(st, a.id, f"uploaded as {ast.remote_id}")

    def _uploadable(self, aid: int) -> list[int]:
        """The ids an upload of the activity carries (its fixes that are not local-only)."""
        assert self.store is not None
        return [f.id for f in self.store.iter_fixes(aid) if not f.local]

    def _upload_held(self, ast: ActivityState, aid: int) -> Held:
        """After an upload whose reply was lost: its fixes if the server has it (the activity
        then counts as uploaded); else UNKNOWN, and it is uploaded again."""
        assert self.store is not None
        a = self.store.activity(aid)
        remote = None if a is None else self._find_uploaded(a)
        if remote is None:
            return UNKNOWN
        ast.phase, ast.remote_id = "uploaded", remote
        return self._uploadable(aid)

    def _find_uploaded(self, a: Activity) -> int | None:
        """After an upload whose reply was lost: an activity of ours with this title whose
        date lies within the ride is taken as that upload (upload has no unique token)."""
        lo = wire_time(a.started_at) - 2
        hi = wire_time(a.ended_at if a.ended_at is not None else a.started_at) + 2
        seen: set[int] = set()
        for _ in range(MAX_PAGES):
            # `offset` for a server that pages the list; one that does not sends it all at once
            # and then the same again, which ends the loop below.
            msg = self._call({"request": "get_activities", "author": self.options.username,
                              "offset": str(len(seen))})  # fmt: skip
            fresh = 0
            for item in msg.items:
                try:
                    date = int(item.get("date", ""))
                    remote = int(item.get("id", ""))
                except ValueError:
                    continue
                if remote in seen:
                    continue
                seen.add(remote)
                fresh += 1
                if item.get("title") == a.title[:TITLE_MAX] and lo <= date <= hi:
                    return remote
            if not fresh:
                return None
        return None

    # -- clock ----------------------------------------------------------------------------

    def _check_time(self) -> None:
        """get_time: log the server's clock against GPS time (the newest fix) and the system
        clock. Never blocks delivery: a failure other than the network's is logged and retried
        later; a network failure goes to the backoff like any other."""
        assert self.store is not None
        try:
            server = parse_server_time(self._call({"request": "get_time"}))
        except (Rejected, Transient) as e:
            log.warning("%s: get_time failed: %s", NAME, e)
            self._next_time_check = self.clock() + TIME_CHECK_RETRY_S
            return
        self._next_time_check = self.clock() + TIME_CHECK_EVERY_S
        system = server - self.wall()
        last = self.store.last_fix()
        gps = None if last is None else server - last.time
        self.status.update(clock_offset_system_s=round(system, 1),
                           clock_offset_gps_s=None if gps is None else round(gps, 1))  # fmt: skip
        if gps is None:
            log.info("%s: server clock %+.1f s from the system clock (no GPS fix yet)",
                     NAME, system)  # fmt: skip
        else:
            log.info(
                "%s: server clock %+.1f s from GPS time (newest fix), %+.1f s from the system "
                "clock", NAME, gps, system,
            )  # fmt: skip


def activity_done(state: dict[str, Any], activity_id: int) -> bool:
    """Whether this backend is finished with an activity (stopped, uploaded, or given up),
    from its stored state; for `tracker activities`."""
    st = State.from_json(state)
    return activity_id <= st.done_through and activity_id not in st.activities


SENDER = MapMyTracksSender  # what tracker/backends.py builds for a [mapmytracks] section


def probe(settings: Settings) -> Probe:
    """`tracker doctor`: the server answers get_time and accepts the credentials."""
    from tracker.checks import FAIL, OK, Check, Probe, unreachable  # doctor only
    from tracker.credentials import SecretError
    from tracker.senders.http import probe_transport
    from tracker.senders.transport import AuthFailed, Unreachable

    m = settings
    try:
        password = m.read_secret()
    except SecretError as e:
        return Probe([
            Check(
                NAME, FAIL, str(e),
                f"set password_file, or put the password in /etc/credstore/{CREDENTIAL} "
                "(mode 600) for the unit's LoadCredential=",
            )
        ])  # fmt: skip
    transport = probe_transport(m, NAME, m.username, password)
    try:
        sent_at = time.time()
        reply = transport.post({"request": "get_time"})
        server = parse_server_time(parse_reply(reply.body, "get_time"))
        offset = server - (sent_at + time.time()) / 2
    except AuthFailed as e:
        return Probe([
            Check(NAME, OK, f"{m.url} answers"),
            Check(
                f"{NAME} credentials", FAIL, f"{e}",
                f"check [mapmytracks] username ({m.username!r}) and the password",
            ),
        ])  # fmt: skip
    except Unreachable as e:
        return Probe([unreachable(NAME, m.url, str(e), NAME)])
    except SendError as e:
        return Probe([Check(NAME, FAIL, f"{m.url}: {e}", "check the url in [mapmytracks]")])
    finally:
        transport.close()
    return Probe(
        [
            Check(NAME, OK, f"{m.url} answers get_time"),
            Check(f"{NAME} credentials", OK, f"accepted for {m.username}"),
        ],
        server_offset_s=offset,
    )
