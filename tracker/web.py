"""The status page: a small read-only HTTP server the daemon runs when `[web] listen` is set.

One page (tracker/data/status.html: no framework, no external resource, so it works on a boat
or in a field without network) that refreshes itself from a JSON API:

    /                          the page
    /api/status                `tracker status --json` (its `instruments`, the latest boat
                               instrument readings of the current activity, are the newest
                               activity's when none runs), and `web`
    /api/activities            `tracker activities --json`
    /api/track?activity=ID     the activity's track as [[lat, lon], ...] (thinned), for the SVG;
                               without `activity`, the current one (or the newest)
    /export/ID.gpx|.csv|.geojson   one activity as a download

Everything is read from the store through a read-only connection per request: the page can
never change anything, and it sees exactly what `tracker status` sees.

Safe by default: `[web] listen` is 127.0.0.1 unless configured. On any other address a token
is required (config.py refuses to start without one): every request must carry it as
`Authorization: Bearer <token>`, or as `?token=` once, which sets an HttpOnly cookie for the
browser. Compared in constant time.

Bounded, so that no client can starve the daemon (the GPS, the recorder and the senders share
its threads, memory and descriptors): one thread owns every socket (a selector loop: accepts,
reads request heads, writes replies, enforces deadlines) and a fixed pool of `WORKERS` threads
builds the replies from the store. No thread is ever started per connection, and no thread ever
waits on a client. The page holds at most `connection_cap()` sockets (`MAX_CONNECTIONS`, fewer
when the open-file limit is low); when full, one that holds a slot without a request being
answered (see `_victim`) is closed to make room for the next in the backlog, and while every
slot holds a request being answered new ones wait in the backlog. Linux keeps connections that
have sent nothing out of it altogether (TCP_DEFER_ACCEPT). A request
head must arrive whole within `REQUEST_DEADLINE_S` and fit `MAX_HEAD` bytes (its request line
`MAX_REQUEST_LINE`); only GET, without a body; a reply that cannot move for `WRITE_STALL_S` is
dropped. What is refused, evicted or timed out is counted (`/api/status` `web.server`) and
logged at most once a minute per kind, never a traceback per connection.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import io
import logging
import os
import queue
import re
import resource
import select
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import IO, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from tracker.config import Config, WebConfig, split_listen
from tracker.logutil import RateLimitedLog
from tracker.store import Activity, Store, StoreError, open_store
from tracker.validate import credential_exists
from tracker.worker import run_loop

log = logging.getLogger(__name__)

TRACK_POINTS = 2000  # the most points a track is drawn with (the SVG stays light)
COOKIE = "tracker_token"
EXPORTS = {"gpx": "application/gpx+xml", "csv": "text/csv", "geojson": "application/geo+json"}

# The server's bounds (README, Status page). A browser tab needs one or two connections and
# polls every 5 s, so these leave room for a few tabs and nothing for a flood.
MAX_CONNECTIONS = 32  # sockets the page holds at once, whatever comes
NOFILE_SHARE = 8  # ... and at most 1/8 of the open-file limit: the GPS and the store come first
MIN_CONNECTIONS = 4
WORKERS = 2  # threads building replies; with the socket thread the page is 3 threads, always
BACKLOG = 64  # connections the kernel completes while every slot is busy
MAX_HEAD = 8 * 1024  # request line and headers; a browser sends about 500 bytes
MAX_REQUEST_LINE = 2048  # method, path and query: ours are short
MAX_QUERY_FIELDS = 8
REQUEST_DEADLINE_S = 10.0  # from connect (or the last reply) to a whole request head
WRITE_STALL_S = 10.0  # a reply the client does not read for this long is dropped
LINGER_S = 2.0  # after a closing reply: read what the client still sends, so it gets the reply
MAX_REQUESTS = 100  # per keep-alive connection
GRACE_S = 0.2  # a connection that has sent nothing is not closed to make room before this
DEFER_ACCEPT_S = 5  # seconds the kernel holds a connection that has sent nothing yet
ACCEPT_PAUSE_S = 0.5  # accept() failing (no descriptor, no memory): stop trying for this long
SELECT_S = 0.25  # longest wait of the socket thread: bounds how long a stop takes to be seen
READ_CHUNK = 4096
MAX_ID = 2**63 - 1  # SQLite's largest integer: a larger id is a bad request, not an overflow
_EXPORT_NAME = re.compile(r"([0-9]{1,19})\.([a-z]+)")
_TEXT = "text/plain; charset=utf-8"

_T = TypeVar("_T")
# A client's address as accept() gives it: (host, port), or (host, port, flow, scope) for IPv6.
Address = tuple[str, int] | tuple[str, int, int, int]


def connection_cap(nofile_soft: int | None = None) -> int:
    """How many sockets the page may hold: `MAX_CONNECTIONS`, or a share of the open-file limit
    when that is low (the GPS reopening after a replug and the store must find a descriptor)."""
    if nofile_soft is None:
        nofile_soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile_soft == resource.RLIM_INFINITY or nofile_soft <= 0:
        return MAX_CONNECTIONS
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, nofile_soft // NOFILE_SHARE))


class BadRequest(ValueError):
    """A request the page refuses with 400 and this one-line reason."""


def activity_id(text: str) -> int:
    """An activity id from a URL: digits only, within SQLite's integers; BadRequest otherwise."""
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_ID:
        raise BadRequest(f"activity: expected a positive whole number, got {_shown(text)}")
    return int(text)


def _shown(text: str, limit: int = 40) -> str:
    """A client's text in a reason: quoted, escaped, and short."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def page() -> bytes:
    return resources.files("tracker").joinpath("data/status.html").read_bytes()


def icon() -> bytes:
    return resources.files("tracker").joinpath("data/icon.svg").read_bytes()


def track(store: Store, activity_id: int, limit: int = TRACK_POINTS) -> list[list[float]]:
    """The activity's fixes as [lat, lon], thinned to at most `limit` at evenly spaced fixes
    (the first and the newest always included, so the track ends where the rider is): a
    bounded read however long the ride (Store.track)."""
    return [[round(lat, 6), round(lon, 6)] for lat, lon in store.track(activity_id, limit)]


class _Handler(BaseHTTPRequestHandler):
    """One request, answered into memory: `request` is the request head the socket thread
    read, and the reply is left in `wfile` for it to send. The handler never touches a socket,
    so a client can never hold the worker that runs it."""

    rfile: io.BytesIO
    wfile: io.BytesIO
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"  # a garbled request line gets a status line too
    error_message_format = "%(message)s\n"  # one line, not the base's HTML page
    error_content_type = _TEXT

    def __init__(self, head: bytes, client_address: Address, page: StatusServer) -> None:
        # Not the base's, which takes a socket and a socketserver: this one answers the head
        # the socket thread read, for the page's server, and leaves the reply in `wfile`.
        self.page = page
        self.client_address = client_address[:2]  # the base's type: host and port
        self.rfile = io.BytesIO(head)
        self.wfile = io.BytesIO()
        self.handle()

    def handle(self) -> None:
        self.close_connection = True
        try:
            self.handle_one_request()
        except Exception as e:  # a bug, or the store failing in a new way: one reply, one line
            self.page.note("errors", logging.ERROR, "status page: %s failed: %s: %s",
                           getattr(self, "path", "?"), type(e).__name__, e,
                           exc_info=True)  # fmt: skip
            self.wfile = io.BytesIO()  # whatever was half written is not sent
            self.close_connection = True
            self.send_error(500, "internal error: see the daemon's log")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("web: %s %s", self.address_string(), format % args)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.command != "GET":
            self.close_connection = True  # its body, if any, is not read
            self.send_response(405, "Method Not Allowed")
            self.send_header("Allow", "GET")
            body = f"{_shown(self.command, 16)} not allowed: the page only reads (GET)\n".encode()
            self.send_header("Content-Type", _TEXT)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            return False
        if self.headers.get("Content-Length", "0").strip() != "0" or "Transfer-Encoding" in (
            self.headers
        ):
            self.close_connection = True  # the body is not read: the stream is out of step
            self._fail(400, "a GET carries no body")
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        url = urlsplit(self.path)
        try:
            query = parse_qs(url.query, max_num_fields=MAX_QUERY_FIELDS)
        except ValueError:
            self._fail(400, f"too many query parameters (at most {MAX_QUERY_FIELDS})")
            return
        if not self._allowed(url.path, query):
            return
        try:
            if url.path == "/":
                self._send(200, "text/html; charset=utf-8", page())
            elif url.path in ("/favicon.ico", "/favicon.svg"):  # asked by every browser
                self._send(200, "image/svg+xml", icon())
            elif url.path == "/api/status":
                report = self.page.status_report()
                report.setdefault("web", {})["server"] = self.page.counters()
                self._json(report)
            elif url.path == "/api/activities":
                self._json(self.page.with_store(self.page.activities))
            elif url.path == "/api/track":
                self._track(query)
            elif url.path.startswith("/export/"):
                self._export(url.path.removeprefix("/export/"))
            else:
                self._fail(404, f"not found: {_shown(url.path)}")
        except BadRequest as e:
            self._fail(400, str(e))
        except StoreError as e:
            self._send(503, _TEXT, f"{e}\n".encode())

    def _fail(self, code: int, reason: str) -> None:
        """An error reply: the standard status line, the reason as its one-line body."""
        self._send(code, _TEXT, f"{reason}\n".encode())

    def _track(self, query: dict[str, list[str]]) -> None:
        given = query.get("activity")
        if given is None:
            self._json(self.page.with_store(lambda s: self.page.track(s, None)))
            return
        if len(given) > 1:
            raise BadRequest("activity: given more than once")
        wanted = str(activity_id(given[0]))

        def read(store: Store) -> dict[str, Any] | None:
            return None if store.activity(int(wanted)) is None else self.page.track(store, wanted)

        found = self.page.with_store(read)
        if found is None:
            self._fail(404, f"no such activity: {wanted}")
        else:
            self._json(found)

    def _allowed(self, path: str, query: dict[str, list[str]]) -> bool:
        token = self.page.token
        if not token:
            return True
        given = query.get("token", [None])[0]
        if given is not None and hmac.compare_digest(given, token):
            # Once in the URL, then a cookie: the token does not stay in the address bar.
            self.send_response(303)
            self.send_header("Location", path)
            self.send_header("Set-Cookie",
                             f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/")  # fmt: skip
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), token):
            return True
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value, token):
                return True
        self._send(401, "text/plain; charset=utf-8",
                   b"a token is needed: open the page once as /?token=...\n")  # fmt: skip
        return False

    def _json(self, value: object) -> None:
        from tracker.plausible import json_text  # here: the one thing web.py needs of it

        self._send(200, "application/json", json_text(value).encode())

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _export(self, name: str) -> None:
        from tracker import export

        m = _EXPORT_NAME.fullmatch(name)
        if m is None or m.group(2) not in EXPORTS:
            raise BadRequest(f"bad export name {_shown(name)}: expected ID.gpx, ID.csv or "
                             "ID.geojson")  # fmt: skip
        stem, fmt = str(activity_id(m.group(1))), m.group(2)
        writers: dict[str, Callable[[Store, IO[str], list[int]], int]] = {
            "gpx": export.write_gpx, "csv": export.write_csv, "geojson": export.write_geojson,
        }  # fmt: skip
        write = writers[fmt]
        buf = io.StringIO()
        try:
            self.page.with_store(lambda s: write(s, buf, [int(stem)]))
        except KeyError:
            self._send(404, "text/plain; charset=utf-8", b"no such activity\n")
            return
        body = buf.getvalue().encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", EXPORTS[fmt])
        self.send_header("Content-Disposition", f'attachment; filename="activity-{stem}.{fmt}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StatusServer:
    """The status page's HTTP server: bound at construction (OSError when it cannot be), it
    serves from `run(stop)` until `stop` is set, with the bounds of the module's docstring."""

    def __init__(self, cfg: Config, token: str = "") -> None:
        if cfg.web is None:
            raise ValueError("the status page needs a [web] section")
        self.web: WebConfig = cfg.web
        host, port = split_listen(self.web.listen)
        sock = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "TCP_DEFER_ACCEPT"):
                # Linux hands over a connection once its first bytes are there: a silent one
                # never takes a slot, and a browser's request is read whole when accepted, so
                # the evictions that make room can never catch it before it has spoken.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_S)
            sock.bind((host, port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.socket = sock
        self.server_address = sock.getsockname()
        self.cfg = cfg
        self.token = token
        self.cap = connection_cap()
        self.request_deadline_s = REQUEST_DEADLINE_S
        self.write_stall_s = WRITE_STALL_S
        self.max_requests = MAX_REQUESTS
        self._counts = dict.fromkeys(COUNTS, 0)
        self._lock = threading.Lock()  # the counts, the reports and the finished replies
        self._reports = RateLimitedLog(log, 60.0)
        self._conns: dict[int, _Conn] = {}  # by descriptor; the socket thread's alone
        self._jobs: queue.Queue[tuple[_Conn, bytes]] = queue.Queue()  # at most `cap` entries
        self._done: deque[tuple[_Conn, bytes, bool]] = deque()
        self._sel: selectors.BaseSelector | None = None
        self._wake = -1
        self._listening = False
        self._paused_until = 0.0

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def with_store(self, read: Callable[[Store], _T]) -> _T:
        store = open_store(self.cfg.storage.path, readonly=True)
        try:
            return read(store)
        finally:
            store.close()

    def status_report(self) -> dict[str, Any]:
        """`/api/status`: the store's status, or, when the database cannot even be opened for
        reading, what `tracker status` says then (status.unopened), so that the page shows
        the storage problem instead of failing."""
        from tracker import status

        try:
            return self.with_store(self.status)
        except StoreError as e:
            report = status.unopened(self.cfg, e)
            report["web"] = {"tiles_url": self.web.tiles_url or None}
            return report

    def status(self, store: Store) -> dict[str, Any]:
        from tracker import status

        report = status.collect(store, self.cfg)
        report["web"] = {"tiles_url": self.web.tiles_url or None}
        if report["activity"] is None:  # collect gives the current activity's only
            report["instruments"] = self.instruments(store)
        return report

    def instruments(self, store: Store) -> dict[str, Any]:
        """The latest instrument readings (depth, wind...) of the newest activity, for a page
        looked at after the ride: `{"activity": id, "readings": [...]}`
        (rides.instruments_json)."""
        from tracker import rides

        a = _newest(store)
        if a is None:
            return {"activity": None, "readings": []}
        readings = rides.instruments_json(rides.latest_instruments(store, a))
        return {"activity": a.id, "readings": readings}

    def activities(self, store: Store) -> list[dict[str, Any]]:
        from tracker import rides
        from tracker.config import zone

        tz = zone(self.cfg.activity.timezone)
        return [rides.as_json(r, tz) for r in rides.rides(store, self.cfg.activity.rules())]

    def track(self, store: Store, wanted: str | None) -> dict[str, Any]:
        if wanted is not None and wanted.isdigit():
            # An id beyond SQLite's integers is no activity (not an OverflowError).
            a = store.activity(int(wanted)) if int(wanted) < 2**63 else None
        else:
            a = store.current_activity() or _newest(store)
        if a is None:
            return {"activity": None, "points": []}
        # What the page says above the drawing: the ride under way, or the last one and when
        # it ended, in the rider's time zone as `tracker activities` shows it.
        from datetime import UTC, datetime

        from tracker.config import zone

        ended = None
        if a.ended_at is not None:
            tz = zone(self.cfg.activity.timezone)
            ended = datetime.fromtimestamp(a.ended_at, UTC).astimezone(tz).strftime("%H:%M")
        return {"activity": a.id, "title": a.title, "current": a.ended_at is None,
                "ended": ended, "points": track(store, a.id)}  # fmt: skip

    def counters(self) -> dict[str, int]:
        """What the server did since it started, and how many sockets it holds now."""
        with self._lock:
            return {"connections": len(self._conns), "cap": self.cap, **self._counts}

    def note(self, kind: str, level: int, msg: str, *args: object, exc_info: bool = False) -> None:
        """Count one `kind` of event; log it at most once a minute, with how many were not."""
        with self._lock:
            self._counts[kind] += 1
            self._reports.log(level, kind, msg, *args, exc_info=exc_info)

    def close(self) -> None:
        """Give up the listening socket of a server that never ran (run() closes its own)."""
        self.socket.close()

    def run(self, stop: threading.Event) -> None:
        self._sel = selectors.DefaultSelector()
        wake_r, self._wake = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(self._wake, False)
        self._sel.register(wake_r, selectors.EVENT_READ, _WAKE)
        workers = [
            threading.Thread(target=run_loop, args=(f"status page worker {i}", self._work, stop),
                             name=f"web-{i}", daemon=True)
            for i in range(WORKERS)
        ]  # fmt: skip
        for w in workers:
            w.start()
        try:
            run_loop("status page", self._step, stop, error_wait_s=1.0)
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            self._sel.close()
            self.socket.close()
            with self._lock:
                os.close(self._wake)
                self._wake = -1
            os.close(wake_r)
            for w in workers:
                w.join(timeout=2 * SELECT_S + 1.0)

    # --- the worker threads: a request head in, a reply out; never a socket ----------------

    def _work(self) -> float:
        try:
            conn, head = self._jobs.get(timeout=2 * SELECT_S)
        except queue.Empty:
            return 0.0
        reply, close = b"", True
        try:
            h = _Handler(head, conn.addr, self)
            reply = h.wfile.getvalue()
            close = h.close_connection or conn.served + 1 >= self.max_requests
        finally:  # even after a bug the connection goes back, to be answered or closed
            with self._lock:
                self._done.append((conn, reply, close))
                if self._wake >= 0:
                    with contextlib.suppress(OSError):
                        os.write(self._wake, b"x")
        return 0.0

    # --- the socket thread ------------------------------------------------------------------

    def _step(self) -> float:
        assert self._sel is not None
        now = time.monotonic()
        self._take_replies(now)
        self._expire(now)
        self._listen(now)
        for key, events in self._sel.select(SELECT_S):
            now = time.monotonic()
            if key.data is None:
                self._accept(now)
            elif key.data is _WAKE:
                with contextlib.suppress(OSError):
                    os.read(key.fd, 4096)
            elif key.data.state == "write" and events & selectors.EVENT_WRITE:
                self._write(key.data, now)
            elif key.data.state in ("read", "linger") and events & selectors.EVENT_READ:
                self._read(key.data, now)
        return 0.0

    def _listen(self, now: float) -> None:
        """Accept only while there is room, or someone to make room from: when every slot holds
        a request being answered, new connections wait in the kernel's backlog."""
        assert self._sel is not None
        want = now >= self._paused_until and (
            len(self._conns) < self.cap or self._victim(now) is not None
        )
        if want and not self._listening:
            self._sel.register(self.socket, selectors.EVENT_READ, None)
        elif not want and self._listening:
            self._sel.unregister(self.socket)
        self._listening = want

    def _victim(self, now: float) -> _Conn | None:
        """The connection to close to make room, or None. First one already answered and
        closing, then one that sent part of a head and stalled (a browser sends its head at
        once), then one idle between keep-alive requests, then one that has sent nothing for
        `GRACE_S` (a browser's request may lag its connection on a loaded machine); oldest
        first within each."""
        best: tuple[int, float] | None = None
        victim = None
        for c in self._conns.values():
            if c.state == "linger":
                rank = 0
            elif c.state != "read":
                continue
            elif c.inbuf:
                rank = 1
            elif c.served:
                rank = 2
            elif now - c.since >= GRACE_S:
                rank = 3
            else:
                continue
            if best is None or (rank, c.since) < best:
                best, victim = (rank, c.since), c
        return victim

    def _accept(self, now: float) -> None:
        assert self._sel is not None
        for _ in range(BACKLOG):
            if len(self._conns) >= self.cap and not self._make_room(now):
                return
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # gone before it was taken
                # No descriptor or no memory: the listener would stay readable and the loop
                # spin. The daemon's other threads need those more; try again a bit later.
                self._paused_until = now + ACCEPT_PAUSE_S
                self.note("accept_errors", logging.WARNING, "status page: cannot accept a "
                          "connection (%s); not accepting for %g s", e, ACCEPT_PAUSE_S)  # fmt: skip
                return
            sock.setblocking(False)
            conn = _Conn(sock, addr, now)
            self._conns[sock.fileno()] = conn
            self._watch(conn, selectors.EVENT_READ)
            with self._lock:
                self._counts["accepted"] += 1
            # A browser's request is usually there with the connection: take it now, before
            # the connections that follow could push this one out.
            self._read(conn, now)

    def _make_room(self, now: float) -> bool:
        """Close one connection for one waiting in the backlog; whether there is room now.
        Never for nothing: only while a connection is waiting to be accepted."""
        victim = self._victim(now)
        if victim is None or not _waiting(self.socket):
            return False
        self._close(victim)
        self.note("evicted", logging.WARNING, "status page: %d connections open, the most it "
                  "holds: closed %s, waiting without a whole request, to make room",
                  self.cap, _peer(victim.addr))  # fmt: skip
        return True

    def _read(self, conn: _Conn, now: float) -> None:
        try:
            data = conn.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
        elif conn.state == "read":
            conn.inbuf += data
            self._parse(conn, now)
        # "linger": what a client sends after a closing reply is read and dropped

    def _parse(self, conn: _Conn, now: float) -> None:
        buf = conn.inbuf.lstrip(b"\r\n")  # empty lines between requests are allowed
        line = buf.find(b"\n")
        if (line < 0 and len(buf) > MAX_REQUEST_LINE) or line > MAX_REQUEST_LINE:
            self._refuse(conn, 414, "URI Too Long",
                         f"request line longer than {MAX_REQUEST_LINE} bytes", now)  # fmt: skip
            return
        end = _head_end(buf)
        if end < 0 and len(buf) <= MAX_HEAD:
            conn.inbuf = buf
            return  # more to come, within the deadline
        if end < 0 or end > MAX_HEAD:
            self._refuse(conn, 431, "Request Header Fields Too Large",
                         f"request head longer than {MAX_HEAD} bytes", now)  # fmt: skip
            return
        conn.inbuf = buf[end:]
        conn.state = "busy"
        self._watch(conn, 0)
        self._jobs.put((conn, buf[:end]))

    def _refuse(self, conn: _Conn, code: int, phrase: str, reason: str, now: float) -> None:
        """Answer a request that never reaches a worker (too large), then close."""
        self.note("refused", logging.INFO, "status page: %d %s from %s (%s)", code, reason,
                  _peer(conn.addr), "closed")  # fmt: skip
        body = f"{reason}\n".encode()
        head = (f"HTTP/1.1 {code} {phrase}\r\nContent-Type: {_TEXT}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
        self._reply(conn, head.encode() + body, True, now)

    def _take_replies(self, now: float) -> None:
        with self._lock:
            done, self._done = self._done, deque()
        for conn, reply, close in done:
            if conn.state != "busy":
                continue  # closed meanwhile (the server is stopping)
            if not reply:
                self._close(conn)
                continue
            conn.served += 1
            self._reply(conn, reply, close, now)

    def _reply(self, conn: _Conn, data: bytes, close: bool, now: float) -> None:
        conn.out, conn.sent, conn.close_after = data, 0, close
        conn.state, conn.since = "write", now
        self._watch(conn, selectors.EVENT_WRITE)
        self._write(conn, now)  # most replies fit the socket's buffer at once

    def _write(self, conn: _Conn, now: float) -> None:
        try:
            n = conn.sock.send(memoryview(conn.out)[conn.sent :])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.sent += n
        conn.since = now  # the stall deadline runs from the last progress
        if conn.sent < len(conn.out):
            return
        conn.out = b""
        with self._lock:
            self._counts["served"] += 1
        conn.state = "linger" if conn.close_after else "read"
        if conn.close_after:
            # Half-close and read until the client closes (or LINGER_S): closing with its
            # bytes unread would reset the connection and could lose the reply on its side.
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
        self._watch(conn, selectors.EVENT_READ)
        if conn.state == "read" and conn.inbuf:
            self._parse(conn, now)  # a pipelined request

    def _expire(self, now: float) -> None:
        for conn in list(self._conns.values()):
            waited = now - conn.since
            if conn.state == "read" and waited > self.request_deadline_s:
                self._close(conn)
                if conn.served == 0 or conn.inbuf:  # not a keep-alive connection at rest
                    self.note("timed_out", logging.INFO, "status page: closed %s, no whole "
                              "request within %g s", _peer(conn.addr),
                              self.request_deadline_s)  # fmt: skip
            elif conn.state == "write" and waited > self.write_stall_s:
                self._close(conn)
                self.note("stalled", logging.INFO, "status page: closed %s, its reply unread "
                          "for %g s", _peer(conn.addr), self.write_stall_s)  # fmt: skip
            elif conn.state == "linger" and waited > LINGER_S:
                self._close(conn)

    def _watch(self, conn: _Conn, events: int) -> None:
        assert self._sel is not None
        if events == conn.events:
            return
        if not events:
            self._sel.unregister(conn.sock)
        elif conn.events:
            self._sel.modify(conn.sock, events, conn)
        else:
            self._sel.register(conn.sock, events, conn)
        conn.events = events

    def _close(self, conn: _Conn) -> None:
        if conn.state == "closed":
            return
        self._watch(conn, 0)
        self._conns.pop(conn.sock.fileno(), None)
        conn.sock.close()
        conn.state = "closed"


COUNTS = ("accepted", "served", "evicted", "timed_out", "stalled", "refused", "accept_errors",
          "errors")  # fmt: skip
_WAKE = "wake"


class _Conn:
    """One client connection, owned by the socket thread. `state`: "read" (waiting for a
    request head, since `since`), "busy" (a worker answers it), "write" (the reply going out,
    `since` its last progress), "linger" (half-closed after a closing reply), "closed"."""

    __slots__ = ("sock", "addr", "state", "since", "inbuf", "out", "sent", "close_after",
                 "served", "events")  # fmt: skip

    def __init__(self, sock: socket.socket, addr: Address, now: float) -> None:
        self.sock = sock
        self.addr = addr
        self.state = "read"
        self.since = now
        self.inbuf = b""
        self.out = b""
        self.sent = 0
        self.close_after = False
        self.served = 0
        self.events = 0


def _newest(store: Store) -> Activity | None:
    activities = store.activities()
    return activities[-1] if activities else None


def _waiting(listener: socket.socket) -> bool:
    """Whether a connection waits in the listener's backlog (poll: any descriptor number)."""
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    return bool(poller.poll(0))


def _head_end(buf: bytes) -> int:
    """Where a request head ends (after its blank line), or -1: CRLF, or bare LF as clients
    that are lenient with themselves send."""
    ends = [i + n for i, n in ((buf.find(b"\r\n\r\n"), 4), (buf.find(b"\n\n"), 2)) if i >= 0]
    return min(ends) if ends else -1


def _peer(addr: object) -> str:
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and len(addr) >= 2 else str(addr)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def start(cfg: Config, stop: threading.Event) -> StatusServer | None:
    """The status page's server in its own thread, or None (no [web], or the address is
    taken: one log line, the daemon runs on)."""
    if cfg.web is None:
        return None
    token = ""
    try:
        token = web_token(cfg)
        server = StatusServer(cfg, token)
    except (OSError, ValueError) as e:
        log.error("status page on %s unavailable: %s; the daemon runs without it",
                  cfg.web.listen, e)  # fmt: skip
        return None
    threading.Thread(target=server.run, args=(stop,), name="web", daemon=True).start()
    log.info("status page at %s%s (at most %d connections)", server.url,
             " (token required)" if token else "", server.cap)  # fmt: skip
    return server


def web_token(cfg: Config) -> str:
    """The page's token: inline, a file, or the systemd credential web-token; "" for none."""
    from tracker.credentials import SecretError, read_secret

    w = cfg.web
    if w is None:  # no page, no token
        return ""
    _, credential = w.SECRET
    if not (w.token or w.token_file or credential_exists(credential)):
        return ""
    try:
        return read_secret(w.token or None, w.token_file, credential, what="token")
    except SecretError as e:
        raise ValueError(str(e)) from None
