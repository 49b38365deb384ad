"""A json-gpsr-compatible HTTP server for tests and the demo (standard library only).

It implements the json-gpsr requests as read in `docs/gpsr.md` (`/input`, `/j`, `/f`, `/t`,
`/tt`, `/mk_t`, `/rm_t`, `/up_t`, and `/g`), keeps its state in memory, records every request
(named by its path, e.g. `server.count("/input", processed=True)`) and injects network faults
(`tracker.testing.faults`). Readings beyond that table, all chosen as what a real server most
likely does (the ones a sender can observe are also rows of the table):

- Token `type_number` is the 0-based position in the seed's list: curpos 0, auto_curpos 1,
  search 2, post 3 (this reconciles the list, which numbers post 4, with the `/t` example,
  which shows post as 3). A token is valid while `begin <= now < end`; a token whose `end` has
  passed is deleted at the start of the next request (and by the inspection methods), so it is
  then simply unknown.
- `/input`: POST only (a GET is 405). Only a valid "post" token authorises it; basic auth alone
  does not. Missing, unknown, expired, not-yet-valid or wrong-type token: HTTP 403 with
  `{"error": ...}`, nothing stored.
- `/input` validation is per fix: valid fixes are stored and acknowledged, every invalid one is
  refused and named in `error` ("fix 2: missing l; fix 5: ..."), HTTP 200. A `fixes` that is
  missing, not JSON or not a list refuses the whole request: `{"error": ..., "fix_tlist": []}`.
  A fix must be an object with `t` and `l`. `t` is a whole number >= 0 (a JSON integer or a
  string of digits; more than 11 digits means milliseconds) or a non-empty list of them; a
  float, a bool or a negative number is refused. `l` is `[lat, lon]`, numbers or numeric
  strings, finite, within -90..90 / -180..180. `al`, `ha`, `va` are numbers or numeric strings,
  `vv` a list of two; `tag` and `poi` strings; `t_i` is refused ("internally calculated"). Other
  keys are ignored.
- A fix whose `t` is a list is stored as one fix per time (same position and attributes), so
  `/f` pages, counts and filters every time on its own. `fix_tlist` repeats each time exactly as
  posted (a string stays a string), in posted order.
- A fix with a time the user already has (same instant in seconds) is stored again; it is a
  duplicate, listed by `server.duplicates(user)`.
- `t_i` is the whole second of the server clock at receipt. A stored fix keeps `t` as posted
  (milliseconds stay milliseconds) but is filtered, sorted and binned in seconds.
- Partial acknowledgement (`server.partial_ack`, default None = all): a share 0..1 stores and
  acknowledges a seeded random subset of ceil(share * n) of the n valid times of a request
  (gaps included, order kept); a predicate `f(fix) -> bool` gets each valid fix with `t` the
  single time as posted and decides alone. The others are dropped silently (no `error`).
- Storing at least one fix creates the user's "auto_curpos" token (begin now, end now + 1 h),
  or moves the end of the existing one to now + 1 h. `meta.view_url` is `/j?token=<its key>`.
- `/j` is the last fix *entered* (the latest stored, whatever its `t`, as the seed says); with a
  search token, the last one its query matches. Nothing: `{"found": false, "error": "no fix"}`.
- `/j`, `/f`, `/g` take a `token` of any type, else basic auth as the user. A `token` that is
  not valid now is 403, whatever the basic auth says.
- `/f`: `p` defaults to true; `l` defaults to 100 and is capped at 1000; `o` defaults to 0;
  `d` asc (default) or desc, ties in the order entered; `tf` is `t` (default) or `readtime`;
  `q` is unescaped once more when it still holds `%` escapes (the seed's `escape()`), then is
  `;`-separated `key=value`: `r=` an interval whose ends may be empty (unbounded), `ft=` b (every
  fix: "both" naked and marked), t (tagged), p (with a poi), n (neither). Unknown keys or values
  are an error, HTTP 200 `{"error": ...}`. A search token's stored `tf`, `q`, `l`, `d` replace
  the request's. The reply always has `offset` and `more`; nothing found is
  `{"found": false, "error": "no fixes", "offset": o, "more": false}`.
- `/f` stats (`p=false`) page over fixes exactly like `p=true` (the same `l`/`o`), and count the
  page: per 300 s period (of `t`, or of `t_i` with `tf=readtime`) one count per tag name, "POI"
  for fixes with a poi, "naked fixes" for fixes with neither (a fix with both counts in both).
- `rm=true` removes the fixes of the page it reports (then the next `o` is the same `o`, and
  `more` tells whether matching fixes remain). It needs POST (a GET is 405), `p=false` (else an
  error), and basic auth as the user (any token: 403).
- `/t` lists the user's unexpired tokens (not-yet-valid ones too) as a JSON array ordered by id;
  a search token adds `params`. `/tt` needs no auth; a missing token is `{"result": false}`.
- `/mk_t`, `/rm_t`, `/up_t`: POST with basic auth. `/mk_t` needs `t` (curpos, search or post:
  auto_curpos is the server's), `b` and `e` (whole seconds, `e > b`); a search token takes
  `tf`, `q`, `l`, `d`, validated like `/f`. `/up_t` needs `k`, `b`, `e`. Failures are HTTP 400
  (bad parameters) or 404 (no such token of this user) with `{"error": ...}`; success is 200
  with the token (`/rm_t`: `{"result": true}`), or, when `r` is given, a 200 HTML page that
  redirects to `r` (the seed's "HTML redirect ... after the HTTP 200").
- Every reply is JSON (`application/json`), or JSONP with `callback` (checked to be a dotted
  JavaScript identifier, else 400). Bad or missing basic auth where it is needed: 401 with
  `WWW-Authenticate: Basic realm="json-gpsr"`. Unknown path: 404.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import hmac
import html
import json
import logging
import math
import random
import re
import secrets
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tracker.testing.faults import (
    Call,
    Faults,
    FaultyServer,
    Reply,
    RequestLog,
    add_fault_arguments,
    faults_from_args,
    parse_form,
    run_in_foreground,
    seeded,
)

log = logging.getLogger(__name__)

REALM = "json-gpsr"
#: Token types; `type_number` is the index.
TOKEN_TYPES = ("curpos", "auto_curpos", "search", "post")
#: Token types `/mk_t` makes (auto_curpos is the server's own).
MADE_TYPES = ("curpos", "search", "post")
SEARCH_PARAMS = ("tf", "q", "l", "d")
PERIOD_S = 300
PAGE_SIZE = 100
MAX_PAGE = 1000
AUTO_CURPOS_S = 3600
DEFAULT_TOKEN_S = 24 * 3600
#: Fix times with more digits than this are milliseconds.
SECONDS_DIGITS = 11
PATHS = ("/input", "/j", "/f", "/t", "/tt", "/mk_t", "/rm_t", "/up_t", "/g")
POST_ONLY = frozenset({"/input", "/mk_t", "/rm_t", "/up_t"})
JSON_TYPE = "application/json; charset=utf-8"
JSONP_TYPE = "application/javascript; charset=utf-8"

_DIGITS = re.compile(r"\d+\Z")
_INT = re.compile(r"[+-]?\d+\Z")
_CALLBACK = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*\Z")
_INTERVAL = re.compile(r"([(\[])([^,]*),([^,]*)([)\]])\Z")

#: The user graphics settings of the seed's `/g` example.
GRAPHICS: dict[str, Any] = {
    "curpos": {"a": "/mi/curpos.png", "m": {"a": [6, 39], "s": [35, 41]}},
    "curpos_s": {"a": "/mi/curpos_s.png", "m": {"a": [7, 37], "s": [56, 41]}},
    "naked": {"a": "/s/naked.png", "m": {"a": [10, 33], "s": [20, 34], "bi": True}},
    "naked_s": {"a": "/s/shadow.png", "m": {"a": [2, 20], "s": [27, 20], "bi": True}},
    "tag": {"a": "/s/tag.png", "m": {"a": [10, 33], "s": [20, 34], "bi": True}},
    "tag_s": {"a": "/s/shadow.png", "m": {"a": [2, 20], "s": [27, 20], "bi": True}},
    "poi": {"a": "/s/poi.png", "m": {"a": [10, 33], "s": [20, 34], "bi": True}},
    "poi_s": {"a": "/s/shadow.png", "m": {"a": [2, 20], "s": [27, 20], "bi": True}},
    "both": {"a": "/s/both.png", "m": {"a": [10, 33], "s": [20, 34], "bi": True}},
    "both_s": {"a": "/s/shadow.png", "m": {"a": [2, 20], "s": [27, 20], "bi": True}},
}


@dataclass
class Token:
    """A token: `key` authenticates, `id` names it for `/rm_t` and `/up_t`."""

    key: str
    id: str
    user: str
    type: str
    begin: int
    end: int
    params: dict[str, str] = field(default_factory=dict)  # search tokens: tf, q, l, d

    @property
    def type_number(self) -> int:
        return TOKEN_TYPES.index(self.type)

    def valid(self, now: float) -> bool:
        return self.begin <= now < self.end

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "begin": self.begin, "end": self.end, "token": self.key,
            "type_number": self.type_number, "type": self.type, "id": self.id,
        }  # fmt: skip
        if self.params:
            out["params"] = dict(self.params)
        return out


@dataclass(frozen=True)
class Fix:
    """One stored fix (one time). `t` is the posted time as a number (milliseconds stay
    milliseconds), `posted_t` exactly as posted, `seconds` the time in seconds; `al`, `ha`,
    `va`, `vv` as posted; `seq` the order of entry."""

    t: int
    posted_t: Any
    seconds: float
    t_i: int
    lat: float
    lon: float
    al: Any = None
    ha: Any = None
    va: Any = None
    vv: tuple[Any, ...] | None = None
    tag: str | None = None
    poi: str | None = None
    seq: int = 0

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.al is not None:
            out["al"] = self.al
        out["l"] = [self.lat, self.lon]
        out["t"] = self.t
        out["t_i"] = self.t_i
        if self.tag is not None:
            out["tag"] = self.tag
        if self.poi is not None:
            out["poi"] = self.poi
        if self.vv is not None:
            out["vv"] = list(self.vv)
        if self.ha is not None:
            out["ha"] = self.ha
        if self.va is not None:
            out["va"] = self.va
        return out


class State:
    """Everything the server knows, behind one lock; survives a restart when the same object is
    passed to the next server. Methods with a leading underscore expect the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.fixes: dict[str, list[Fix]] = {}
        self.tokens: dict[str, Token] = {}  # by key
        self.requests = RequestLog()
        self.next_seq = 1
        self.next_token = 1

    def _purge(self, now: float) -> None:
        for key in [k for k, tok in self.tokens.items() if now >= tok.end]:
            tok = self.tokens.pop(key)
            log.debug("token %s (%s of %s) expired and was removed", tok.id, tok.type, tok.user)

    def _add_token(
        self, user: str, type_: str, begin: int, end: int,
        key: str | None = None, params: dict[str, str] | None = None,
    ) -> Token:  # fmt: skip
        if type_ not in TOKEN_TYPES:
            raise ValueError(f"unknown token type {type_!r}")
        if key is None:
            key = secrets.token_urlsafe(16)
        if key in self.tokens:
            raise ValueError(f"token {key!r} exists")
        tok = Token(key, f"tok{self.next_token}", user, type_, int(begin), int(end),
                    dict(params or {}))  # fmt: skip
        self.next_token += 1
        self.tokens[key] = tok
        return tok

    def _token_by_id(self, user: str, token_id: str) -> Token | None:
        return next((t for t in self.tokens.values() if t.id == token_id and t.user == user), None)


class ApiError(Exception):
    """A refused request: HTTP `status` with `{"error": message}`."""

    def __init__(
        self, status: int, message: str, *, processed: bool = True,
        headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.processed = processed
        self.headers = headers or {}
        self.extra = extra or {}


def _data_error(message: str, **extra: Any) -> ApiError:
    return ApiError(200, message, extra=extra)


# -- values ---------------------------------------------------------------------------------


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{what} is not a number: {value!r}")
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{what} is not finite: {value!r}")
    return x


def fix_time(value: Any) -> tuple[int, float]:
    """A posted time -> (as a number, in seconds). Raises ValueError."""
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and _DIGITS.match(value))
    ):
        raise ValueError(f"t is not a whole number: {value!r}")
    t = int(value)
    if t < 0:
        raise ValueError(f"t is negative: {value!r}")
    return t, (t / 1000 if len(str(t)) > SECONDS_DIGITS else float(t))


def parse_fix(obj: Any) -> tuple[list[Any], dict[str, Any]]:
    """A posted fix object -> (its times as posted, the other stored fields). Raises
    ValueError."""
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    if "t_i" in obj:
        raise ValueError("t_i is calculated by the server")
    for name in ("t", "l"):
        if name not in obj:
            raise ValueError(f"missing {name}")
    times = obj["t"] if isinstance(obj["t"], list) else [obj["t"]]
    if not times:
        raise ValueError("t is an empty list")
    for t in times:
        fix_time(t)
    loc = obj["l"]
    if not isinstance(loc, list) or len(loc) != 2:
        raise ValueError(f"l is not [lat, lon]: {loc!r}")
    lat, lon = _number(loc[0], "latitude"), _number(loc[1], "longitude")
    if not -90.0 <= lat <= 90.0:
        raise ValueError(f"latitude out of range: {loc[0]!r}")
    if not -180.0 <= lon <= 180.0:
        raise ValueError(f"longitude out of range: {loc[1]!r}")
    fields: dict[str, Any] = {"lat": lat, "lon": lon}
    for name in ("al", "ha", "va"):
        if obj.get(name) is not None:
            _number(obj[name], name)
            fields[name] = obj[name]
    if obj.get("vv") is not None:
        vv = obj["vv"]
        if not isinstance(vv, list) or len(vv) != 2:
            raise ValueError(f"vv is not [speed, course]: {vv!r}")
        for x in vv:
            _number(x, "vv")
        fields["vv"] = tuple(vv)
    for name in ("tag", "poi"):
        if obj.get(name) is not None:
            if not isinstance(obj[name], str):
                raise ValueError(f"{name} is not a string: {obj[name]!r}")
            fields[name] = obj[name]
    return times, fields


@dataclass(frozen=True)
class Query:
    """The fix selection of `/f` (and of a search token)."""

    limit: int = PAGE_SIZE
    offset: int = 0
    desc: bool = False
    readtime: bool = False
    low: float | None = None
    low_closed: bool = False
    high: float | None = None
    high_closed: bool = False
    ft: str = "b"

    def key(self, fix: Fix) -> float:
        return float(fix.t_i) if self.readtime else fix.seconds

    def matches(self, fix: Fix) -> bool:
        x = self.key(fix)
        if self.low is not None and (x < self.low or (x == self.low and not self.low_closed)):
            return False
        if self.high is not None and (x > self.high or (x == self.high and not self.high_closed)):
            return False
        marked = bool(fix.tag) or bool(fix.poi)
        return {
            "b": True, "t": bool(fix.tag), "p": bool(fix.poi), "n": not marked,
        }[self.ft]  # fmt: skip

    def select(self, fixes: Iterable[Fix]) -> list[Fix]:
        """Every matching fix, in the requested order (ties in the order entered)."""
        found = sorted((f for f in fixes if self.matches(f)), key=lambda f: (self.key(f), f.seq))
        return found[::-1] if self.desc else found


def _int_param(params: dict[str, str], name: str, default: int, low: int) -> int:
    text = params.get(name, "")
    if text == "":
        return default
    if not _INT.match(text.strip()) or int(text) < low:
        raise ValueError(f"{name} must be a whole number >= {low}, not {text!r}")
    return int(text)


def parse_query(params: dict[str, str]) -> Query:
    """`l`, `o`, `d`, `tf`, `q` -> Query. Raises ValueError."""
    limit = min(_int_param(params, "l", PAGE_SIZE, 1), MAX_PAGE)
    offset = _int_param(params, "o", 0, 0)
    d = params.get("d", "") or "asc"
    if d not in ("asc", "desc"):
        raise ValueError(f"d must be asc or desc, not {d!r}")
    tf = params.get("tf", "") or "t"
    if tf not in ("t", "readtime"):
        raise ValueError(f"tf must be t or readtime, not {tf!r}")
    q: dict[str, Any] = {}
    text = params.get("q", "")
    if "%" in text:
        text = urllib.parse.unquote(text)
    for item in filter(None, (s.strip() for s in text.split(";"))):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep:
            raise ValueError(f"q: {item!r} is not key=value")
        if name == "r":
            m = _INTERVAL.match(value.replace(" ", ""))
            if not m:
                raise ValueError(f"q: r={value!r} is not an interval like (a,b]")
            lo, hi = m.group(2), m.group(3)
            q["low"] = _number(lo, "q: r start") if lo else None
            q["high"] = _number(hi, "q: r end") if hi else None
            q["low_closed"], q["high_closed"] = m.group(1) == "[", m.group(4) == "]"
        elif name == "ft":
            if value not in ("b", "t", "p", "n"):
                raise ValueError(f"q: ft must be b, t, p or n, not {value!r}")
            q["ft"] = value
        else:
            raise ValueError(f"q: unknown key {name!r}")
    return Query(limit=limit, offset=offset, desc=d == "desc", readtime=tf == "readtime", **q)


def stats(fixes: Iterable[Fix], query: Query) -> dict[str, dict[str, int]]:
    """Counts per 300 s period: per tag, "POI", "naked fixes"."""
    out: dict[str, dict[str, int]] = {}
    for f in fixes:
        period = str(int(math.floor(query.key(f) / PERIOD_S)) * PERIOD_S)
        counts = out.setdefault(period, {})
        names = ([f.tag] if f.tag else []) + (["POI"] if f.poi else [])
        for name in names or ["naked fixes"]:
            counts[name] = counts.get(name, 0) + 1
    return out


def _bool(text: str, name: str, default: bool) -> bool:
    t = text.strip().lower()
    if t == "":
        return default
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, not {text!r}")


def _basic_auth(header: str) -> tuple[str | None, str | None]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


PartialAck = float | Callable[[dict[str, Any]], bool] | None


class GpsrApp:
    """The protocol: parses requests, authenticates by token or basic auth against `users`,
    acts on `state`. `partial_ack` may be changed from any thread (read once a request)."""

    def __init__(
        self, users: dict[str, str], state: State, clock: Callable[[], float] = time.time,
        seed: int | None = 0,
    ) -> None:  # fmt: skip
        self.users = dict(users)
        self.state = state
        self.clock = clock
        self.partial_ack: PartialAck = None
        self.rng = random.Random(seed)

    # -- parsing: no side effects ---------------------------------------------------------

    def parse(self, method: str, path: str, headers: Any, body: bytes) -> Call:
        route, _, query = path.partition("?")
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        data: dict[str, Any] = {"method": method, "route": route, "password_ok": False}
        try:
            params.update(parse_form(headers.get("Content-Type", ""), body) if body else {})
        except ValueError as e:
            data["form_error"] = str(e)
        user, password = _basic_auth(headers.get("Authorization", ""))
        data["basic"] = headers.get("Authorization") is not None
        if user is not None and user in self.users:
            data["password_ok"] = hmac.compare_digest(
                self.users[user].encode(), (password or "").encode()
            )
        if params.get("token"):
            with self.state.lock:
                tok = self.state.tokens.get(params["token"])
            user = tok.user if tok is not None else user
        return Call(route, params, user, data)

    # -- processing -----------------------------------------------------------------------

    def process(self, call: Call) -> Reply:
        callback = call.params.get("callback") or None
        if callback is not None and not _CALLBACK.match(callback):
            return _reply(ApiError(400, f"bad callback {callback[:40]!r}", processed=False), None)
        route, method = call.data["route"], call.data["method"]
        try:
            if route not in PATHS:
                raise ApiError(404, f"no such path {route}", processed=False)
            if method not in ("GET", "POST"):
                raise ApiError(405, f"{method} not allowed", processed=False)
            if route in POST_ONLY and method != "POST":
                raise ApiError(405, f"{route} needs POST", processed=False,
                               headers={"Allow": "POST"})  # fmt: skip
            if "form_error" in call.data:
                raise ApiError(400, call.data["form_error"])
            handler = getattr(self, "_do_" + route.strip("/"))
            now = self.clock()
            with self.state.lock:
                self.state._purge(now)
                obj, summary = handler(call, now)
        except ApiError as e:
            return _reply(e, callback)
        if isinstance(obj, Reply):
            return obj
        return _json(200, obj, callback, summary)

    # -- authentication -------------------------------------------------------------------

    def _user(self, call: Call) -> str:
        if not call.data["password_ok"]:
            raise ApiError(401, "authentication failed", processed=False,
                           headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})  # fmt: skip
        assert call.user is not None
        return call.user

    def _token(self, call: Call, now: float, types: Iterable[str] = TOKEN_TYPES) -> Token:
        key = call.params.get("token", "")
        if not key:
            raise ApiError(403, "missing token", processed=False)
        tok = self.state.tokens.get(key)
        if tok is None:
            raise ApiError(403, "unknown or expired token", processed=False)
        if now < tok.begin:
            raise ApiError(403, "token not valid yet", processed=False)
        if tok.type not in types:
            raise ApiError(403, f"a {tok.type} token cannot do this", processed=False)
        return tok

    def _reader(self, call: Call, now: float) -> tuple[str, Token | None]:
        if call.params.get("token"):
            tok = self._token(call, now)
            return tok.user, tok
        return self._user(call), None

    # -- the requests (state lock held) ---------------------------------------------------

    def _do_input(self, call: Call, now: float) -> tuple[Any, str]:
        tok = self._token(call, now, ("post",))
        user = tok.user
        if "fixes" not in call.params:
            raise _data_error("missing fixes", fix_tlist=[])
        try:
            posted = json.loads(call.params["fixes"])
        except ValueError as e:
            raise _data_error(f"fixes is not JSON: {e}", fix_tlist=[]) from None
        if not isinstance(posted, list):
            raise _data_error("fixes is not a list", fix_tlist=[])
        errors: list[str] = []
        valid: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []  # (t, fields, original)
        for i, obj in enumerate(posted):
            try:
                times, fields = parse_fix(obj)
            except ValueError as e:
                errors.append(f"fix {i}: {e}")
                continue
            valid.extend((t, fields, obj) for t in times)
        keep = self._acknowledged(valid)
        seen = {f.seconds for f in self.state.fixes.get(user, [])}
        stored = self.state.fixes.setdefault(user, [])
        tlist = []
        for i, (posted_t, fields, _) in enumerate(valid):
            if i not in keep:
                continue
            t, seconds = fix_time(posted_t)
            if seconds in seen:
                log.info("/input: %s already has a fix at %s: stored again", user, posted_t)
            seen.add(seconds)
            stored.append(Fix(t=t, posted_t=posted_t, seconds=seconds, t_i=int(now),
                              seq=self.state.next_seq, **fields))  # fmt: skip
            self.state.next_seq += 1
            tlist.append(posted_t)
        auto = self._auto_curpos(user, now) if tlist else self._find_auto(user)
        reply: dict[str, Any] = {
            "fix_tlist": tlist, "meta": {"view_url": f"/j?token={auto.key}" if auto else ""},
        }  # fmt: skip
        summary = f"stored {len(tlist)}/{len(valid)}"
        if errors:
            reply["error"] = "; ".join(errors)
            summary += f" error: {reply['error']}"
        return reply, summary

    def _acknowledged(self, valid: list[tuple[Any, dict[str, Any], dict[str, Any]]]) -> set[int]:
        rule = self.partial_ack
        n = len(valid)
        if rule is None:
            return set(range(n))
        if callable(rule):
            return {i for i, (t, _, obj) in enumerate(valid) if rule({**obj, "t": t})}
        share = float(rule)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"partial_ack share {share} is outside 0..1")
        return set(self.rng.sample(range(n), math.ceil(share * n)))

    def _find_auto(self, user: str) -> Token | None:
        return next(
            (t for t in self.state.tokens.values() if t.user == user and t.type == "auto_curpos"),
            None,
        )

    def _auto_curpos(self, user: str, now: float) -> Token:
        tok = self._find_auto(user)
        if tok is None:
            return self.state._add_token(user, "auto_curpos", int(now), int(now) + AUTO_CURPOS_S)
        tok.end = int(now) + AUTO_CURPOS_S
        return tok

    def _scope(self, user: str, tok: Token | None, params: dict[str, str]) -> Query:
        merged = dict(params)
        if tok is not None and tok.type == "search":
            merged.update(tok.params)
        try:
            return parse_query(merged)
        except ValueError as e:
            raise _data_error(str(e)) from None

    def _do_j(self, call: Call, now: float) -> tuple[Any, str]:
        user, tok = self._reader(call, now)
        fixes = self.state.fixes.get(user, [])
        if tok is not None and tok.type == "search":
            query = self._scope(user, tok, {})
            fixes = [f for f in fixes if query.matches(f)]
        if not fixes:
            return {"found": False, "error": "no fix"}, "no fix"
        last = max(fixes, key=lambda f: f.seq)
        return {"found": True, "data": last.as_json()}, f"t={last.t}"

    def _do_f(self, call: Call, now: float) -> tuple[Any, str]:
        user, tok = self._reader(call, now)
        try:
            fixes_wanted = _bool(call.params.get("p", ""), "p", True)
            rm = _bool(call.params.get("rm", ""), "rm", False)
        except ValueError as e:
            raise _data_error(str(e)) from None
        if rm:
            if call.data["method"] != "POST":
                raise ApiError(405, "rm needs POST", processed=False, headers={"Allow": "POST"})
            if tok is not None:
                raise ApiError(403, "rm needs the user's login, not a token", processed=False)
            if fixes_wanted:
                raise _data_error("rm works with p=false only")
        query = self._scope(user, tok, call.params)
        matched = query.select(self.state.fixes.get(user, []))
        page = matched[query.offset : query.offset + query.limit]
        if rm:
            gone = {f.seq for f in page}
            self.state.fixes[user] = [f for f in self.state.fixes[user] if f.seq not in gone]
            left, next_offset = len(matched) - len(page), query.offset
        else:
            left, next_offset = len(matched), query.offset + len(page)
        more = next_offset < left
        if not page:
            reply = {"found": False, "error": "no fixes", "offset": next_offset, "more": more}
            return reply, "no fixes"
        data = [f.as_json() for f in page] if fixes_wanted else stats(page, query)
        verb = "removed" if rm else ("fixes" if fixes_wanted else "stats of")
        reply = {"found": True, "data": data, "offset": next_offset, "more": more}
        return reply, f"{verb} {len(page)} more={more}"

    def _do_t(self, call: Call, now: float) -> tuple[Any, str]:
        user = self._user(call)
        mine = sorted(
            (t for t in self.state.tokens.values() if t.user == user),
            key=lambda t: int(t.id.removeprefix("tok")),
        )
        return [t.as_json() for t in mine], f"{len(mine)} tokens"

    def _do_tt(self, call: Call, now: float) -> tuple[Any, str]:
        tok = self.state.tokens.get(call.params.get("token", ""))
        ok = tok is not None and tok.valid(now)
        return {"result": ok}, str(ok).lower()

    def _do_g(self, call: Call, now: float) -> tuple[Any, str]:
        _, tok = self._reader(call, now)
        graphics = json.loads(json.dumps(GRAPHICS))
        if tok is not None:
            for item in graphics.values():
                item["a"] += "?token=" + urllib.parse.quote(tok.key)
        return graphics, "graphics"

    def _times(self, params: dict[str, str]) -> tuple[int, int]:
        missing = [n for n in ("b", "e") if not params.get(n)]
        if missing:
            raise ApiError(400, f"missing {', '.join(missing)}")
        try:
            b, e = (_int_param(params, n, 0, -(2**62)) for n in ("b", "e"))
        except ValueError as err:
            raise ApiError(400, str(err)) from None
        if e <= b:
            raise ApiError(400, f"e ({e}) must be after b ({b})")
        return b, e

    def _done(self, call: Call, obj: Any, summary: str) -> tuple[Any, str]:
        target = call.params.get("r", "")
        if not target:
            return obj, summary
        url = html.escape(target, quote=True)
        page = (
            f'<!DOCTYPE html>\n<html><head><meta http-equiv="refresh" content="0; url={url}">'
            f'</head><body><a href="{url}">continue</a></body></html>\n'
        )
        return Reply(200, page.encode(), "text/html; charset=utf-8", summary=summary), summary

    def _do_mk_t(self, call: Call, now: float) -> tuple[Any, str]:
        user = self._user(call)
        type_ = call.params.get("t", "")
        if type_ not in MADE_TYPES:
            raise ApiError(400, f"t must be one of {', '.join(MADE_TYPES)}, not {type_!r}")
        b, e = self._times(call.params)
        params: dict[str, str] = {}
        if type_ == "search":
            params = {k: call.params[k] for k in SEARCH_PARAMS if call.params.get(k)}
            try:
                parse_query(params)
            except ValueError as err:
                raise ApiError(400, str(err)) from None
        tok = self.state._add_token(user, type_, b, e, params=params)
        return self._done(call, tok.as_json(), f"made {tok.id} ({type_})")

    def _mine(self, call: Call, user: str) -> Token:
        k = call.params.get("k", "")
        if not k:
            raise ApiError(400, "missing k")
        tok = self.state._token_by_id(user, k)
        if tok is None:
            raise ApiError(404, f"no token {k!r}")
        return tok

    def _do_rm_t(self, call: Call, now: float) -> tuple[Any, str]:
        tok = self._mine(call, self._user(call))
        del self.state.tokens[tok.key]
        return self._done(call, {"result": True}, f"removed {tok.id}")

    def _do_up_t(self, call: Call, now: float) -> tuple[Any, str]:
        tok = self._mine(call, self._user(call))
        tok.begin, tok.end = self._times(call.params)
        return self._done(call, tok.as_json(), f"updated {tok.id}")


def _json(
    status: int, obj: Any, callback: str | None, summary: str, *, processed: bool = True,
    headers: dict[str, str] | None = None,
) -> Reply:  # fmt: skip
    text = json.dumps(obj)
    if callback is not None:
        return Reply(status, f"{callback}({text});".encode(), JSONP_TYPE, headers or {},
                     processed, summary)  # fmt: skip
    return Reply(status, text.encode(), JSON_TYPE, headers or {}, processed, summary)


def _reply(e: ApiError, callback: str | None) -> Reply:
    return _json(e.status, {"error": e.message, **e.extra}, callback, f"error: {e.message}",
                 processed=e.processed, headers=e.headers)  # fmt: skip


class GpsrServer(FaultyServer):
    """A json-gpsr server on `host:port` (see the module docstring for its readings).

    Thread-safe inspection for tests: `fixes(user)`, `duplicates(user)`, `tokens(user)`,
    `requests`, `count(path, **where)`; `make_token(...)` adds a token directly;
    `partial_ack` (None, a share 0..1 or a predicate) limits what `/input` stores and
    acknowledges. Pass `state=old.state` to a new server to keep everything across a restart.
    `seed` seeds the fault RNG as in `MapMyTracksServer`, and the partial-ack RNG (0 if None).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        users: dict[str, str] | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        state: State | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state if state is not None else State()
        self.users = dict(users) if users is not None else {"rider": "secret"}
        faults = seeded(faults, seed)
        self.gpsr = GpsrApp(self.users, self.state, clock, seed=0 if seed is None else seed)
        super().__init__(
            self.gpsr, host=host, port=port, faults=faults, requests=self.state.requests,
            clock=clock,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def partial_ack(self) -> PartialAck:
        return self.gpsr.partial_ack

    @partial_ack.setter
    def partial_ack(self, rule: PartialAck) -> None:
        if rule is not None and not callable(rule) and not 0.0 <= float(rule) <= 1.0:
            raise ValueError(f"partial_ack share {rule} is outside 0..1")
        self.gpsr.partial_ack = rule

    def make_token(
        self, user: str, type: str, begin: float | None = None, end: float | None = None,
        *, key: str | None = None, **params: str,
    ) -> Token:  # fmt: skip
        """A new token (a copy). `begin` defaults to now, `end` to `begin` + 1 day; `params`
        (tf, q, l, d) only for search tokens. Raises ValueError for an unknown user or type,
        a taken key, bad search params or `end <= begin`."""
        if user not in self.users:
            raise ValueError(f"unknown user {user!r}")
        b = int(self.clock() if begin is None else begin)
        e = b + DEFAULT_TOKEN_S if end is None else int(end)
        if e <= b:
            raise ValueError(f"end ({e}) must be after begin ({b})")
        unknown = set(params) - set(SEARCH_PARAMS)
        if unknown or (params and type != "search"):
            raise ValueError(f"params {sorted(params)} are for search tokens: tf, q, l, d")
        parse_query(params)
        with self.state.lock:
            return dataclasses.replace(self.state._add_token(user, type, b, e, key, params))

    def tokens(self, user: str | None = None) -> list[Token]:
        """Unexpired tokens (of `user`, or all), as copies, oldest first."""
        with self.state.lock:
            self.state._purge(self.clock())
            return [
                dataclasses.replace(t, params=dict(t.params))
                for t in self.state.tokens.values()
                if user is None or t.user == user
            ]

    def fixes(self, user: str) -> list[Fix]:
        """The user's stored fixes in the order entered (one per time)."""
        with self.state.lock:
            return list(self.state.fixes.get(user, []))

    def duplicates(self, user: str) -> list[Fix]:
        """Stored fixes whose time (in seconds) an earlier fix of the user already had."""
        seen: set[float] = set()
        dups = []
        for f in self.fixes(user):
            if f.seconds in seen:
                dups.append(f)
            seen.add(f.seconds)
        return dups


# -- command line -------------------------------------------------------------------------


def _user(text: str) -> tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"want NAME:PASSWORD, got {text!r}")
    return name, password


def _token_arg(text: str) -> tuple[str, str]:
    type_, sep, key = text.partition(":")
    if not sep or not key or type_ not in TOKEN_TYPES:
        raise argparse.ArgumentTypeError(
            f"want TYPE:KEY with TYPE one of {', '.join(TOKEN_TYPES)}, got {text!r}"
        )
    return type_, key


#: A --token is valid from the epoch for this long after the server starts.
CLI_TOKEN_S = 10 * 365 * 24 * 3600


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8090, help="port (0: any free port)")
    parser.add_argument("--user", type=_user, action="append", metavar="NAME:PASSWORD",
                        help="an account (repeatable; default rider:secret)")  # fmt: skip
    parser.add_argument("--token", type=_token_arg, action="append", metavar="TYPE:KEY",
                        help="a token of the first user, valid from 1970 to ten years from now "
                             "(repeatable), e.g. post:demo-token")  # fmt: skip
    add_fault_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Run a server in the foreground until SIGINT/SIGTERM; one log line a request."""
    try:
        faults = faults_from_args(args)
    except ValueError as e:
        print(f"tracker: {e}", file=sys.stderr)
        return 2
    users = dict(args.user) if args.user else {"rider": "secret"}
    server = GpsrServer(args.host, args.port, users, faults, seed=args.seed)
    first = next(iter(users))
    for type_, key in args.token or []:
        try:
            server.make_token(first, type_, 0, int(time.time()) + CLI_TOKEN_S, key=key)
        except ValueError as e:
            print(f"tracker: --token {type_}:{key}: {e}", file=sys.stderr)
            return 2
    tokens = [f"{t}:{k}" for t, k in args.token or []]
    return run_in_foreground(server, lambda: (
        f"json-gpsr test server at {server.url} users={sorted(users)} tokens={tokens} {faults!r}"
    ))  # fmt: skip


def _cli(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tracker.testing.gpsr",
        description="A json-gpsr-compatible server with scripted faults, for tests and demos.",
    )
    add_arguments(parser)
    return main(parser.parse_args(None if argv is None else list(argv)))


if __name__ == "__main__":
    sys.exit(_cli())
