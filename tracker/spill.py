"""Spill files: the fixes and samples a stopping daemon could not store, kept for the next start.

When the store cannot be written (read-only or full file system, I/O errors) the recorder holds
what arrives in memory. If the daemon is then stopped, that memory would be lost: the recorder
writes it to a spill file instead, `<database name>.spill`, beside the database (it survives a
reboot) or, when that cannot be written, in the service's runtime directory (a tmpfs: it
survives a restart of the service, not a power cut). The next start takes every spill file of
its database in before anything new, in the order the fixes arrived.

Once, without duplicates: a spill has a random id, and the recorder writes the marker
`spill:<id>` (a runtime row) in the same transaction as its fixes; a spill whose marker is in
the store was taken already (a SIGKILL came before its file was deleted) and is only deleted. A
daemon stopped again before it could store a spill it took in writes a new one that names the
old in `supersedes`, so the old file, should it outlive the new, is skipped.

Format: JSON lines. The first is the header (`spill`: 1, `id`, `db`, `written`, `supersedes`),
then one line per fix `["f", arrived, time, lat, lon, ...every Fix field]` (`arrived`: the wall
clock when the recorder got it, which orders it against CLI requests) and per sample `["s",
time, kind, value, sensor]`. Written to a temporary file, synced and renamed: a reader sees the
whole file or none.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tracker.fix import Fix, Sample
from tracker.runtime import runtime_dirs

VERSION = 1
MARKER_PREFIX = "spill:"  # runtime row key of a spill taken in


@dataclass
class Spill:
    id: str
    paths: list[Path]  # where this spill's file is (normally one place)
    written: float
    supersedes: list[str] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # one per fix
    samples: list[Sample] = field(default_factory=list)


class Markers(Protocol):
    """Where the markers are: the store's runtime rows (tracker/store/control.py)."""

    def get_runtime(self, key: str) -> tuple[dict[str, Any], float] | None: ...


def stored(spill: Spill, store: Markers) -> tuple[int, int]:
    """How many of the spill's fixes and samples the store holds already: the counts of its
    marker, written in the transaction that stored them; (0, 0) when it has none."""
    row = store.get_runtime(MARKER_PREFIX + spill.id)
    mark = row[0] if row is not None else {}
    return int(mark.get("fixes", 0)), int(mark.get("samples", 0))


def spill_paths(db: Path) -> list[Path]:
    """A spill file's places, in the order they are tried: beside the database first (it
    survives a power cut), then the runtime directories."""
    name = f"{db.name}.spill"
    return [db.with_name(name)] + [d / name for d in runtime_dirs()]


def write(
    db: Path, fixes: list[Fix], arrived: list[float], samples: list[Sample],
    supersedes: list[str],
) -> Path:  # fmt: skip
    """Write a spill file in the first place that takes it; its path. Raises OSError naming
    every place tried when none does."""
    head = {"spill": VERSION, "id": uuid.uuid4().hex, "db": str(db.resolve()),
            "written": time.time(), "supersedes": supersedes}  # fmt: skip
    lines = [json.dumps(head)]
    lines += [json.dumps(["f", a, *astuple(f)]) for f, a in zip(fixes, arrived, strict=True)]
    lines += [json.dumps(["s", *astuple(s)]) for s in samples]
    data = ("\n".join(lines) + "\n").encode()
    problems = []
    for path in spill_paths(db):
        try:
            _write_atomically(path, data)
            return path
        except OSError as e:
            problems.append(f"{path}: {e.strerror or e}")
    raise OSError("cannot write a spill file anywhere: " + "; ".join(problems))


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # the rename itself, durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read(path: Path, db: Path) -> Spill | None:
    """The spill at `path` if it is one of `db`'s; None when there is no file there. Raises
    ValueError with a one-line reason for a file that is not a readable spill."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from e
    lines = text.splitlines()
    try:
        head = json.loads(lines[0]) if lines else None
        if not isinstance(head, dict) or head.get("spill") != VERSION:
            raise ValueError("no spill header")
        if head.get("db") != str(db.resolve()):
            return None  # another database's (two daemons sharing a runtime directory)
        spill = Spill(str(head["id"]), [path], float(head["written"]),
                      [str(s) for s in head.get("supersedes", [])])  # fmt: skip
        for n, line in enumerate(lines[1:], start=2):
            row = json.loads(line)
            if row[0] == "f":
                spill.arrived.append(float(row[1]))
                spill.fixes.append(Fix(*row[2:]))
            elif row[0] == "s":
                spill.samples.append(Sample(*row[1:]))
            else:
                raise ValueError(f"line {n}: neither a fix nor a sample")
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ValueError(f"{path}: not a readable spill file: {e}") from e
    return spill


def find(db: Path) -> tuple[list[Spill], list[Path], list[str]]:
    """`db`'s spill files: those to take in, oldest first; the files another one supersedes
    (their fixes are in it, or in the store with its marker: only to be deleted); and a
    one-line problem for each file that could not be read (left where it is)."""
    spills: dict[str, Spill] = {}
    problems = []
    for path in spill_paths(db):
        try:
            spill = read(path, db)
        except ValueError as e:
            problems.append(str(e))
            continue
        if spill is None:
            continue
        if spill.id in spills:  # the same spill in two places
            spills[spill.id].paths.append(path)
        else:
            spills[spill.id] = spill
    gone = {old for s in spills.values() for old in s.supersedes}
    kept = sorted((s for s in spills.values() if s.id not in gone), key=lambda s: s.written)
    stale = [p for s in spills.values() if s.id in gone for p in s.paths]
    return kept, stale, problems


def remove(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
