#!/usr/bin/env python3
"""The status page against a long ride: a 10-hour ride at 10 Hz in the store (360,000 fixes,
a heart rate a second), a live `tracker run` reading 10 Hz from a pty that goes on with that
ride, and the page polled as tracker/data/status.html does (/api/status, /api/activities and
/api/track at once, every 5 s).

Figures: the daemon's CPU (user + system, % of a core) with no page open, then with the page
open, and the time each poll took (all three requests answered); the ratio is open / closed,
both measured in this run. `--baseline REV` runs the same against another revision (its own
code writes its own database) for the before/after, e.g. the revision before the running
totals. How many live fixes were stored tells whether the page starved the recorder.

    .venv/bin/python scripts/bench_page.py [--hours 10] [--seconds 60] [--baseline REV]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchkit import Daemon, cpu_of, stored  # noqa: E402

from tracker import simulate  # noqa: E402

START = datetime(2026, 6, 1, 0, tzinfo=UTC)
POLL_S = 5.0  # status.html's setInterval
RATE_HZ = 10.0

# Run by the tree's own interpreter and code: the ride, ending where the live part begins.
# argv: database, hours, rate, start (unix), end lat, end lon.
MAKE_RIDE = """
import sys
from tracker.fix import Fix, Sample
from tracker.store import open_store
db, hours, hz, t0, lat1, lon1 = sys.argv[1], *map(float, sys.argv[2:])
n = int(hours * 3600 * hz)
step = 5.0 / hz / 111_195.0  # 5 m/s north, ending at (lat1, lon1)
s = open_store(db)
a = s.start_activity("Long ride", "cycling", "private", (), t0)
for start in range(0, n, 20_000):
    s.add_fixes(a.id, [Fix(t0 + i / hz, lat1 - (n - i) * step, lon1, speed=5.0, hdop=0.8,
                           sats=12, quality=1) for i in range(start, min(n, start + 20_000))])
s.add_samples([Sample(t0 + i, "hr", 130.0) for i in range(int(hours * 3600))])
s.close()
"""


@dataclass
class Figures:
    closed_cpu: float = 0.0  # % of a core, page closed
    open_cpu: float = 0.0  # % of a core, page open
    polls: list[float] = field(default_factory=list)  # seconds each
    live_written: int = 0
    live_stored: int = 0


def feed(d: Daemon, epochs: list[simulate.Epoch], stop: threading.Event, count: list[int]) -> None:
    """Write the live ride at the receiver's pace (by the monotonic clock, no drift)."""
    t0 = time.monotonic()
    for e in epochs:
        if stop.is_set():
            return
        delay = t0 + e.offset_s - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return
        d.gps.write(e.data)
        count[0] += e.valid


def poll(url: str) -> float:
    """One refresh of the page: its three requests at once, as Promise.all; seconds."""
    start = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        bodies = list(pool.map(
            lambda p: urllib.request.urlopen(url + p, timeout=120).read(),
            ("api/status", "api/activities", "api/track"),
        ))  # fmt: skip
    assert all(bodies), "an empty answer"
    return time.monotonic() - start


def cpu_over(pid: int, seconds: float) -> float:
    c0, t0 = cpu_of(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_of(pid) - c0) / (time.monotonic() - t0)


def run(tree: Path, work: Path, hours: float, seconds: float) -> Figures:
    work.mkdir(parents=True)
    route = simulate.demo_route()
    end = START + timedelta(hours=hours)
    subprocess.run([sys.executable, "-c", MAKE_RIDE, str(work / "tracker.db"), str(hours),
                    str(RATE_HZ), str(START.timestamp()), str(route[0].lat), str(route[0].lon)],
                   cwd=tree, check=True)  # fmt: skip
    before = stored(work / "tracker.db")
    port = _free_port()
    d = Daemon.start(work, f'[web]\nlisten = "127.0.0.1:{port}"\n', tree=tree)
    url = f"http://127.0.0.1:{port}/"
    live = list(zip(range(int((3 * seconds + 30) * RATE_HZ)), simulate.simulate(
        route, rate_hz=RATE_HZ, speed_mps=5.0, loops=0,
        start_time=end + timedelta(seconds=1 / RATE_HZ), sentences=("RMC", "GGA", "GSA"),
    ), strict=False))  # fmt: skip
    stop, written = threading.Event(), [0]
    feeder = threading.Thread(target=feed, args=(d, [e for _, e in live], stop, written))
    feeder.start()
    figs = Figures()
    try:
        time.sleep(10)  # the daemon takes up the ride (replay of its last minutes)
        figs.closed_cpu = cpu_over(d.proc.pid, seconds)
        c0, t0 = cpu_of(d.proc.pid), time.monotonic()
        next_poll = t0
        while time.monotonic() - t0 < seconds:
            figs.polls.append(poll(url))
            next_poll += POLL_S
            time.sleep(max(0.0, next_poll - time.monotonic()))
        figs.open_cpu = 100 * (cpu_of(d.proc.pid) - c0) / (time.monotonic() - t0)
    finally:
        stop.set()
        feeder.join()
        time.sleep(3)  # the last commit
        d.stop()
    figs.live_written = written[0]
    figs.live_stored = stored(work / "tracker.db") - before
    return figs


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=10.0, help="length of the stored ride")
    ap.add_argument("--seconds", type=float, default=60.0, help="each phase's length")
    ap.add_argument("--baseline", help="also run this git revision, for the before/after")
    args = ap.parse_args()
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": ROOT}
        if args.baseline:
            base = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                            str(base), args.baseline], check=True)  # fmt: skip
            trees = {"baseline": base, **trees}
        try:
            for name, tree in trees.items():
                results[name] = run(tree, Path(tmp) / f"run-{name.replace(' ', '_')}", args.hours,
                                    args.seconds)  # fmt: skip
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(Path(tmp) / "baseline")], check=False)  # fmt: skip
    fixes = int(args.hours * 3600 * RATE_HZ)
    print(f"a {args.hours:g}-hour ride at {RATE_HZ:g} Hz stored ({fixes} fixes), live at "
          f"{RATE_HZ:g} Hz, {args.seconds:g} s a phase, a poll every {POLL_S:g} s")
    for name, f in results.items():
        p = f.polls or [float("nan")]
        print(f"  {name:10s} CPU page closed {f.closed_cpu:5.1f} %, open {f.open_cpu:5.1f} % "
              f"of a core ({f.open_cpu / max(f.closed_cpu, 0.1):4.1f}x); poll median "
              f"{statistics.median(p):6.3f} s, max {max(p):6.3f} s ({len(f.polls)} polls); "
              f"live fixes stored {f.live_stored} of {f.live_written}")  # fmt: skip
    if args.baseline:
        b, t = results["baseline"], results["this tree"]
        print(f"  this tree / baseline: poll median "
              f"{statistics.median(t.polls) / statistics.median(b.polls):.3f}x, CPU with the "
              f"page open {t.open_cpu / max(b.open_cpu, 0.1):.3f}x  (baseline = {args.baseline})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
