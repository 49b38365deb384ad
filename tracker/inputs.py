"""NMEA inputs besides the GPS: one reader thread per `[[inputs]]` entry (issue 15).

An input is an instrument stream: an echo sounder, a wind instrument, a compass, a NMEA
multiplexer. Its bytes go through its own `nmea.Decoder`; the instrument readings it decodes
(`Decoder.take_readings()`: depth, wind, heading... in SI) are stamped with `time.monotonic()`
at arrival and handed to `out`, which converts them to GPS time through the daemon's
`SensorClock` and offers them to the recorder like any sensor's. Positions in an input are
ignored (counted as `positions_ignored`): only the `[gps]` source gives fixes, so a plotter's
echoed GPS or a second receiver on the multiplexer never makes a second track.

Transports, by the entry's `url`:

    tcp://host:port   a client of a multiplexer (a Yacht Devices or Actisense gateway,
                      kplex, Signal K's NMEA output); reconnects with backoff, and reconnects
                      when the stream stays silent for SILENT_RECONNECT_S (a half-open link)
    udp://:10110      listen for NMEA datagrams, broadcast or unicast (the common marine
                      default); `udp://192.168.1.10:10110` binds that address only
    anything else     a serial device or a pyserial URL, at `baudrate` (4800 by default,
                      NMEA 0183's speed), opened like the GPS (tracker/gps.py)

Each input is a source session (tracker/source.py) like the GPS, and does with its bytes what
the GPS does (gps.NmeaStream): its readings are stamped when the read returns, so a sentence
that ends an idle wait is stamped at its arrival. It reconnects on its own, with the GPS's
backoff (jittered, from 1 s doubling to its `reconnect_max_s`); one that is missing or drops is
one WARNING line at the start of the outage and one INFO line when it is back, and never
affects the GPS or another input. Every blocking call has a timeout (READ_TIMEOUT_S,
CONNECT_TIMEOUT_S), and the thread stops through the shared stop event.

Its settings (`InputConfig`, the `[[inputs]]` parser) are in tracker/inputs_config.py, which
the configuration reads without importing this module. With `[share]` on, whole lines read
here go to the share server too (tracker/share.py).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

import serial

from tracker.gps import FIRST_RETRY_S, READ_TIMEOUT_S, NmeaStream, decoded_readings
from tracker.inputs_config import InputConfig, split_host_port
from tracker.logutil import RateLimitedLog
from tracker.nmea import Decoder
from tracker.retry import RetryPolicy
from tracker.runtime import InputStatus
from tracker.sensors.clock import Reading
from tracker.source import Session

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
SILENT_RECONNECT_S = 60.0  # a TCP stream without a byte for this long is reconnected
SILENT_WARN_S = 60.0  # open but no valid sentence for this long: one warning per silence
RECV_MAX = 65536


class Port(Protocol):
    """One open transport: `read()` returns what arrived (b"" after READ_TIMEOUT_S without
    data) and raises OSError when the line is gone."""

    def read(self) -> bytes: ...

    def close(self) -> None: ...


class _SerialPort:
    def __init__(self, port: serial.SerialBase) -> None:
        self._port = port

    def read(self) -> bytes:
        return self._port.read(self._port.in_waiting or 1)

    def close(self) -> None:
        self._port.close()


class _TcpPort:
    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        self._sock.settimeout(READ_TIMEOUT_S)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._last = time.monotonic()

    def read(self) -> bytes:
        try:
            data = self._sock.recv(RECV_MAX)
        except TimeoutError:
            if time.monotonic() - self._last > SILENT_RECONNECT_S:
                raise ConnectionError(f"nothing for {SILENT_RECONNECT_S:g} s") from None
            return b""
        if not data:
            raise ConnectionError("closed by the other end")
        self._last = time.monotonic()
        return data

    def close(self) -> None:
        self._sock.close()


class _UdpPort:
    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # Another listener on the port (Signal K, OpenCPN) gets the broadcasts too. Not
            # SO_REUSEPORT: the kernel would share unicast datagrams out between the listeners.
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            self._sock.bind((host, port))
            self._sock.settimeout(READ_TIMEOUT_S)
        except OSError:
            self._sock.close()
            raise

    def read(self) -> bytes:
        try:
            data, _ = self._sock.recvfrom(RECV_MAX)
        except TimeoutError:
            return b""
        if data and not data.endswith(b"\n"):
            data += b"\r\n"  # one datagram, one or more whole sentences: some senders omit CRLF
        return data

    def close(self) -> None:
        self._sock.close()


def open_input(url: str, baudrate: int) -> Port:
    """Open the transport `url` names (raises OSError, ValueError or SerialException)."""
    if url.startswith("tcp://"):
        return _TcpPort(*split_host_port(url, "tcp", host_required=True))
    if url.startswith("udp://"):
        return _UdpPort(*split_host_port(url, "udp", host_required=False))
    return _SerialPort(serial.serial_for_url(url, baudrate=baudrate, timeout=READ_TIMEOUT_S))


class InputReader:
    """Reads one `[[inputs]]` entry until `stop` is set. Run `run()` in its own thread.

    `status` is read by other threads (the recorder's runtime row): plain values replaced
    atomically.
    """

    def __init__(
        self,
        cfg: InputConfig,
        out: Callable[[list[Reading]], None],
        stop: threading.Event,
        *,
        share: Callable[[bytes], None] | None = None,
        reconnect_max_s: float | None = None,
        open_port: Callable[[str, int], Port] = open_input,
    ) -> None:
        self.cfg = cfg
        self.decoder = Decoder()
        self.status = InputStatus(name=cfg.name, url=cfg.url, state="connecting")
        self.thread = threading.Thread(target=self.run, name=f"input-{cfg.name}", daemon=True)
        self._out = out
        self._stop = stop
        self._limited = RateLimitedLog(log, 60.0)
        self._stream = NmeaStream(self.decoder, self._decoded, share=share, silent=self._silent,
                                  silent_after_s=SILENT_WARN_S)  # fmt: skip
        self.session: Session[Port, bytes] = Session(
            self.who, open=lambda: self._opened(open_port(cfg.url, cfg.baudrate)),
            read=lambda port: port.read(), got=self._got, close=lambda port: port.close(),
            ended=self._stream.ended, status=self.status, log=log,
            retry=RetryPolicy(FIRST_RETRY_S, reconnect_max_s or cfg.reconnect_max_s),
        )  # fmt: skip

    @property
    def who(self) -> str:
        return f"input {self.cfg.name} ({self.cfg.url})"

    def run(self) -> None:
        """The thread's body: the source session (tracker/source.py) in the worker loop. Not a
        watchdog component (a dead echo sounder must never restart the GPS): no heartbeat."""
        self.session.run(f"input {self.cfg.name}", self._stop)

    def _opened(self, port: Port) -> Port:
        self._stream.opened(self.session.clock())
        return port

    def _got(self, data: bytes, now: float) -> None:
        if self._stream.got(data, now):
            self.status.last_seen = time.time()  # for status only: never stamps data
        self.status.bytes_read = self._stream.bytes_read

    def _silent(self, seconds: float) -> None:
        self._limited.warning("silent", "%s: no valid NMEA sentence for %.0f s", self.who,
                              seconds)  # fmt: skip

    def _decoded(self, fixes: list, now: float) -> None:
        st = self.status
        st.positions_ignored += len(fixes)  # only the [gps] source gives positions
        st.sentences = self.decoder.stats.sentences
        st.rejected = self.decoder.stats.rejected
        readings = decoded_readings(self.decoder, self.cfg.name, now)
        if readings:
            st.readings += len(readings)
            self._out(readings)


# --- `tracker doctor`: the inputs' check (tracker/checks.py, tracker/doctor.py) ---------------
# Each stream opened with the daemon's open_input above.

from typing import TYPE_CHECKING  # noqa: E402 (the check's imports stay with it, here)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tracker.checks import Check, Context


def check(ctx: Context) -> Iterator[Check]:
    """Each `[[inputs]]` stream: a TCP multiplexer connects (and what it sends), a UDP port can
    be bound, a serial device exists and the service user may open it."""
    for cfg in ctx.cfg.inputs:
        yield _check_input(ctx, cfg)


def _check_input(ctx: Context, cfg: InputConfig) -> Check:
    import os
    import pwd

    from tracker.checks import FAIL, OK, SKIP, Check, group_name, may_open

    name, url = f"input {cfg.name}", cfg.url
    if url.startswith("tcp://"):
        return _check_tcp(ctx, name, url)
    if url.startswith("udp://"):
        return _check_udp(name, url)
    if "://" in url:
        return Check(name, SKIP, f"{url}: a pyserial URL, opened by the daemon only")
    try:
        st = os.stat(url)
    except OSError as e:
        return Check(name, FAIL, f"{url}: {e.strerror}",
                     "plug in the instrument's adapter and find it with ls -l /dev/serial/by-id "
                     "/dev/ttyUSB*, then set its url")  # fmt: skip
    try:
        user = pwd.getpwnam(ctx.user)
    except KeyError:
        return Check(name, OK, f"{url} exists")  # the GPS check names the missing user
    if not may_open(st, user):
        group = group_name(st.st_gid)
        return Check(name, FAIL, f"{ctx.user} may not read {url} (group {group})",
                     f"usermod -aG {group} {ctx.user} && systemctl restart tracker")  # fmt: skip
    return Check(name, OK, f"{url} exists and {ctx.user} may read it")


def _check_tcp(ctx: Context, name: str, url: str) -> Check:
    from tracker.checks import FAIL, OK, Check, reason

    host, port = split_host_port(url, "tcp", host_required=True)
    try:
        stream = open_input(url, 0)
    except OSError as e:
        return Check(name, FAIL, f"cannot connect to {host}:{port}: {reason(e)}",
                     "check the multiplexer is on and on this network, its TCP server enabled, "
                     "and the address and port in the url")  # fmt: skip
    # A multiplexer serves several clients: reading beside a running daemon takes nothing from it.
    decoder = Decoder(log_interval_s=3600.0)
    readings = 0
    try:
        deadline = time.monotonic() + ctx.input_s
        while time.monotonic() < deadline:
            decoder.feed(stream.read())
            readings += len(decoder.take_readings())
    except OSError:
        pass  # it connected: that is the check; what it sent until then is reported
    finally:
        stream.close()
    sentences = decoder.stats.sentences
    if not sentences:
        return Check(name, OK, f"{host}:{port} connects; no NMEA in {ctx.input_s:g} s (are the "
                               "instruments on?)")  # fmt: skip
    return Check(name, OK, f"{host}:{port} connects: {sentences} sentences in {ctx.input_s:g} s, "
                           f"{readings} instrument readings")  # fmt: skip


def _check_udp(name: str, url: str) -> Check:
    from tracker.checks import FAIL, OK, Check, bind_fix, reason

    host, port = split_host_port(url, "udp", host_required=False)
    try:
        # The daemon's own bind, released at once. With its SO_REUSEADDR a running daemon
        # does not make it fail: only another program that holds the port alone does.
        open_input(url, 0).close()
    except OSError as e:
        return Check(
            name,
            FAIL,
            f"cannot listen on UDP {host or '*'}:{port}: {reason(e)}",
            bind_fix(e.errno, port, f"ss -ulpn 'sport = :{port}'", "its url"),
        )
    return Check(name, OK, f"UDP {host or '*'}:{port} can be bound")
