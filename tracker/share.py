"""Sharing the NMEA the daemon reads: a TCP server for chart plotters, Signal K, OpenCPN, gpsd.

`[share] nmea_tcp = "0.0.0.0:10110"` (off without it) serves, to any number of TCP clients, the
raw sentences every NMEA source reads: the `[gps]` receiver and each `[[inputs]]` entry, as a
multiplexer does. Verbatim (checksums, talkers, proprietary sentences and all, as they came) and
in the order they were read, whole lines only: each source cuts its bytes at line ends
(`LineCutter`) before it hands them over, so sentences from two sources never interleave
mid-line. A `gpsd://` GPS source reads JSON, not NMEA: it shares nothing (gpsd serves its own
NMEA, `gpspipe -r`).

Ingest never waits for a client. `publish()` only appends to each client's queue under a lock
and wakes the server thread; a client whose queue is over `max_buffer` bytes (a plotter that
stopped reading, a link that stalled) loses that chunk, whole lines, counted for it alone, and
goes on receiving from where it catches up. The server thread is the only one that touches the
sockets: `select` with a timeout, non-blocking sends, a bounded number of clients.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
from collections import deque
from typing import Any

from tracker.worker import run_loop

log = logging.getLogger(__name__)

MAX_BUFFER = 64 * 1024  # bytes queued per client: about 40 s of a busy 4800-baud line
MAX_CLIENTS = 16
SNDBUF = 32 * 1024  # the kernel's share of a client's backlog: bounded too
SELECT_S = 0.25  # longest one select blocks: bounds how long a stop takes to be seen
MAX_LINE = 1024  # bytes without a line end before a source's partial line is dropped (as nmea.py)


class LineCutter:
    """Cuts one source's byte stream at line ends: `feed(data)` returns the complete lines seen
    so far (b"" when none) and keeps the rest for the next call. A run of more than `MAX_LINE`
    bytes without a line end (binary data, a wrong baud rate) is dropped, so the tail stays
    bounded. Not thread-safe: one per source thread."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> bytes:
        end = data.rfind(b"\n")
        if end < 0:
            self._tail += data
            if len(self._tail) > MAX_LINE:
                self._tail = b""
            return b""
        lines = self._tail + data[: end + 1]
        self._tail = data[end + 1 :]
        if len(self._tail) > MAX_LINE:
            self._tail = b""
        return lines

    def reset(self) -> None:
        """The line went away: a partial line never reaches the clients."""
        self._tail = b""


class _Client:
    __slots__ = ("sock", "peer", "queue", "queued", "sent", "dropped", "dropped_bytes")

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.sent = 0
        self.dropped = 0  # chunks not queued for this client (its queue was full)
        self.dropped_bytes = 0


class ShareServer:
    """The NMEA share server. `start()` binds (raising OSError when it cannot) and starts its
    thread; it stops when `stop` is set. `publish()` may be called from any thread and never
    blocks on a client."""

    def __init__(
        self,
        host: str,
        port: int,
        stop: threading.Event,
        *,
        max_buffer: int = MAX_BUFFER,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.host = host
        self.port = port
        self.thread: threading.Thread | None = None
        self._stop = stop
        self._max_buffer = max_buffer
        self._max_clients = max_clients
        self._lock = threading.Lock()
        self._clients: dict[int, _Client] = {}  # by fd; added and removed by the server thread
        self._listener: socket.socket | None = None
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.accepted = 0
        self.refused = 0  # connections closed at once: max_clients reached
        self.published = 0  # bytes handed over by the sources
        self.dropped = 0  # bytes dropped for slow clients, all clients together
        self.sent = 0

    def start(self) -> ShareServer:
        sock = bind(self.host, self.port)
        try:
            sock.listen(8)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listener = sock
        self.port = sock.getsockname()[1]  # port 0: the one the kernel chose
        self.thread = threading.Thread(target=self.run, name="share", daemon=True)
        self.thread.start()
        log.info("sharing NMEA on tcp %s:%d", self.host, self.port)
        return self

    # --- any thread -----------------------------------------------------------------------

    def publish(self, data: bytes) -> None:
        """Queue whole NMEA lines for every client; a full queue drops them for that client."""
        if not data:
            return
        with self._lock:
            self.published += len(data)
            if not self._clients or self._closed:
                return
            for client in self._clients.values():
                if client.queued + len(data) > self._max_buffer:
                    client.dropped += 1
                    client.dropped_bytes += len(data)
                    self.dropped += len(data)
                    continue
                client.queue.append(data)
                client.queued += len(data)
            # Under the lock: the pipe is closed under it too, and its number may be reused.
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"x")  # a full pipe is awake already

    def status(self) -> dict[str, Any]:
        with self._lock:
            clients = [
                {"peer": c.peer, "queued": c.queued, "sent": c.sent, "dropped": c.dropped,
                 "dropped_bytes": c.dropped_bytes}
                for c in self._clients.values()
            ]  # fmt: skip
        return {
            "listen": f"{self.host}:{self.port}",
            "clients": len(clients),
            "accepted": self.accepted,
            "refused": self.refused,
            "published_bytes": self.published,
            "sent_bytes": self.sent,
            "dropped_bytes": self.dropped,
            "per_client": clients,
        }

    # --- the server thread ----------------------------------------------------------------

    def run(self) -> None:
        try:
            run_loop("NMEA share", self._step, self._stop, error_wait_s=1.0)
        finally:
            with self._lock:
                self._closed = True
                clients, self._clients = list(self._clients.values()), {}
                os.close(self._wake_r)
                os.close(self._wake_w)
            for c in clients:
                c.sock.close()
            if self._listener is not None:
                self._listener.close()

    def _step(self) -> float:
        assert self._listener is not None
        with self._lock:
            clients = list(self._clients.values())
            writers = [c.sock for c in clients if c.queue]
        readers: list[socket.socket | int] = [self._listener, self._wake_r,
                                              *(c.sock for c in clients)]  # fmt: skip
        readable, writable, _ = select.select(readers, writers, [], SELECT_S)
        by_sock = {c.sock: c for c in clients}
        for sock in readable:
            if sock is self._listener:
                self._accept()
            elif sock == self._wake_r:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wake_r, 4096)
            elif sock in by_sock:
                self._drain(by_sock[sock])
        for sock in writable:
            client = by_sock[sock]
            if client.sock.fileno() >= 0:
                self._send(client)
        return 0.0

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, addr = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        peer = f"{addr[0]}:{addr[1]}"
        if len(self._clients) >= self._max_clients:
            self.refused += 1
            log.warning("NMEA share: refused %s, %d clients already", peer, self._max_clients)
            sock.close()
            return
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        with self._lock:
            self._clients[sock.fileno()] = _Client(sock, peer)
        self.accepted += 1
        log.info("NMEA share: %s connected", peer)

    def _drain(self, client: _Client) -> None:
        """Whatever a client sends is read and ignored (gpsd probes, a plotter's own sentences);
        an end of file or an error closes it."""
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._close(client, str(e))
            return
        if not data:
            self._close(client, "closed by the client")

    def _send(self, client: _Client) -> None:
        with self._lock:
            chunk = b"".join(client.queue)
        try:
            n = client.sock.send(chunk)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._close(client, str(e))
            return
        with self._lock:
            left = n
            while left and client.queue:
                head = client.queue[0]
                if len(head) <= left:
                    client.queue.popleft()
                    left -= len(head)
                else:
                    client.queue[0] = head[left:]
                    left = 0
            client.queued -= n
            client.sent += n
        self.sent += n

    def _close(self, client: _Client, why: str) -> None:
        with self._lock:
            self._clients.pop(client.sock.fileno(), None)
        client.sock.close()
        log.info("NMEA share: %s disconnected (%s), %d chunks dropped for it", client.peer, why,
                 client.dropped)  # fmt: skip


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port, not listening yet (OSError when it cannot): what the
    server listens on, and what doctor's check binds and releases."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart binds at once
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


# --- `tracker doctor`: the share's check (tracker/checks.py, tracker/doctor.py) ---------------

from typing import TYPE_CHECKING  # noqa: E402 (the check's imports stay with it, here)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tracker.checks import Check, Context


def check(ctx: Context) -> Iterator[Check]:
    """`[share] nmea_tcp` can be bound now, or the running daemon holds it (then it serves)."""
    if ctx.cfg.share.nmea_tcp:
        yield _check_bind(ctx, ctx.cfg.share.nmea_tcp)


def _check_bind(ctx: Context, listen: str) -> Check:
    import errno

    from tracker.checks import FAIL, OK, Check, bind_fix, reason
    from tracker.config import split_listen

    host, port = split_listen(listen)
    try:
        bind(host, port).close()  # as start() binds; never listened: released at once
    except OSError as e:
        served = _served_by_daemon(ctx, listen) if e.errno == errno.EADDRINUSE else None
        if served:
            return Check("share", OK, served)
        return Check("share", FAIL, f"cannot listen on {listen}: {reason(e)}",
                     bind_fix(e.errno, port, f"ss -tlpn 'sport = :{port}'",
                              "[share] nmea_tcp"))  # fmt: skip
    return Check("share", OK, f"{listen} can be bound (NMEA served there once tracker runs)")


def _served_by_daemon(ctx: Context, listen: str) -> str | None:
    """What the running daemon says of its share at `listen`, or None when no running daemon
    serves it (not running, another address, or its own bind failed: someone else has it)."""
    from tracker.status import daemon_row
    from tracker.store import StoreError, open_store

    try:
        store = open_store(ctx.cfg.storage.path, readonly=True)
    except (StoreError, OSError):
        return None
    try:
        _, _, runtime, running = daemon_row(store)
    except (StoreError, OSError):
        return None
    finally:
        store.close()
    share = runtime.share
    if not running or share.listen != listen or share.error:
        return None
    return (
        f"{listen} in use by the running tracker (pid {runtime.pid}), which serves it: "
        f"{share.clients} clients"
    )
