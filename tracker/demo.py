"""`tracker demo`: the bundled ride, through a pseudo-terminal, into a real `tracker run`, live on
the bundled Map My Tracks and json-gpsr servers.

Everything a rider's unit does, on one machine with no hardware and no network: the simulator
plays the bundled ride (tracker/data/demo-route.gpx) faster than real time, with a few injected
receiver faults (bad checksums, garbage bytes, a cut line, a loss of fix), into a pty; a real
daemon process reads the pty as its serial GPS, stores the ride (with simulated heart rate,
cadence and power) and sends it live to the project's Map My Tracks and json-gpsr test servers
on 127.0.0.1, which drop and refuse a share of requests the way a mobile network does. The unit
starts the activity by itself when the ride moves off, and, with the bike parked after the loop,
ends it by itself (`idle_stop_s` shortened to 60 s for the demo) and stops it on Map My Tracks.
Then the demo waits for the backlogs to drain, stops the daemon with SIGTERM, exports the ride
as GPX and checks that every valid epoch is stored once and each activity fix is on each server
once.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tracker import simulate
from tracker.export import write_gpx
from tracker.pty import PtyWriter
from tracker.runtime import DAEMON_KEY, DaemonStatus
from tracker.store import Store, StoreError, open_store
from tracker.testing.faults import Faults
from tracker.testing.gpsr import GpsrServer
from tracker.testing.mapmytracks import MapMyTracksServer

GPS_FAULTS = "checksum=0.002,garbage=0.002,truncate=0.001,outage=0.001,outage_s=10-30"
NETWORK_FAULTS = "reset=0.03,fail_500=0.03,drop_reply=0.05,html=0.02"
USER, PASSWORD, TOKEN = "rider", "demo-password", "demo-post-token"
IDLE_STOP_S = 60  # the demo's [activity] idle_stop_s: the parked end shows in seconds
PARKED_S = 90  # parked after the loop, past IDLE_STOP_S
BACKENDS = ("mapmytracks", "gpsr")


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
    parser.add_argument("--faults", default=GPS_FAULTS, help="receiver faults ('none' for none)")
    parser.add_argument(
        "--network-faults", default=NETWORK_FAULTS,
        help=f"server faults, KIND=RATE,... ('none' for none; default {NETWORK_FAULTS})",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)


def parse_network_faults(spec: str, seed: int) -> Faults:
    """`reset=0.1,drop_reply=0.05` -> Faults; a bad kind or rate is a one-line ValueError."""
    rates: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        if item == "none":
            continue
        kind, _, value = item.partition("=")
        try:
            rates[kind] = float(value)
        except ValueError:
            raise ValueError(f"--network-faults: {item!r} is not KIND=RATE") from None
    try:
        return Faults(seed=seed, **rates)
    except TypeError:
        raise ValueError(f"--network-faults: unknown fault kind in {spec!r}") from None


@dataclass
class Ride:
    epochs: list[simulate.Epoch]
    expected: set[float]  # GPS times (ms) of the epochs a correct daemon must store
    possible: set[float]  # GPS times of every epoch with a fix (faulted ones may be stored)
    length_km: float


def _plan(args: argparse.Namespace) -> Ride:
    route = simulate.load_route(args.route) if args.route else simulate.demo_route()
    faults = simulate.parse_faults(args.faults)
    epochs = list(
        simulate.simulate(
            route, rate_hz=args.rate, speed_mps=args.speed,
            start_time=datetime.now(UTC).replace(microsecond=0),
            faults=faults, seed=args.seed,
        )
    )  # fmt: skip
    # Then parked where the loop ends (it ends where it began), so the activity ends by itself.
    after = epochs[-1].offset_s + 1 / args.rate
    parked = simulate.simulate_phases(
        route[:1], f"park:{PARKED_S}", rate_hz=args.rate,
        start_time=epochs[0].time + timedelta(seconds=after), faults=faults, seed=args.seed,
    )  # fmt: skip
    epochs += [replace(e, index=e.index + len(epochs), offset_s=e.offset_s + after)
               for e in parked]  # fmt: skip
    legs = zip(route, route[1:], strict=False)
    return Ride(
        epochs=epochs,
        expected={round(e.unix, 3) for e in epochs if e.valid},
        possible={round(e.unix, 3) for e in epochs if e.fix},
        length_km=sum(simulate.haversine_m(a.lat, a.lon, b.lat, b.lon) for a, b in legs) / 1000,
    )


def _write_config(
    workdir: Path, device: str, mmt_url: str, gpsr_url: str, web_port: int
) -> Path:
    path = workdir / "tracker.toml"
    path.write_text(
        "# written by `tracker demo`\n"
        f'[gps]\ndevice = "{device}"\nbaudrate = 115200\n\n'
        f'[storage]\npath = "{(workdir / "tracker.db").resolve()}"\ncommit_interval_s = 1.0\n\n'
        '[activity]\ntitle = "Demo ride {start:%Y-%m-%d %H:%M}"\ntype = "cycling"\n'
        f"idle_stop_s = {IDLE_STOP_S}\n\n"
        f'[mapmytracks]\nurl = "{mmt_url}"\nusername = "{USER}"\npassword = "{PASSWORD}"\n'
        "interval_s = 1\nbackoff_max_s = 5\nconnect_timeout_s = 2\nread_timeout_s = 5\n\n"
        f'[gpsr]\nurl = "{gpsr_url}"\ntoken = "{TOKEN}"\n'
        "interval_s = 1\nbackoff_max_s = 5\nconnect_timeout_s = 2\nread_timeout_s = 5\n\n"
        "# the status page (tracker/web.py), on the loopback only\n"
        f'[web]\nlisten = "127.0.0.1:{web_port}"\n\n'
        "# heart rate, cadence and power that follow the ride's GPS time (tracker/sensors)\n"
        '[[sensors]]\ntype = "simulated"\n'
    )
    return path


class Watch:
    """Reads the daemon's store and the server for the progress line and the end conditions."""

    def __init__(self, db: Path, mmt: MapMyTracksServer, gpsr: GpsrServer) -> None:
        self.db = db
        self.mmt = mmt
        self.gpsr = gpsr
        self.store: Store | None = None

    def _open(self) -> Store | None:
        if self.store is None and self.db.exists():
            try:
                self.store = open_store(self.db, readonly=True)
            except StoreError:
                self.store = None
        return self.store

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {"stored": 0, "backlog": {}, "rejected": 0}
        store = self._open()
        if store is not None:
            try:
                snap["stored"] = store.fix_count()
                snap["backlog"] = store.pending()
                runtime = store.get_runtime(DAEMON_KEY)
                if runtime:
                    snap["rejected"] = DaemonStatus.from_json(runtime[0]).gps.rejected
            except StoreError:
                pass
        activities = list(self.mmt.activities.values())
        snap["sent"] = {
            "mapmytracks": sum(len(a.points) for a in activities),
            "gpsr": len(self.gpsr.fixes(USER)),
        }
        snap["stopped"] = bool(activities) and not any(a.live for a in activities)
        snap["drained"] = all(snap["backlog"].get(name) == 0 for name in BACKENDS)
        return snap

    def stored_times(self) -> list[float]:
        store = self._open()
        return [] if store is None else [round(f.time, 3) for f in store.iter_fixes()]

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def _line(snap: dict[str, Any], written: int, total: int) -> str:
    def backend(name: str, short: str) -> str:
        backlog = snap["backlog"].get(name)
        backlog = "-" if backlog is None else backlog
        return f"{short} sent {snap['sent'][name]:5d} backlog {backlog:>4}"

    return (
        f"ride {100 * written // max(total, 1):3d}%  read {written:5d}  "
        f"stored {snap['stored']:5d} | {backend('mapmytracks', 'mmt')} | "
        f"{backend('gpsr', 'gpsr')} | "
        f"rejected {snap['rejected']}"
    )


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gps_open(log_path: Path) -> bool:
    text = log_path.read_text() if log_path.exists() else ""
    return any("GPS " in line and " open at " in line for line in text.splitlines())


def main(args: argparse.Namespace) -> int:
    try:
        mmt_faults = parse_network_faults(args.network_faults, args.seed)
        gpsr_faults = parse_network_faults(args.network_faults, args.seed + 1)
    except ValueError as e:
        print(f"tracker demo: {e}", file=sys.stderr)
        return 2
    workdir: Path = args.dir
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ride = _plan(args)
    print(
        f"tracker demo: a {ride.length_km:.1f} km ride, {len(ride.epochs)} GPS epochs at "
        f"{args.rate:g} Hz, played {args.speedup:g}x faster than real time"
    )
    mmt = MapMyTracksServer(users={USER: PASSWORD}, faults=mmt_faults)
    gpsr = GpsrServer(users={USER: PASSWORD}, faults=gpsr_faults)
    with mmt, gpsr:
        gpsr.make_token(USER, "post", 0, time.time() + 86400, key=TOKEN)
        writer = PtyWriter.open(workdir.resolve() / "gps0")
        web_port = _free_port()
        cfg_path = _write_config(workdir, writer.path, mmt.url, gpsr.url, web_port)
        log_path = workdir / "daemon.log"
        with log_path.open("w") as log_file:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "tracker", "run", "-c", str(cfg_path)],
                stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        print(f"  GPS:      a pseudo-terminal at {writer.path}")
        print(f"  servers:  Map My Tracks at {mmt.url}, json-gpsr at {gpsr.url}")
        print(f"            both injecting network faults: {args.network_faults}")
        print(f"  daemon:   pid {daemon.pid}, config {cfg_path}, log {log_path}")
        print(f"  page:     http://127.0.0.1:{web_port}/ (the status page, while the demo runs)")
        watch = Watch(workdir / "tracker.db", mmt, gpsr)
        try:
            if not _wait(lambda: _gps_open(log_path), 30):
                print(f"tracker demo: the daemon never opened the GPS; see {log_path}")
                return 1
            return _ride(args, ride, cfg_path, writer, daemon, watch)
        finally:
            watch.close()
            writer.close()
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


def _ride(args, ride: Ride, cfg_path: Path, writer: PtyWriter, daemon, watch: Watch) -> int:
    interactive = sys.stdout.isatty()
    written = 0
    last_print = 0.0

    def show(final: bool = False) -> None:
        line = _line(watch.snapshot(), written, len(ride.epochs))
        print(("\r" + line) if interactive else line, end="" if interactive and not final else "\n",
              flush=True)  # fmt: skip

    def progress(epoch: simulate.Epoch) -> None:
        nonlocal written, last_print
        written += 1
        if time.monotonic() - last_print >= (0.5 if interactive else 5.0):
            last_print = time.monotonic()
            show()

    summary = simulate.run(ride.epochs, writer.write, realtime=True, speedup=args.speedup,
                           progress=progress)  # fmt: skip
    writer.drain(timeout=5)
    _wait(lambda: ride.expected <= set(watch.stored_times()), 15)
    watch.mmt.faults.clear()  # the ride is over: let the backlogs drain without faults
    watch.gpsr.faults.clear()
    # The unit ends the activity itself (idle), then Map My Tracks gets stop_activity.
    drained = _wait(lambda: (s := watch.snapshot())["drained"] and s["stopped"], 120)
    show(final=True)

    t0 = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    try:
        code = daemon.wait(timeout=20)
    except subprocess.TimeoutExpired:
        code = None
    stop_s = time.monotonic() - t0
    return _summary(ride, summary, cfg_path, watch, drained, code, stop_s)


def _faults_seen(requests) -> str:
    seen: dict[str, int] = {}
    for r in requests:
        if r.fault:
            seen[r.fault] = seen.get(r.fault, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(seen.items())) or "none"


def _summary(ride, summary, cfg_path, watch: Watch, drained, code, stop_s) -> int:
    workdir = cfg_path.parent
    watch.close()
    store = open_store(workdir / "tracker.db", readonly=True)
    try:
        fixes = list(store.iter_fixes())
        activities = store.activities()
        samples = len(store.samples_between(0, float("inf")))
        runtime = DaemonStatus.from_json((store.get_runtime(DAEMON_KEY) or ({}, 0))[0])
        gpx_path = workdir / "ride.gpx"
        with gpx_path.open("w", encoding="utf-8") as out:
            write_gpx(store, out)
        size = store.size_bytes()
    finally:
        store.close()

    stored = [round(f.time, 3) for f in fixes]
    stored_set = set(stored)
    missing = ride.expected - stored_set
    duplicates = len(stored) - len(stored_set)
    impossible = stored_set - ride.possible
    # What each server must hold: every second of the activity once (both send whole seconds),
    # and at most what went out live after the last movement before the idle end took it out
    # of the activity (docs/activity.md).
    want = {int(f.time) for f in fixes if f.activity_id is not None and not f.local}
    tail = {int(f.time) for a in activities if a.ended_at for f in fixes
            if f.activity_id is None and a.ended_at < f.time <= a.ended_at + IDLE_STOP_S}
    remote = list(watch.mmt.activities.values())
    mmt_times = [int(p[0]) for a in remote for p in a.points]
    gpsr_times = [int(f.seconds) for f in watch.gpsr.fixes(USER)]

    def holds(times: list[int]) -> bool:
        return len(times) == len(set(times)) and want <= set(times) <= want | tail

    mmt_ok = len(remote) == 1 and not remote[0].live and holds(mmt_times)
    gpsr_ok = holds(gpsr_times)
    ended = len(activities) == 1 and activities[0].end_reason == "idle"
    ok = (not missing and not duplicates and not impossible and code == 0 and drained
          and mmt_ok and gpsr_ok and ended)  # fmt: skip
    rejected = runtime.gps.rejected_by
    gps_faults = ", ".join(f"{k} {v}" for k, v in summary.faults.items() if v) or "none"

    print("\nSummary")
    print(f"  simulator:    {summary.epochs} epochs, {len(ride.expected)} valid; "
          f"injected {gps_faults}")  # fmt: skip
    print(f"  stored:       {len(stored)} fixes ({len(ride.expected) - len(missing)} of "
          f"{len(ride.expected)} valid epochs, {duplicates} duplicates, "
          f"{len(impossible)} from no-fix epochs), {samples} hr/cad/pwr samples")  # fmt: skip
    print("  rejected:     "
          + (", ".join(f"{k} {v}" for k, v in sorted(rejected.items()) if v) or "nothing"))
    for a in activities:
        how = "running" if a.ended_at is None else f"ended by the unit ({a.end_reason})"
        minutes = ((a.ended_at or a.started_at) - a.started_at) / 60
        print(f"  activity:     {a.id} \"{a.title}\", {minutes:.0f} min of GPS time, {how}")
    outside = sum(1 for f in fixes if f.activity_id is None)
    print(f"  outside:      {outside} fixes outside the activity (parked), stored, never sent")
    for a in remote:
        print(f"  mapmytracks:  activity {a.id}, {len(a.points)} points "
              f"({len(mmt_times) - len(set(mmt_times))} duplicates), "
              f"{'live' if a.live else 'stopped'}, {watch.mmt.count('start_activity')} "
              f"start_activity call(s), {len(a.hr)} hr values")  # fmt: skip
    print(f"                {len(watch.mmt.requests)} requests; faults injected: "
          f"{_faults_seen(watch.mmt.requests)}")  # fmt: skip
    print(f"  json-gpsr:    {len(gpsr_times)} fixes "
          f"({len(gpsr_times) - len(set(gpsr_times))} duplicates), "
          f"{len(watch.gpsr.requests)} requests; faults injected: "
          f"{_faults_seen(watch.gpsr.requests)}")  # fmt: skip
    print(f"  daemon:       exit code {code}, {stop_s:.1f} s after SIGTERM")
    print(f"  GPX:          {gpx_path}")
    print(f"  database:     {workdir / 'tracker.db'} ({size / 1e6:.1f} MB)")
    print(f"  try:          {sys.executable} -m tracker status -c {cfg_path}")
    if ok:
        print("Result: OK: every valid fix stored once, the ride on each server once, "
              "started and stopped by the unit")  # fmt: skip
        return 0
    print("Result: FAILED", file=sys.stderr)
    if missing:
        print(f"  not stored: {sorted(missing)[:5]} ...", file=sys.stderr)
    if not mmt_ok:
        print(f"  Map My Tracks differs: {len(set(mmt_times) ^ want)} seconds", file=sys.stderr)
    if not gpsr_ok:
        print(f"  json-gpsr differs: {len(set(gpsr_times) ^ want)} seconds", file=sys.stderr)
    if not drained:
        print("  the backlogs did not drain within 120 s", file=sys.stderr)
    if not ended:
        print(f"  the unit did not end the ride by itself: {activities}", file=sys.stderr)
    return 1
