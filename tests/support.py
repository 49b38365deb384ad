"""Real parts for the end-to-end tests: the simulator, a real `tracker run` process, the store."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tracker import simulate
from tracker.store import StoredFix, StoreError, open_store

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 6, 1, 8, 0, 0, tzinfo=UTC)
USER = "rider"  # the account on the test servers


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> object:
    """Poll `predicate` until it returns something true; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(0.05)


def stored_times(db: Path) -> list[float]:
    """Every stored fix's GPS time (ms precision), read through a read-only connection."""
    if not db.exists():
        return []
    try:
        store = open_store(db, readonly=True)
    except StoreError:
        return []
    try:
        return [round(f.time, 3) for f in store.iter_fixes()]
    finally:
        store.close()


def stored_fixes(db: Path) -> list[StoredFix]:
    """Every stored fix, in order, through a read-only connection."""
    store = open_store(db, readonly=True)
    try:
        return list(store.iter_fixes())
    finally:
        store.close()


def stored_so_far(db: Path) -> list[StoredFix]:
    """The stored fixes while a daemon runs: none while it is still creating the database."""
    try:
        return stored_fixes(db) if db.exists() else []
    except StoreError:
        return []


def stored_activities(db: Path) -> list:
    """Every stored activity, oldest first, through a read-only connection."""
    store = open_store(db, readonly=True)
    try:
        return store.activities()
    finally:
        store.close()


def first_of_each_second(fixes: list[StoredFix]) -> list[StoredFix]:
    """The first stored fix of each whole second: what a backend that sends whole seconds
    holds (Map My Tracks at min_point_interval_s = 1, json-gpsr's seconds mode)."""
    kept: list[StoredFix] = []
    for f in fixes:
        if not kept or math.floor(f.time) > math.floor(kept[-1].time):
            kept.append(f)
    return kept


def assert_points_match(points: list, fixes: list[StoredFix]) -> None:
    """Map My Tracks points (time, lat, lon, alt) are exactly these fixes, in order, each once."""
    assert [p[0] for p in points] == [math.floor(f.time) for f in fixes]
    for p, f in zip(points, fixes, strict=True):
        # Sent with 7 decimals (1 cm) and altitude with 1: neighbours at 5 Hz are ~1.4 m apart.
        assert p[1] == pytest.approx(f.lat, abs=1e-7), (p, f)
        assert p[2] == pytest.approx(f.lon, abs=1e-7), (p, f)
        assert p[3] == pytest.approx(f.alt or 0.0, abs=0.051), (p, f)


def free_port() -> int:
    """A port nothing listens on (until a test starts a server there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TUNED = {"interval_s": 0.2, "batch_max_points": 8, "connect_timeout_s": 1.0,
         "read_timeout_s": 1.0, "backoff_max_s": 0.5}  # fmt: skip


def section(name: str, opts: dict[str, object]) -> str:
    """A config section with these keys (values as TOML via JSON, which they share here)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in opts.items()]
    return f"[{name}]\n" + "\n".join(lines) + "\n"


def mmt_section(url: str, password: str, **extra: object) -> str:
    """A [mapmytracks] section tuned so faults and backoff resolve in well under a second."""
    return section("mapmytracks", {"url": url, "username": USER, "password": password,
                                   **TUNED, **extra})  # fmt: skip


def gpsr_section(url: str, token: str, **extra: object) -> str:
    """A [gpsr] section tuned like `mmt_section`."""
    return section("gpsr", {"url": url, "token": token, **TUNED, **extra})


def epochs(n: int, *, rate_hz: float = 10.0, start: datetime = T0, **kw) -> list[simulate.Epoch]:
    """`n` epochs of the bundled ride from the real simulator."""
    gen = simulate.simulate(
        simulate.demo_route(), rate_hz=rate_hz, start_time=start, speed_mps=7.0, **kw
    )
    return [e for _, e in zip(range(n), gen, strict=False)]


def stream(gps, ride, position: int, seconds: float, pace_s: float = 0.01) -> int:
    """Write epochs for about `seconds` of wall time, one every `pace_s` (~100 a second by
    default); returns the new position."""
    until = time.monotonic() + seconds
    while time.monotonic() < until and position < len(ride):
        gps.write(ride[position].data)
        position += 1
        time.sleep(pace_s)  # pacing, not synchronisation
    return position


class Daemon:
    """A real `tracker run` process reading a real pty, with its config and database in a dir."""

    def __init__(self, workdir: Path, gps_path: str, extra_config: str = "") -> None:
        self.workdir = workdir
        self.db = workdir / "tracker.db"
        self.config = workdir / "tracker.toml"
        self.config.write_text(
            f'[gps]\ndevice = "{gps_path}"\nreconnect_max_s = 1\n\n'
            f'[storage]\npath = "{self.db}"\ncommit_interval_s = 0.2\n\n' + extra_config
        )
        self.log = workdir / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self._opens_before = 0
        self.prefix: list[str] = []  # a command the daemon runs under (prlimit, a cgroup, fiu-run)

    def gps_opens(self) -> int:
        """How many times the daemons of this dir logged that the GPS port is open."""
        return sum(
            1
            for line in self.log_text().splitlines()
            if "GPS " in line and (" open at " in line or " back after " in line)
        )

    def wait_gps_open(self, timeout: float = 20.0) -> None:
        """Wait until this start's daemon has the GPS open.

        pyserial flushes the input buffer when it opens a port: NMEA written before that is
        lost, so tests write only after this.
        """
        wait_for(lambda: self.gps_opens() > self._opens_before, timeout,
                 what=f"the daemon to open the GPS (log: {self.log})")  # fmt: skip

    def start(self) -> Daemon:
        self._opens_before = self.gps_opens()
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "tracker", "run", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        return self

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tracker", *args, "-c", str(self.config)],
            capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        )  # fmt: skip

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def status(self) -> dict:
        """`tracker status --json`, as a user reads it."""
        done = self.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def backend_status(self, name: str) -> dict:
        """What the sender `name` last published for `tracker status` (its runtime row), read
        from the store directly: cheap enough to poll."""
        if not self.db.exists():
            return {}
        try:
            store = open_store(self.db, readonly=True)
        except StoreError:  # the daemon is still creating it
            return {}
        try:
            row = store.get_runtime(f"backend:{name}")
        finally:
            store.close()
        return row[0] if row else {}

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def drive(sender, until: Callable[[], object], steps: int = 500) -> int:
    """Step a sender in the test's thread until `until()` holds; the steps it took."""
    for i in range(steps):
        if until():
            return i
        sender.step()
    raise AssertionError(f"not done after {steps} steps: {sender.status}")


def mount(*args: str) -> bool:
    """`mount ARGS`; whether it worked (it needs root and mount permission)."""
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def fill_disk(directory: Path) -> Path:
    """Someone else fills the file system under `directory` to the last byte; the filler file,
    to delete when space is to come back."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler
