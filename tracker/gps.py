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


# --- `tracker doctor`: this source's check (tracker/checks.py, tracker/doctor.py) -------------
# Opened and decoded as the reader above does: the daemon's opener (tracker/ubx_i2c.py) and
# nmea.Decoder. Nothing here runs in the daemon; tracker.checks is imported only when it runs.

from dataclasses import dataclass  # noqa: E402 (the check's imports stay with it, here)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tracker.checks import Check, Context

COMMON_BAUDRATES = (4800, 9600, 19200, 38400, 57600, 115200)


def check(ctx: Context) -> Iterator[Check]:
    """The `[gps]` source: the device exists and the service user may open it, then NMEA
    arrives (how fast, at which baud rate, with a fix); a `gpsd://` source is gpsd's check."""
    from tracker.checks import FAIL

    device = check_device(ctx)
    yield from device
    if ctx.cfg.gps.device.startswith("gpsd://"):
        from tracker import gpsd

        yield from gpsd.check(ctx)
    elif not any(c.result == FAIL and c.name == "gps device" for c in device):
        yield from check_nmea(ctx)


def _device_fix(device: str) -> str:
    if device.startswith("/dev/serial"):
        return (
            "enable the Pi's UART: raspi-config > Interface Options > Serial Port: login shell "
            "No, hardware Yes (enable_uart=1 in /boot/firmware/config.txt), then reboot"
        )
    if device.startswith("/dev/gps"):
        return (
            "plug in the USB receiver; if it is, install the udev rule "
            "(cp config/99-tracker-gps.rules /etc/udev/rules.d/ && udevadm control "
            "--reload-rules && udevadm trigger) or add its vendor id there (lsusb)"
        )
    return (
        "plug in the receiver and find it with ls -l /dev/serial* /dev/ttyUSB* /dev/ttyACM*, "
        "then set [gps] device"
    )


def check_device(ctx: Context) -> list[Check]:
    """The device file (for `i2c:`, the bus's under ctx.root) and the service user's rights."""
    import pwd
    import stat

    from tracker.checks import FAIL, OK, SKIP, Check, group_name, may_open, user_name

    device = path = ctx.cfg.gps.device
    if "://" in device:
        return [Check("gps device", SKIP, f"{device} is a URL: checked by reading it below")]
    if device.startswith("i2c:"):
        # The daemon reads a u-blox receiver's DDC port through the bus (ubx_i2c.py): what
        # must exist is the bus's device, not a file named after the URL.
        from tracker.ubx_i2c import parse_i2c_url

        bus, address = parse_i2c_url(device)
        device = f"/dev/i2c-{bus}"
        path = str(ctx.root / device.lstrip("/"))
        if not os.path.exists(path):
            return [Check("gps device", FAIL, f"{device} does not exist (for [gps] device "
                          f"i2c:{bus}:0x{address:02x})",
                          "enable I2C: raspi-config > Interface Options > I2C, then reboot")]
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return [Check("gps device", FAIL, f"{device} does not exist", _device_fix(device))]
    except OSError as e:
        return [Check("gps device", FAIL, f"{device}: {e.strerror}", _device_fix(device))]
    checks = [Check("gps device", OK, f"{device} exists ({os.path.realpath(path)})")]
    try:
        user = pwd.getpwnam(ctx.user)
    except KeyError:
        checks.append(
            Check(
                "gps permissions", FAIL, f"no user {ctx.user!r} on this system",
                "run scripts/install-pi.sh (it creates the service user), or pass --user",
            )
        )  # fmt: skip
        return checks
    if may_open(st, user):
        checks.append(Check("gps permissions", OK, f"{ctx.user} may read {device}"))
    else:
        group = group_name(st.st_gid)
        checks.append(
            Check(
                "gps permissions", FAIL,
                f"{ctx.user} may not read {device} (owner {user_name(st.st_uid)}, group "
                f"{group}, mode {stat.S_IMODE(st.st_mode):o})",
                f"usermod -aG {group} {ctx.user} && systemctl restart tracker",
            )
        )  # fmt: skip
    return checks


@dataclass
class Listening:
    """What `listen` heard."""

    baudrate: int
    seconds: float
    bytes: int = 0
    sentences: int = 0
    rejected: int = 0
    fixes: int = 0
    last_fix_time: float | None = None  # GPS UTC
    last_fix_at: float | None = None  # system time when it arrived
    error: str | None = None


def listen(device: str, baudrate: int, seconds: float) -> Listening:
    """Read `device` at `baudrate` for `seconds`, opened as the daemon opens it (an `i2c:`
    receiver through the bus), and decode what arrives."""
    from tracker.ubx_i2c import open_gps_port

    out = Listening(baudrate, seconds)
    decoder = Decoder(log_interval_s=3600.0)

    def failed(e: BaseException) -> str:  # pyserial's whole first line: it names the device
        return str(e).splitlines()[0] if str(e) else type(e).__name__

    def heard(fixes: list[Fix]) -> None:
        if fixes:
            out.fixes += len(fixes)
            out.last_fix_time, out.last_fix_at = fixes[-1].time, time.time()

    try:
        port = open_gps_port(device, baudrate=baudrate, timeout=0.2)
    except (serial.SerialException, OSError, ValueError) as e:
        out.error = failed(e)
        return out
    try:
        if hasattr(port, "reset_input_buffer"):  # an I2C port holds no stale bytes
            port.reset_input_buffer()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            data = port.read(port.in_waiting or 1)
            out.bytes += len(data)
            heard(decoder.feed(data) if data else [])
    except (serial.SerialException, OSError) as e:
        out.error = failed(e)
    finally:
        port.close()
    heard(decoder.flush())
    out.sentences = decoder.stats.sentences
    out.rejected = decoder.stats.rejected
    return out


def check_nmea(ctx: Context, *, listen_fn: Callable[..., Listening] = listen) -> list[Check]:
    """NMEA arrives at the configured rate, with a fix; else which rate it arrives at, or what
    the bytes (or their absence) say about the wiring."""
    from tracker.checks import FAIL, OK, Check

    gps = ctx.cfg.gps
    heard = listen_fn(gps.device, gps.baudrate, ctx.listen_s)
    if heard.error:
        return [
            Check(
                "nmea", FAIL, f"cannot read {gps.device}: {heard.error}",
                "fix the device check above; if the service is running, stop it first "
                "(systemctl stop tracker)",
            )
        ]  # fmt: skip
    if heard.sentences:
        if heard.last_fix_time is not None and heard.last_fix_at is not None:
            ctx.gps_time_offset_s = heard.last_fix_time - heard.last_fix_at
        rate = heard.sentences / heard.seconds
        detail = (
            f"{heard.sentences} valid sentences in {heard.seconds:g} s ({rate:.1f}/s) at "
            f"{gps.baudrate} baud, {heard.fixes} fixes"
        )
        if heard.rejected:
            detail += f", {heard.rejected} rejected"
        checks = [Check("nmea", OK, detail)]
        if heard.fixes == 0:
            checks.append(
                Check(
                    "gps fix", FAIL, "NMEA arrives but without a position fix",
                    "give the antenna a clear view of the sky and wait (a cold start takes "
                    "up to 15 minutes)",
                )
            )  # fmt: skip
        return checks
    # Nothing decoded: garbage means a wrong rate, silence a wrong device or a dead receiver.
    for rate in COMMON_BAUDRATES:
        if rate == gps.baudrate:
            continue
        probe = listen_fn(gps.device, rate, ctx.probe_s)
        if probe.sentences:
            return [
                Check(
                    "nmea baud rate", FAIL,
                    f"nothing decodes at {gps.baudrate} baud ({heard.bytes} bytes of garbage "
                    f"in {heard.seconds:g} s), but {probe.sentences} valid sentences arrive at "
                    f"{rate} baud",
                    f"set [gps] baudrate = {rate} in {ctx.cfg.path or 'the config'}",
                )
            ]  # fmt: skip
    if heard.bytes:
        return [
            Check(
                "nmea", FAIL,
                f"{heard.bytes} bytes in {heard.seconds:g} s at {gps.baudrate} baud but no valid "
                f"NMEA at any of {', '.join(map(str, COMMON_BAUDRATES))} baud",
                "check the wiring (receiver TX to the Pi's RX) and that the receiver outputs "
                "NMEA, not only a binary protocol (u-blox UBX: enable NMEA with u-center)",
            )
        ]  # fmt: skip
    return [
        Check(
            "nmea", FAIL, f"no data at all from {gps.device} in {heard.seconds:g} s",
            "check power and wiring (receiver TX to the Pi's RX, GPIO 15), or that this is the "
            "right device",
        )
    ]  # fmt: skip
