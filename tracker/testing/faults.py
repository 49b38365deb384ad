"""Scripted network faults and request recording for the test servers, protocol-independent.

In the spirit of urllib3's `dummyserver`: a real HTTP server on 127.0.0.1, bound in a thread
(port 0 or a fixed port, SO_REUSEADDR so a stopped server's port can be taken again at once),
that fails on purpose. A protocol plugs in an `App` (parse a request without side effects,
process it) and gets, for every request:

1. the body is read and parsed (`App.parse`: name, params, user; no state is touched);
2. `Faults.choose(name)` draws at most one fault for it, deterministically from a seeded RNG;
3. faults that strike *before* processing: `reset` (socket closed with SO_LINGER 0, a real
   RST, no reply), `fail_500`, `retry_after` (429 or 503 with `Retry-After`), `html` (a 200
   with a captive-portal HTML page). The request is not processed;
4. otherwise `App.process` runs (processed = True), then faults that strike *after* it:
   `drop_reply` (connection closed, no reply: the ambiguous case), `truncate` (the reply body
   cut in half, HTTP framing intact), `slow` (the reply is held `slow_s` seconds; the wait ends
   early, with no reply, when the server stops), and three hostile replies where the
   protocol's should be: `garbage` (a 200 of random bytes, `application/octet-stream`),
   `huge` (a 200 of `HUGE_BYTES` of `<p>` filler under the real reply's content type, without
   Content-Length, written in 64 KiB pieces as the client reads, never built in memory, until
   the client closes), `trickle` (the real reply's status and headers at once, then its body
   one byte every `trickle_s` seconds: only a client with an overall deadline gets away);
5. one `RecordedRequest` is appended to the log and one log line written.

`Faults.offline = True` resets every connection, whatever the rates and the `only` filter.

Thread safety: `Faults` and `RequestLog` each have their own lock and may be changed or read
from any thread while the server runs; `App` implementations guard their own state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.parser
import email.policy
import logging
import random
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, Self

log = logging.getLogger(__name__)

#: The network fault kinds, which tests that want "every fault" cycle through.
KINDS = ("reset", "fail_500", "retry_after", "html", "drop_reply", "truncate", "slow")
#: Hostile replies after processing: opted into by name, not part of "every fault".
HOSTILE_KINDS = ("garbage", "huge", "trickle")
#: Every kind, in the fixed order in which the single per-request draw is matched against
#: them. New kinds go at the end, so an existing seed keeps drawing the same faults.
ALL_KINDS = KINDS + HOSTILE_KINDS
#: Kinds that strike before the request is processed (the others strike after it).
BEFORE = frozenset({"reset", "fail_500", "retry_after", "html"})
OFFLINE = "offline"

#: Upper bound for a slow reply's delay and a trickled reply's byte interval.
MAX_SLOW_S = 120.0
#: Size of a `huge` reply body; `HUGE_PIECE` is what one write sends.
HUGE_BYTES = 50 * 1024 * 1024
HUGE_PIECE = b"<p>" * (64 * 1024 // 3)
#: Size of a `garbage` reply body.
GARBAGE_BYTES = 512
#: Largest request body read; larger requests get a 413.
MAX_BODY = 16 * 1024 * 1024
#: Parameter names never recorded.
SECRET_PARAMS = frozenset({"password", "passwd", "pass", "pwd"})

CAPTIVE_PORTAL_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head>\n"
    b"<body><h1>Welcome to Free WiFi</h1><p>Please accept the terms to continue.</p>"
    b'<form method="post" action="/login"><button>Accept</button></form></body></html>\n'
)


class Faults:
    """Fault rates (each 0..1), chosen per request with a seeded RNG.

    The draw is one uniform number per request matched against the rates laid end to end in
    `ALL_KINDS` order, so each kind fires at exactly its rate while the rates add up to at most 1;
    beyond that, kinds later in the order get what is left (`set(reset=1.0)` always resets).
    `only`, if given, restricts faults to those request names (`offline` ignores it).
    Changes take effect from the next request; all methods are thread-safe.
    """

    def __init__(
        self,
        *,
        reset: float = 0.0,
        fail_500: float = 0.0,
        retry_after: float = 0.0,
        html: float = 0.0,
        drop_reply: float = 0.0,
        truncate: float = 0.0,
        slow: float = 0.0,
        garbage: float = 0.0,
        huge: float = 0.0,
        trickle: float = 0.0,
        slow_s: float = 3.0,
        trickle_s: float = 1.0,
        retry_after_s: int = 2,
        only: Iterable[str] | None = None,
        offline: bool = False,
        seed: int | None = 0,
    ) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rates = dict.fromkeys(ALL_KINDS, 0.0)
        self._slow_s = 3.0
        self._trickle_s = 1.0
        self._retry_after_s = 2
        self._only: frozenset[str] | None = None
        self._offline = False
        self.set(
            reset=reset, fail_500=fail_500, retry_after=retry_after, html=html,
            drop_reply=drop_reply, truncate=truncate, slow=slow, garbage=garbage, huge=huge,
            trickle=trickle, slow_s=slow_s, trickle_s=trickle_s, retry_after_s=retry_after_s,
            only=only, offline=offline,
        )  # fmt: skip

    _UNSET: Any = object()

    def set(
        self,
        *,
        only: Iterable[str] | None = _UNSET,
        offline: bool | None = None,
        slow_s: float | None = None,
        trickle_s: float | None = None,
        retry_after_s: int | None = None,
        **rates: float,
    ) -> Faults:
        """Change some settings, keep the others. Unknown kinds or rates outside 0..1 raise
        ValueError (and change nothing). `only=None` lifts the restriction."""
        unknown = set(rates) - set(ALL_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s): {', '.join(sorted(unknown))}")
        for kind, rate in rates.items():
            if not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"fault rate {kind}={rate} is outside 0..1")
        if slow_s is not None and not 0.0 <= float(slow_s) <= MAX_SLOW_S:
            raise ValueError(f"slow_s={slow_s} is outside 0..{MAX_SLOW_S:g}")
        if trickle_s is not None and not 0.0 <= float(trickle_s) <= MAX_SLOW_S:
            raise ValueError(f"trickle_s={trickle_s} is outside 0..{MAX_SLOW_S:g}")
        if retry_after_s is not None and int(retry_after_s) < 0:
            raise ValueError(f"retry_after_s={retry_after_s} is negative")
        with self._lock:
            for kind, rate in rates.items():
                self._rates[kind] = float(rate)
            if only is not Faults._UNSET:
                self._only = None if only is None else frozenset(only)
            if offline is not None:
                self._offline = bool(offline)
            if slow_s is not None:
                self._slow_s = float(slow_s)
            if trickle_s is not None:
                self._trickle_s = float(trickle_s)
            if retry_after_s is not None:
                self._retry_after_s = int(retry_after_s)
        return self

    def clear(self) -> Faults:
        """All rates to 0, not offline, no restriction."""
        rates: dict[str, Any] = dict.fromkeys(ALL_KINDS, 0.0)  # Any: **kwargs of mixed types
        return self.set(only=None, offline=False, **rates)

    def reseed(self, seed: int | None) -> None:
        with self._lock:
            self._rng.seed(seed)

    @property
    def offline(self) -> bool:
        with self._lock:
            return self._offline

    @offline.setter
    def offline(self, value: bool) -> None:
        self.set(offline=value)

    @property
    def slow_s(self) -> float:
        with self._lock:
            return self._slow_s

    @property
    def trickle_s(self) -> float:
        with self._lock:
            return self._trickle_s

    @property
    def retry_after_s(self) -> int:
        with self._lock:
            return self._retry_after_s

    @property
    def rates(self) -> dict[str, float]:
        with self._lock:
            return dict(self._rates)

    def choose(self, name: str | None) -> str | None:
        """The fault for one request named `name` (None: none), or `OFFLINE`.

        A number is drawn for every request, even one exempted by `only`, so the sequence of
        faults depends only on the seed and the sequence of requests."""
        with self._lock:
            if self._offline:
                return OFFLINE
            u = self._rng.random()
            if self._only is not None and name not in self._only:
                return None
            edge = 0.0
            for kind in ALL_KINDS:
                rate = self._rates[kind]
                edge += rate
                if rate > 0.0 and u < edge:
                    return kind
            return None

    def pick(self, options: tuple[Any, ...]) -> Any:
        """One of `options`, from the same seeded RNG (e.g. 429 or 503)."""
        with self._lock:
            return self._rng.choice(options)

    def noise(self, n: int) -> bytes:
        """`n` random bytes, from the same seeded RNG (a `garbage` reply)."""
        with self._lock:
            return self._rng.randbytes(n)

    def __repr__(self) -> str:
        with self._lock:
            on = {k: v for k, v in self._rates.items() if v}
            return (
                f"Faults({on}, slow_s={self._slow_s:g}, trickle_s={self._trickle_s:g}, "
                f"retry_after_s={self._retry_after_s}, "
                f"only={sorted(self._only) if self._only is not None else None}, "
                f"offline={self._offline})"
            )



def seeded(faults: Faults | None, seed: int | None) -> Faults:
    """The Faults a server uses: a new one seeded with `seed` (0 if None), or the one passed in,
    which keeps its own seed unless `seed` is given."""
    if faults is None:
        return Faults(seed=0 if seed is None else seed)
    if seed is not None:
        faults.reseed(seed)
    return faults

@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it. `params` never holds a password (basic auth is not
    recorded at all; form fields named like a password are dropped). `status` is None when no
    HTTP reply was sent (reset, dropped, slow reply interrupted by a stop); a slow reply is
    recorded with its status when its wait begins. `processed` is True when the
    protocol logic acted on the request, whatever it answered (a data error too) and whether or
    not the reply reached the client. `reply` is a short summary of the answer."""

    time: float
    name: str | None
    params: dict[str, str]
    user: str | None
    status: int | None
    fault: str | None
    processed: bool
    reply: str = ""
    client: str = ""


class RequestLog:
    """Append-only, thread-safe list of `RecordedRequest`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[RecordedRequest] = []

    def append(self, item: RecordedRequest) -> None:
        with self._lock:
            self._items.append(item)

    def replace(self, old: RecordedRequest, new: RecordedRequest) -> None:
        """Put `new` where `old` (the same object) is."""
        with self._lock:
            for i, item in enumerate(self._items):
                if item is old:
                    self._items[i] = new
                    return

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._items)

    def count(self, name: str | None = None, **where: Any) -> int:
        """How many requests named `name` (any name if None) match every `field=value`."""
        return len(self.select(name, **where))

    def select(self, name: str | None = None, **where: Any) -> list[RecordedRequest]:
        return [
            r
            for r in self.snapshot()
            if (name is None or r.name == name)
            and all(getattr(r, k) == v for k, v in where.items())
        ]


@dataclass
class Call:
    """A parsed request: what `App.parse` returns. `data` carries anything the app wants to
    keep from parsing to processing (never recorded)."""

    name: str | None
    params: dict[str, str]
    user: str | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "text/xml; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    processed: bool = True
    summary: str = ""


class App(Protocol):
    """The protocol side of a test server."""

    def parse(self, method: str, path: str, headers: Any, body: bytes) -> Call:
        """Decode a request without touching any state."""
        ...

    def process(self, call: Call) -> Reply:
        """Act on the request and produce the answer (401 etc. included)."""
        ...


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """Form fields of a POST body, `application/x-www-form-urlencoded` or `multipart/form-data`
    (file fields as text, decoded as UTF-8 with replacement). The last value of a repeated
    field wins. Raises ValueError on a malformed multipart body."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if not msg.is_multipart():
            raise ValueError("malformed multipart body")
        fields: dict[str, str] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not name:
                continue
            raw = part.get_payload(decode=True)  # bytes, or None for a multipart part
            payload = raw if isinstance(raw, bytes) else b""
            charset = part.get_content_charset() or "utf-8"
            try:
                fields[str(name)] = payload.decode(charset, errors="replace")
            except LookupError:
                fields[str(name)] = payload.decode("utf-8", errors="replace")
        return fields
    text = body.decode("utf-8", errors="replace")
    return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))


def public_params(params: dict[str, str]) -> dict[str, str]:
    """`params` without anything that looks like a password."""
    return {k: v for k, v in params.items() if k.lower() not in SECRET_PARAMS}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection is closed after this long
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (40 ms on Linux loopback) and every request looks 40 ms slower than it is.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s " + format, self.address_string(), *args)

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def _serve(self, method: str) -> None:
        owner = self.server.owner
        length = self.headers.get("Content-Length")
        try:
            n = int(length) if length else 0
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            self._send(Reply(413 if n > 0 else 400, b"bad Content-Length\n", "text/plain"))
            self.close_connection = True
            return
        body = self.rfile.read(n) if n else b""
        call = owner.app.parse(method, self.path, self.headers, body)
        fault = owner.faults.choose(call.name)
        status: int | None = None
        processed = False
        summary = ""
        to_send: Reply | None = None
        try:
            if fault in (OFFLINE, "reset"):
                self.server.reset_on_close(self.connection)
                self.close_connection = True
                summary = "connection reset"
            elif fault in BEFORE:
                to_send = self._fault_reply(fault, owner.faults)
                summary = to_send.summary
            else:
                try:
                    reply = owner.app.process(call)
                except Exception as e:  # a bug in the app: loud in the log, a 500 on the wire
                    log.exception("%s: %s failed", type(owner).__name__, call.name)
                    reply = Reply(500, b"internal error\n", "text/plain", processed=False,
                                  summary=f"internal error: {e!r}")  # fmt: skip
                processed = reply.processed
                summary = reply.summary
                if fault == "truncate":
                    reply.body = reply.body[: len(reply.body) // 2]
                elif fault == "garbage":
                    reply = dataclasses.replace(
                        reply, status=200, body=owner.faults.noise(GARBAGE_BYTES),
                        content_type="application/octet-stream", headers={},
                    )  # fmt: skip
                elif fault == "huge":
                    reply = dataclasses.replace(reply, status=200, headers={})
                if fault == "drop_reply":
                    self.close_connection = True
                else:
                    to_send = reply
            status = to_send.status if to_send is not None else None
        finally:
            # Recorded before the reply goes out (and before a slow reply is held), so a client
            # that has its answer, or has given up waiting, finds the record.
            item = RecordedRequest(
                time=owner.clock(), name=call.name, params=public_params(call.params),
                user=call.user, status=status, fault=fault, processed=processed,
                reply=summary, client=self.client_address[0],
            )  # fmt: skip
            owner.request_log.append(item)
            log.info(
                "%s user=%s status=%s fault=%s processed=%s %s",
                call.name, call.user, status if status is not None else "-", fault or "-",
                "yes" if processed else "no", summary,
            )  # fmt: skip
        if fault == "slow" and owner.stop_event.wait(owner.faults.slow_s):
            # the server is stopping: no reply after all, like a server that died
            owner.request_log.replace(item, dataclasses.replace(item, status=None))
            self.close_connection = True
            return
        if to_send is None:
            return
        if fault == "huge":
            self._send_huge(to_send)
        elif fault == "trickle":
            self._send_trickled(to_send, owner.faults.trickle_s)
        else:
            self._send(to_send)

    @staticmethod
    def _fault_reply(fault: str, faults: Faults) -> Reply:
        if fault == "fail_500":
            return Reply(500, b"Internal Server Error\n", "text/plain", processed=False,
                         summary="500")  # fmt: skip
        if fault == "retry_after":
            code = faults.pick((429, 503))
            return Reply(
                code, f"{code} try again later\n".encode(), "text/plain",
                {"Retry-After": str(faults.retry_after_s)}, processed=False, summary=str(code),
            )  # fmt: skip
        return Reply(200, CAPTIVE_PORTAL_HTML, "text/html; charset=utf-8", processed=False,
                     summary="captive portal")  # fmt: skip

    def _send_huge(self, reply: Reply) -> None:
        """A 200 whose body is HUGE_BYTES of filler under `reply`'s content type, delimited by
        closing the connection (no Content-Length to refuse it by); written piece by piece, it
        ends early when the client goes away or the server stops."""
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Connection", "close")
            self.end_headers()
            sent = 0
            while sent < HUGE_BYTES and not self.server.owner.stop_event.is_set():
                self.wfile.write(HUGE_PIECE)
                sent += len(HUGE_PIECE)
        except OSError as e:
            log.debug("huge reply cut by the client: %s", e)

    def _send_trickled(self, reply: Reply, interval_s: float) -> None:
        """`reply` with honest headers, then its body one byte every `interval_s`; ends
        early, the connection closed, when the client goes away or the server stops."""
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            stop = self.server.owner.stop_event
            for i in range(len(reply.body)):
                if stop.wait(interval_s):
                    self.close_connection = True
                    return
                self.wfile.write(reply.body[i : i + 1])
        except OSError as e:
            log.debug("trickled reply cut by the client: %s", e)
            self.close_connection = True

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for k, v in reply.headers.items():
                self.send_header(k, v)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError as e:  # the client went away: nothing to tell it
            log.debug("reply not delivered: %s", e)
            self.close_connection = True


class _HTTPServer(ThreadingHTTPServer):
    """Tracks its connections so `stop()` can close idle keep-alive ones (else an old handler
    thread would keep answering after a restart) and so a connection can end with a RST."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: FaultyServer) -> None:
        self.owner = owner
        self._conn_lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._resets: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(
            target=self.process_request_thread, args=(request, client_address),
            name=f"{type(self.owner).__name__}-conn", daemon=True,
        )  # fmt: skip
        with self._conn_lock:
            self._conns[request] = t
        t.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client went away mid-request: its business
            log.debug("connection from %s: %s", client_address, exc)
        else:
            log.exception("error serving %s", client_address)

    def reset_on_close(self, sock: socket.socket) -> None:
        with self._conn_lock:
            self._resets.add(sock)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._conns.pop(request, None)
            reset = request in self._resets
            self._resets.discard(request)
        if reset:
            with contextlib.suppress(OSError):
                request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_request(request)  # no shutdown(): close with linger 0 sends a RST
        else:
            super().shutdown_request(request)

    def close_all(self, join_s: float) -> None:
        with self._conn_lock:
            conns = dict(self._conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + join_s
        for t in conns.values():
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("%s still running after %g s", t.name, join_s)


class FaultyServer:
    """A threaded HTTP server in front of an `App`, with `Faults` and a `RequestLog`.

    `start()` binds (port 0 picks a free port; afterwards `port` is the bound one, so `stop()`
    then `start()` comes back on the same port) and returns once the server thread is serving.
    `stop()` stops accepting, closes every open connection, ends pending slow replies, and joins
    the threads; it is idempotent. Usable as a context manager.
    """

    def __init__(
        self,
        app: App,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        requests: RequestLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.faults = faults if faults is not None else Faults()
        self.request_log = requests if requests is not None else RequestLog()
        self.clock = clock
        self.stop_event = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError("already started")
        self.stop_event.clear()
        httpd = _HTTPServer((self.host, self.port), self)
        self.port = httpd.server_address[1]
        ready = threading.Event()

        def serve() -> None:
            ready.set()
            httpd.serve_forever(poll_interval=0.05)

        self._httpd = httpd
        self._thread = threading.Thread(target=serve, name=f"{type(self).__name__}", daemon=True)
        self._thread.start()
        ready.wait()
        log.info("%s listening on %s:%d", type(self).__name__, self.host, self.port)
        return self

    def stop(self, join_s: float = 5.0) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self.stop_event.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(join_s)
        httpd.close_all(join_s)
        self._httpd = self._thread = None
        log.info("%s on port %d stopped", type(self).__name__, self.port)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request so far, oldest first."""
        return self.request_log.snapshot()

    def count(self, name: str | None = None, **where: Any) -> int:
        """Recorded requests named `name` (any if None) matching every `field=value`, e.g.
        `count("update_activity", processed=True)`."""
        return self.request_log.count(name, **where)

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def __enter__(self) -> Self:
        if self._httpd is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_fault_arguments(parser: Any) -> None:
    """The fault flags shared by the test servers' command lines."""
    g = parser.add_argument_group("faults (each a rate 0..1, drawn per request)")
    g.add_argument("--fail-500", type=float, default=0.0, help="HTTP 500, not processed")
    g.add_argument("--reset", type=float, default=0.0,
                   help="connection reset (RST) before processing, no reply")  # fmt: skip
    g.add_argument("--drop-reply", type=float, default=0.0,
                   help="processed, then the connection closed with no reply")  # fmt: skip
    g.add_argument("--slow", type=float, default=0.0, help="processed, reply held --slow-s")
    g.add_argument("--slow-s", type=float, default=3.0, help="delay of a slow reply (s)")
    g.add_argument("--html", type=float, default=0.0,
                   help="a 200 with an HTML captive-portal page, not processed")  # fmt: skip
    g.add_argument("--retry-after", type=float, default=0.0,
                   help="429 or 503 with Retry-After, not processed")  # fmt: skip
    g.add_argument("--retry-after-s", type=int, default=2, help="the Retry-After value (s)")
    g.add_argument("--truncate", type=float, default=0.0,
                   help="processed, reply body cut in half")  # fmt: skip
    g.add_argument("--garbage", type=float, default=0.0,
                   help="processed, then a 200 of random bytes")  # fmt: skip
    g.add_argument("--huge", type=float, default=0.0,
                   help=f"processed, then a 200 of {HUGE_BYTES // 2**20} MB of filler")  # fmt: skip
    g.add_argument("--trickle", type=float, default=0.0,
                   help="processed, then the reply's body one byte every --trickle-s")  # fmt: skip
    g.add_argument("--trickle-s", type=float, default=1.0,
                   help="interval between the bytes of a trickled reply (s)")  # fmt: skip
    g.add_argument("--only", action="append", metavar="REQUEST",
                   help="fault only these requests (repeatable)")  # fmt: skip
    g.add_argument("--seed", type=int, default=0, help="fault RNG seed")


def faults_from_args(args: Any) -> Faults:
    return Faults(
        fail_500=args.fail_500, reset=args.reset, drop_reply=args.drop_reply, slow=args.slow,
        slow_s=args.slow_s, html=args.html, retry_after=args.retry_after,
        retry_after_s=args.retry_after_s, truncate=args.truncate, garbage=args.garbage,
        huge=args.huge, trickle=args.trickle, trickle_s=args.trickle_s, only=args.only,
        seed=args.seed,
    )  # fmt: skip


def run_in_foreground(server: FaultyServer, banner: Callable[[], str]) -> int:
    """The `python -m tracker.testing.*` loop: start, print `banner()` (the URL is known only
    once listening), serve until SIGINT or SIGTERM, stop. One log line a request."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("tracker.testing").setLevel(logging.INFO)
    try:
        server.start()
    except OSError as e:
        print(f"tracker: cannot listen on {server.host}:{server.port}: {e}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    print(banner(), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        server.stop()
    return 0
