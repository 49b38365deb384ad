"""Real parts for the end-to-end tests: the simulator, a real `tracker run` process, the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tracker import simulate
from tracker.store import StoreError, open_store

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 6, 1, 8, 0, 0, tzinfo=UTC)


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


def epochs(n: int, *, rate_hz: float = 10.0, start: datetime = T0, **kw) -> list[simulate.Epoch]:
    """`n` epochs of the bundled ride from the real simulator."""
    gen = simulate.simulate(
        simulate.demo_route(), rate_hz=rate_hz, start_time=start, speed_mps=7.0, **kw
    )
    return [e for _, e in zip(range(n), gen, strict=False)]


class Daemon:
    """A real `tracker run` process reading a real pty, with its config and database in a dir."""

    def __init__(self, workdir: Path, gps_path: str, extra_config: str = "") -> None:
        self.workdir = workdir
        self.db = workdir / "tracker.db"
        self.config = workdir / "tracker.toml"
        self.config.write_text(
            f'[gps]\ndevice = "{gps_path}"\nreconnect_max_s = 1\n\n'
            f'[storage]\npath = "{self.db}"\ncommit_interval_s = 0.2\n\n'
            + extra_config
        )
        self.log = workdir / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self._opens_before = 0

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
                [sys.executable, "-m", "tracker", "run", "-c", str(self.config)],
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

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


