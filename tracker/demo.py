"""`tracker demo`: the bundled ride, through a pseudo-terminal, into a real `tracker run`.

Everything a rider's unit does, on one machine with no hardware: the simulator plays the bundled
ride (tracker/data/demo-route.gpx) faster than real time, with a few injected faults (bad
checksums, garbage bytes, a cut line, a loss of fix), into a pty; a real daemon process reads the
pty as its serial GPS and stores the ride; then the demo stops the activity the way a rider
would (`tracker activity stop`), stops the daemon with SIGTERM, exports the ride as GPX and
checks that every valid epoch the simulator sent is in the database, once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from tracker import simulate
from tracker.export import write_gpx
from tracker.pty import PtyWriter
from tracker.store import Store, StoreError, open_store

DEMO_FAULTS = "checksum=0.002,garbage=0.002,truncate=0.001,outage=0.001,outage_s=10-30"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", type=Path, default=Path("demo-output"),
        help="where the config, database, log and GPX go (emptied first; default ./demo-output)",
    )  # fmt: skip
    parser.add_argument("--route", type=Path, help="a GPX route instead of the bundled ride")
    parser.add_argument("--rate", type=float, default=1.0, help="GPS rate in Hz (default 1)")
    parser.add_argument("--speed", type=float, default=7.0, help="riding speed, m/s (default 7)")
    parser.add_argument(
        "--speedup", type=float, default=120.0, help="times faster than real time (default 120)"
    )
    parser.add_argument("--faults", default=DEMO_FAULTS, help="simulator faults ('none' for none)")
    parser.add_argument("--seed", type=int, default=1)


def _write_config(workdir: Path, device: str) -> Path:
    path = workdir / "tracker.toml"
    path.write_text(
        "# written by `tracker demo`\n"
        f'[gps]\ndevice = "{device}"\nbaudrate = 115200\n\n'
        f'[storage]\npath = "{(workdir / "tracker.db").resolve()}"\ncommit_interval_s = 1.0\n\n'
        '[activity]\ntitle = "Demo ride %Y-%m-%d"\ntype = "cycling"\n'
    )
    return path


def _progress_line(store: Store | None, written: int, total: int) -> str:
    stored = "?"
    activity = "-"
    rejected = 0
    if store is not None:
        try:
            stored = str(store.fix_count())
            current = store.current_activity()
            activity = str(current.id) if current else "-"
            runtime = store.get_runtime("daemon")
            if runtime:
                rejected = runtime[0].get("gps", {}).get("rejected", 0)
        except StoreError:
            pass
    pct = 100 * written // max(total, 1)
    return (
        f"ride {pct:3d}%  epochs sent {written:5d}/{total}  fixes stored {stored:>5}  "
        f"rejected {rejected:3d}  activity {activity}  backlog: no backend yet"
    )


def _tracker(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args], capture_output=True, text=True, timeout=60, **kw
    )


def main(args: argparse.Namespace) -> int:
    workdir: Path = args.dir
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    route = simulate.load_route(args.route) if args.route else simulate.demo_route()
    faults = simulate.parse_faults(args.faults)
    start = datetime.now(UTC).replace(microsecond=0)
    epochs = list(
        simulate.simulate(
            route, rate_hz=args.rate, speed_mps=args.speed, start_time=start,
            faults=faults, seed=args.seed,
        )
    )  # fmt: skip
    expected = {round(e.unix, 3) for e in epochs if e.valid}
    possible = {round(e.unix, 3) for e in epochs if e.fix}
    legs = zip(route, route[1:], strict=False)
    length_km = sum(simulate.haversine_m(a.lat, a.lon, b.lat, b.lon) for a, b in legs) / 1000
    print(
        f"tracker demo: {length_km:.1f} km ride, {len(epochs)} epochs at {args.rate:g} Hz, "
        f"played {args.speedup:g}x faster than real time into a pseudo-terminal"
    )

    writer = PtyWriter.open(workdir.resolve() / "gps0")
    cfg_path = _write_config(workdir, writer.path)
    log_path = workdir / "daemon.log"
    with log_path.open("w") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "tracker", "run", "-c", str(cfg_path)],
            stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    print(f"daemon:  pid {daemon.pid}, reading {writer.path}, log in {log_path}")
    try:
        if not writer.wait_for_reader(timeout=20):
            print("tracker demo: the daemon never opened the pty; see " + str(log_path))
            return 1
        return _ride(args, workdir, cfg_path, writer, daemon, epochs, expected, possible)
    finally:
        writer.close()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def _ride(args, workdir, cfg_path, writer, daemon, epochs, expected, possible) -> int:
    db_path = workdir / "tracker.db"
    interactive = sys.stdout.isatty()
    state = {"written": 0, "last_print": 0.0}
    store: Store | None = None

    def progress(epoch: simulate.Epoch) -> None:
        nonlocal store
        state["written"] += 1
        now = time.monotonic()
        if now - state["last_print"] < (0.5 if interactive else 5.0):
            return
        state["last_print"] = now
        if store is None and db_path.exists():
            try:
                store = open_store(db_path, readonly=True)
            except StoreError:
                store = None
        line = _progress_line(store, state["written"], len(epochs))
        print("\r" + line if interactive else line, end="" if interactive else "\n", flush=True)

    stop = threading.Event()
    summary = simulate.run(
        epochs, writer.write, realtime=True, speedup=args.speedup, stop=stop, progress=progress
    )
    writer.drain(timeout=5)
    # Wait for the last commit: the daemon commits every second.
    deadline = time.monotonic() + 10
    stored_times: set[float] = set()
    while time.monotonic() < deadline:
        if store is None and db_path.exists():
            store = open_store(db_path, readonly=True)
        if store is not None:
            stored_times = {round(f.time, 3) for f in store.iter_fixes()}
            if expected <= stored_times:
                break
        time.sleep(0.5)
    print(("\r" if interactive else "") + _progress_line(store, len(epochs), len(epochs)))

    stop_reply = _tracker("activity", "stop", "-c", str(cfg_path))
    t0 = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    try:
        code = daemon.wait(timeout=20)
    except subprocess.TimeoutExpired:
        code = None
    stop_s = time.monotonic() - t0

    if store is not None:
        store.close()
    store = open_store(db_path, readonly=True)
    try:
        stored = [round(f.time, 3) for f in store.iter_fixes()]
        activities = store.activities()
        runtime = (store.get_runtime("daemon") or ({}, 0))[0]
        gpx_path = workdir / "ride.gpx"
        with gpx_path.open("w", encoding="utf-8") as out:
            write_gpx(store, out)
        size = store.size_bytes()
    finally:
        store.close()

    stored_set = set(stored)
    missing = expected - stored_set
    duplicates = len(stored) - len(stored_set)
    impossible = stored_set - possible
    ok = not missing and not duplicates and not impossible and code == 0
    rejected = runtime.get("gps", {}).get("rejected_by", {})
    faults = ", ".join(f"{k} {v}" for k, v in summary.faults.items() if v) or "none"
    print()
    print("Summary")
    print(f"  simulator:      {summary.epochs} epochs, {len(expected)} valid; faults: {faults}")
    print(
        f"  fixes stored:   {len(stored)} "
        f"({len(expected) - len(missing)} of {len(expected)} valid epochs, "
        f"{duplicates} duplicates, {len(impossible)} from no-fix epochs)"
    )
    print(
        "  rejected input: "
        + (", ".join(f"{k} {v}" for k, v in sorted(rejected.items()) if v) or "none")
    )
    for a in activities:
        ended = "running" if a.ended_at is None else f"ended ({a.end_reason})"
        minutes = ((a.ended_at or a.started_at) - a.started_at) / 60
        print(f"  activity:       {a.id} \"{a.title}\", {minutes:.0f} min of GPS time, {ended}")
    print(f"  activity stop:  {stop_reply.stdout.strip() or stop_reply.stderr.strip()}")
    print(f"  daemon:         exit code {code} {stop_s:.1f} s after SIGTERM")
    print(f"  GPX:            {gpx_path}")
    print(f"  database:       {db_path} ({size / 1e6:.1f} MB)")
    print(f"  status:         {sys.executable} -m tracker status -c {cfg_path}")
    print("Result:         " + ("OK: every valid fix stored exactly once" if ok else "FAILED"))
    if not ok and missing:
        sample = sorted(missing)[:5]
        print(f"  missing fixes at {', '.join(map(str, sample))} ...", file=sys.stderr)
    if os.environ.get("TRACKER_DEMO_SHOW_LOG"):
        print((workdir / "daemon.log").read_text())
    return 0 if ok else 1
