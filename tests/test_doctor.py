"""`tracker doctor` against a real pty, the real Map My Tracks and json-gpsr test servers
and real files.

A pty has no line rate: bytes arrive intact whatever speed the reader sets. To test the baud
check honestly the fake receiver below transmits at 38400 baud, and before writing each epoch
reads back the speed the reader configured on the pty (termios on the master reports the
slave's settings, which pyserial sets on open). At the same speed the bytes go through as they
are; at another speed they go through `uart_resample`, which does what a UART receiver does
with a line at the wrong rate: find each start bit, sample the 8 data bits and the stop bit at
its own bit times. That is exactly the garbage a real mismatched link produces (framing errors
included), and nothing else about the pty is faked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import termios
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import ROOT, epochs, free_port, wait_for
from test_share import GPSD, Gpsd

from tracker import doctor, gps
from tracker.gpsd import check as check_gpsd
from tracker.inputs import check as check_inputs
from tracker.pty import PtyWriter
from tracker.sensors.manager import check as check_sensor_hardware
from tracker.share import check as check_share
from tracker.store import SCHEMA_VERSION
from tracker.testing import gpsr as gpsr_server
from tracker.testing import mapmytracks as mmt_server

TRUE_BAUD = 38400
SPEEDS = {getattr(termios, f"B{b}"): b for b in (4800, 9600, 19200, 38400, 57600, 115200)}


def uart_frames(data: bytes) -> list[int]:
    """8N1 line levels, one per bit time: start 0, 8 data bits LSB first, stop 1."""
    bits: list[int] = []
    for byte in data:
        bits += [0, *((byte >> i) & 1 for i in range(8)), 1]
    return bits


def uart_resample(data: bytes, tx_baud: int, rx_baud: int) -> bytes:
    """What a UART set to `rx_baud` receives from a line sending `data` at `tx_baud`."""
    bits = uart_frames(data)
    end = len(bits) / tx_baud

    def level(t: float) -> int:
        i = int(t * tx_baud + 1e-9)
        return bits[i] if 0 <= i < len(bits) else 1

    out = bytearray()
    t = 0.0
    while t < end:
        # the next falling edge (or a line already low) at or after t
        i = int(t * tx_baud + 1e-9)
        while i < len(bits) and bits[i] == 1:
            i += 1
        if i >= len(bits):
            break
        start = max(t, i / tx_baud)
        if level(start + 0.5 / rx_baud) != 0:  # a glitch, not a start bit
            t = start + 0.5 / rx_baud
            continue
        byte = 0
        for k in range(8):
            byte |= level(start + (k + 1.5) / rx_baud) << k
        out.append(byte)  # with or without a framing error, as the kernel passes it in raw mode
        t = start + 9.5 / rx_baud
    return bytes(out)


def test_the_resampler_is_exact_at_the_same_rate_and_garbles_at_another():
    nmea = b"$GPGGA,080000.00,5130.0000,N,00007.0000,W,1,09,0.9,45.0,M,47.0,M,,*4A\r\n"
    assert uart_resample(nmea, 38400, 38400) == nmea
    assert uart_resample(nmea, 9600, 9600) == nmea
    slow = uart_resample(nmea, 38400, 9600)
    assert slow != nmea and b"$GP" not in slow and len(slow) < len(nmea)
    fast = uart_resample(nmea, 9600, 38400)
    assert fast != nmea and b"GGA" not in fast


class Receiver:
    """A GPS receiver on a pty, sending the simulated ride at TRUE_BAUD, now-ish GPS time."""

    def __init__(self, path: Path) -> None:
        self.writer = PtyWriter.open(path, timeout=0.5)
        self.stop = threading.Event()
        self.rates_seen: set[int] = set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for e in epochs(100, rate_hz=10.0, start=datetime.now(UTC)):
                if self.stop.is_set():
                    return
                if self.writer.reader_connected():
                    speed = SPEEDS.get(termios.tcgetattr(self.writer.master_fd)[5], 0)
                    self.rates_seen.add(speed)
                    data = e.data if speed == TRUE_BAUD else uart_resample(e.data, TRUE_BAUD, speed)
                    self.writer.write(data)
                self.stop.wait(0.1)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.writer.close()


@pytest.fixture
def receiver(tmp_path):
    r = Receiver(tmp_path / "gps0")
    yield r
    r.close()


def me() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def write_config(tmp_path: Path, device: str, baud: int, extra: str = "") -> Path:
    config = tmp_path / "tracker.toml"
    config.write_text(
        f'[gps]\ndevice = "{device}"\nbaudrate = {baud}\n\n'
        f'[storage]\npath = "{tmp_path / "db" / "tracker.db"}"\nmax_mb = 50\n\n' + extra
    )
    return config


# The storage's lines when `[storage] path`'s directory is not there yet (write_config's).
NO_DATABASE_YET = [("storage permissions", doctor.OK), ("database", doctor.OK), ("disk", doctor.OK)]


def doctor_cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tracker", "doctor", "-c", str(config), "--user", me(),
         "--listen", "1.5", "--probe", "1.5", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


def line(out: str, prefix: str) -> str:
    found = [x for x in out.splitlines() if x.startswith(prefix)]
    assert found, f"no line starting {prefix!r} in:\n{out}"
    return found[0]


def fix_after(out: str, prefix: str) -> str:
    lines = out.splitlines()
    i = lines.index(line(out, prefix))
    assert lines[i + 1].startswith("       fix: "), out
    return lines[i + 1].strip()


@pytest.mark.slow
def test_a_receiver_at_38400_configured_for_9600_is_named_with_its_fix(tmp_path, receiver):
    config = write_config(tmp_path, receiver.writer.path, 9600)
    done = doctor_cli(config)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert line(out, "[ ok ] gps device:")
    assert line(out, "[ ok ] gps permissions:")
    baud = line(out, "[FAIL] nmea baud rate:")
    assert "nothing decodes at 9600 baud" in baud and "arrive at 38400 baud" in baud
    assert (
        fix_after(out, "[FAIL] nmea baud rate:") == f"fix: set [gps] baudrate = 38400 in {config}"
    )
    assert {9600, 38400} <= receiver.rates_seen, "the doctor really switched the pty's speed"
    assert out.splitlines()[-1] == "1 check(s) failed"


@pytest.mark.slow
def test_the_same_receiver_configured_right_passes_everything(tmp_path, receiver):
    config = write_config(tmp_path, receiver.writer.path, 38400)
    done = doctor_cli(config)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    nmea = line(out, "[ ok ] nmea:")
    assert "at 38400 baud" in nmea and " fixes" in nmea and "/s)" in nmea
    assert line(out, "[ ok ] clock: within")
    assert line(out, "[ ok ] disk:")
    assert out.splitlines()[-1] == "all checks passed"


def test_a_missing_device_is_named_with_its_fix(tmp_path):
    config = write_config(tmp_path, "/dev/serial0-not-here", 9600)
    done = doctor_cli(config)
    assert done.returncode == 1
    assert line(done.stdout, "[FAIL] gps device: /dev/serial0-not-here does not exist")
    assert "enable_uart=1" in fix_after(done.stdout, "[FAIL] gps device:")
    assert "nmea" not in done.stdout, "no NMEA check on a device that is not there"

    config = write_config(tmp_path, "/dev/gps0-not-here", 9600)
    done = doctor_cli(config)
    assert "udev" in fix_after(done.stdout, "[FAIL] gps device:")


def test_an_i2c_receiver_is_checked_as_the_daemon_opens_it(tmp_path):
    """`[gps] device = "i2c:1:0x42"` (a u-blox DDC port, tracker/ubx_i2c.py): the doctor looks
    for the bus the daemon reads and opens it with the daemon's opener, instead of reporting
    that a file named "i2c:1:0x42" does not exist."""
    bus = next(n for n in range(20, 99) if not os.path.exists(f"/dev/i2c-{n}"))
    config = write_config(tmp_path, f"i2c:{bus}:0x42", 9600)
    done = doctor_cli(config)
    assert done.returncode == 1
    assert line(done.stdout, f"[FAIL] gps device: /dev/i2c-{bus} does not exist (for [gps] "
                             f"device i2c:{bus}:0x42)")  # fmt: skip
    assert "raspi-config" in fix_after(done.stdout, "[FAIL] gps device:")
    heard = gps.listen(f"i2c:{bus}:0x42", 9600, 0.1)
    assert heard.error and f"/dev/i2c-{bus}" in heard.error, heard.error


def test_doctor_passes_for_an_i2c_receiver_the_daemon_reads(tmp_path, monkeypatch):
    """The whole checklist for `[gps] device = "i2c:1:0x42"` with a u-blox receiver sending on
    the bus: only smbus2's bus is fake (the DDC registers of tests/test_ubx_i2c.py, which the
    daemon's GpsReader reads there), opened through the daemon's open_gps_port; the bus's
    device file is in a made-up root."""
    import smbus2
    from test_ubx_i2c import FakeDdc

    ddc = FakeDdc()
    monkeypatch.setattr(smbus2, "SMBus", ddc.open)
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    (root / "dev/i2c-1").touch(mode=0o600)
    stop = threading.Event()

    def receiver() -> None:  # 10 Hz, GPS time now, as long as the doctor listens
        for e in epochs(1200, rate_hz=10.0, start=datetime.now(UTC)):
            ddc.send(e.data)
            if stop.wait(0.1):
                return

    thread = threading.Thread(target=receiver, daemon=True)
    thread.start()
    try:
        cfg, config_check = doctor.check_config(write_config(tmp_path, "i2c:1:0x42", 9600))
        ctx = doctor.Context(cfg, me(), listen_s=1.5, root=root)
        checks = doctor.run_checks(ctx, config_check)
    finally:
        stop.set()
        thread.join(timeout=5)
    out = doctor.render(checks)
    assert [(c.name, c.result) for c in checks] == [
        ("config", doctor.OK), ("gps device", doctor.OK), ("gps permissions", doctor.OK),
        ("nmea", doctor.OK), ("i2c", doctor.OK), ("service", doctor.SKIP),
        *NO_DATABASE_YET, ("clock", doctor.OK),
    ], out  # fmt: skip
    assert checks[1].detail.startswith("/dev/i2c-1 exists"), out
    fixes = re.search(r"at 9600 baud, (\d+) fixes", checks[3].detail)
    assert fixes and int(fixes.group(1)) > 0, out
    assert out.splitlines()[-1] == "all checks passed"
    assert ddc.closed >= 1 and ddc.transactions > 0, "the bus was opened, read and closed"


def test_tracker_status_loads_no_check(tmp_path):
    """A command imports only what it uses: the checks are the doctor's (and `tracker run`'s
    backends carry their probes), never `tracker status`'s or `tracker --help`'s."""
    from test_imports import loaded_by

    config = write_config(tmp_path, "/dev/null", 9600)
    for args in (("--help",), ("status", "-c", str(config))):
        loaded = loaded_by(*args, tmp_path=tmp_path)
        assert "tracker.cli" in loaded
        assert not {"tracker.checks", "tracker.store.check", "tracker.doctor"} & loaded, args
    assert "tracker.status" in loaded, "tracker status really ran"


def test_a_device_the_service_user_may_not_open(tmp_path):
    import pwd

    device = tmp_path / "ttyFAKE"
    device.write_bytes(b"")
    device.chmod(0o600)
    nobody = pwd.getpwnam("nobody")
    if os.getuid() == nobody.pw_uid:
        pytest.skip("running as nobody")
    ctx = doctor.Context(doctor.load(write_config(tmp_path, str(device), 9600)), "nobody")
    perm = [c for c in gps.check_device(ctx) if c.name == "gps permissions"][0]
    assert perm.result == doctor.FAIL and "nobody may not read" in perm.detail
    assert perm.fix and perm.fix.startswith("usermod -aG ")
    ctx.user = me()
    perm = [c for c in gps.check_device(ctx) if c.name == "gps permissions"][0]
    assert perm.result == doctor.OK


def test_a_bad_config_is_named(tmp_path):
    config = tmp_path / "tracker.toml"
    config.write_text("[gps]\nbaudrte = 9600\n")
    done = doctor_cli(config)
    assert done.returncode == 1
    assert "[FAIL] config:" in done.stdout and "baudrte: unknown key" in done.stdout


# --- backends -------------------------------------------------------------------------------------


def mapmytracks_ctx(tmp_path: Path, url: str, password: str) -> doctor.Context:
    extra = f'[mapmytracks]\nurl = "{url}"\nusername = "rider"\npassword = "{password}"\n'
    return doctor.Context(doctor.load(write_config(tmp_path, "/dev/null", 9600, extra)), me())


def test_mapmytracks_answers_and_accepts_the_credentials(tmp_path):
    with mmt_server.MapMyTracksServer(users={"rider": "secret"}) as server:
        ctx = mapmytracks_ctx(tmp_path, server.url, "secret")
        checks = doctor.check_backend(ctx, "mapmytracks")
    assert [(c.name, c.result) for c in checks] == [
        ("mapmytracks", doctor.OK),
        ("mapmytracks credentials", doctor.OK),
    ]
    assert server.count("get_time") == 1
    assert [c.result for c in doctor.check_clock(ctx)] == [doctor.OK]


def test_wrong_mapmytracks_credentials_fail_with_a_fix(tmp_path):
    with mmt_server.MapMyTracksServer(users={"rider": "secret"}) as server:
        ctx = mapmytracks_ctx(tmp_path, server.url, "wrong")
        checks = doctor.check_backend(ctx, "mapmytracks")
    assert [(c.name, c.result) for c in checks] == [
        ("mapmytracks", doctor.OK),
        ("mapmytracks credentials", doctor.FAIL),
    ]
    assert "username ('rider') and the password" in (checks[1].fix or "")


def test_an_unreachable_backend_and_a_wrong_clock_fail_with_fixes(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    checks = doctor.check_backend(
        mapmytracks_ctx(tmp_path, f"http://127.0.0.1:{port}/api/", "x"), "mapmytracks"
    )
    assert checks[0].result == doctor.FAIL and "unreachable" in checks[0].detail
    assert "check the network" in (checks[0].fix or "")

    with mmt_server.MapMyTracksServer(clock=lambda: time.time() + 3600) as server:
        ctx = mapmytracks_ctx(tmp_path, server.url, "secret")
        doctor.check_backend(ctx, "mapmytracks")
    clock = doctor.check_clock(ctx)[0]
    assert clock.result == doctor.FAIL and "behind mapmytracks server time" in clock.detail
    assert "timedatectl set-ntp true" in (clock.fix or "")


# --- json-gpsr ------------------------------------------------------------------------------------

GPSR_TOKEN = "doctor-gpsr-t0ken-do-not-show"  # distinctive: searched for in the output


def gpsr_config(tmp_path: Path, url: str, token: str = GPSR_TOKEN) -> Path:
    extra = f'[gpsr]\nurl = "{url}"\ntoken = "{token}"\n'
    return write_config(tmp_path, "/dev/null", 9600, extra)


def gpsr_checks(tmp_path: Path, url: str, token: str = GPSR_TOKEN) -> list[doctor.Check]:
    ctx = doctor.Context(doctor.load(gpsr_config(tmp_path, url, token)), me())
    return doctor.check_backend(ctx, "gpsr")


def test_gpsr_is_a_registered_backend_and_absent_without_a_section(tmp_path):
    from tracker.backends import REGISTRY

    assert "gpsr" in REGISTRY
    ctx = doctor.Context(doctor.load(write_config(tmp_path, "/dev/null", 9600)), me())
    assert doctor.check_backend(ctx, "gpsr") == []


def test_gpsr_answers_and_accepts_a_valid_token(tmp_path):
    with gpsr_server.GpsrServer() as server:
        server.make_token("rider", "post", key=GPSR_TOKEN)
        checks = gpsr_checks(tmp_path, server.url)
    assert [(c.name, c.result) for c in checks] == [("gpsr", doctor.OK), ("gpsr token", doctor.OK)]
    assert [r.name for r in server.requests] == ["/tt"]  # a check, nothing posted
    assert all(GPSR_TOKEN not in c.detail for c in checks)


def test_an_expired_gpsr_token_fails_with_a_fix_and_is_never_shown(tmp_path):
    now = int(time.time())
    with gpsr_server.GpsrServer() as server:
        server.make_token("rider", "post", now - 7200, now - 3600, key=GPSR_TOKEN)
        config = gpsr_config(tmp_path, server.url)
        checks = doctor.check_backend(doctor.Context(doctor.load(config), me()), "gpsr")
        done = doctor_cli(config)  # the whole command, as a user runs it
    assert [(c.name, c.result) for c in checks] == [
        ("gpsr", doctor.OK),
        ("gpsr token", doctor.FAIL),
    ]
    assert "expired" in checks[1].detail
    fix = checks[1].fix or ""
    assert '"post" token' in fix and "[gpsr] token or token_file" in fix
    assert done.returncode == 1
    assert line(done.stdout, "[ ok ] gpsr:")
    assert "user page" in fix_after(done.stdout, "[FAIL] gpsr token:")
    assert GPSR_TOKEN not in done.stdout + done.stderr


def test_an_unreachable_gpsr_server_fails_with_a_fix(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (check,) = gpsr_checks(tmp_path, f"http://127.0.0.1:{port}/")
    assert check.name == "gpsr" and check.result == doctor.FAIL
    assert "unreachable" in check.detail and GPSR_TOKEN not in check.detail
    assert "url in [gpsr]" in (check.fix or "")


def test_a_gpsr_url_that_is_not_a_gpsr_server_fails_with_a_fix(tmp_path):
    with mmt_server.MapMyTracksServer() as server:  # answers, but not json-gpsr
        (check,) = gpsr_checks(tmp_path, server.url)
    assert check.name == "gpsr" and check.result == doctor.FAIL
    assert GPSR_TOKEN not in check.detail and "url in [gpsr]" in (check.fix or "")


def test_a_missing_gpsr_token_file_fails_with_a_fix(tmp_path):
    extra = f'[gpsr]\nurl = "http://127.0.0.1:9/"\ntoken_file = "{tmp_path / "nope"}"\n'
    ctx = doctor.Context(doctor.load(write_config(tmp_path, "/dev/null", 9600, extra)), me())
    (check,) = doctor.check_backend(ctx, "gpsr")
    assert (check.name, check.result) == ("gpsr token", doctor.FAIL)
    assert "token_file" in (check.fix or "")


# --- how the checklist is shown -------------------------------------------------------------------


def test_each_check_is_printed_as_soon_as_it_is_done(tmp_path):
    """A silent receiver on a real pty keeps the NMEA check reading for seconds: the config and
    device lines must reach the pipe before it ends, not all at once at the end."""
    master, slave = os.openpty()
    try:
        config = write_config(tmp_path, os.ttyname(slave), 9600)
        proc = subprocess.Popen(
            [sys.executable, "-m", "tracker", "doctor", "-c", str(config), "--user", me(),
             "--listen", "1.0", "--probe", "0.2"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        )  # fmt: skip
        arrived = [(time.monotonic(), x.rstrip("\n")) for x in proc.stdout]
        assert proc.wait(timeout=60) == 1
    finally:
        os.close(slave)
        os.close(master)
    lines = [x for _, x in arrived]
    assert lines[0].startswith("[ ok ] config:") and lines[1].startswith("[ ok ] gps device:")
    nmea = lines.index(line("\n".join(lines), "[FAIL] nmea: no data at all"))
    assert arrived[nmea][0] - arrived[1][0] >= 1.0, "the device line came before the listening"
    assert lines[nmea + 1].startswith("       fix: check power and wiring")
    assert lines[-1] == "1 check(s) failed"


def test_json_lists_the_same_checks_as_the_text(tmp_path):
    import json

    config = write_config(tmp_path, "/dev/serial0-not-here", 9600)
    text, as_json = doctor_cli(config), doctor_cli(config, "--json")
    assert as_json.returncode == text.returncode == 1
    checks = json.loads(as_json.stdout)
    # ("service": skipped, no unit installed on a test machine)
    assert [c["name"] for c in checks] == [
        "config", "gps device", "service", "storage permissions", "database", "disk", "clock",
    ]  # fmt: skip
    assert all(set(c) == {"name", "result", "detail", "fix"} for c in checks)
    device = checks[1]
    assert device["result"] == "FAIL" and "enable_uart=1" in device["fix"]
    assert checks[6] == {
        "name": "clock", "result": "skip", "fix": None,
        "detail": "no GPS time or server time to compare with",
    }  # fmt: skip
    shown = [doctor.render_check(doctor.Check(**c)) for c in checks]

    def free_mb(out: str) -> str:  # other programs write to this disk between the two runs
        return re.sub(r"disk: \d+ MB free", "disk: N MB free", out)

    assert free_mb(text.stdout).splitlines() == free_mb("\n".join(shown)).splitlines() + [
        "1 check(s) failed"
    ]


def test_run_checks_hands_over_each_check_before_the_next_starts(tmp_path, monkeypatch):
    device = tmp_path / "ttyFAKE"
    device.write_bytes(b"")
    device.chmod(0o600)
    ctx = doctor.Context(doctor.load(write_config(tmp_path, str(device), 9600)), me())
    seen: list[str] = []
    seen_by_nmea: list[str] = []

    def slow_nmea(ctx: doctor.Context) -> list[doctor.Check]:
        seen_by_nmea.extend(seen)
        return [doctor.Check("nmea", doctor.OK, "fake")]

    monkeypatch.setattr(gps, "check_nmea", slow_nmea)
    config_check = doctor.Check("config", doctor.OK, "fine")
    checks = doctor.run_checks(ctx, config_check, lambda c: seen.append(c.name))
    assert seen_by_nmea == ["config", "gps device", "gps permissions"]
    assert seen == [c.name for c in checks] == [
        *seen_by_nmea, "nmea", "service", "storage permissions", "database", "disk", "clock",
    ]  # fmt: skip
    assert doctor.run_checks(ctx, config_check) == checks  # the callback is optional


def test_a_bug_in_one_parts_check_is_one_failed_line_and_the_others_still_run(
    tmp_path, monkeypatch
):
    from tracker.senders import mapmytracks

    def broken(*_: object, **__: object) -> list[doctor.Check]:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(gps, "check_nmea", broken)
    monkeypatch.setattr(mapmytracks, "probe", broken)
    ctx = mapmytracks_ctx(tmp_path, "http://127.0.0.1:9/api/", "x")
    ctx.cfg.path.chmod(0o600)  # its inline password is a check of its own
    checks = doctor.run_checks(ctx, doctor.Check("config", doctor.OK, "fine"))
    assert [(c.name, c.result) for c in checks] == [
        ("config", doctor.OK), ("gps device", doctor.OK), ("gps permissions", doctor.OK),
        ("gps.check", doctor.FAIL), ("mapmytracks", doctor.FAIL), ("service", doctor.SKIP),
        *NO_DATABASE_YET, ("clock", doctor.SKIP),
    ]  # fmt: skip
    assert checks[3].detail == checks[4].detail == "ZeroDivisionError('a bug')"


# --- sensor hardware and the installed unit ------------------------------------------------


SENSORS = (
    '[[sensors]]\ntype = "ble"\nname = "Polar H10"\n\n'
    '[[sensors]]\ntype = "ant"\nprofile = "hr"\n\n'
    '[[sensors]]\ntype = "i2c"\nbus = 1\naddress = 0x48\nregister = 0\nkind = "pwr"\n'
)


def hardware_ctx(tmp_path: Path, root: Path, extra: str = SENSORS) -> doctor.Context:
    cfg = doctor.load(write_config(tmp_path, "/dev/null", 9600, extra))
    return doctor.Context(cfg, me(), root=root)


def test_sensor_hardware_missing_is_named_with_its_fix(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    checks = list(check_sensor_hardware(hardware_ctx(tmp_path, root)))
    assert [(c.name, c.result) for c in checks] == [
        ("bluetooth", doctor.FAIL), ("ant+ stick", doctor.FAIL), ("i2c", doctor.FAIL),
    ]  # fmt: skip
    assert "rfkill unblock bluetooth" in checks[0].fix
    assert "raspi-config" in checks[2].fix and "/dev/i2c-1" in checks[2].detail


def test_sensor_hardware_present(tmp_path):
    root = tmp_path / "root"
    (root / "sys/class/bluetooth/hci0").mkdir(parents=True)
    stick = root / "sys/bus/usb/devices/1-1.2"
    stick.mkdir(parents=True)
    (stick / "idVendor").write_text("0fcf\n")
    (stick / "idProduct").write_text("1009\n")
    (root / "dev").mkdir()
    (root / "dev/i2c-1").touch()
    checks = list(check_sensor_hardware(hardware_ctx(tmp_path, root)))
    assert [(c.name, c.result) for c in checks] == [
        ("bluetooth", doctor.OK), ("ant+ stick", doctor.OK), ("i2c", doctor.OK),
    ]  # fmt: skip
    assert "0fcf:1009" in checks[1].detail


def test_no_sensor_no_hardware_check(tmp_path):
    assert list(check_sensor_hardware(hardware_ctx(tmp_path, tmp_path, extra=""))) == []


def test_the_installed_unit_is_this_releases(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    ctx = hardware_ctx(tmp_path, root, extra="")
    (skip,) = doctor.check_unit(ctx)
    assert skip.result == doctor.SKIP and "install-pi.sh" in skip.fix
    unit = root / "etc/systemd/system/tracker.service"
    unit.parent.mkdir(parents=True)
    shipped = (ROOT / "systemd" / "tracker.service").read_text()
    unit.write_text(shipped + "\n# a comment of the rider's\n")
    assert [c.result for c in doctor.check_unit(ctx)] == [doctor.OK]
    unit.write_text(shipped.replace("MemoryMax=", "MemoryMax=9"))
    (stale,) = doctor.check_unit(ctx)
    assert stale.result == doctor.FAIL and "systemctl edit tracker" in stale.fix


# --- gpsd as the GPS source (a real gpsd fed from a pty) -------------------------------------

GPSD_SENTENCES = ("GGA", "RMC", "GSA", "GSV", "GST", "VTG")  # what gpsd maps to TPV, SKY, GST
needs_gpsd = pytest.mark.skipif(GPSD is None, reason="gpsd is not installed (apt install gpsd)")


class Feed:
    """The simulated ride into a pty at 5 Hz, GPS time now: what a receiver gives gpsd."""

    def __init__(self, path: Path) -> None:
        self.writer = PtyWriter.open(path, timeout=0.5)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for e in epochs(50, rate_hz=5.0, sentences=GPSD_SENTENCES, start=datetime.now(UTC)):
                if self.stop.wait(0.2):  # pacing, as a receiver would
                    return
                self.writer.write(e.data)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.writer.close()


def gpsd_ctx(tmp_path: Path, url: str, listen_s: float = 1.5) -> doctor.Context:
    ctx = doctor.Context(doctor.load(write_config(tmp_path, url, 9600)), me())
    ctx.listen_s = listen_s
    return ctx


def wait_for_gpsd_fix(gpsd: Gpsd) -> None:
    """A freshly started gpsd hunts for the protocol first: wait for its first fix."""
    watch = gpsd.watch()
    got = b""
    try:
        watch.settimeout(20)
        while not (b'"class":"TPV"' in got and b'"time"' in got):
            data = watch.recv(65536)
            assert data, f"gpsd closed the watch (log: {gpsd.log})"
            got += data
    finally:
        watch.close()


@needs_gpsd
def test_gpsd_with_a_receiver_reports_its_fixes_and_the_clock(tmp_path):
    feed = Feed(tmp_path / "gps0")
    gpsd = Gpsd(tmp_path, feed.writer.path)
    try:
        wait_for_gpsd_fix(gpsd)
        url = f"gpsd://127.0.0.1:{gpsd.port}"
        ctx = gpsd_ctx(tmp_path, url)
        (device,) = gps.check_device(ctx)
        assert device.result == doctor.SKIP  # no serial port of ours to stat
        (check,) = check_gpsd(ctx)
        assert (check.name, check.result) == ("gpsd", doctor.OK), check
        assert check.detail.startswith("gpsd 3.") and f"127.0.0.1:{gpsd.port}" in check.detail
        assert f"({feed.writer.path})" in check.detail  # the receiver gpsd has
        reports, fixes = re.search(r"(\d+) reports in 1.5 s, (\d+) fixes", check.detail).groups()
        assert int(reports) > int(fixes) > 0
        # The fixes' GPS time (the feed's: now) is the clock check's reference.
        assert [c.result for c in doctor.check_clock(ctx)] == [doctor.OK]

        # One receiver of gpsd's named in the URL: there; another: not.
        (check,) = check_gpsd(gpsd_ctx(tmp_path, f"{url}{feed.writer.path}", 1.0))
        assert check.result == doctor.OK, check
        (check,) = check_gpsd(gpsd_ctx(tmp_path, f"{url}/dev/ttyNOPE", 1.0))
        assert check.result == doctor.FAIL and "No such device as /dev/ttyNOPE" in check.detail
        assert "gpspipe" in (check.fix or "")
    finally:
        gpsd.stop()
        feed.close()


@needs_gpsd
def test_gpsd_without_a_receiver_or_with_a_silent_one(tmp_path):
    port = free_port()
    bare = subprocess.Popen(
        [GPSD, "-N", "-n", "-b", "-S", str(port), "-F", str(tmp_path / "bare.sock")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: _connects(port), 20, what="gpsd to listen")
        (check,) = check_gpsd(gpsd_ctx(tmp_path, f"gpsd://127.0.0.1:{port}", 1.0))
    finally:
        bare.terminate()
        bare.wait(timeout=10)
    assert check.result == doctor.FAIL and check.detail.endswith("has no receiver"), check
    assert "/etc/default/gpsd" in (check.fix or "")

    with PtyWriter.open(tmp_path / "gps0", timeout=0.5) as silent:
        gpsd = Gpsd(tmp_path, silent.path)
        try:
            gpsd.watch().close()
            (check,) = check_gpsd(gpsd_ctx(tmp_path, f"gpsd://127.0.0.1:{gpsd.port}", 1.0))
        finally:
            gpsd.stop()
    assert check.result == doctor.FAIL and "no report in 1 s" in check.detail, check
    assert silent.path in check.detail and "gpsmon" in (check.fix or "")


def _connects(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_no_gpsd_is_one_clear_line(tmp_path):
    import socket

    config = write_config(tmp_path, f"gpsd://127.0.0.1:{free_port()}", 9600)
    done = doctor_cli(config)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert line(done.stdout, "[skip] gps device: gpsd://")
    failed = line(done.stdout, "[FAIL] gpsd: no gpsd at 127.0.0.1:")
    assert failed.endswith(": Connection refused")
    assert fix_after(done.stdout, "[FAIL] gpsd:").startswith("fix: start gpsd")
    assert "nmea" not in done.stdout and "baud" not in done.stdout

    # Something else on the port: it answers, but no gpsd greeting.
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        ctx = gpsd_ctx(tmp_path, f"gpsd://127.0.0.1:{other.getsockname()[1]}", 0.5)
        (check,) = check_gpsd(ctx)
    assert check.result == doctor.FAIL and "is not gpsd" in check.detail, check


# --- [[inputs]] and [share] (real sockets) ---------------------------------------------------


def nmea(body: str) -> bytes:
    cs = 0
    for ch in body.encode():
        cs ^= ch
    return f"${body}*{cs:02X}\r\n".encode()


def inputs_config(tmp_path: Path, entries: dict[str, str], extra: str = "") -> Path:
    body = "".join(f'[[inputs]]\nname = "{k}"\nurl = "{v}"\n\n' for k, v in entries.items())
    return write_config(tmp_path, "/dev/null", 9600, body + extra)


def test_each_input_is_opened_as_the_daemon_would(tmp_path):
    import socket

    # A multiplexer: accepts, sends depth and wind a few times, as a gateway does.
    mux = socket.socket()
    mux.bind(("127.0.0.1", 0))
    mux.listen()

    def serve() -> None:
        conn, _ = mux.accept()
        with conn:
            for _ in range(3):
                conn.sendall(nmea("SDDBT,22.6,f,6.9,M,3.7,F") + nmea("WIMWV,45.0,R,12.6,N,A"))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # another program's, no SO_REUSEADDR
    held.bind(("127.0.0.1", 0))
    udp_free = free_port()
    pty = PtyWriter.open(tmp_path / "sounder0")
    try:
        entries = {
            "mux": f"tcp://127.0.0.1:{mux.getsockname()[1]}",
            "gone": f"tcp://127.0.0.1:{free_port()}",
            "wifi": f"udp://127.0.0.1:{udp_free}",
            "taken": f"udp://127.0.0.1:{held.getsockname()[1]}",
            "sounder": pty.path,
            "missing": str(tmp_path / "ttyUSB9"),
            "bridge": "socket://127.0.0.1:9",
        }  # fmt: skip
        ctx = doctor.Context(doctor.load(inputs_config(tmp_path, entries)), me(), input_s=0.5)
        checks = {c.name: c for c in check_inputs(ctx)}
        server.join(timeout=10)
    finally:
        pty.close()
        held.close()
        mux.close()
    assert list(checks) == [f"input {k}" for k in entries]
    ok = checks["input mux"]
    assert ok.result == doctor.OK  # DBT gives a depth, MWV an angle and a speed
    assert "connects: 6 sentences in 0.5 s, 9 instrument readings" in ok.detail
    gone = checks["input gone"]
    assert gone.result == doctor.FAIL and "Connection refused" in gone.detail
    assert "multiplexer" in (gone.fix or "")
    assert checks["input wifi"].result == doctor.OK
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:  # the test bind released it
        again.bind(("127.0.0.1", udp_free))
    taken = checks["input taken"]
    assert taken.result == doctor.FAIL and "Address already in use" in taken.detail
    assert "another program holds the port (ss -ulpn" in (taken.fix or "")
    assert checks["input sounder"].result == doctor.OK
    missing = checks["input missing"]
    assert missing.result == doctor.FAIL and "No such file" in missing.detail
    assert checks["input bridge"].result == doctor.SKIP


def test_the_share_port_free_taken_or_held_by_the_running_daemon(tmp_path):
    import socket

    from tracker.runtime import DAEMON_KEY, DaemonStatus, ShareStatus
    from tracker.store import open_store

    port = free_port()
    listen = f"127.0.0.1:{port}"
    config = inputs_config(tmp_path, {}, f'[share]\nnmea_tcp = "{listen}"\n')
    ctx = doctor.Context(doctor.load(config), me())
    (free,) = check_share(ctx)
    assert free.result == doctor.OK and "can be bound" in free.detail
    with socket.socket() as plotter_server:  # nothing kept: the port binds again
        plotter_server.bind(("127.0.0.1", port))
        plotter_server.listen()
        (taken,) = check_share(ctx)
        assert taken.result == doctor.FAIL and "Address already in use" in taken.detail
        assert "ss -tlpn" in (taken.fix or "") and "[share] nmea_tcp" in (taken.fix or "")

        # The daemon running (this process stands for it) says it serves there: fine.
        ctx.cfg.storage.path.parent.mkdir(parents=True, exist_ok=True)
        store = open_store(ctx.cfg.storage.path)
        row = DaemonStatus(pid=os.getpid(), running=True,
                           share=ShareStatus(listen=listen, clients=2))  # fmt: skip
        store.put_runtime(DAEMON_KEY, row.to_json())
        (served,) = check_share(ctx)
        assert served.result == doctor.OK, served
        assert served.detail == f"{listen} in use by the running tracker (pid {os.getpid()}), " \
            "which serves it: 2 clients"  # fmt: skip
        # ... but a daemon whose own bind failed does not hold it: someone else does.
        row.share.error = "Address already in use"
        store.put_runtime(DAEMON_KEY, row.to_json())
        store.close()
        (other,) = check_share(ctx)
        assert other.result == doctor.FAIL


def test_inputs_and_share_are_in_the_checklist(tmp_path):
    import json

    extra = f'[share]\nnmea_tcp = "127.0.0.1:{free_port()}"\n'
    config = inputs_config(tmp_path, {"sounder": str(tmp_path / "ttyUSB9")}, extra)
    config.write_text(config.read_text().replace("/dev/null", "/dev/serial0-not-here"))
    checks = json.loads(doctor_cli(config, "--json").stdout)
    assert [c["name"] for c in checks] == [
        "config", "gps device", "input sounder", "share", "service", "storage permissions",
        "database", "disk", "clock",
    ]  # fmt: skip
    assert [c["result"] for c in checks[2:4]] == ["FAIL", "ok"]


# --- the storage: real SQLite files made by the real store ------------------------------------


def storage_ctx(tmp_path: Path, user: str | None = None) -> doctor.Context:
    """A config whose `[storage] path` is tmp_path/db/tracker.db (write_config's)."""
    return doctor.Context(doctor.load(write_config(tmp_path, "/dev/null", 9600)), user or me())


def storage_checks(ctx: doctor.Context, **kw: float) -> dict[str, doctor.Check]:
    from tracker.store import check as storage

    checks = list(storage.check(ctx, **kw))
    named = {c.name: c for c in checks}
    assert len(named) == len(checks), checks
    return named


def a_ride(db: Path, n: int, backends: tuple[str, ...] = ("mapmytracks", "traccar")) -> None:
    """`n` fixes of an activity stored by the real store, the first 10 acknowledged by the
    first backend."""
    from support import T0

    from tracker.fix import Fix
    from tracker.store import open_store

    db.parent.mkdir(parents=True, exist_ok=True)
    with open_store(db) as store:
        for b in backends:
            store.register_backend(b)
        activity = store.start_activity("ride", "cycling", "public", (), T0.timestamp())
        store.add_fixes(activity.id, [
            Fix(time=e.unix, lat=e.lat, lon=e.lon, alt=e.alt, speed=e.speed, course=e.course,
                quality=1, sats=e.sats, hdop=e.hdop)
            for e in epochs(n, rate_hz=1.0)
        ])  # fmt: skip
        store.acknowledge(backends[0], [f.id for f in store.next_batch(backends[0], 10)])


def files_in(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_no_database_yet_is_fine_and_says_so(tmp_path):
    checks = storage_checks(storage_ctx(tmp_path))
    assert [(c.name, c.result) for c in checks.values()] == NO_DATABASE_YET
    db = tmp_path / "db" / "tracker.db"
    assert checks["database"].detail == f"none at {db} yet: the daemon creates it at its start"
    assert checks["storage permissions"].detail.startswith(
        f"{db.parent} does not exist yet: the daemon makes it")
    assert not db.parent.exists(), "the doctor made nothing"


def test_a_database_made_by_the_store_is_read_and_left_as_it_was(tmp_path):
    db = tmp_path / "db" / "tracker.db"
    a_ride(db, 30)
    before = files_in(db.parent)
    assert list(before) == ["tracker.db"], "the store closed and checkpointed it"
    checks = storage_checks(storage_ctx(tmp_path))
    assert [(c.name, c.result) for c in checks.values()] == [
        ("storage permissions", doctor.OK), ("database", doctor.OK),
        ("database integrity", doctor.OK), ("queue", doctor.OK), ("disk", doctor.OK),
    ]  # fmt: skip
    assert checks["storage permissions"].detail == f"{me()} may write {db.parent} and tracker.db"
    assert checks["database"].detail.endswith(f"schema version {SCHEMA_VERSION}")
    assert checks["database integrity"].detail == "quick_check ok"
    assert checks["queue"].detail == "30 fixes stored; still to send: mapmytracks 20, traccar 30"
    assert files_in(db.parent) == before, "no byte written, no -wal or -shm left behind"


def test_a_database_the_running_daemon_writes_is_read_beside_it(daemon, gps):
    """A real `tracker run` stores a ride from a pty while the check reads the database (its
    -wal there: read through it, not as immutable); the daemon keeps storing, and nothing of
    the daemon's is waited for or changed."""
    from support import stored_so_far

    ride = epochs(400, rate_hz=10.0)
    d = daemon().start()
    d.wait_gps_open()
    for e in ride[:100]:
        gps.write(e.data)
    wait_for(lambda: len(stored_so_far(d.db)) >= 50, what="fixes stored")
    assert Path(f"{d.db}-wal").exists()
    writer = threading.Thread(target=lambda: [gps.write(e.data) for e in ride[100:]])
    writer.start()
    checks = storage_checks(doctor.Context(doctor.load(d.config), me()))
    writer.join(timeout=30)
    wait_for(lambda: len(stored_so_far(d.db)) == 400, what="the daemon stored on")
    assert d.proc.poll() is None
    assert [c.result for c in checks.values()] == [doctor.OK] * 5, checks
    stored = re.match(r"(\d+) fixes stored", checks["queue"].detail)
    assert stored and 50 <= int(stored.group(1)) <= 400, checks["queue"]
    assert "locked" not in d.log_text() and "busy" not in d.log_text().lower()


def test_a_database_of_a_newer_release_fails_clearly(tmp_path):
    import sqlite3

    db = tmp_path / "db" / "tracker.db"
    a_ride(db, 5)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = files_in(db.parent)
    checks = storage_checks(storage_ctx(tmp_path))
    assert list(checks) == ["storage permissions", "database", "disk"]
    newer = checks["database"]
    assert newer.result == doctor.FAIL
    assert newer.detail == (
        f"{db} was written by a newer tracker (schema version {SCHEMA_VERSION + 1}; this "
        f"release knows up to {SCHEMA_VERSION}) and this release will not store into it"
    )
    assert newer.fix and newer.fix.startswith("keep the file")
    assert files_in(db.parent) == before


def test_a_database_of_an_older_release_is_migrated_by_the_daemon(tmp_path):
    """A real version-1 database (the first migration only): fine, the daemon migrates it."""
    import sqlite3

    from tracker.store import MIGRATIONS, _statements

    db = tmp_path / "db" / "tracker.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in _statements(MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    checks = storage_checks(storage_ctx(tmp_path))
    assert list(checks) == ["storage permissions", "database", "database integrity", "disk"]
    assert checks["database"].result == doctor.OK
    assert checks["database"].detail.endswith(
        f"schema version 1: the daemon migrates it to {SCHEMA_VERSION} at its next start")
    assert checks["database integrity"].result == doctor.OK


def test_a_corrupted_database_fails_with_the_advice_to_keep_it(tmp_path):
    from tracker.store.db import PAGE_SIZE

    db = tmp_path / "db" / "tracker.db"
    a_ride(db, 600)
    pages = db.stat().st_size // PAGE_SIZE
    assert pages > 40
    with db.open("r+b") as f:  # a page in the middle of the fixes: its b-tree header and cells
        f.seek((pages // 2) * PAGE_SIZE)
        f.write(b"\xa5" * 200)
    damaged = files_in(db.parent)
    checks = storage_checks(storage_ctx(tmp_path))
    bad = checks["database integrity"]
    assert bad.result == doctor.FAIL, checks
    assert bad.detail.startswith(f"{db} is damaged (quick_check: "), bad
    assert bad.fix and bad.fix.startswith("keep the file: stop the daemon, copy tracker.db")
    assert ".recover" in bad.fix and ".corrupt-<time>" in bad.fix
    assert files_in(db.parent) == damaged, "the doctor moved nothing aside"

    db.write_bytes(b"not a database at all, " * 40)  # not even a header
    bad = storage_checks(storage_ctx(tmp_path))["database integrity"]
    assert bad.result == doctor.FAIL and "file is not a database" in bad.detail, bad


def test_quick_check_is_bounded_and_says_when_it_stopped(tmp_path):
    """No wall clock: a limit of 0 s is past at SQLite's first look (QUICK_CHECK_STEP steps in,
    well inside the check of thousands of rows)."""
    db = tmp_path / "db" / "tracker.db"
    a_ride(db, 3000)
    checks = storage_checks(storage_ctx(tmp_path), quick_check_s=0.0)
    stopped = checks["database integrity"]
    assert stopped.result == doctor.SKIP
    assert stopped.detail == ("quick_check stopped after 0 s with nothing found so far; the "
                              "daemon checks the whole file at each start")  # fmt: skip
    assert checks["queue"].result == doctor.OK, "the rest is still read"


def test_a_directory_the_service_user_may_not_write(tmp_path):
    """As root here, every file is writable: the rights are checked for `nobody`, from the
    mode bits and owners of real directories and files (as the gps permission test does)."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    if os.getuid() == nobody.pw_uid:
        pytest.skip("running as nobody")
    db = tmp_path / "db" / "tracker.db"
    tmp_path.chmod(0o755)
    perm = storage_checks(storage_ctx(tmp_path, "nobody"))["storage permissions"]
    assert perm.result == doctor.FAIL
    assert perm.detail.startswith(f"{db.parent} does not exist and nobody may not make it in ")
    assert perm.fix == f"sudo install -d -o nobody -g {group_of(nobody)} -m 750 {db.parent}"

    a_ride(db, 5)
    db.parent.chmod(0o755)
    perm = storage_checks(storage_ctx(tmp_path, "nobody"))["storage permissions"]
    assert perm.result == doctor.FAIL and "tracker.db-wal and tracker.db-shm" in perm.detail
    assert perm.fix == f"sudo chown nobody:{group_of(nobody)} {db.parent} {db}", "both at once"

    os.chown(db.parent, nobody.pw_uid, nobody.pw_gid)  # the directory theirs, the file root's
    db.chmod(0o644)
    perm = storage_checks(storage_ctx(tmp_path, "nobody"))["storage permissions"]
    assert perm.result == doctor.FAIL and perm.detail.startswith(f"nobody may not write {db} ")
    assert perm.fix == f"sudo chown nobody:{group_of(nobody)} {db}"

    os.chown(db, nobody.pw_uid, nobody.pw_gid)
    perm = storage_checks(storage_ctx(tmp_path, "nobody"))["storage permissions"]
    assert perm.result == doctor.OK, perm

    perm = storage_checks(storage_ctx(tmp_path, "no-such-user-here"))["storage permissions"]
    assert perm.result == doctor.FAIL and "no such user" in perm.detail


def group_of(user) -> str:
    import grp

    return grp.getgrgid(user.pw_gid).gr_name


def test_fixes_in_a_spill_file_are_counted_and_a_broken_one_named(tmp_path, monkeypatch):
    from support import T0

    from tracker import spill
    from tracker.fix import Fix

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(run_dir))
    db = tmp_path / "db" / "tracker.db"
    a_ride(db, 5)
    held = [Fix(time=T0.timestamp() + i, lat=45.0, lon=6.0) for i in range(7)]
    spill.write(db, held, [time.time()] * 7, [], [])
    queue = storage_checks(storage_ctx(tmp_path))["queue"]
    assert queue.detail.endswith("; 7 fixes in 1 spill file(s), stored at the next start")

    (run_dir / "tracker.db.spill").write_text("{not json\n")
    checks = storage_checks(storage_ctx(tmp_path))
    assert checks["spill"].result == doctor.FAIL
    assert "not a readable spill file" in checks["spill"].detail
    assert checks["spill"].fix and "keep a copy" in checks["spill"].fix


def test_the_installed_service_must_be_allowed_to_write_there(tmp_path):
    """The shipped unit's sandbox (installed in a made-up root): its file systems read-only
    but its StateDirectory= and ReadWritePaths= (ProtectSystem=strict), its /tmp its own; and
    its StateDirectory=, which systemd makes at the service's start, may be missing."""
    root = tmp_path / "root"
    unit = root / "etc/systemd/system/tracker.service"
    unit.parent.mkdir(parents=True)
    shipped = (ROOT / "systemd/tracker.service").read_text()
    unit.write_text(shipped)
    ctx = doctor.Context(doctor.load(write_config(tmp_path, "/dev/null", 9600)), me(), root=root)
    directory = tmp_path / "db"
    perm = storage_checks(ctx)["storage permissions"]
    assert perm.result == doctor.FAIL and "PrivateTmp=" in perm.detail, perm
    assert perm.detail.endswith(f"the queue in {directory} would be lost")

    unit.write_text(shipped.replace("PrivateTmp=yes\n", ""))  # were the test's disk not /tmp
    perm = storage_checks(ctx)["storage permissions"]
    assert perm.result == doctor.FAIL
    assert perm.detail == ("the installed service may write only /var/lib/tracker, "
                           f"/run/tracker, not {directory} (ProtectSystem=strict in its unit)")
    assert perm.fix and perm.fix.endswith(f"systemctl edit tracker, then "
                                          f"ReadWritePaths={directory}")  # fmt: skip

    drop_in = unit.with_name("tracker.service.d") / "override.conf"
    drop_in.parent.mkdir()
    drop_in.write_text(f"[Service]\nReadWritePaths=-{tmp_path}\n")
    assert storage_checks(ctx)["storage permissions"].result == doctor.OK

    if Path("/var/lib/tracker").exists():
        return  # a tracker installed on this machine: nothing to show
    config = tmp_path / "tracker.toml"
    config.write_text('[storage]\npath = "/var/lib/tracker/tracker.db"\n')
    ctx = doctor.Context(doctor.load(config), "nobody", root=root)
    perm = storage_checks(ctx)["storage permissions"]
    assert perm.result == doctor.OK
    assert perm.detail == ("/var/lib/tracker does not exist yet: systemd makes it for nobody "
                           "at the service's start (StateDirectory=)")  # fmt: skip
