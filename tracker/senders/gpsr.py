"""The json-gpsr sender: encoding, reply parsing, and the loop that delivers the store.

Protocol readings follow docs/gpsr.md. The pure functions at the top (encoding and parsing)
have no I/O; `GpsrSender` below is the thread.

Encoding (one fix object per sent time):

- `t`: whole unix seconds of the GPS time (floor) by default; with `millis`, milliseconds
  (rounded, 13 digits) and every fix is sent. In seconds mode only the first fix of each second
  is sent, and the others of that second are acknowledged with it.
- `l` [lat, lon] as numbers, 7 decimals; `al` metres above mean sea level (omitted unknown).
- `ha`/`va`: 1-sigma accuracy in metres: from GST (ha = hypot(err_lat, err_lon), va = err_alt)
  when the receiver sent it, else HDOP x UERE and VDOP x UERE, UERE = `uere_m` (5 m: a typical
  single-frequency user range error, 1 sigma); omitted when unknown.
- `vv` = [speed m/s, course degrees true], only when the receiver gave both (RMC without a
  course, as many receivers send when standing still, gives no `vv` rather than a made-up 0).
- `tag`: `[gpsr] tag`, else the activity's title; `poi`: the `tracker poi` note.
- Stationary compression (`compress_stationary`): a run of consecutive fixes, each within the
  accuracy of the run's first one (distance <= the larger of their `ha`; exactly the same
  7-decimal position when neither is known), not moving (speed unknown or under 0.5 m/s), with
  the same tag and no point of interest after the first, is one object whose `t` is the
  ascending list of its times. The server acknowledges every time on its own.

Delivery (one request in flight):

1. At start, `/tt?token=` checks the token; false pauses this backend (one ERROR line, no
   retries until restart). A 403 from /input does the same.
2. A batch from the store (`next_batch`, this backend's own cursor and marks: another backend
   being down never holds this one back) is encoded and a `pending` marker (time range, last
   fix id) is committed, then POST /input. Only fixes whose time comes back in `fix_tlist`
   are acknowledged (per fix, out of order); the rest are offered again in the next batch.
   An `error` in the reply is logged once per kind and backed off (what was acknowledged
   alongside it is kept).
3. A marker still there at the next step (a lost reply, a maybe-applied error, a SIGKILL
   mid-request) is ambiguous: the sender asks `/f` (with the post token) for the fixes the
   server has in the batch's time range, acknowledges those, and sends only the rest. json-gpsr
   cannot deduplicate, so this check is what keeps a lost reply from making a duplicate.
4. The times acknowledged last are remembered (`recent`), so a fix of an already-sent second
   that was stored after its second was sent (a 10 Hz receiver, commits not aligned to
   seconds) is acknowledged with it rather than sent as a second fix at the same time.

A 400/413 refusal halves the batch until the one fix the server refuses is found; that fix is
quarantined (counted in `tracker status`) and the rest goes on. The same for an `error` reply
that leaves fixes unacknowledged (the reading's server refuses invalid fixes one by one, with
HTTP 200): several unacknowledged halve the batch; one time left unacknowledged by MAX_STRIKES
error replies in a row is quarantined. Unacknowledged without an `error` is only resent.

Thread safety: a sender owns its Ledger and its HttpTransport; run it in its own thread.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tracker.geo import EARTH_RADIUS_M
from tracker.senders.accuracy import DEFAULT_UERE_M, accuracy  # shared with [traccar]
from tracker.senders.base import Held, Marked, Sender
from tracker.senders.settings import SenderSettings, secret
from tracker.senders.state import Migration, Pending, upgrade, with_pending_kind
from tracker.senders.transport import AuthFailed, Rejected, SendError, Transient
from tracker.senders.wire import is_finite, wire_time
from tracker.store import StoredFix
from tracker.validate import boolean, pos_float, user_path

if TYPE_CHECKING:
    from tracker.checks import Probe
    from tracker.senders.http import HttpTransport

log = logging.getLogger(__name__)

NAME = "gpsr"
CREDENTIAL = "gpsr-token"
TAG_MAX = 100  # [gpsr] tag: as long as an activity title may be
STATIONARY_SPEED_MS = 0.5
RECENT_TIMES = 256  # acknowledged times remembered for stragglers of an already-sent second
MAX_STRIKES = 5  # error replies that leave the same single time unacknowledged: quarantined
PAGE_FIXES = 100  # /f page size asked for
MAX_PAGES = 1000  # a server that always says "more" cannot keep a check going forever


# --- encoding ------------------------------------------------------------------------------


def fix_object(
    fix: StoredFix,
    t: int | list[int],
    *,
    tag: str | None = None,
    poi: str | None = None,
    uere_m: float = DEFAULT_UERE_M,
) -> dict[str, Any]:
    """One json-gpsr fix object (see the module docstring for each field)."""
    obj: dict[str, Any] = {"t": t, "l": [round(fix.lat, 7), round(fix.lon, 7)]}
    if is_finite(fix.alt):
        obj["al"] = round(fix.alt, 1)
    ha, va = accuracy(fix, uere_m)
    if is_finite(ha):
        obj["ha"] = round(ha, 1)
    if is_finite(va):
        obj["va"] = round(va, 1)
    if is_finite(fix.speed) and is_finite(fix.course):
        obj["vv"] = [round(fix.speed, 2), round(fix.course, 1)]
    if tag:
        obj["tag"] = tag
    if poi:
        obj["poi"] = poi
    return obj


def distance_m(a: StoredFix, b: StoredFix) -> float:
    """Ground distance (equirectangular: exact enough for metres apart)."""
    lat = math.radians((a.lat + b.lat) / 2)
    dx = math.radians(b.lon - a.lon) * math.cos(lat)
    dy = math.radians(b.lat - a.lat)
    return EARTH_RADIUS_M * math.hypot(dx, dy)


@dataclass
class _Entry:
    """One sent time: its first fix (the one encoded) and every fix it covers."""

    t: int
    fix: StoredFix
    ids: list[int]
    poi: str | None
    tag: str | None


@dataclass
class Batch:
    """What one POST carries: the fix objects, and for each sent time the stored fix ids its
    acknowledgement settles. `covered`: ids settled already (their time was acknowledged
    before) that need no sending."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    ids_by_time: dict[int, list[int]] = field(default_factory=dict)
    covered: list[int] = field(default_factory=list)

    @property
    def times(self) -> list[int]:
        return sorted(self.ids_by_time)

    def acknowledged(self, times: Iterable[int]) -> list[int]:
        """The fix ids settled by these acknowledged times (unknown times are ignored)."""
        return [i for t in set(times) for i in self.ids_by_time.get(t, ())]


def _stationary(f: StoredFix) -> bool:
    return f.speed is None or not math.isfinite(f.speed) or f.speed < STATIONARY_SPEED_MS


def _same_place(a: _Entry, b: _Entry, uere_m: float) -> bool:
    if a.tag != b.tag or b.poi or not (_stationary(a.fix) and _stationary(b.fix)):
        return False
    radius = max((h for h in (accuracy(a.fix, uere_m)[0], accuracy(b.fix, uere_m)[0])
                  if is_finite(h)), default=None)  # fmt: skip
    if radius is None:
        return (round(a.fix.lat, 7), round(a.fix.lon, 7)) == (
            round(b.fix.lat, 7),
            round(b.fix.lon, 7),
        )
    return distance_m(a.fix, b.fix) <= radius


def encode_batch(
    fixes: Sequence[StoredFix],
    *,
    tags: Mapping[int | None, str | None] | Callable[[StoredFix], str | None] = {},  # noqa: B006
    millis: bool = False,
    uere_m: float = DEFAULT_UERE_M,
    compress: bool = False,
    acked_times: Iterable[int] = (),
) -> Batch:
    """Encode fixes (ascending id) for one POST.

    Fixes that share a sent time are one entry (its first fix is sent; a point of interest on
    any of them goes with it). A fix whose time is in `acked_times` goes to `covered`. `tags`
    maps an activity id to its tag (or is a function of the fix).
    """
    tag_of = tags if callable(tags) else (lambda f: tags.get(f.activity_id))
    done = set(acked_times)
    batch = Batch()
    entries: dict[int, _Entry] = {}
    order: list[_Entry] = []
    for f in fixes:
        t = wire_time(f.time, millis)
        if t in done:
            batch.covered.append(f.id)
            continue
        e = entries.get(t)
        if e is None:
            e = entries[t] = _Entry(t, f, [f.id], f.poi, tag_of(f))
            order.append(e)
        else:
            e.ids.append(f.id)
            e.poi = e.poi or f.poi
    groups: list[list[_Entry]] = []
    for e in order:
        if compress and groups and e.t > groups[-1][-1].t and _same_place(groups[-1][0], e, uere_m):
            groups[-1].append(e)
        else:
            groups.append([e])
    for g in groups:
        first = g[0]
        sent: int | list[int] = first.t if len(g) == 1 else [e.t for e in g]
        batch.objects.append(
            fix_object(first.fix, sent, tag=first.tag, poi=first.poi, uere_m=uere_m)
        )
        for e in g:
            batch.ids_by_time[e.t] = e.ids
    return batch


def encode_fixes(objects: Sequence[dict[str, Any]]) -> str:
    """The `fixes` form field."""
    return json.dumps(list(objects), separators=(",", ":"), allow_nan=False)


# --- replies -------------------------------------------------------------------------------


class ServerError(Transient):
    """The server answered with an `error`; `kind` is its text, for once-per-kind logging."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class InputReply:
    times: frozenset[int]
    error: str | None = None


def _json_object(body: bytes, where: str, *, maybe_applied: bool) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # Recursion: deep arrays
        raise Transient(
            f"{where}: unreadable JSON reply ({type(e).__name__}); truncated?",
            maybe_applied=maybe_applied,
        ) from None
    if not isinstance(doc, dict):
        raise Transient(f"{where}: reply is not a JSON object", maybe_applied=maybe_applied)
    return doc


def _times(value: Any) -> Iterable[int]:
    """Integers from a `t` or a `fix_tlist` entry: numbers, numeric strings, lists of them."""
    if isinstance(value, list):
        for v in value:
            yield from _times(v)
        return
    if isinstance(value, bool):
        return
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return
    if isinstance(value, int):  # any size: math.isfinite() overflows on a huge int
        yield value
    elif isinstance(value, float) and math.isfinite(value) and value == int(value):
        yield int(value)


def _error_text(doc: Mapping[str, Any]) -> str | None:
    err = doc.get("error")
    if err is None or err is False or err == "":
        return None
    return " ".join(str(err).split())[:200] or "(blank)"  # one line, for messages and logs


def parse_input_reply(body: bytes, where: str = "input") -> InputReply:
    """The /input reply: the acknowledged times (`fix_tlist`) and the server's `error`."""
    doc = _json_object(body, where, maybe_applied=True)
    return InputReply(frozenset(_times(doc.get("fix_tlist") or [])), _error_text(doc))


def parse_token_test(body: bytes, where: str = "tt") -> bool:
    doc = _json_object(body, where, maybe_applied=False)
    result = doc.get("result")
    if not isinstance(result, bool):
        raise Transient(f"{where}: no result in the reply")
    return result


@dataclass(frozen=True, slots=True)
class FixPage:
    times: tuple[int, ...]
    more: bool
    offset: Any


def parse_fix_page(body: bytes, where: str = "f") -> FixPage:
    """A /f (fixes) page: the `t` of every fix in it (a list `t` gives all its times)."""
    doc = _json_object(body, where, maybe_applied=False)
    if doc.get("found") is False:  # nothing matched (the reading's server adds an error)
        return FixPage((), False, None)
    err = _error_text(doc)
    if err is not None:
        raise Rejected(f"{where}: server error: {err}")
    data = doc.get("data")
    times: list[int] = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict):
            times.extend(_times(item.get("t")))
    return FixPage(tuple(times), bool(doc.get("more")), doc.get("offset"))


# --- the sender ----------------------------------------------------------------------------


def _tag(v: Any) -> str:
    if not isinstance(v, str) or len(v) > TAG_MAX:
        raise ValueError(f"expected a string of at most {TAG_MAX} characters, got {v!r}")
    return v.strip()


@dataclass(frozen=True)
class Settings(SenderSettings):
    """[gpsr] (docs/gpsr.md): the config section, and the sender's options. `tag` None: each
    activity's title; "": none."""

    KEYS: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "token": secret,
        "token_file": user_path,
        "millis": boolean,
        "compress_stationary": boolean,
        "tag": _tag,
        "uere_m": pos_float,
    }

    REQUIRED: ClassVar[dict[str, str]] = {"url": "the json-gpsr server, e.g. https://gpsr.example/"}
    SECRET: ClassVar[tuple[str, str] | None] = ("token", CREDENTIAL)

    token: str = field(default="", repr=False)
    token_file: Path | None = None
    millis: bool = False
    compress_stationary: bool = False
    tag: str | None = None
    uere_m: float = DEFAULT_UERE_M





@dataclass
class State:
    """[gpsr] delivery state (tracker/senders/state.py): the post in flight, and the newest
    times the server acknowledged (a stationary fix is compressed against them)."""

    # Version 0 (no "v"): the same keys, a marker without a kind (posts were all there was).
    VERSION: ClassVar[int] = 1
    MIGRATIONS: ClassVar[dict[int, Migration]] = {0: lambda d: with_pending_kind(d, "post")}

    pending: Pending | None = None
    recent: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"v": self.VERSION, "recent": self.recent,
                "pending": self.pending.to_json() if self.pending else None}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> State:
        d = upgrade(d, NAME, cls.VERSION, cls.MIGRATIONS)
        return cls(Pending.from_json(d.get("pending")),
                   [int(t) for t in d.get("recent") or []])  # fmt: skip


class GpsrSender(Sender["State"]):
    """Delivers every fix in the store to a json-gpsr server (see the module docstring).

    `transport` is made in the thread unless given; `secret` is called there too (it reads the
    token from the config, the token file or the systemd credential).
    """

    name = NAME
    auth_hint = (
        f'set a valid "post" token ([gpsr] token, token_file or the credential {CREDENTIAL}), '
        "then restart tracker"
    )

    options: Settings
    transport: HttpTransport | None

    def __init__(self, *args: Any, **kw: Any) -> None:
        """Sender's arguments (options, stop, open_db, secret=<reads the token>, ...)."""
        super().__init__(*args, **kw)
        self._token = ""
        self._token_ok = False
        self._last_post = -math.inf
        self._tags: dict[int | None, str | None] = {}
        self._strikes: dict[int, int] = {}  # sent time -> error replies that left it out
        self.status.update(url=self.options.url)

    # -- plumbing -------------------------------------------------------------------------

    def open_transport(self) -> None:
        assert self._secret is not None
        self._token = self._secret()
        if self.transport is not None:
            return
        o = self.options
        from tracker.senders.http import HttpTransport  # ssl: only for a running sender

        self.transport = HttpTransport(
            o.url,
            None,
            None,
            connect_timeout_s=o.connect_timeout_s,
            read_timeout_s=o.read_timeout_s,
            name=NAME,
        )

    def _scrub(self, e: SendError) -> SendError:
        """The token may sit in a URL (GET /tt, /f): keep it out of every message."""
        if self._token and self._token in str(e):
            e.args = (str(e).replace(self._token, "<token>"),)
        return e

    def _get(self, path: str, params: dict[str, str]) -> bytes:
        assert self.transport is not None
        try:
            return self.transport.get({**params, "token": self._token}, path=path,
                                      what=f"/{path}").body  # fmt: skip
        except SendError as e:
            raise self._scrub(e) from None

    def _post_input(self, objects: Sequence[dict[str, Any]]) -> bytes:
        assert self.transport is not None
        fields = {"fixes": encode_fixes(objects), "token": self._token}
        try:
            return self.transport.post(fields, path="input", what="/input").body
        except SendError as e:
            raise self._scrub(e) from None

    @staticmethod
    def _remember(st: State, times: Iterable[int]) -> None:
        """Keep the newest acknowledged times (a straggler of an already-sent second is
        covered by them)."""
        new = set(times)
        if new:
            st.recent = sorted(set(st.recent) | new)[-RECENT_TIMES:]

    def _tag_map(self, fixes: Sequence[StoredFix]) -> dict[int | None, str | None]:
        """Activity id -> tag: `[gpsr] tag`, else the activity's title (cached)."""
        assert self.store is not None
        for aid in {f.activity_id for f in fixes} - self._tags.keys():
            if self.options.tag is not None:
                self._tags[aid] = self.options.tag or None
            else:
                a = None if aid is None else self.store.activity(aid)
                self._tags[aid] = (a.title or None) if a is not None else None
        return self._tags

    def _encode(self, st: State, fixes: Sequence[StoredFix]) -> Batch:
        o = self.options
        return encode_batch(fixes, tags=self._tag_map(fixes), millis=o.millis, uere_m=o.uere_m,
                            compress=o.compress_stationary,
                            acked_times=st.recent)  # fmt: skip

    # -- one step -------------------------------------------------------------------------

    def work(self) -> float:
        assert self.store is not None
        if not self._token_ok and not self._check_token():
            return self.options.interval_s
        st = self.load_state(State)
        if self.reconcile(st, st):
            return 0.0
        batch = self.store.next_batch(NAME, self.limit)
        self.status.phase = "idle" if not batch else "sending"
        if not batch:
            return self.options.interval_s
        wait = self._last_post + self.options.interval_s - self.clock()
        if len(batch) < self.limit and wait > 0 and not self.catching_up:
            return wait  # live: one post per interval, unless there is a backlog
        enc = self._encode(st, batch)
        if not enc.objects:
            self.settle(st, enc.covered)
            return 0.0
        times = enc.times

        def acknowledged(reply: InputReply) -> list[int]:
            acked = sorted(reply.times & set(times))
            self._remember(st, acked)
            return enc.covered + enc.acknowledged(acked)

        reply = self.deliver(
            st, st, Pending("post", times[0], times[-1], batch[-1].id),
            lambda: parse_input_reply(self._post_input(enc.objects), f"{NAME} /input"),
            acknowledged, batch,
        )  # fmt: skip
        if reply is None:  # refused: narrowed down
            return 0.0
        self._last_post = self.clock()
        acked = sorted(reply.times & set(times))
        self.status.fixes_sent += len(acked)
        for t in acked:
            self._strikes.pop(t, None)
        if reply.error is not None:
            self._server_refused(st, enc, sorted(set(times) - set(acked)), reply.error)
            raise ServerError(f"{NAME} /input: server error: {reply.error} "
                              f"({len(acked)} of {len(times)} acknowledged)",
                              kind=reply.error)  # fmt: skip
        if not acked:
            raise Transient(f"{NAME} /input: none of {len(times)} fixes acknowledged")
        if len(acked) < len(times):
            log.info("%s: %d of %d fixes acknowledged; the rest are sent again", NAME,
                     len(acked), len(times))  # fmt: skip
        self.grow()
        self.succeeded()
        return 0.0

    def _check_token(self) -> bool:
        """/tt: False (and this backend paused) when the server says the token is not valid."""
        ok = parse_token_test(self._get("tt", {}), f"{NAME} /tt")
        self.succeeded()
        if not ok:
            self._disable(
                "the json-gpsr server says the token is invalid or expired (/tt); set a valid "
                f'"post" token ([gpsr] token, token_file or the credential {CREDENTIAL}) and '
                "restart tracker",
                auth=True,
            )
            return False
        self._token_ok = True
        log.info("%s: token accepted by %s", NAME, self.options.url)
        return True

    def _server_refused(self, st: State, enc: Batch, missing: list[int], error: str) -> None:
        """An `error` reply left `missing` unacknowledged: narrow down, then quarantine."""
        assert self.store is not None
        if len(missing) > 1:
            self.limit = max(1, len(enc.acknowledged(missing)) // 2)
            return
        if not missing:
            return
        t = missing[0]
        self._strikes[t] = self._strikes.get(t, 0) + 1
        if self._strikes[t] < MAX_STRIKES:
            return
        del self._strikes[t]
        reason = f"{NAME} /input: time {t} refused {MAX_STRIKES} times: {error}"
        self.quarantine(st, enc.acknowledged([t]), reason)
        log.error("%s: quarantined the fixes of time %d: %s", NAME, t, reason)

    def server_has(self, st: State, holder: Marked, pending: Pending) -> Held:
        """The last post's reply never came: the fixes of it that /f says arrived."""
        assert self.store is not None
        assert pending.first_time is not None and pending.last_time is not None
        most = max(self.options.batch_max_points, self.options.catch_up_max_points)
        batch = [f for f in self.store.next_batch(NAME, most)
                 if f.id <= (pending.last_id or 0)]  # fmt: skip
        if not batch:
            return []
        enc = self._encode(st, batch)
        try:
            have = self._server_times(pending.first_time, pending.last_time)
        except (AuthFailed, Rejected) as e:
            self._limited.warning("check", "%s: cannot check what arrived (%s); resending",
                                  NAME, e)  # fmt: skip
            have = set()
        acked = sorted(have & set(enc.times))
        self._remember(st, acked)
        log.info("%s: the unanswered post had %d of its %d times on the server; the rest are "
                 "sent again", NAME, len(acked), len(enc.times))  # fmt: skip
        return enc.covered + enc.acknowledged(acked)

    def _server_times(self, t0: int, t1: int) -> set[int]:
        """Times the server has in [t0, t1] (as sent), paged from /f with the post token. The
        range in `q` is in seconds (docs/gpsr.md: the server filters in seconds)."""
        lo, hi = (t0 // 1000, -(-t1 // 1000)) if self.options.millis else (t0, t1)
        times: set[int] = set()
        offset: Any = None
        for _ in range(MAX_PAGES):
            params = {"p": "true", "l": str(PAGE_FIXES), "q": f"r=[{lo},{hi}];ft=b", "tf": "t",
                      "d": "asc"}  # fmt: skip
            if offset is not None:
                params["o"] = str(offset)
            page = parse_fix_page(self._get("f", params), f"{NAME} /f")
            times.update(page.times)
            if not page.more or page.offset is None or page.offset == offset:
                break
            offset = page.offset
        self.succeeded()
        return times


TOKEN_FIX = (
    'create a "post" token on the json-gpsr server\'s user page (valid from now, for as long '
    f"as you ride) and set [gpsr] token or token_file (or the credential {CREDENTIAL}), then "
    "systemctl restart tracker"
)


def probe(settings: Settings) -> Probe:
    """`tracker doctor`: the server answers `/tt` and says the token is valid now (never
    shows it)."""
    from tracker.checks import FAIL, OK, Check, Probe, unreachable  # doctor only
    from tracker.credentials import SecretError
    from tracker.senders.http import probe_transport
    from tracker.senders.transport import Unreachable

    g = settings
    try:
        token = g.read_secret()
    except SecretError as e:
        return Probe([Check(f"{NAME} token", FAIL, str(e), TOKEN_FIX)])

    def scrub(text: str) -> str:  # the token travels in the /tt URL: keep it out of messages
        return text.replace(token, "<token>")

    transport = probe_transport(g, NAME)
    try:
        valid = parse_token_test(transport.get({"token": token}, path="tt", what="/tt").body,
                                 f"{NAME} /tt")  # fmt: skip
    except Unreachable as e:
        return Probe([unreachable(NAME, g.url, scrub(str(e)), NAME)])
    except SendError as e:
        return Probe([
            Check(
                NAME, FAIL, f"{g.url}: {scrub(str(e))}",
                "check the url in [gpsr]: it is the server's base URL (the one whose /tt and "
                "/input answer)",
            )
        ])  # fmt: skip
    finally:
        transport.close()
    answers = Check(NAME, OK, f"{g.url} answers /tt")
    if not valid:
        return Probe([
            answers,
            Check(
                f"{NAME} token", FAIL,
                "the server says the token is unknown, expired or not valid yet (/tt)",
                TOKEN_FIX,
            ),
        ])  # fmt: skip
    # /tt says "valid now" for a token of any type; only a "post" token may send.
    valid_now = Check(f"{NAME} token", OK, 'valid now (/tt; it must be a "post" token)')
    return Probe([answers, valid_now])


SENDER = GpsrSender  # what tracker/backends.py builds for a [gpsr] section
