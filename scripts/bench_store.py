#!/usr/bin/env python3
"""How much the store writes, and what it costs in CPU, per fix: batched commits vs one per fix.

An SD card wears out by the bytes written to it, and on a Pi Zero the CPU is scarce. The writer
commits one transaction per commit interval (1 s); this measures that at 1, 10 and 25 Hz
against a commit-per-fix baseline measured in the same run, on the same disk.

Bytes come from /proc/self/io: `wchar` (bytes this process passed to write(): what SQLite
wrote, WAL and checkpoints) and `write_bytes` (what reached the block layer, page-granular; 0
on some file systems and containers). Each scenario runs on a fresh database and includes its
final checkpoint (the close), so checkpoint writes count too. CPU is process time. Nothing here
asserts anything: numbers vary by machine; the ratios are the point.

    .venv/bin/python scripts/bench_store.py [--seconds 300] [--dir /var/lib/tracker] [--ack]

`--dir` should be on the disk that matters (the SD card on a Pi). `--ack` adds a sender that
acknowledges every batch right after it is committed (the sender's writes go to the same file).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracker.fix import Fix  # noqa: E402
from tracker.store import open_store  # noqa: E402


def io_counters() -> dict[str, int]:
    try:
        with open("/proc/self/io") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f)}
    except OSError:  # not Linux: only the file sizes are left
        return {}


def make_fix(i: int, hz: int) -> Fix:
    t = 1_700_000_000.0 + i / hz
    return Fix(
        time=t,
        lat=48.137154 + i * 1e-6,
        lon=11.576124 + i * 1e-6,
        alt=519.4,
        speed=6.3,
        course=271.2,
        quality=1,
        sats=11,
        hdop=0.8,
        vdop=1.2,
        pdop=1.4,
        err_lat=1.9,
        err_lon=2.1,
        err_alt=3.6,
    )


@dataclass
class Result:
    name: str
    fixes: int
    commits: int
    wchar: int
    write_bytes: int
    cpu_s: float
    wall_s: float
    file_bytes: int

    def per_fix(self, value: float) -> float:
        return value / self.fixes


def run(name: str, root: Path, *, fixes: int, per_commit: int, hz: int, ack: bool) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir=root))
    path = workdir / "tracker.db"
    try:
        store = open_store(path)
        activity = store.start_activity("bench", "cycling", "private", (), make_fix(0, hz).time)
        sender = None
        if ack:
            store.register_backend("bench")
            sender = open_store(path, check=False)
        io0, cpu0, wall0 = io_counters(), time.process_time(), time.perf_counter()
        commits = 0
        for start in range(0, fixes, per_commit):
            batch = [make_fix(i, hz) for i in range(start, min(fixes, start + per_commit))]
            store.add_fixes(activity.id, batch)
            commits += 1
            if sender is not None:
                sender.acknowledge("bench", [f.id for f in sender.next_batch("bench", 1000)])
        if sender is not None:
            sender.close()
        store.close()  # the last close checkpoints the WAL into the database: count it
        io1, cpu1, wall1 = io_counters(), time.process_time(), time.perf_counter()
        file_bytes = sum(p.stat().st_size for p in workdir.iterdir())
        return Result(
            name=name,
            fixes=fixes,
            commits=commits,
            wchar=io1.get("wchar", 0) - io0.get("wchar", 0),
            write_bytes=io1.get("write_bytes", 0) - io0.get("write_bytes", 0),
            cpu_s=cpu1 - cpu0,
            wall_s=wall1 - wall0,
            file_bytes=file_bytes,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=int, default=300, help="seconds of riding per rate (default 300)"
    )
    parser.add_argument(
        "--baseline-fixes", type=int, default=2000, help="fixes for the commit-per-fix baseline"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to put the test databases")
    parser.add_argument("--ack", action="store_true", help="acknowledge every batch too")
    args = parser.parse_args(argv)
    root = args.dir or Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)

    results = [
        run("commit per fix", root, fixes=args.baseline_fixes, per_commit=1, hz=1, ack=args.ack)
    ]
    for hz in (1, 10, 25):
        results.append(
            run(
                f"1 commit/s @ {hz} Hz",
                root,
                fixes=hz * args.seconds,
                per_commit=hz,
                hz=hz,
                ack=args.ack,
            )
        )

    base = results[0]
    print(
        f"store write cost per fix in {root}{' (with a sender acknowledging)' if args.ack else ''}"
    )
    print(
        f"{'scenario':<20} {'fixes':>6} {'commits':>7} {'wchar/fix':>10} {'x base':>7} "
        f"{'disk/fix':>9} {'x base':>7} {'CPU us/fix':>10} {'x base':>7} {'file KiB':>8}"
    )
    for r in results:
        disk = r.per_fix(r.write_bytes)
        disk_ratio = disk / base.per_fix(base.write_bytes) if base.write_bytes else float("nan")
        print(
            f"{r.name:<20} {r.fixes:>6} {r.commits:>7} {r.per_fix(r.wchar):>10.0f} "
            f"{r.per_fix(r.wchar) / base.per_fix(base.wchar):>7.3f} {disk:>9.0f} "
            f"{disk_ratio:>7.3f} {r.per_fix(r.cpu_s) * 1e6:>10.1f} "
            f"{r.per_fix(r.cpu_s) / base.per_fix(base.cpu_s):>7.3f} {r.file_bytes / 1024:>8.0f}"
        )
    print(
        "wchar: bytes passed to write(); disk: /proc/self/io write_bytes (0 where the kernel "
        "does not account it). Ratios are against the commit-per-fix baseline."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
