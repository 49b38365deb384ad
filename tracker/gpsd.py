"""gpsd as the GPS source: `[gps] device = "gpsd://127.0.0.1:2947"` (issue 15).

On a unit where gpsd already owns the receiver (for chrony, for a plotter), the daemon reads
gpsd's JSON reports instead of opening the serial port a second time. `GpsReader` (gps.py)
runs the same loop as for a serial device, with the two halves from here:

- `open_port(url)`: a TCP connection to gpsd (connect timeout CONNECT_TIMEOUT_S, reads of at
  most the reader's timeout) that sends `?WATCH={"enable":true,"json":true}` and then reads
  like a serial port: `read()` returns what arrived, b"" on a timeout, and raises OSError when
  gpsd closes the connection (a restart): the reader then reconnects with its usual backoff.
  `gpsd://host:port/dev/ttyUSB0` watches that one device of a gpsd serving several.
- `GpsdDecoder`: the `nmea.Decoder` interface (`feed`, `flush`, `stats`) over JSON lines.

Mapping (gpsd_json(5)), to the same `Fix` the NMEA decoder makes:

    TPV time            Fix.time: gpsd's UTC from the receiver, never the system clock; a TPV
                        without time (no date known yet) or with mode < 2 is no fix
    TPV lat, lon        position
    TPV altMSL (alt)    alt, metres above mean sea level, as GGA's; only with mode 3
    TPV speed, track    speed (m/s), course (degrees true)
    TPV status, mode    quality: gpsd's status mapped back to GGA's quality (absent: 1, gps)
    SKY hdop/vdop/pdop  the DOPs
    SKY uSat            satellites used (else the count of satellites marked used)
    GST lat, lon, alt   err_lat, err_lon, err_alt: the receiver's GST 1-sigma errors, as the
                        NMEA decoder stores them. TPV's epx/epy/epv are not used: they are
                        gpsd's own 95% estimate from the DOPs, not the receiver's errors, and
                        would make a gpsd-fed unit store other numbers than a serial one.

gpsd reports an epoch as a TPV followed by its SKY and GST (3.22 sends TPV, SKY, GST; a TPV may
be repeated with more fields while gpsd learns the receiver's cycle). The decoder holds the
newest TPV and merges what follows into it; the next TPV with another time, or a quiet line
(`flush()`), completes it. So a fix is handed over one epoch late; `arrived` keeps when its TPV
came, which the reader uses for the GPS clock offset (sensor timestamps).
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from tracker import plausible
from tracker.fix import Fix
from tracker.logutil import RateLimitedLog

CONNECT_TIMEOUT_S = 5.0
DEFAULT_PORT = 2947
MAX_LINE = 256 * 1024  # a SKY with many satellites is a few KiB; an endless line is dropped

# gpsd's TPV status (gpsd_json(5)) -> GGA quality (tracker/fix.py QUALITY_NAMES)
_QUALITY = {1: 1, 2: 2, 3: 4, 4: 5, 5: 6, 6: 1, 7: 7, 8: 8, 9: 1}


def parse_url(url: str) -> tuple[str, int, str | None]:
    """`gpsd://host[:port][/device]` -> (host, port, device or None); ValueError when bad."""
    if not url.startswith("gpsd://"):
        raise ValueError(f"expected gpsd://host:port, got {url!r}")
    rest = url[len("gpsd://") :]
    hostport, slash, device = rest.partition("/")
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = hostport.partition(":")
    if not host or (port and (not port.isdigit() or not 0 < int(port) <= 65535)):
        raise ValueError(f"expected gpsd://host:port such as gpsd://127.0.0.1:2947, got {url!r}")
    return host, int(port or DEFAULT_PORT), ("/" + device) if slash and device else None


class GpsdPort:
    """A connection to gpsd that reads like a serial port (see the module docstring)."""

    in_waiting = 0  # GpsReader asks; a socket read returns whatever is there anyway

    def __init__(self, url: str, timeout: float) -> None:
        host, port, device = parse_url(url)
        self.device = device
        self._sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        try:
            watch: dict[str, Any] = {"enable": True, "json": True}
            if device:
                watch["device"] = device
            self._sock.sendall(b"?WATCH=" + json.dumps(watch, separators=(",", ":")).encode()
                               + b";\n")  # fmt: skip
            self._sock.settimeout(timeout)
        except OSError:
            self._sock.close()
            raise

    def read(self, size: int = 1) -> bytes:
        try:
            data = self._sock.recv(max(size, 65536))
        except TimeoutError:
            return b""
        if not data:
            raise ConnectionError("gpsd closed the connection")
        return data

    def close(self) -> None:
        self._sock.close()


def open_port(url: str, baudrate: int = 0, timeout: float | None = None, **_: Any) -> GpsdPort:
    """`GpsReader`'s open_port for gpsd:// devices (the baud rate is gpsd's business)."""
    return GpsdPort(url, 1.0 if timeout is None else timeout)


def _num(d: dict[str, Any], key: str) -> float | None:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class GpsdDecoder:
    """gpsd JSON lines in, Fixes out, with `nmea.Decoder`'s interface and counters
    (`sentences` counts the reports used, `ignored` the other classes, `rejected_by["json"]`
    lines that are not JSON). Not thread-safe: owned by the GPS reader thread."""

    def __init__(self, *, device: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        from tracker.nmea import DecoderStats  # here: the config imports parse_url, not pynmea2

        self.stats = DecoderStats()
        self.stats.rejected_by.setdefault("json", 0)
        self._log = RateLimitedLog(logging.getLogger(__name__), 60.0)
        self.version: str | None = None
        self.arrived: float | None = None  # monotonic arrival of the newest emitted fix's TPV
        self._device = device
        self._clock = clock
        self._buf = b""
        self._pending: Fix | None = None
        self._pending_at = 0.0
        self._sky: dict[str, Any] = {}  # DOPs and satellites of the newest SKY

    def feed(self, data: bytes) -> list[Fix]:
        out: list[Fix] = []
        buf = self._buf + data
        *lines, self._buf = buf.split(b"\n")
        if len(self._buf) > MAX_LINE:
            self._buf = b""
            self._reject("overlong")
        for line in lines:
            line = line.strip()
            if line:
                self._line(line, out)
        return out

    def flush(self) -> list[Fix]:
        """The line went quiet: the held epoch is complete."""
        out: list[Fix] = []
        self._complete(out)
        return out

    def take_readings(self) -> list[tuple[str, float]]:
        return []  # gpsd passes no instrument sentences

    def _reject(self, reason: str) -> None:
        self.stats.rejected += 1
        self.stats.rejected_by[reason] = self.stats.rejected_by.get(reason, 0) + 1

    def _line(self, line: bytes, out: list[Fix]) -> None:
        try:
            d = json.loads(line)
        except (ValueError, RecursionError):
            self._reject("json")
            return
        if not isinstance(d, dict):
            self._reject("json")
            return
        cls = d.get("class")
        if self._device and cls in ("TPV", "SKY", "GST") and d.get("device") != self._device:
            self.stats.ignored += 1
            return
        if cls == "TPV":
            self.stats.sentences += 1
            self._tpv(d, out)
        elif cls == "SKY":
            self.stats.sentences += 1
            self._sky = {
                "hdop": _num(d, "hdop"), "vdop": _num(d, "vdop"), "pdop": _num(d, "pdop"),
                "sats": _used(d),
            }  # fmt: skip
            if self._pending is not None:
                self._pending = replace(self._pending, **self._sky)
        elif cls == "GST":
            self.stats.sentences += 1
            t = _time(d.get("time"))
            if self._pending is not None and t is not None and abs(t - self._pending.time) < 5e-4:
                self._pending = replace(self._pending, err_lat=_num(d, "lat"),
                                        err_lon=_num(d, "lon"), err_alt=_num(d, "alt"))  # fmt: skip
        else:
            if cls == "VERSION" and isinstance(d.get("release"), str):
                self.version = d["release"]
            self.stats.ignored += 1

    def _tpv(self, d: dict[str, Any], out: list[Fix]) -> None:
        mode = d.get("mode")
        t = _time(d.get("time"))
        lat, lon = _num(d, "lat"), _num(d, "lon")
        valid = (
            isinstance(mode, int) and mode >= 2 and t is not None and lat is not None
            and lon is not None and -90 <= lat <= 90 and -180 <= lon <= 180
        )  # fmt: skip
        if self._pending is not None and (not valid or t != self._pending.time):
            self._complete(out)
        if not valid:
            self.stats.invalid_epochs += 1
            return
        assert t is not None and lat is not None and lon is not None
        alt = _num(d, "altMSL")
        if alt is None:
            alt = _num(d, "alt")
        status = d.get("status")
        quality = _QUALITY.get(status if isinstance(status, int) else 1, 1)
        fix = Fix(
            time=t, lat=lat, lon=lon,
            alt=alt if mode == 3 else None,
            speed=_num(d, "speed"), course=_num(d, "track"), quality=quality,
        )  # fmt: skip
        if self._pending is not None:  # the same epoch again, with more fields: keep both's
            p = self._pending
            fix = replace(fix, hdop=p.hdop, vdop=p.vdop, pdop=p.pdop, sats=p.sats,
                          err_lat=p.err_lat, err_lon=p.err_lon, err_alt=p.err_alt)  # fmt: skip
        else:
            fix = replace(fix, **self._sky)
            self._pending_at = self._clock()
        self._pending = fix

    def _complete(self, out: list[Fix]) -> None:
        if self._pending is not None:
            # The NMEA decoder's bounds (tracker/plausible.py): gpsd passes on what the
            # receiver said, impossible or not.
            raw = self._pending
            fix = plausible.check(raw, self.stats)
            self._pending = None
            if fix is not raw:
                self._log.warning("implausible", "gpsd fix with impossible values: %s",
                                  plausible.describe(raw, fix))  # fmt: skip
            if fix is None:
                return
            out.append(fix)
            self.arrived = self._pending_at
            self.stats.fixes += 1


def _used(d: dict[str, Any]) -> int | None:
    used = d.get("uSat")
    if isinstance(used, int) and not isinstance(used, bool):
        return used
    sats = d.get("satellites")
    if isinstance(sats, list):
        return sum(1 for s in sats if isinstance(s, dict) and s.get("used") is True)
    return None


# --- `tracker doctor`: gpsd as the GPS source (tracker/checks.py, tracker/gps.py's check) -----
# Watched through the client above: the same connection, WATCH and mapping to fixes.

from dataclasses import dataclass  # noqa: E402 (the check's imports stay with it, here)
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tracker.checks import Check, Context


@dataclass
class GpsdHeard:
    """What `listen` heard from gpsd."""

    seconds: float
    version: str | None = None  # gpsd's release, from its VERSION greeting
    devices: list[str] | None = None  # the receivers gpsd has (its DEVICES report), None: none
    reports: int = 0  # TPV, SKY, GST used by the decoder
    fixes: int = 0
    last_fix_time: float | None = None  # GPS UTC
    last_fix_at: float | None = None  # system time its TPV arrived
    error: str | None = None  # could not connect, or gpsd closed the connection
    refused: str | None = None  # gpsd's ERROR report (a WATCH of a device it does not have)


# gpsd greets a client with VERSION at once; a busy unit may take a few seconds. The check
# waits this long for it, even when it listens for reports for less.
GREETING_S = 5.0


def listen(url: str, seconds: float) -> GpsdHeard:
    """Watch gpsd at `url` for `seconds` as the daemon does (and until its VERSION greeting
    for GREETING_S at least), and keep what gpsd says of itself (its DEVICES and ERROR
    reports, which the decoder has no use for)."""
    from tracker.checks import reason

    out = GpsdHeard(seconds)
    # The wall clock as the decoder's clock: `arrived` is then comparable to the GPS time.
    decoder = GpsdDecoder(device=parse_url(url)[2], clock=time.time)

    def heard(fixes: list[Fix]) -> None:
        if fixes:
            out.fixes += len(fixes)
            out.last_fix_time, out.last_fix_at = fixes[-1].time, decoder.arrived

    try:
        port = GpsdPort(url, timeout=0.2)
    except OSError as e:
        out.error = reason(e)
        return out
    lines = b""
    try:
        start = time.monotonic()
        deadline, greeted_by = start + seconds, start + max(seconds, GREETING_S)
        while (now := time.monotonic()) < deadline or (
            decoder.version is None and now < greeted_by
        ):
            data = port.read()
            *done, lines = (lines + data).split(b"\n")
            for line in done:
                if b'"DEVICES"' in line or b'"ERROR"' in line:
                    _heard_about_gpsd(out, line)
            heard(decoder.feed(data))
    except OSError as e:
        out.error = reason(e)
    finally:
        port.close()
    heard(decoder.flush())
    out.version, out.reports = decoder.version, decoder.stats.sentences
    return out


def _heard_about_gpsd(out: GpsdHeard, line: bytes) -> None:
    try:
        report = json.loads(line)
    except ValueError:
        return
    if report.get("class") == "ERROR":
        out.refused = str(report.get("message"))
    elif report.get("class") == "DEVICES":
        out.devices = [str(d.get("path")) for d in report.get("devices", [])
                       if isinstance(d, dict)]  # fmt: skip


def check(ctx: Context, *, listen_fn: Callable[..., GpsdHeard] = listen) -> Iterator[Check]:
    """[gps] device = "gpsd://...": gpsd answers, has a receiver, and reports fixes."""
    from tracker.checks import FAIL, OK, Check

    url = ctx.cfg.gps.device
    host, port, wanted = parse_url(url)
    heard = listen_fn(url, ctx.listen_s)
    where = f"{host}:{port}"
    if heard.error and heard.version is None:
        yield Check(
            "gpsd", FAIL, f"no gpsd at {where}: {heard.error}",
            "start gpsd (systemctl enable --now gpsd.socket gpsd, after apt install gpsd) or "
            "correct [gps] device",
        )  # fmt: skip
        return
    if heard.version is None:
        yield Check(
            "gpsd", FAIL, f"{where} answers but is not gpsd (no VERSION report in "
            f"{max(heard.seconds, GREETING_S):g} s)",
            "correct the port in [gps] device (gpsd's is 2947)",
        )  # fmt: skip
        return
    name = f"gpsd {heard.version} at {where}"
    if heard.devices is not None and not heard.devices:
        yield Check(
            "gpsd", FAIL, f"{name} has no receiver",
            'name it to gpsd: DEVICES="/dev/ttyUSB0" in /etc/default/gpsd, then systemctl '
            "restart gpsd (or gpsdctl add /dev/ttyUSB0)",
        )  # fmt: skip
        return
    if heard.refused:  # gpsd 3.22 answers a WATCH of a device it lacks with an ERROR only
        yield Check(
            "gpsd", FAIL, f"{name}: {heard.refused}",
            "correct the device in [gps] device (gpspipe -w -n 2 lists gpsd's DEVICES), or "
            "leave it out: gpsd://host:port",
        )  # fmt: skip
        return
    if wanted and heard.devices is not None and wanted not in heard.devices:
        yield Check(
            "gpsd", FAIL, f"{name} has no {wanted} (it has {', '.join(heard.devices)})",
            "correct the device in [gps] device, or add it to gpsd's DEVICES",
        )  # fmt: skip
        return
    on = f" ({', '.join(heard.devices)})" if heard.devices else ""
    if not heard.reports:
        yield Check(
            "gpsd", FAIL, f"{name}{on}: no report in {heard.seconds:g} s"
            + (f" ({heard.error})" if heard.error else ""),
            "check the receiver with gpsmon (power, wiring, the device gpsd was given)",
        )  # fmt: skip
        return
    if heard.last_fix_time is not None and heard.last_fix_at is not None:
        ctx.gps_time_offset_s = heard.last_fix_time - heard.last_fix_at
    yield Check("gpsd", OK, f"{name}{on}: {heard.reports} reports in {heard.seconds:g} s, "
                            f"{heard.fixes} fixes")  # fmt: skip
    if heard.fixes == 0:
        yield Check(
            "gps fix", FAIL, "gpsd reports but without a position fix",
            "give the antenna a clear view of the sky and wait (a cold start takes up to 15 "
            "minutes); gpsd needs a date too (an RMC sentence) before it reports a fix",
        )  # fmt: skip
