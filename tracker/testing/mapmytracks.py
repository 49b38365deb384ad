"""A Map My Tracks-compatible HTTP server for tests and the demo (standard library + gpxpy).

It implements the seven requests of the Map My Tracks API as read in `docs/mapmytracks.md`,
keeps its state in memory, records every request, and injects network faults
(`tracker.testing.faults`). Readings beyond that table, all chosen as what a real server most
likely does:

- `stop_activity` with no live activity answers `activity_stopped`, as the specification's only
  example reads and as a reference server and a real client expect (`Readings.stop_when_idle =
  "error"`: an error, `no live activity`, HTTP 200, the reading of earlier releases); the sender
  works against both.
- Activity types are matched case-insensitively (real clients send "Cycling") and stored in
  lower case.
- `start_activity` while another activity of the user is live stops the old one first
  (`Activity.stopped_by == "superseded"`, and `(old_id, new_id)` in `server.superseded`), so a
  test can tell that a sender relied on it instead of stopping.
- `unique_token` is per user and forever: a repeat returns the first activity's id, changes
  nothing (no points added, no activity stopped or made live, even if it was stopped since),
  and is checked before anything else is validated. A start that failed does not use the token.
- `start_activity` requires `title`, `privacy`, `activity`, `points`, `source`, `version`;
  `points` may be empty. `update_activity` requires `activity_id`; `points` may be empty or
  absent. Point times must be whole seconds (integers), latitude -90..90, longitude -180..180,
  all finite. Points are stored as sent (duplicates too); `get_activity` orders them by time.
- hr/cad/pwr are stored as `(time, value)` pairs (time first, like the points); values are
  numbers, times integers; an odd number of fields is an error.
- `tags` are split on `,` and stripped; empty tags are dropped; each must be <= 50 characters.
- `get_activity` may read the user's own activities and other users' public ones; an
  unknown, unparseable or private foreign `activity_id` is an error. A missing `from_time`
  (and `start_from`) means 0. An empty page is `<points></points>`.
- `get_activities` without `author` lists the caller's own; for another author only public
  ones; an unknown author gives an empty list. `<author>` echoes the username; `<date>` is the
  first point's time (creation time if none); ordered by that date.
- `upload_activity` takes `gpx_file` as a multipart file or a plain form field; `status` and
  `activity` are required and validated like privacy and activity type; the title is
  `description`, else the GPX track's name, else "Uploaded activity". Every track point needs a
  time; a missing elevation is stored as 0.0. The reply adds `<activity_id>` after
  `<type>success</type>` (an extension; `Readings.upload_id_tag` "id" answers `<id>`, None
  nothing). Uploads are not idempotent and do not touch the live activity.
- `get_activities` answers every activity at once, or, with `Readings.activities_page` set,
  that many starting at the request's `offset` (default 0): a sender must follow `offset`.
- Data errors are `<type>error</type><reason>...</reason>` with HTTP 200; an unknown or missing
  `request` is such an error too. Bad or missing credentials: 401 with
  `WWW-Authenticate: Basic realm="Map My Tracks"` and an XML error body. A path other than
  `/api/` or `/api`: 404; a GET: 405 (both XML errors).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import hmac
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

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

REALM = "Map My Tracks"
PAGE_SIZE = 100
MAX_TITLE = 100
MAX_TAG = 50
FIRST_ID = 1000
PRIVACY = ("public", "private")
ACTIVITY_TYPES = frozenset(
    {
        "running", "cycling", "mountain biking", "sailing", "walking", "hiking", "driving",
        "motor racing", "off road driving", "motorcycling", "enduro", "skiing",
        "cross country skiing", "canoeing", "kayaking", "sea kayaking",
        "stand up paddle boarding", "rowing", "windsurfing", "kiteboarding", "orienteering",
        "mountaineering", "skating", "skateboarding", "longboarding", "horse riding",
        "hang gliding", "gliding", "flying", "snowboarding", "paragliding",
        "hot air ballooning", "nordic walking",
    }
)  # fmt: skip
REQUESTS = (
    "get_activities", "get_activity", "start_activity", "update_activity", "stop_activity",
    "get_time", "upload_activity",
)  # fmt: skip

Point = tuple[int, float, float, float]  # (time, lat, lon, alt)
Sample = tuple[int, float]  # (time, value)

_INT = re.compile(r"[+-]?\d+\Z")


@dataclass
class Activity:
    id: int
    user: str
    title: str
    type: str
    privacy: str
    tags: list[str] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    hr: list[Sample] = field(default_factory=list)
    cad: list[Sample] = field(default_factory=list)
    pwr: list[Sample] = field(default_factory=list)
    live: bool = True
    token: str | None = None
    source: str | None = None
    version: str | None = None
    created_via: str = "start"  # 'start' | 'upload'
    created_at: float = 0.0
    stopped_by: str | None = None  # None while live | 'stop_activity' | 'superseded' | 'upload'

    @property
    def date(self) -> int:
        return min(p[0] for p in self.points) if self.points else int(self.created_at)


class State:
    """Everything the server knows, behind one lock; survives a server restart when the same
    object is passed to the next server. Methods with a leading underscore expect the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.activities: dict[int, Activity] = {}
        self.tokens: dict[tuple[str, str], int] = {}
        self.live: dict[str, int] = {}
        self.superseded: list[tuple[int, int]] = []
        self.requests = RequestLog()
        self.next_id = FIRST_ID

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


class _Raw(str):
    """Element text laid out like the seed's `<points>` example: on a line of its own."""


class DataError(Exception):
    """A request the protocol answers with `<type>error</type>`."""


def xml_message(*elements: tuple[str, Any]) -> bytes:
    """The seed's reply layout: declaration, `<message>`, one element a line. A value that is
    a list of pairs nests; a string is escaped."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<message>"]

    def emit(tag: str, value: Any) -> None:
        if isinstance(value, list):
            lines.append(f"<{tag}>")
            for t, v in value:
                emit(t, v)
            lines.append(f"</{tag}>")
        elif isinstance(value, _Raw) and value:
            lines.extend((f"<{tag}>", escape(value), f"</{tag}>"))
        else:
            lines.append(f"<{tag}>{escape(str(value))}</{tag}>")

    for tag, value in elements:
        emit(tag, value)
    lines.append("</message>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _error(reason: str, status: int = 200, **kw: Any) -> Reply:
    return Reply(status, xml_message(("type", "error"), ("reason", reason)),
                 summary=f"error: {reason}", **kw)  # fmt: skip


def _fmt(x: float) -> str:
    return repr(float(x))


def _finite(text: str, what: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise DataError(f"{what} is not a number: {text!r}") from None
    if not math.isfinite(x):
        raise DataError(f"{what} is not finite: {text!r}")
    return x


def _int(text: str, what: str) -> int:
    if not _INT.match(text.strip()):
        raise DataError(f"{what} is not a whole number: {text!r}")
    return int(text)


def parse_points(text: str) -> list[Point]:
    """`lat lon alt time` blocks, all space-separated -> [(time, lat, lon, alt)]."""
    fields = text.split()
    if len(fields) % 4:
        raise DataError(f"points: {len(fields)} fields is not a multiple of 4 (lat lon alt time)")
    points = []
    for i in range(0, len(fields), 4):
        lat = _finite(fields[i], "latitude")
        lon = _finite(fields[i + 1], "longitude")
        alt = _finite(fields[i + 2], "altitude")
        t = _int(fields[i + 3], "point time")
        if not -90.0 <= lat <= 90.0:
            raise DataError(f"latitude out of range: {fields[i]}")
        if not -180.0 <= lon <= 180.0:
            raise DataError(f"longitude out of range: {fields[i + 1]}")
        points.append((t, lat, lon, alt))
    return points


def parse_samples(text: str, what: str) -> list[Sample]:
    """`value time` pairs, space-separated -> [(time, value)]."""
    fields = text.split()
    if len(fields) % 2:
        raise DataError(f"{what}: odd number of fields ({len(fields)}), want value time pairs")
    return [
        (_int(fields[i + 1], f"{what} time"), _finite(fields[i], f"{what} value"))
        for i in range(0, len(fields), 2)
    ]


def parse_tags(text: str) -> list[str]:
    tags = [t.strip() for t in text.split(",") if t.strip()]
    for t in tags:
        if len(t) > MAX_TAG:
            raise DataError(f"tag longer than {MAX_TAG} characters: {t[:20]!r}...")
    return tags


def _require(params: dict[str, str], *names: str) -> None:
    missing = [n for n in names if n not in params]
    if missing:
        raise DataError(f"missing parameter(s): {', '.join(missing)}")


def _check_privacy(value: str, what: str = "privacy") -> str:
    if value not in PRIVACY:
        raise DataError(f"{what} must be public or private, not {value!r}")
    return value


def _check_type(value: str) -> str:
    kind = value.strip().lower()
    if kind not in ACTIVITY_TYPES:
        raise DataError(f"unknown activity type {value!r}")
    return kind


@dataclass(frozen=True)
class Readings:
    """Where servers in the field differ, which way this one answers (module docstring)."""

    stop_when_idle: str = "stopped"  # "stopped" or "error"
    upload_id_tag: str | None = "activity_id"  # "activity_id", "id" or None
    activities_page: int | None = None  # get_activities page size with `offset`; None: all


class MapMyTracksApp:
    """The protocol: parses requests, checks basic auth against `users`, acts on `state`."""

    def __init__(
        self, users: dict[str, str], state: State, clock: Callable[[], float] = time.time,
        readings: Readings = Readings(),  # noqa: B008 - frozen
    ) -> None:
        self.users = dict(users)
        self.state = state
        self.clock = clock
        self.readings = readings

    # -- parsing: no side effects ---------------------------------------------------------

    def parse(self, method: str, path: str, headers: Any, body: bytes) -> Call:
        user, password = _basic_auth(headers.get("Authorization", ""))
        data: dict[str, Any] = {"password_ok": False}
        if user is not None and user in self.users:
            data["password_ok"] = hmac.compare_digest(
                self.users[user].encode(), (password or "").encode()
            )
        route = path.split("?", 1)[0]
        if route not in ("/api/", "/api"):
            data["http_error"] = (404, f"no such path {route}")
        elif method != "POST":
            data["http_error"] = (405, "use POST")
        try:
            params = parse_form(headers.get("Content-Type", ""), body)
        except ValueError as e:
            params = {}
            data["form_error"] = str(e)
        return Call(params.get("request"), params, user, data)

    # -- processing -----------------------------------------------------------------------

    def process(self, call: Call) -> Reply:
        if "http_error" in call.data:
            status, reason = call.data["http_error"]
            return _error(reason, status, processed=False)
        if not call.data["password_ok"]:
            return _error(
                "authentication failed", 401, processed=False,
                headers={"WWW-Authenticate": f'Basic realm="{REALM}"'},
            )  # fmt: skip
        assert call.user is not None
        if "form_error" in call.data:
            return _error(call.data["form_error"])
        handler = getattr(self, f"_do_{call.name}", None) if call.name in REQUESTS else None
        if handler is None:
            return _error(f"unknown request {call.name!r}" if call.name else "missing request")
        try:
            with self.state.lock:
                elements = handler(call.user, call.params)
        except DataError as e:
            return _error(str(e))
        summary = next((str(v) for t, v in elements if t == "type"), call.name or "")
        return Reply(200, xml_message(*elements), summary=summary)

    def _do_get_time(self, user: str, params: dict[str, str]) -> list:
        return [("type", "time"), ("server_time", int(self.clock()))]

    def _do_get_activities(self, user: str, params: dict[str, str]) -> list:
        author = params.get("author") or user
        mine = [
            a for a in self.state.activities.values()
            if a.user == author and (author == user or a.privacy == "public")
        ]  # fmt: skip
        mine.sort(key=lambda a: (a.date, a.id))
        page = self.readings.activities_page
        if page is not None:
            offset = _int(params.get("offset", "0") or "0", "offset")
            mine = mine[offset : offset + page]
        items = [
            (f"activity{i}", [("id", a.id), ("title", a.title), ("date", a.date)])
            for i, a in enumerate(mine, 1)
        ]
        return [("author", author), ("activities", items)]

    def _activity(self, params: dict[str, str], user: str, *, own: bool) -> Activity:
        _require(params, "activity_id")
        try:
            aid = int(params["activity_id"])
        except ValueError:
            raise DataError(f"bad activity_id {params['activity_id']!r}") from None
        a = self.state.activities.get(aid)
        if a is None or (a.user != user and (own or a.privacy != "public")):
            raise DataError(f"no such activity {aid}")
        return a

    def _do_get_activity(self, user: str, params: dict[str, str]) -> list:
        a = self._activity(params, user, own=False)
        raw = params.get("from_time", params.get("start_from", "0")) or "0"
        from_time = _int(raw, "from_time")
        later = sorted((p for p in a.points if p[0] >= from_time), key=lambda p: p[0])
        page = later[:PAGE_SIZE]
        complete = not a.live and len(later) <= PAGE_SIZE
        text = " ".join(f"{t},{_fmt(lat)},{_fmt(lon)},{_fmt(alt)}" for t, lat, lon, alt in page)
        return [("complete", "Yes" if complete else "No"), ("points", _Raw(text))]

    def _do_start_activity(self, user: str, params: dict[str, str]) -> list:
        st = self.state
        token = params.get("unique_token") or None
        if token is not None and (user, token) in st.tokens:
            return [("type", "activity_started"), ("activity_id", st.tokens[(user, token)])]
        _require(params, "title", "privacy", "activity", "points", "source", "version")
        title = params["title"]
        if len(title) > MAX_TITLE:
            raise DataError(f"title longer than {MAX_TITLE} characters")
        privacy = _check_privacy(params["privacy"])
        kind = _check_type(params["activity"])
        points = parse_points(params["points"])
        tags = parse_tags(params.get("tags", ""))
        samples: dict[str, Any] = {  # Any: they go to Activity as **kwargs
            k: parse_samples(params.get(k, ""), k) for k in ("hr", "cad", "pwr")
        }
        aid = st._new_id()
        old = st.live.pop(user, None)
        if old is not None:
            st.activities[old].live = False
            st.activities[old].stopped_by = "superseded"
            st.superseded.append((old, aid))
            log.warning("start_activity %d stopped the live activity %d of %s", aid, old, user)
        st.activities[aid] = Activity(
            id=aid, user=user, title=title, type=kind, privacy=privacy, tags=tags,
            points=points, live=True, token=token, source=params["source"],
            version=params["version"], created_via="start", created_at=self.clock(), **samples,
        )  # fmt: skip
        st.live[user] = aid
        if token is not None:
            st.tokens[(user, token)] = aid
        return [("type", "activity_started"), ("activity_id", aid)]

    def _do_update_activity(self, user: str, params: dict[str, str]) -> list:
        a = self._activity(params, user, own=True)
        if not a.live:
            raise DataError(f"activity {a.id} is stopped")
        points = parse_points(params.get("points", ""))
        samples = {k: parse_samples(params.get(k, ""), k) for k in ("hr", "cad", "pwr")}
        a.points.extend(points)
        for k, v in samples.items():
            getattr(a, k).extend(v)
        return [("type", "activity_updated")]

    def _do_stop_activity(self, user: str, params: dict[str, str]) -> list:
        aid = self.state.live.pop(user, None)
        if aid is None:
            if self.readings.stop_when_idle == "error":
                raise DataError("no live activity")
            return [("type", "activity_stopped")]
        self.state.activities[aid].live = False
        self.state.activities[aid].stopped_by = "stop_activity"
        return [("type", "activity_stopped")]

    def _do_upload_activity(self, user: str, params: dict[str, str]) -> list:
        import gpxpy
        import gpxpy.gpx

        _require(params, "gpx_file", "status", "activity")
        privacy = _check_privacy(params["status"], "status")
        kind = _check_type(params["activity"])
        try:
            gpx = gpxpy.parse(params["gpx_file"])
        except (gpxpy.gpx.GPXException, ValueError) as e:
            raise DataError(f"gpx_file is not GPX: {e}") from None
        points: list[Point] = []
        for track in gpx.tracks:
            for segment in track.segments:
                for p in segment.points:
                    if p.time is None:
                        raise DataError("gpx_file: a track point has no time")
                    alt = p.elevation if p.elevation is not None else 0.0
                    points.append((int(p.time.timestamp()), p.latitude, p.longitude, alt))
        if not points:
            raise DataError("gpx_file has no track points")
        title = params.get("description") or (gpx.tracks[0].name or "") or "Uploaded activity"
        aid = self.state._new_id()
        self.state.activities[aid] = Activity(
            id=aid, user=user, title=title[:MAX_TITLE], type=kind, privacy=privacy,
            points=points, live=False, created_via="upload", created_at=self.clock(),
            stopped_by="upload",
        )  # fmt: skip
        tag = self.readings.upload_id_tag
        return [("type", "success")] + ([(tag, aid)] if tag else [])


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


class MapMyTracksServer(FaultyServer):
    """A Map My Tracks server on `host:port` (see the module docstring for its readings).

    Thread-safe inspection for tests: `activities` (a deep copy: id -> Activity), `requests`
    (list of RecordedRequest), `superseded`, `count(name, **where)`, `duplicate_points(id)`,
    `live_activity(user)`. Pass `state=old.state` to a new server to keep everything across a
    restart. `seed` seeds the fault RNG: a `Faults` the server makes itself gets `seed` (0 if
    None); a `Faults` passed in keeps its own seed unless `seed` is given.
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
        readings: Readings = Readings(),  # noqa: B008 - frozen
    ) -> None:
        self.state = state if state is not None else State()
        self.users = dict(users) if users is not None else {"rider": "secret"}
        faults = seeded(faults, seed)
        app = MapMyTracksApp(self.users, self.state, clock, readings)
        super().__init__(
            app, host=host, port=port, faults=faults, requests=self.state.requests, clock=clock
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/api/"

    @property
    def activities(self) -> dict[int, Activity]:
        with self.state.lock:
            return copy.deepcopy(self.state.activities)

    def activity(self, activity_id: int) -> Activity:
        with self.state.lock:
            return copy.deepcopy(self.state.activities[activity_id])

    @property
    def superseded(self) -> list[tuple[int, int]]:
        with self.state.lock:
            return list(self.state.superseded)

    def live_activity(self, user: str) -> int | None:
        with self.state.lock:
            return self.state.live.get(user)

    def duplicate_points(self, activity_id: int) -> list[Point]:
        """Points whose time an earlier point of the activity already had (a resend)."""
        with self.state.lock:
            seen: set[int] = set()
            dups = []
            for p in self.state.activities[activity_id].points:
                if p[0] in seen:
                    dups.append(p)
                seen.add(p[0])
            return dups


# -- command line -------------------------------------------------------------------------


def _user(text: str) -> tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"want NAME:PASSWORD, got {text!r}")
    return name, password


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument("--user", type=_user, action="append", metavar="NAME:PASSWORD",
                        help="an account (repeatable; default rider:secret)")  # fmt: skip
    parser.add_argument("--stop-when-idle", choices=("stopped", "error"), default="stopped",
                        help="stop_activity with nothing live: activity_stopped (default) "
                             "or an error")  # fmt: skip
    parser.add_argument("--upload-id", choices=("activity_id", "id", "none"),
                        default="activity_id",
                        help="the tag of the id in upload_activity's reply")  # fmt: skip
    parser.add_argument("--activities-page", type=int, metavar="N",
                        help="get_activities answers N at a time from `offset`")  # fmt: skip
    add_fault_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Run a server in the foreground until SIGINT/SIGTERM; one log line a request."""
    try:
        faults = faults_from_args(args)
    except ValueError as e:
        print(f"tracker: {e}", file=sys.stderr)
        return 2
    users = dict(args.user) if args.user else {"rider": "secret"}
    readings = Readings(
        stop_when_idle=args.stop_when_idle,
        upload_id_tag=None if args.upload_id == "none" else args.upload_id,
        activities_page=args.activities_page,
    )
    server = MapMyTracksServer(args.host, args.port, users, faults, seed=args.seed,
                               readings=readings)  # fmt: skip
    return run_in_foreground(server, lambda: (
        f"Map My Tracks test server at {server.url} users={sorted(users)} {faults!r}"
    ))  # fmt: skip


def _cli(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tracker.testing.mapmytracks",
        description="A Map My Tracks-compatible server with scripted faults, for tests and demos.",
    )
    add_arguments(parser)
    return main(parser.parse_args(None if argv is None else list(argv)))


if __name__ == "__main__":
    sys.exit(_cli())
