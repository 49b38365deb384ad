"""Fixtures shared by the end-to-end tests: a pty as the GPS, real `tracker run` processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import Daemon, mount

from tracker.pty import PtyWriter
from tracker.store import Store, open_store


@pytest.fixture
def gps(tmp_path: Path) -> Iterator[PtyWriter]:
    """A real pseudo-terminal standing in for the receiver, at a stable path."""
    writer = PtyWriter.open(tmp_path / "gps0", timeout=2.0)
    yield writer
    writer.close()


@pytest.fixture
def daemon(tmp_path: Path, gps: PtyWriter) -> Iterator[Callable[..., Daemon]]:
    """Factory for real daemons on the `gps` pty; every one is killed at the end of the test."""
    made: list[Daemon] = []

    def make(extra_config: str = "") -> Daemon:
        d = Daemon(tmp_path, gps.path, extra_config)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


# --- shared by the sender tests (each test module names its backend as NAME) ------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tracker.db"


@pytest.fixture
def store(db: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    """The test's database, with the module's backend (its NAME) registered: the sender does
    that too (idempotent), but the checks need it before the first step."""
    s = open_store(db)
    s.register_backend(request.module.NAME)
    yield s
    s.close()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 512 KiB tmpfs, to be filled or remounted read-only; skipped where the machine
    cannot mount one."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if not mount("-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
