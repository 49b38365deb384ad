"""The GPS reader thread: where a fix enters the daemon.

One thread does nothing but open the receiver, read bytes, decode them and hand complete fixes
to the recorder through `out` (in practice a queue). It never touches the store or a sender,
so a slow SD card or a dead network can never make it miss serial input.

The device is anything `serial.serial_for_url` opens: a device path (`/dev/serial0`,
`/dev/ttyUSB0`, a pty) or a pyserial URL (`socket://host:port`, `rfc2217://…`, `loop://`), or
`gpsd://host:port`: a running gpsd's JSON reports (tracker/gpsd.py, which gives this loop a
port and a decoder of the same shape).

Besides fixes, the decoder may find instrument sentences in the receiver's stream (a combined
GPS and heading sensor): their readings go to `readings`, stamped with their monotonic arrival,
for the sensor clock to put in GPS time. With `[share]` on, the whole lines read go to `share`
(tracker/share.py), never blocking this thread.

The reader is a source session (tracker/source.py): one chunk a step of the worker loop, stamped
when the read returns. When the device is missing or disappears (USB pulled, socket closed) it
logs once, retries with a capped, jittered exponential backoff and resumes when it is back. It
never gives up: a tracker that stops tracking because a cable wobbled is worse than useless.
`NmeaStream` is what it does with the bytes, shared with the inputs (tracker/inputs.py).
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import serial

from tracker.fix import Fix
from tracker.logutil import RateLimitedLog
from tracker.nmea import Decoder, DecoderStats
from tracker.plausible import TimeFilter
from tracker.retry import RetryPolicy
from tracker.sensors.clock import Reading
from tracker.share import LineCutter
from tracker.source import LineStatus, Session

if TYPE_CHECKING:
    from tracker.gpsd import GpsdDecoder

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 1.0  # how long one read may block: bounds shutdown latency and idle wake-ups
FIRST_RETRY_S = 1.0  # the first wait after a failed open (jittered, doubling to reconnect_max_s)
QUIET_S = 1.0  # no byte for this long completes the pending epoch (end of stream, cable pulled)
SILENT_WARN_S = 30.0  # connected but no valid sentence for this long: probably the wrong baud rate
READ_SIZE = 16384  # the most one read of a device path takes (a pty hands over 4 KiB at most)


class NmeaStream:
    """What the GPS reader and an input do with the chunks of a line: decode them, share whole
    lines, complete the pending epoch when the line goes quiet (QUIET_S), and warn through
    `silent(seconds)` while no valid sentence comes for `silent_after_s`.

    `emit(fixes, now)` gets what the decoder completed with the arrival of the chunk that
    completed it."""

    def __init__(
        self,
        decoder: Decoder | GpsdDecoder,
        emit: Callable[[list[Fix], float], object],
        *,
        share: Callable[[bytes], None] | None,
        silent: Callable[[float], object],
        silent_after_s: float,
    ) -> None:
        self.decoder = decoder
        self.bytes_read = 0
        self._emit = emit
        self._share = share
        self._cutter = LineCutter()
        self._silent = silent
        self._silent_after_s = silent_after_s
        self._last_byte = self._last_sentence = 0.0
        self._quiet = False  # the pending epoch was completed for this silence already
        self._seen = 0

    def opened(self, now: float) -> None:
        self._last_byte = self._last_sentence = now
        self._quiet = False
        self._seen = self.decoder.stats.sentences

    def got(self, data: bytes, now: float) -> bool:
        """One read's chunk (b"": nothing came); True when it held a new valid sentence."""
        if data:
            self.bytes_read += len(data)
            self._last_byte, self._quiet = now, False
            self._emit(self.decoder.feed(data), now)
            if self._share is not None and (lines := self._cutter.feed(data)):
                self._share(lines)
        elif not self._quiet and now - self._last_byte >= QUIET_S:
            self._quiet = True
            self._emit(self.decoder.flush(), now)
        if self.decoder.stats.sentences != self._seen:
            self._seen = self.decoder.stats.sentences
            self._last_sentence = now
            return True
        if now - self._last_sentence >= self._silent_after_s:
            self._silent(now - self._last_sentence)
        return False

    def ended(self, now: float) -> None:
        """The line closed: the last epoch before it went away is complete."""
        self._emit(self.decoder.flush(), now)
        self._cutter.reset()


class GpsReader:
    """Reads one GPS device until `stop` is set. Run `run()` in its own thread.

    Attributes read by other threads (status, watchdog) are plain values replaced atomically:
    `state` ("connecting", "open", "lost", "stopped"), `heartbeat` (monotonic time of the last
    step), `clock_offset` (GPS UTC minus monotonic, from the newest fix; None before the first
    fix). `tried` is set once the first attempt to open the device is over, whatever its outcome.
    """

    def __init__(
        self,
        device: str,
        baudrate: int,
        out: Callable[[list[Fix]], None],
        stop: threading.Event,
        *,
        reconnect_max_s: float = 30.0,
        open_port: Callable[..., serial.SerialBase] = serial.serial_for_url,
        readings: Callable[[list[Reading]], None] | None = None,
        share: Callable[[bytes], None] | None = None,
    ) -> None:
        self.device = device
        self.baudrate = baudrate
        self.gpsd = device.startswith("gpsd://")
        self.decoder: Decoder | GpsdDecoder
        if self.gpsd:
            from tracker import gpsd

            self.decoder = gpsd.GpsdDecoder(device=gpsd.parse_url(device)[2])
            open_port = gpsd.open_port
            share = None  # JSON, not NMEA: gpsd serves its own NMEA to whoever wants it
            opened = "open at gpsd (JSON reports)"
        else:
            self.decoder = Decoder()
            opened = f"open at {baudrate} baud"
        self.heartbeat = time.monotonic()
        self.clock_offset: float | None = None
        self.line = LineStatus()
        self._out = out
        self._stop = stop
        self._open_port = open_port
        self._readings = readings
        self._limited = RateLimitedLog(log, 60.0)
        self._stream = NmeaStream(self.decoder, self._emit, share=share, silent=self._silent,
                                  silent_after_s=SILENT_WARN_S)  # fmt: skip
        self._read: Callable[[], bytes] = lambda: b""
        self.session: Session[serial.SerialBase, bytes] = Session(
            f"GPS {device}", open=self._open, read=lambda _: self._read(), got=self._stream.got,
            close=lambda port: port.close(), ended=self._stream.ended, status=self.line,
            log=log, retry=RetryPolicy(FIRST_RETRY_S, reconnect_max_s), opened=opened,
        )  # fmt: skip
        self.tried = self.session.tried
        # A lone epoch far from its neighbours (a 1999 date, an hour ahead and back) never
        # reaches the recorder or the GPS clock offset (tracker/plausible.py, docs/values.md).
        self._time_filter = TimeFilter(self.decoder.stats)

    @property
    def stats(self) -> DecoderStats:
        """The decoder's counters (NMEA sentences, or gpsd reports)."""
        return self.decoder.stats

    @property
    def state(self) -> str:
        return self.line.state

    @property
    def connects(self) -> int:
        return self.line.connects

    @property
    def attempts(self) -> int:
        return self.session.attempts

    @property
    def bytes_read(self) -> int:
        return self._stream.bytes_read

    def run(self) -> None:
        """The thread's body: the source session (tracker/source.py) in the worker loop."""
        self.session.run("GPS reader", self._stop, beat=self._beat)

    def _beat(self, now: float) -> None:
        self.heartbeat = now

    def _open(self) -> serial.SerialBase:
        port = self._open_port(self.device, baudrate=self.baudrate, timeout=READ_TIMEOUT_S)
        self._read = _reader(port)
        self._stream.opened(self.session.clock())
        return port

    def _silent(self, seconds: float) -> None:
        if self.gpsd:
            self._limited.warning(
                "silent", "GPS %s: no report from gpsd for %.0f s (is its receiver attached?)",
                self.device, seconds,
            )  # fmt: skip
        else:
            self._limited.warning(
                "silent",
                "GPS %s: no valid NMEA sentence for %.0f s at %d baud (wrong baud rate, wrong "
                "device, or the receiver is off?)", self.device, seconds, self.baudrate,
            )  # fmt: skip

    def _emit(self, decoded: list[Fix], now: float) -> None:
        fixes = decoded
        if decoded:
            filt = self._time_filter
            dropped = filt.dropped
            fixes = filt(decoded, now)
            if filt.dropped != dropped:
                self._limited.warning(
                    "time_outlier", "GPS %s: dropped a fix at %s, far in time from the fixes "
                    "around it (%d so far; docs/values.md)", self.device, filt.dropped_at,
                    filt.dropped,
                )  # fmt: skip
        if fixes:
            if fixes[-1] is decoded[-1]:  # else the offset would pair a fix with another's arrival
                # gpsd's fixes are completed an epoch after their TPV came: offset from its
                # arrival
                arrived = getattr(self.decoder, "arrived", None) if self.gpsd else None
                self.clock_offset = fixes[-1].time - (arrived if arrived is not None else now)
            self._out(fixes)
        if self._readings is not None:
            readings = decoded_readings(self.decoder, "gps", now)
            if readings:
                self._readings(readings)


def _reader(port: serial.SerialBase) -> Callable[[], bytes]:
    """One read of whatever has arrived, waiting READ_TIMEOUT_S at most for the first byte; b""
    when nothing came. A device path (pyserial's posix Serial) is read with one poll() and one
    os.read(): what pyserial's read() does, without the Python around it that cost a sixth of
    the reader's CPU on a fast stream. Anything else (socket://, rfc2217://, gpsd://) through
    pyserial's read(). A device gone raises OSError or SerialException, as pyserial does."""
    fd = getattr(port, "fd", None)
    if type(port) is not serial.Serial or not isinstance(fd, int):  # spy:// etc. subclass it
        return lambda: port.read(port.in_waiting or 1)  # a burst costs two reads
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    timeout_ms = int(READ_TIMEOUT_S * 1000)

    def read() -> bytes:
        if not poller.poll(timeout_ms):
            return b""
        try:
            data = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):  # the port is non-blocking; a signal
            return b""
        if not data:  # ready, yet nothing: the device went away (pyserial says the same)
            raise serial.SerialException("device reports readiness to read but returned no data")
        return data

    return read


def decoded_readings(decoder: Decoder | GpsdDecoder, sensor: str, now: float) -> list[Reading]:
    """The instrument readings `decoder` decoded since the last call (nmea.Decoder's
    `take_readings()`: (kind, value) in SI), as Readings from `sensor` arrived at `now`."""
    return [Reading(now, kind, value, sensor) for kind, value in decoder.take_readings()]
