"""What the benchmarks share: a ride as bytes, a reader process fed through a pseudo-terminal,
and that process's CPU, peak RSS and bytes written, read from /proc.

Every figure is of a whole process as a rider runs it (`tracker run` reading a pty), never of
one function in-process; ratios are taken against a baseline measured in the same run.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tracker import simulate  # noqa: E402
from tracker.pty import PtyWriter  # noqa: E402

# What a typical receiver sends each epoch (GSV: three messages, a third of the stream).
STREAM = ("RMC", "GGA", "GSA", "GSV", "VTG")


@dataclass
class Ride:
    data: bytes
    epochs: int
    valid: int

    @property
    def sentences(self) -> int:
        return self.data.count(b"\n")


def ride(epochs: int, rate_hz: float, sentences: Sequence[str] = STREAM, *,
         glonass: bool = False) -> Ride:  # fmt: skip
    """`glonass`: a GPS + GLONASS receiver, two GSA and two GSV groups an epoch (with STREAM:
    RMC, GGA, two GSA, four GSV, VTG, the multi-GNSS epoch of issue 23)."""
    gen = simulate.simulate(
        simulate.demo_route(), rate_hz=rate_hz, speed_mps=7.0, loops=0,
        start_time=datetime(2026, 6, 1, 8, tzinfo=UTC), sentences=tuple(sentences),
        glonass=glonass,
    )  # fmt: skip
    eps = [e for _, e in zip(range(epochs), gen, strict=False)]
    return Ride(b"".join(e.data for e in eps), len(eps), sum(e.valid for e in eps))


def ride_epochs(epochs: int, rate_hz: float, sentences: Sequence[str] = STREAM, *,
                start: datetime = datetime(2026, 6, 1, 8, tzinfo=UTC)) -> list[bytes]:  # fmt: skip
    """The ride one epoch at a time (for writing at the receiver's own pace); epoch i is at
    `start` + i / rate_hz."""
    gen = simulate.simulate(
        simulate.demo_route(), rate_hz=rate_hz, speed_mps=7.0, loops=0,
        start_time=start, sentences=tuple(sentences),
    )  # fmt: skip
    return [e.data for _, e in zip(range(epochs), gen, strict=False)]


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_of(pid: int, field: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of a live process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def written_of(pid: int) -> int:
    """Bytes the process caused to be sent to the block layer (/proc/PID/io write_bytes;
    counted per 4 KiB page dirtied, so it is what an SD card's wear follows)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def stored(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT count(*) FROM fixes").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.05)


def settle(pid: int, quiet_s: float = 1.0, timeout: float = 300.0) -> float:
    """Wait until the process has used no CPU for `quiet_s` (it has read all it was given);
    its CPU seconds then."""
    deadline = time.monotonic() + timeout
    last, since = cpu_of(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = cpu_of(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    return last


@dataclass
class Daemon:
    """A real `tracker run` (from `tree`) reading a pty, with its own config and database."""

    proc: subprocess.Popen
    gps: PtyWriter
    db: Path
    log: Path

    @classmethod
    def start(cls, work: Path, extra_config: str = "", tree: Path = ROOT,
              python: str = sys.executable, storage: str = "") -> Daemon:  # fmt: skip
        """`storage`: more lines of its [storage] section; `extra_config`: other sections."""
        work.mkdir(parents=True, exist_ok=True)
        gps = PtyWriter.open(work / "gps0", timeout=5.0)
        db, cfg, log = work / "tracker.db", work / "tracker.toml", work / "daemon.log"
        cfg.write_text(f'[gps]\ndevice = "{gps.path}"\nbaudrate = 115200\n\n'
                       f'[storage]\npath = "{db}"\n{storage}\n{extra_config}')  # fmt: skip
        with log.open("w") as out:
            proc = subprocess.Popen([python, "-m", "tracker", "run", "-c", str(cfg)], cwd=tree,
                                    stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        d = cls(proc, gps, db, log)
        try:
            wait_until(lambda: " open at " in log.read_text() or proc.poll() is not None, 30,
                       f"the daemon to open the GPS ({log})")  # fmt: skip
            if proc.poll() is not None:
                raise SystemExit(f"bench: the daemon exited: {log.read_text()[-2000:]}")
        except BaseException:
            d.stop()
            raise
        return d

    def feed(self, data: bytes) -> None:
        for i in range(0, len(data), 4096):
            self.gps.write(data[i : i + 4096])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.gps.close()


def gpsd_binary() -> str | None:
    return shutil.which("gpsd") or next(
        (p for p in ("/usr/sbin/gpsd", "/sbin/gpsd") if os.access(p, os.X_OK)), None
    )


def start_reader(cmd: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# A reader that parses every sentence with pynmea2 and keeps nothing: the floor of a
# library-based decoder, in its own process like the others.
PYNMEA2_LOOP = """
import sys, serial, pynmea2
port = serial.serial_for_url(sys.argv[1], baudrate=115200, timeout=0.25)
buf = b""
print("open", flush=True)
while True:
    data = port.read(port.in_waiting or 1)
    if not data:
        continue
    buf += data
    *lines, buf = buf.split(b"\\n")
    for line in lines:
        try:
            pynmea2.parse(line.decode("ascii", "replace").strip(), check=True)
        except (pynmea2.ParseError, ValueError, AttributeError):
            pass
"""
