"""`tracker doctor`: check a unit's setup and say how to fix each problem.

Run it on the Pi (as root, or as the service user) with the service's config:

    tracker doctor -c /etc/tracker/tracker.toml

It checks, in order: the config; that the GPS device exists and the service user may open it;
that NMEA arrives, how fast, and at which baud rate (trying the common rates when nothing decodes
at the configured one), or with `gpsd://` that gpsd answers, has a receiver and reports fixes;
that each `[[inputs]]` stream can be opened and the `[share]` port bound; that each configured
backend answers and accepts the credentials; the free disk space for the queue; and the system
clock (against GPS time or a backend's time).
Every failure is one line naming what is wrong and one line with the fix, printed as soon as
its check is done (the GPS and backend checks take seconds each); `--json` prints instead, at the
end, a list of the checks (`name`, `result`, `detail`, `fix`). The exit code is 0 only when every
check passed (a check that could not run, e.g. the clock without GPS time or a backend, is shown
as "skip" and does not fail).

The GPS checks read the device for a few seconds: stop the service first
(`systemctl stop tracker`) or they compete with it for the bytes. gpsd and a TCP multiplexer
serve any number of clients, so those checks may run beside the service, and a `[share]` port
the running service holds is reported as served by it, not as taken.

Each backend carries its own probe (`probe(settings)` in its module, tracker/backends.py);
doctor runs those of the backends configured.
"""

from __future__ import annotations

import argparse
import dataclasses
import grp
import os
import pwd
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracker.checks import FAIL, OK, SKIP, Check
from tracker.config import DEFAULT_PATH, Config, ConfigError, load
from tracker.inputs_config import InputConfig

COMMON_BAUDRATES = (4800, 9600, 19200, 38400, 57600, 115200)
LISTEN_S = 5.0  # how long to read at the configured rate
PROBE_S = 2.0  # how long to read at each other rate
MIN_FREE_MB = 64.0
CLOCK_TOLERANCE_S = 60.0
INPUT_CONNECT_S = 3.0  # a multiplexer on the boat's network answers at once or not at all
INPUT_LISTEN_S = 2.0  # how long to read a TCP input (instruments send every second or so)


@dataclass
class Context:
    """What the checks learn and share: the config, the service user, times seen."""

    cfg: Config
    user: str
    listen_s: float = LISTEN_S
    probe_s: float = PROBE_S
    input_s: float = INPUT_LISTEN_S
    gps_time_offset_s: float | None = None  # GPS time minus the system clock
    server_time_offset_s: dict[str, float] = field(default_factory=dict)
    root: Path = Path("/")  # where /sys, /dev and /etc are (tests give a made-up tree)


# --- the config -----------------------------------------------------------------------------------


def check_config(path: Path) -> tuple[Config, Check]:
    try:
        cfg = load(path)
    except ConfigError as e:
        fix = (
            f"copy the example: install -m 640 /etc/tracker/tracker.toml.example {path}"
            if "not found" in str(e)
            else "correct the key named above (every key is described in tracker.toml.example)"
        )
        return Config(), Check("config", FAIL, f"{e} (checking with the defaults)", fix)
    return cfg, Check("config", OK, f"{path} is valid")


def check_secrets(ctx: Context) -> list[Check]:
    """A password or token inline in a config file that every user may read."""
    from tracker.config import exposed_secrets

    warning = exposed_secrets(ctx.cfg)
    if warning is None:
        return []
    text, _, fix = warning.partition(": chmod")
    return [Check("config secrets", FAIL, text, "chmod" + fix)]


# --- the GPS device -------------------------------------------------------------------------------


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


def may_open(st: os.stat_result, user: pwd.struct_passwd) -> bool:
    """Whether `user` may open a file with this stat for reading and writing (mode bits)."""
    if user.pw_uid == 0:
        return True
    need = stat.S_IRUSR | stat.S_IWUSR
    if st.st_uid == user.pw_uid:
        return st.st_mode & need == need
    gids = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    if st.st_gid in gids:
        need = stat.S_IRGRP | stat.S_IWGRP
        return st.st_mode & need == need
    need = stat.S_IROTH | stat.S_IWOTH
    return st.st_mode & need == need


def check_device(ctx: Context) -> list[Check]:
    device = ctx.cfg.gps.device
    if "://" in device:
        return [Check("gps device", SKIP, f"{device} is a URL: checked by reading it below")]
    if device.startswith("i2c:"):
        # The daemon reads a u-blox receiver's DDC port through the bus (ubx_i2c.py): what
        # must exist is the bus's device, not a file named after the URL.
        from tracker.ubx_i2c import parse_i2c_url

        bus, address = parse_i2c_url(device)
        device = f"/dev/i2c-{bus}"
        if not os.path.exists(device):
            return [Check("gps device", FAIL, f"{device} does not exist (for [gps] device "
                          f"i2c:{bus}:0x{address:02x})",
                          "enable I2C: raspi-config > Interface Options > I2C, then reboot")]
    try:
        st = os.stat(device)
    except FileNotFoundError:
        return [Check("gps device", FAIL, f"{device} does not exist", _device_fix(device))]
    except OSError as e:
        return [Check("gps device", FAIL, f"{device}: {e.strerror}", _device_fix(device))]
    checks = [Check("gps device", OK, f"{device} exists ({os.path.realpath(device)})")]
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
        group = _group_name(st.st_gid)
        checks.append(
            Check(
                "gps permissions", FAIL,
                f"{ctx.user} may not read {device} (owner {_user_name(st.st_uid)}, group "
                f"{group}, mode {stat.S_IMODE(st.st_mode):o})",
                f"usermod -aG {group} {ctx.user} && systemctl restart tracker",
            )
        )  # fmt: skip
    return checks


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# --- NMEA -----------------------------------------------------------------------------------------


@dataclass
class Listening:
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
    """Read `device` at `baudrate` for `seconds` and decode what arrives."""
    import serial

    from tracker.nmea import Decoder
    from tracker.ubx_i2c import open_gps_port

    out = Listening(baudrate, seconds)
    decoder = Decoder(log_interval_s=3600.0)
    try:
        # The daemon's own opener: an `i2c:` receiver is read as the daemon reads it.
        port = open_gps_port(device, baudrate=baudrate, timeout=0.2)
    except (serial.SerialException, OSError, ValueError) as e:
        out.error = str(e).splitlines()[0] if str(e) else type(e).__name__
        return out
    try:
        if hasattr(port, "reset_input_buffer"):  # an I2C port holds no stale bytes
            port.reset_input_buffer()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            data = port.read(port.in_waiting or 1)
            out.bytes += len(data)
            for fix in decoder.feed(data) if data else []:
                out.fixes += 1
                out.last_fix_time, out.last_fix_at = fix.time, time.time()
    except (serial.SerialException, OSError) as e:
        out.error = str(e).splitlines()[0] if str(e) else type(e).__name__
    finally:
        port.close()
    for fix in decoder.flush():
        out.fixes += 1
        out.last_fix_time, out.last_fix_at = fix.time, time.time()
    out.sentences = decoder.stats.sentences
    out.rejected = decoder.stats.rejected
    return out


def check_nmea(ctx: Context, *, listen_fn: Callable[..., Listening] = listen) -> list[Check]:
    gps = ctx.cfg.gps
    if gps.device.startswith("gpsd://"):
        return check_gpsd(ctx)
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


# --- gpsd as the GPS source -----------------------------------------------------------------------


@dataclass
class GpsdHeard:
    seconds: float
    version: str | None = None  # gpsd's release, from its VERSION greeting
    devices: list[str] | None = None  # the receivers gpsd has (its DEVICES report), None: none
    reports: int = 0  # TPV, SKY, GST used by the decoder
    fixes: int = 0
    last_fix_time: float | None = None  # GPS UTC
    last_fix_at: float | None = None  # system time its TPV arrived
    error: str | None = None  # could not connect, or gpsd closed the connection
    refused: str | None = None  # gpsd's ERROR report (a WATCH of a device it does not have)


def listen_gpsd(url: str, seconds: float) -> GpsdHeard:
    """Watch gpsd at `url` for `seconds` through the daemon's own client (tracker/gpsd.py):
    the same connection, WATCH and mapping to fixes."""
    import json

    from tracker.gpsd import GpsdDecoder, GpsdPort, parse_url

    out = GpsdHeard(seconds)
    # The wall clock as the decoder's clock: `arrived` is then comparable to the GPS time.
    decoder = GpsdDecoder(device=parse_url(url)[2], clock=time.time)
    try:
        port = GpsdPort(url, timeout=0.2)
    except OSError as e:
        out.error = _reason(e)
        return out
    lines = b""
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            data = port.read()
            *done, lines = (lines + data).split(b"\n")
            for line in done:  # DEVICES and ERROR: the decoder has no use for them
                if b'"DEVICES"' not in line and b'"ERROR"' not in line:
                    continue
                try:
                    report = json.loads(line)
                except ValueError:
                    continue
                if report.get("class") == "ERROR":
                    out.refused = str(report.get("message"))
                elif report.get("class") == "DEVICES":
                    out.devices = [str(d.get("path")) for d in report.get("devices", [])
                                   if isinstance(d, dict)]  # fmt: skip
            out.fixes += _fixes(out, decoder, decoder.feed(data))
    except OSError as e:
        out.error = _reason(e)
    finally:
        port.close()
    out.fixes += _fixes(out, decoder, decoder.flush())
    out.version, out.reports = decoder.version, decoder.stats.sentences
    return out


def _fixes(out: GpsdHeard, decoder: Any, fixes: list[Any]) -> int:
    if fixes:
        out.last_fix_time, out.last_fix_at = fixes[-1].time, decoder.arrived
    return len(fixes)


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.splitlines()[0] if text else type(e).__name__


def check_gpsd(ctx: Context, *, listen_fn: Callable[..., GpsdHeard] = listen_gpsd) -> list[Check]:
    """[gps] device = "gpsd://...": gpsd answers, has a receiver, and reports fixes."""
    from tracker.gpsd import parse_url

    url = ctx.cfg.gps.device
    host, port, wanted = parse_url(url)
    heard = listen_fn(url, ctx.listen_s)
    where = f"{host}:{port}"
    if heard.error and heard.version is None:
        return [Check(
            "gpsd", FAIL, f"no gpsd at {where}: {heard.error}",
            "start gpsd (systemctl enable --now gpsd.socket gpsd, after apt install gpsd) or "
            "correct [gps] device",
        )]  # fmt: skip
    if heard.version is None:
        return [Check(
            "gpsd", FAIL, f"{where} answers but is not gpsd (no VERSION report in "
            f"{heard.seconds:g} s)", "correct the port in [gps] device (gpsd's is 2947)",
        )]  # fmt: skip
    name = f"gpsd {heard.version} at {where}"
    if heard.devices is not None and not heard.devices:
        return [Check(
            "gpsd", FAIL, f"{name} has no receiver",
            'name it to gpsd: DEVICES="/dev/ttyUSB0" in /etc/default/gpsd, then systemctl '
            "restart gpsd (or gpsdctl add /dev/ttyUSB0)",
        )]  # fmt: skip
    if heard.refused:  # gpsd 3.22 answers a WATCH of a device it lacks with an ERROR only
        return [Check(
            "gpsd", FAIL, f"{name}: {heard.refused}",
            "correct the device in [gps] device (gpspipe -w -n 2 lists gpsd's DEVICES), or "
            "leave it out: gpsd://host:port",
        )]  # fmt: skip
    if wanted and heard.devices is not None and wanted not in heard.devices:
        return [Check(
            "gpsd", FAIL, f"{name} has no {wanted} (it has {', '.join(heard.devices)})",
            "correct the device in [gps] device, or add it to gpsd's DEVICES",
        )]  # fmt: skip
    on = f" ({', '.join(heard.devices)})" if heard.devices else ""
    if not heard.reports:
        return [Check(
            "gpsd", FAIL, f"{name}{on}: no report in {heard.seconds:g} s"
            + (f" ({heard.error})" if heard.error else ""),
            "check the receiver with gpsmon (power, wiring, the device gpsd was given)",
        )]  # fmt: skip
    if heard.last_fix_time is not None and heard.last_fix_at is not None:
        ctx.gps_time_offset_s = heard.last_fix_time - heard.last_fix_at
    checks = [Check("gpsd", OK, f"{name}{on}: {heard.reports} reports in {heard.seconds:g} s, "
                                f"{heard.fixes} fixes")]  # fmt: skip
    if heard.fixes == 0:
        checks.append(Check(
            "gps fix", FAIL, "gpsd reports but without a position fix",
            "give the antenna a clear view of the sky and wait (a cold start takes up to 15 "
            "minutes); gpsd needs a date too (an RMC sentence) before it reports a fix",
        ))  # fmt: skip
    return checks


# --- [[inputs]] and [share] -----------------------------------------------------------------------


def check_inputs(ctx: Context) -> list[Check]:
    """Each `[[inputs]]` stream: a TCP multiplexer connects (and what it sends), a UDP port can
    be bound, a serial device exists and the service user may open it."""
    return [_check_input(ctx, i) for i in ctx.cfg.inputs]


def _check_input(ctx: Context, cfg: InputConfig) -> Check:
    name, url = f"input {cfg.name}", cfg.url
    if url.startswith("tcp://"):
        return _tcp_input(ctx, name, url)
    if url.startswith("udp://"):
        return _udp_input(name, url)
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
        group = _group_name(st.st_gid)
        return Check(name, FAIL, f"{ctx.user} may not read {url} (group {group})",
                     f"usermod -aG {group} {ctx.user} && systemctl restart tracker")  # fmt: skip
    return Check(name, OK, f"{url} exists and {ctx.user} may read it")


def _tcp_input(ctx: Context, name: str, url: str) -> Check:
    import socket

    from tracker.inputs_config import split_host_port
    from tracker.nmea import Decoder

    host, port = split_host_port(url, "tcp", host_required=True)
    try:
        sock = socket.create_connection((host, port), timeout=INPUT_CONNECT_S)
    except OSError as e:
        return Check(name, FAIL, f"cannot connect to {host}:{port}: {_reason(e)}",
                     "check the multiplexer is on and on this network, its TCP server enabled, "
                     "and the address and port in the url")  # fmt: skip
    # A multiplexer serves several clients: reading beside a running daemon takes nothing from it.
    decoder = Decoder(log_interval_s=3600.0)
    readings = 0
    try:
        sock.settimeout(0.2)
        deadline = time.monotonic() + ctx.input_s
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            decoder.feed(data)
            readings += len(decoder.take_readings())
    except OSError:
        pass  # it connected: that is the check; what it sent until then is reported
    finally:
        sock.close()
    sentences = decoder.stats.sentences
    if not sentences:
        return Check(name, OK, f"{host}:{port} connects; no NMEA in {ctx.input_s:g} s (are the "
                               "instruments on?)")  # fmt: skip
    return Check(name, OK, f"{host}:{port} connects: {sentences} sentences in {ctx.input_s:g} s, "
                           f"{readings} instrument readings")  # fmt: skip


def _udp_input(name: str, url: str) -> Check:
    from tracker.inputs import open_input
    from tracker.inputs_config import split_host_port

    host, port = split_host_port(url, "udp", host_required=False)
    try:
        # The daemon's own bind, released at once. With its SO_REUSEADDR a running daemon
        # does not make it fail: only another program that holds the port alone does.
        open_input(url, 0).close()
    except OSError as e:
        return Check(
            name,
            FAIL,
            f"cannot listen on UDP {host or '*'}:{port}: {_reason(e)}",
            _bind_fix(e.errno, port, f"ss -ulpn 'sport = :{port}'", "its url"),
        )
    return Check(name, OK, f"UDP {host or '*'}:{port} can be bound")


def _bind_fix(code: int | None, port: int, find: str, key: str) -> str:
    import errno

    if code == errno.EADDRINUSE:
        return f"another program holds the port ({find}): stop it or change {key}"
    if code == errno.EADDRNOTAVAIL:
        return f"the address is not this machine's (ip -brief addr): change {key}"
    if code == errno.EACCES:
        return f"port {port} needs root (below 1024): use 10110, the NMEA convention, in {key}"
    return f"change {key}"


def check_share(ctx: Context) -> list[Check]:
    """`[share] nmea_tcp` can be bound now, or the running daemon holds it (then it serves)."""
    import errno
    import socket

    from tracker.config import split_listen

    listen = ctx.cfg.share.nmea_tcp
    if not listen:
        return []
    host, port = split_listen(listen)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as share.py binds
        sock.bind((host, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            served = _served_by_daemon(ctx, listen)
            if served:
                return [Check("share", OK, served)]
        return [Check("share", FAIL, f"cannot listen on {listen}: {_reason(e)}",
                      _bind_fix(e.errno, port, f"ss -tlpn 'sport = :{port}'",
                                "[share] nmea_tcp"))]  # fmt: skip
    finally:
        sock.close()  # never listened: released at once
    return [Check("share", OK, f"{listen} can be bound (NMEA served there once tracker runs)")]


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


# --- backends -------------------------------------------------------------------------------------


def check_backend(ctx: Context, section: str) -> list[Check]:
    """One backend's own probe (in its module); [] when its section is absent or disabled."""
    from tracker.backends import module

    settings = ctx.cfg.backends.get(section)
    if settings is None or not settings.enabled:
        return []
    try:
        probe = module(section).probe(settings)
    except Exception as e:  # a bug in one probe must not hide the other checks
        return [Check(section, FAIL, repr(e), None)]
    if probe.server_offset_s is not None:
        ctx.server_time_offset_s[section] = probe.server_offset_s
    return probe.checks


# --- sensor hardware and the installed unit ----------------------------------------------------


ANT_VENDOR = "0fcf"  # Garmin/Dynastream
UNIT = Path("etc/systemd/system/tracker.service")


def check_sensor_hardware(ctx: Context) -> list[Check]:
    """What the configured sensors need from the machine: the Bluetooth adapter, an ANT+
    stick the service user may open, the I2C bus. Only for sensor types configured."""
    r = ctx.root
    kinds = {s.type for s in ctx.cfg.sensors}
    checks = []
    if "ble" in kinds:
        wanted = {s.adapter or "hci0" for s in ctx.cfg.sensors if s.type == "ble"}
        for adapter in sorted(wanted):
            if (r / "sys/class/bluetooth" / adapter).exists():
                checks.append(Check("bluetooth", OK, f"adapter {adapter} present"))
            else:
                checks.append(Check(
                    "bluetooth", FAIL, f"no Bluetooth adapter {adapter}",
                    "rfkill unblock bluetooth && systemctl enable --now bluetooth "
                    "(on a Pi Zero W/2 W or Pi 3/4/5 the adapter is built in)",
                ))  # fmt: skip
    if "ant" in kinds:
        checks.append(_ant_stick(ctx))
    buses = {s.bus for s in ctx.cfg.sensors if s.type == "i2c" and s.bus is not None}
    if ctx.cfg.gps.device.startswith("i2c:"):
        buses.add(int(ctx.cfg.gps.device.split(":")[1]))
    for bus in sorted(buses):
        dev = r / "dev" / f"i2c-{bus}"
        if dev.exists():
            checks.append(Check("i2c", OK, f"/dev/i2c-{bus} present"))
        else:
            checks.append(Check(
                "i2c", FAIL, f"no /dev/i2c-{bus}",
                "enable I2C: raspi-config > Interface Options > I2C, then reboot",
            ))  # fmt: skip
    return checks


def _ant_stick(ctx: Context) -> Check:
    for dev in sorted((ctx.root / "sys/bus/usb/devices").glob("*")):
        try:
            vendor = (dev / "idVendor").read_text().strip()
        except OSError:
            continue
        if vendor == ANT_VENDOR:
            product = (dev / "idProduct").read_text().strip() if (dev / "idProduct").exists() \
                else "?"  # fmt: skip
            return Check("ant+ stick", OK, f"USB {vendor}:{product} at {dev.name}")
    return Check(
        "ant+ stick", FAIL, "no ANT+ USB stick (vendor 0fcf) plugged in",
        "plug in the stick; scripts/install-pi.sh's udev rule gives it to the service user",
    )  # fmt: skip


def check_unit(ctx: Context) -> list[Check]:
    """The systemd unit scripts/install-pi.sh installs: there, and the one of this release."""
    installed = ctx.root / UNIT
    if not installed.exists():
        return [Check("service", SKIP, f"/{UNIT} not installed (running by hand?)",
                      "sudo scripts/install-pi.sh to run tracker as a service")]  # fmt: skip
    shipped = Path(__file__).resolve().parents[1] / "systemd" / "tracker.service"
    if shipped.exists() and _unit_directives(installed) != _unit_directives(shipped):
        return [Check(
            "service", FAIL, f"/{UNIT} differs from this release's unit",
            "sudo scripts/install-pi.sh again (it keeps the config and the data), or put your "
            "changes in a drop-in: systemctl edit tracker",
        )]  # fmt: skip
    return [Check("service", OK, f"/{UNIT} installed")]


def _unit_directives(path: Path) -> list[str]:
    """The unit's settings, without comments and blank lines (the installer may reword
    paths: ExecStart= and the like are compared by their key only)."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        out.append(key if key in ("ExecStart", "User", "Group", "ReadWritePaths") else line)
    return out


# --- disk and clock -------------------------------------------------------------------------------


def check_disk(ctx: Context) -> list[Check]:
    path = Path(ctx.cfg.storage.path)
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_mb = usage.free / 1e6
    used_mb = path.stat().st_size / 1e6 if path.exists() else 0.0
    room = free_mb + used_mb
    max_mb = ctx.cfg.storage.max_mb
    if free_mb < MIN_FREE_MB:
        return [
            Check(
                "disk", FAIL, f"only {free_mb:.0f} MB free on the partition of {path}",
                "free space (journalctl --vacuum-size=50M, apt-get clean) or use a larger card",
            )
        ]  # fmt: skip
    if room < max_mb:
        return [
            Check(
                "disk", FAIL,
                f"[storage] max_mb is {max_mb:g} MB but only {room:.0f} MB can be used at {path}",
                f"set [storage] max_mb = {int(room * 0.8)} (the queue must fit on the card)",
            )
        ]  # fmt: skip
    return [Check("disk", OK, f"{free_mb:.0f} MB free for {path} (max_mb {max_mb:g})")]


def check_clock(ctx: Context) -> list[Check]:
    refs = []
    if ctx.gps_time_offset_s is not None:
        refs.append(("GPS time", ctx.gps_time_offset_s))
    refs += [(f"{k} server time", v) for k, v in ctx.server_time_offset_s.items()]
    if not refs:
        return [Check("clock", SKIP, "no GPS time or server time to compare with")]
    source, offset = refs[0]
    if abs(offset) > CLOCK_TOLERANCE_S:
        return [
            Check(
                "clock", FAIL,
                f"the system clock is {abs(offset):.0f} s {'behind' if offset > 0 else 'ahead of'} "
                f"{source}",
                "enable time sync: timedatectl set-ntp true (systemd-timesyncd); a Pi has no "
                "real-time clock (tracker itself uses GPS time for fixes)",
            )
        ]  # fmt: skip
    return [Check("clock", OK, f"within {abs(offset):.0f} s of {source}")]


# --- the command ----------------------------------------------------------------------------------


def run_checks(
    ctx: Context, config_check: Check, on_check: Callable[[Check], None] | None = None
) -> list[Check]:
    """Every check, in order; `on_check(check)` is called with each as soon as it is done
    (before the next one starts), so a caller can show progress."""
    checks: list[Check] = []

    def add(new: list[Check]) -> list[Check]:
        for c in new:
            checks.append(c)
            if on_check is not None:
                on_check(c)
        return new

    add([config_check])
    add(check_secrets(ctx))
    device = add(check_device(ctx))
    if not any(c.result == FAIL and c.name == "gps device" for c in device):
        add(check_nmea(ctx))
    add(check_inputs(ctx))
    add(check_share(ctx))
    from tracker.backends import REGISTRY

    for section in REGISTRY:
        add(check_backend(ctx, section))
    add(check_sensor_hardware(ctx))
    add(check_unit(ctx))
    add(check_disk(ctx))
    add(check_clock(ctx))
    return checks


def render_check(c: Check) -> str:
    """One check as the checklist shows it: its line, and its fix on the next when it failed."""
    mark = {OK: "[ ok ]", FAIL: "[FAIL]", SKIP: "[skip]"}[c.result]
    line = f"{mark} {c.name}: {c.detail}"
    return line + f"\n       fix: {c.fix}" if c.result == FAIL and c.fix else line


def summary(checks: list[Check]) -> str:
    failed = sum(c.result == FAIL for c in checks)
    return "all checks passed" if not failed else f"{failed} check(s) failed"


def render(checks: list[Check]) -> str:
    return "\n".join([*map(render_check, checks), summary(checks)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", type=Path, default=DEFAULT_PATH,
        help=f"TOML configuration (default {DEFAULT_PATH})",
    )  # fmt: skip
    parser.add_argument("--user", default="tracker", help="the service user (default tracker)")
    parser.add_argument(
        "--listen", type=float, default=LISTEN_S, metavar="S",
        help=f"seconds to read the GPS at its configured rate (default {LISTEN_S:g})",
    )  # fmt: skip
    parser.add_argument(
        "--probe", type=float, default=PROBE_S, metavar="S",
        help=f"seconds to try each other baud rate when nothing decodes (default {PROBE_S:g})",
    )  # fmt: skip
    parser.add_argument(
        "--json", action="store_true",
        help="print the checks as a JSON list at the end (name, result, detail, fix)",
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("tracker").setLevel(logging.ERROR)  # the checklist says it all
    cfg, config_check = check_config(args.config)
    ctx = Context(cfg, args.user, listen_s=args.listen, probe_s=args.probe)
    if args.json:
        import json

        checks = run_checks(ctx, config_check)
        print(json.dumps([dataclasses.asdict(c) for c in checks], indent=2))
    else:
        checks = run_checks(ctx, config_check, lambda c: print(render_check(c), flush=True))
        print(summary(checks))
    return 0 if all(c.result != FAIL for c in checks) else 1
