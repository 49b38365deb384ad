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
import logging
import math
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tracker import nmea, simulate
from tracker.export import write_gpx
from tracker.pty import PtyWriter
from tracker.runtime import DAEMON_KEY, DaemonStatus
from tracker.store import Store, StoreError, open_store
from tracker.testing.faults import Faults
from tracker.testing.gpsr import GpsrServer
from tracker.testing.mapmytracks import MapMyTracksServer
from tracker.words import plural

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
    rates: dict[str, Any] = {}  # Any: they go to Faults as **kwargs of mixed types
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
        f"tracker demo: a {ride.length_km:.2f} km route, {len(ride.epochs)} GPS epochs at "
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

    t0 = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    try:
        code = daemon.wait(timeout=20)
    except subprocess.TimeoutExpired:
        code = None
    stop_s = time.monotonic() - t0
    # The last line after the daemon wrote its final row: the summary's figures, not a count
    # up to 15 s old (the row is rewritten that rarely while nothing new is stored).
    show(final=True)
    return _summary(ride, summary, cfg_path, watch, drained, code, stop_s)


# --- the figures, reconciled --------------------------------------------------------------
# Each count the summary prints is derived here, from the simulator's truth, the same bytes
# through the daemon's own decoder, and the store, so that each adds up to the next and a
# rider can tell a loss from a display quirk.


@dataclass
class FaultRow:
    """The epochs that had the same kinds of receiver fault injected, and what the decoder
    counted for them (its rejection reasons, and `ignored` for an unknown sentence type)."""

    epochs: int = 0
    faults: int = 0  # occurrences injected
    counted: Counter = field(default_factory=Counter)
    unseen: Counter = field(default_factory=Counter)  # sentence type -> faults that cost no count


@dataclass
class DecoderAccount:
    rows: dict[str, FaultRow]  # "checksum", "garbage+truncate", ...; "" for unfaulted epochs
    stats: nmea.DecoderStats  # the whole ride through a fresh decoder, flushed at the end


def _counts(stats: nmea.DecoderStats) -> Counter:
    return Counter({**stats.rejected_by, "ignored": stats.ignored})


def _damaged_types(data: bytes) -> Counter:
    """The sentence types of the damaged lines in an epoch's bytes (bad checksum, a second `$`,
    no `*`): where a fault landed."""
    found: Counter = Counter()
    for raw in data.split(b"\n"):
        line = raw.strip(b"\r")
        if not line.startswith(b"$"):
            continue
        body, star, given = line[1:].rpartition(b"*")
        if b"$" in line[1:] or not star or given.upper() != b"%02X" % simulate.nmea_checksum(body):
            found[line[3:6].decode("ascii", "replace")] += 1
    return found


def decoder_account(epochs: list[simulate.Epoch]) -> DecoderAccount:
    """Replay the ride's bytes through tracker.nmea's Decoder as the daemon reads them and
    attribute what it counts at each epoch to the faults injected into that epoch. A line left
    without its end runs into the next epoch's first line, so the next epoch's count goes to the
    epoch that left it. An epoch whose faults cost no count names the sentence types they hit."""
    decoder = nmea.Decoder(log_interval_s=math.inf)
    deltas: list[Counter] = []
    before = _counts(decoder.stats)
    quiet = logging.getLogger(nmea.__name__)
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the daemon has logged these already
    try:
        for epoch in epochs:
            decoder.feed(epoch.data)
            now = _counts(decoder.stats)
            deltas.append(now - before)
            before = now
        decoder.flush()
    finally:
        quiet.setLevel(level)
    deltas[-1] += _counts(decoder.stats) - before
    rows: dict[str, FaultRow] = {}
    carried: str | None = None  # the row of an epoch whose last line is unfinished
    for epoch, delta in zip(epochs, deltas, strict=True):
        kinds = [k for k in epoch.faults if k in simulate.FAULT_KINDS and k not in
                 ("outage", "silence")]  # fmt: skip
        key = "+".join(sorted(set(kinds)))
        if not key and carried is not None:
            rows[carried].counted += delta
        else:
            row = rows.setdefault(key, FaultRow())
            row.epochs += 1
            row.faults += len(kinds)
            row.counted += delta
        carried = (key or carried) if epoch.data and not epoch.data.endswith(b"\n") else None
    for epoch, delta, after in zip(epochs, deltas, [*deltas[1:], Counter()], strict=True):
        kinds = [k for k in epoch.faults if k in ("checksum", "truncate")]
        glued = epoch.data and not epoch.data.endswith(b"\n")
        if kinds and not +delta and not (glued and +after):
            rows["+".join(sorted(set(kinds)))].unseen += _damaged_types(epoch.data)
    return DecoderAccount(rows, decoder.stats)


def _reasons(counts: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "nothing"


def fault_lines(account: DecoderAccount, summary: simulate.Summary) -> list[str]:
    """The receiver faults, injected -> counted, one line a kind of epoch."""
    notes = {
        "garbage": "noise without a line end runs into the sentence after it",
        "truncate": "a cut sentence runs into the next one: one line, counted once",
    }
    lines = []
    for key, row in sorted(account.rows.items()):
        if not key:
            if +row.counted:
                lines.append(f"without an injected fault: {_reasons(row.counted)}")
            continue
        text = f"{key} {row.faults} \u2192 {_reasons(row.counted)}"
        unseen = sum(row.unseen.values())
        if unseen:
            types = [f"{t} ({n})" if len(row.unseen) > 1 else t
                     for t, n in sorted(row.unseen.items())]  # fmt: skip
            text += (f"; {unseen} landed in {' and '.join(types)} sentences, which no fix "
                     "needs: passed over unread")  # fmt: skip
        if key in notes and sum(row.counted.values()) != row.faults:
            text += f" ({notes[key]})"
        lines.append(text)
    if summary.faults.get("outage"):
        lines.append(f"outage {summary.faults['outage']} ({summary.outage_epochs} epochs "
                     "without a fix): nothing to store, not an error")  # fmt: skip
    return lines


@dataclass
class StoredAccount:
    """Where every stored fix came from, and where it went: both add up to `total`."""

    total: int
    valid: int  # from epochs whose every byte arrived intact
    faulted: int  # from epochs with a fault in a sentence the fix did not need
    no_fix: int  # from epochs without a fix: never, in a correct daemon
    sent: int  # in the activity, offered to the backends
    local: int  # in the activity, paused and kept on the unit
    before: int  # outside the activity, before the unit decided the ride had started
    after: int  # outside, after it ended (parked)


def stored_account(ride: Ride, fixes: list, activities: list) -> StoredAccount:
    times = [round(f.time, 3) for f in fixes]
    valid = sum(1 for t in times if t in ride.expected)
    faulted = sum(1 for t in times if t in ride.possible and t not in ride.expected)
    first = min((a.started_at for a in activities), default=math.inf)
    outside = [f for f in fixes if f.activity_id is None]
    before = sum(1 for f in outside if f.time < first)
    return StoredAccount(
        total=len(fixes), valid=valid, faulted=faulted, no_fix=len(times) - valid - faulted,
        sent=sum(1 for f in fixes if f.activity_id is not None and not f.local),
        local=sum(1 for f in fixes if f.activity_id is not None and f.local),
        before=before, after=len(outside) - before,
    )  # fmt: skip


def distance_line(ride: Ride, fixes: list, activity: Any, measured_m: float) -> str:
    """Why the ride list's distance differs from the route's: it counts no distance across a
    gap without a fix longer than rides.MAX_GAP_S, nor before the activity started."""
    from tracker.activity import distance_m
    from tracker.rides import MAX_GAP_S

    own = [f for f in fixes if f.activity_id == activity.id]
    gaps = [(a, b) for a, b in zip(own, own[1:], strict=False) if b.time - a.time > MAX_GAP_S]
    across = sum(distance_m(a.lat, a.lon, b.lat, b.lon) for a, b in gaps)
    return (f"{measured_m / 1000:.2f} km measured; the route is {ride.length_km:.2f} km, and "
            f"{across / 1000:.2f} km of it was crossed in {len(gaps)} "
            f"gap{'s' if len(gaps) != 1 else ''} without a fix (no distance is counted across a "
            f"gap over {MAX_GAP_S:g} s)")  # fmt: skip


def next_command(cfg_path: Path) -> str:
    """The command to try next, whole and absolute, so that it works from any directory: the
    `tracker` script beside this interpreter (the README's `.venv/bin/tracker`)."""
    script = Path(sys.executable).with_name("tracker")
    run = str(script) if script.exists() else f"{sys.executable} -m tracker"
    return f"{run} status -c {cfg_path.resolve()}"


def _faults_seen(requests) -> str:
    seen: dict[str, int] = {}
    for r in requests:
        if r.fault:
            seen[r.fault] = seen.get(r.fault, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(seen.items())) or "none"


def _summary(ride, summary, cfg_path, watch: Watch, drained, code, stop_s) -> int:
    from tracker.config import load
    from tracker.rides import summarize

    workdir = cfg_path.parent
    watch.close()
    rules = load(cfg_path).activity.rules()
    store = open_store(workdir / "tracker.db", readonly=True)
    try:
        fixes = list(store.iter_fixes())
        activities = store.activities()
        measured = {a.id: summarize(store, a, rules).distance_m for a in activities}
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

    account = decoder_account(ride.epochs)
    where = stored_account(ride, fixes, activities)
    rejected = Counter(runtime.gps.rejected_by)
    counted_here = Counter(account.stats.rejected_by)
    mmt_ok = len(remote) == 1 and not remote[0].live and holds(mmt_times)
    gpsr_ok = holds(gpsr_times)
    ended = len(activities) == 1 and activities[0].end_reason == "idle"
    reconciled = +rejected == +counted_here and runtime.gps.rejected == sum(rejected.values())
    ok = (not missing and not duplicates and not where.no_fix and code == 0 and drained
          and mmt_ok and gpsr_ok and ended and reconciled)  # fmt: skip

    print("\nSummary")
    print(f"  simulator:    {summary.epochs} epochs, {len(ride.expected)} intact with a fix; "
          f"{summary.epochs - summary.fixes} without a fix, "
          f"{summary.fixes - len(ride.expected)} with a fault injected")  # fmt: skip
    print(f"  stored:       {plural(where.total, 'fix', 'fixes')}: {where.valid} of "
          f"{len(ride.expected)} intact epochs, {where.faulted} from epochs whose fault hit a "
          f"sentence the fix did not need, {where.no_fix} from no-fix epochs, "
          f"{duplicates} duplicates")  # fmt: skip
    print(f"                {where.sent} in the activity (sent), "
          + (f"{where.local} paused in it (kept on the unit), " if where.local else "")
          + f"{where.before} before the unit decided the ride had started, "
          + f"{where.after} parked after it ended (kept, never sent)")
    print(f"                and {samples} hr/cad/pwr samples")
    faults = fault_lines(account, summary)
    for i, text in enumerate(faults):
        print(("  GPS faults:   " if i == 0 else " " * 16) + text)
    print(f"  rejected:     {_reasons(rejected)}: {sum(rejected.values())} in all, the last "
          "progress line's count"
          + ("; the same bytes through tracker.nmea here count the same" if reconciled else
             f"; MISMATCH: the same bytes through tracker.nmea here count "
             f"{_reasons(counted_here)}"))  # fmt: skip
    for a in activities:
        how = "running" if a.ended_at is None else f"ended by the unit ({a.end_reason})"
        minutes = ((a.ended_at or a.started_at) - a.started_at) / 60
        print(f"  activity:     {a.id} \"{a.title}\", {minutes:.0f} min of GPS time, {how}")
        print(f"                {distance_line(ride, fixes, a, measured[a.id])}")
    def late(times: list[int]) -> str:
        """The fixes a server got live after the last movement, before the idle end took
        them out of the activity (docs/activity.md): why it may hold more than was sent."""
        n = len(set(times) & (tail - want))
        return f"; {n} of them sent live after the last movement, then parked" if n else ""

    for r in remote:  # the server's activities, not the store's
        print(f"  mapmytracks:  activity {r.id}, {plural(len(r.points), 'point')} "
              f"({plural(len(mmt_times) - len(set(mmt_times)), 'duplicate')}{late(mmt_times)}), "
              f"{'live' if r.live else 'stopped'}, "
              f"{plural(watch.mmt.count('start_activity'), 'start_activity call')}, "
              f"{plural(len(r.hr), 'hr value')}")  # fmt: skip
    print(f"                {plural(len(watch.mmt.requests), 'request')}; faults injected: "
          f"{_faults_seen(watch.mmt.requests)}")  # fmt: skip
    print(f"  json-gpsr:    {plural(len(gpsr_times), 'fix', 'fixes')} "
          f"({plural(len(gpsr_times) - len(set(gpsr_times)), 'duplicate')}{late(gpsr_times)}), "
          f"{plural(len(watch.gpsr.requests), 'request')}; faults injected: "
          f"{_faults_seen(watch.gpsr.requests)}")  # fmt: skip
    print(f"  daemon:       exit code {code}, {stop_s:.1f} s after SIGTERM")
    print(f"  GPX:          {gpx_path}")
    print(f"  database:     {workdir / 'tracker.db'} ({size / 1e6:.1f} MB)")
    print(f"  try:          {next_command(cfg_path)}")
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
    if where.no_fix:
        print(f"  {where.no_fix} fixes stored from epochs without a fix", file=sys.stderr)
    if not reconciled:
        print("  the daemon's rejection counts differ from the same bytes decoded here",
              file=sys.stderr)
    return 1
