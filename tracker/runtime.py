"""The runtime rows: what the running daemon publishes in the store, as typed records shared by
the writers (the recorder, each sender) and the readers (`tracker status`, the demo, the
recorder's clock check).

A row is a dataclass written with `to_json()` and read with `from_json()`, which takes what it
knows and defaults the rest (a row written by an older or newer release still reads). A writer
sets fields by name, and `update(**fields)` refuses a name the record does not have: a renamed
counter fails where it is written, in the tests, instead of silently blanking a line of status.

Keys in the store: "daemon" (DaemonStatus), "backend:<section>" (BackendStatus).

The status file: while the store cannot be written, the daemon cannot update its row either,
so it also writes its DaemonStatus as a small JSON file (`<database name>.status.json`) in the
service's runtime directory (systemd's $RUNTIME_DIRECTORY, /run/tracker: a tmpfs, so no SD-card
wear) and beside the database where that can be written. `tracker status` reads it when the
row is stale. Written only while the storage fails, and removed once it works again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

R = TypeVar("R", bound="Row")

DAEMON_KEY = "daemon"


def backend_key(section: str) -> str:
    return f"backend:{section}"


class Row:
    """Shared by the records below (each is also a dataclass)."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls: type[R], d: Any) -> R:
        if not isinstance(d, dict):
            return cls()
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in d:
                continue
            nested = _ROWS.get(f.name)
            values[f.name] = nested.from_json(d[f.name]) if nested else d[f.name]
        return cls(**values)

    def update(self, **changes: Any) -> None:
        known = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = set(changes) - known
        if unknown:
            raise AttributeError(f"{type(self).__name__} has no field {sorted(unknown)}")
        for k, v in changes.items():
            setattr(self, k, v)


@dataclass
class BackendStatus(Row):
    """A sender's state, for `tracker status` (never a secret)."""

    state: str = "unknown"  # starting, ok, retrying, disabled
    url: str | None = None
    user: str | None = None
    last_success_at: float | None = None  # wall clock
    last_error: str | None = None
    last_error_at: float | None = None
    failures: int = 0
    next_retry_at: float | None = None
    auth_failed: bool = False
    last_rejected: str | None = None  # the last reason the server refused data for good
    phase: str | None = None  # idle, sending; Map My Tracks: new, started, uploaded
    activity_id: int | None = None  # Map My Tracks: the activity on its way
    remote_activity_id: int | None = None
    points_sent: int = 0  # Map My Tracks
    fixes_sent: int = 0  # json-gpsr
    repeats: int = 0  # Traccar live_first: history positions sent again after a lost reply
    clock_offset_system_s: float | None = None  # server minus system clock (get_time)
    clock_offset_gps_s: float | None = None  # server minus GPS time (the newest fix)


@dataclass
class RecorderCounters(Row):
    fixes_stored: int = 0
    samples_stored: int = 0
    commits: int = 0
    storage_errors: int = 0
    storage_error: str | None = None  # the current storage problem, None when writing works
    dropped_fixes: int = 0  # dropped from memory while the store was unwritable
    held: int = 0  # fixes waiting in memory right now
    repeated_fixes: int = 0  # not stored: an epoch repeated, or GPS time a little behind
    dropped_samples: int = 0
    dropped_inbox: int = 0  # dropped at a full inbox (the recorder stuck)
    # tracker/store/db.py STORAGE_STATES: ok, read-only, full, corrupt, error; "" before the
    # first attempt (and in rows of releases that did not say)
    storage_state: str = ""
    spilled: int = 0  # fixes written to a spill file at a stop, the store being unwritable
    unspilled: int = 0  # fixes taken in from spill files at this start


@dataclass
class LifecycleStatus(Row):
    mode: str = ""  # auto, always, manual
    state: str = ""  # tracker/activity.py Lifecycle.state


@dataclass
class GpsStatus(Row):
    device: str = ""
    baudrate: int = 0
    state: str = ""  # connecting, open, lost, stopped
    bytes_read: int = 0
    connects: int = 0
    # the decoder's counters (tracker/nmea.py DecoderStats)
    sentences: int = 0
    ignored: int = 0
    fixes: int = 0
    rejected: int = 0
    rejected_by: dict[str, int] = field(default_factory=dict)
    invalid_epochs: int = 0
    no_checksum: int = 0
    late: int = 0
    instruments: int = 0  # instrument sentences in the GPS's own stream
    readings_dropped: int = 0  # instrument readings nobody took in time (nmea.MAX_READINGS)


@dataclass
class InputStatus(Row):
    """One `[[inputs]]` entry (tracker/inputs.py): an NMEA instrument stream."""

    name: str = ""
    url: str = ""
    state: str = ""  # connecting, open, lost, stopped
    error: str | None = None  # why the last attempt failed, None while open
    connects: int = 0
    bytes_read: int = 0
    sentences: int = 0  # accepted by the decoder
    rejected: int = 0
    readings: int = 0  # instrument readings decoded (depth, wind, heading...)
    positions_ignored: int = 0  # fixes in this stream: only the [gps] source gives positions
    last_seen: float | None = None  # wall clock of the last accepted sentence


@dataclass
class ShareStatus(Row):
    """The NMEA share server (tracker/share.py); `listen` "" when `[share]` is off."""

    listen: str = ""
    error: str | None = None  # the port could not be bound: not serving
    clients: int = 0
    accepted: int = 0
    refused: int = 0
    published_bytes: int = 0
    sent_bytes: int = 0
    dropped_bytes: int = 0  # for slow clients, all together
    per_client: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DaemonStatus(Row):
    pid: int | None = None
    started: float | None = None  # wall clock
    running: bool = False
    recorder: RecorderCounters = field(default_factory=RecorderCounters)
    lifecycle: LifecycleStatus = field(default_factory=LifecycleStatus)
    gps: GpsStatus = field(default_factory=GpsStatus)
    sensors: list[dict[str, Any]] = field(default_factory=list)  # SensorStatus.as_dict()
    inputs: list[dict[str, Any]] = field(default_factory=list)  # InputStatus.to_json()
    share: ShareStatus = field(default_factory=ShareStatus)


_ROWS: dict[str, type[Row]] = {
    "recorder": RecorderCounters,
    "lifecycle": LifecycleStatus,
    "gps": GpsStatus,
    "share": ShareStatus,
}


RUNTIME_DIR = Path("/run/tracker")  # the unit's RuntimeDirectory=tracker


def runtime_dirs() -> list[Path]:
    """Where the daemon's small files go besides the database: the service's runtime
    directory (systemd gives it as $RUNTIME_DIRECTORY; a `tracker status` in a shell has no
    such variable and looks at /run/tracker)."""
    given = os.environ.get("RUNTIME_DIRECTORY", "")
    dirs = [Path(d) for d in given.split(":") if d]
    return dirs or [RUNTIME_DIR]


def status_file_paths(db: Path) -> list[Path]:
    """The status file's places, in the order they are tried: the runtime directories (a
    tmpfs, writable whatever happened to the SD card), then beside the database."""
    name = f"{db.name}.status.json"
    return [d / name for d in runtime_dirs()] + [db.with_name(name)]


def write_status_file(db: Path, status: DaemonStatus) -> list[Path]:
    """Write `status` for the database `db` to every place that takes it (atomically: a
    reader sees the old file or the new one); returns those places."""
    try:
        raw = json.dumps(
            {"db": str(db.resolve()), "written": time.time(), "status": status.to_json()},
            separators=(",", ":"), allow_nan=False,
        )  # fmt: skip
    except ValueError:  # a non-finite reading: status --json must stay strict JSON
        return []
    done = []
    for path in status_file_paths(db):
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(raw)
            os.replace(tmp, path)
            done.append(path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return done


def remove_status_file(db: Path) -> None:
    for path in status_file_paths(db):
        with contextlib.suppress(OSError):
            path.unlink()


def read_status_file(db: Path) -> tuple[DaemonStatus, float] | None:
    """The newest status file written for `db` (status, wall-clock time written), or None.
    A file for another database (two daemons sharing a runtime directory) or one that cannot
    be read is skipped."""
    want = str(db.resolve())
    best: tuple[DaemonStatus, float] | None = None
    for path in status_file_paths(db):
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(d, dict) or d.get("db") != want:
            continue
        written = d.get("written")
        if isinstance(written, int | float) and (best is None or written > best[1]):
            best = (DaemonStatus.from_json(d.get("status")), float(written))
    return best
