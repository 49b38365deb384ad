#!/usr/bin/env python3
"""Every benchmark of issue 13 in one run, each as a ratio to a baseline measured in that run.

    scripts/bench [--quick] [--json bench.json] [--only ingest,wear,...] [--epoch gps]

- ingest: `tracker run` reading a pty, CPU per sentence, against gpsd (`gpsd -N -n -b`, when
  installed) and a bare pynmea2 loop, each reading the same bytes through a pty; the epoch is a
  multi-GNSS receiver's (RMC, GGA, two GSA, four GSV, VTG), or GPS alone with --epoch gps;
- wear: bytes written per fix, live at 1 Hz, default settings, against the leanest durable
  design (one rowid table, WAL, synchronous=FULL, 1 KiB pages, one insert and commit per fix);
- idle: CPU over 60 s with the GPS silent and nothing to send (target under 0.05 s);
- live: share of one core at 10 Hz in real time (target under 1 %);
- memory: peak RSS with both backends (faults on) and a simulated sensor over a 2-hour 10 Hz
  ride replayed fast, and its growth from the second to the last quarter (under 32 MB, flat);
- startup: CPU of `tracker --help` and `tracker status` against a bare `python -c pass`;
- drain: a 100,000-fix backlog sent to the Map My Tracks test server against one request per
  point.

CPU is user + system of the reader's process (all threads), from /proc, counted from the
moment it has the device open (start-up is its own row). Each CPU figure is the minimum of
--rounds (the least disturbed run is the closest to the true cost). Nothing is asserted: the
machine is shared and noisy; the ratios are the point. The table is printed and, with --json,
written as JSON with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit as kit  # noqa: E402

Row = dict[str, object]


# -- ingest ----------------------------------------------------------------------------------


def _cpu_reading(start: Callable[[Path], tuple[object, Callable[[], bool], int]],
                 ride: kit.Ride, work: Path) -> float:  # fmt: skip
    """CPU seconds a reader spends on `ride`: started by `start(work)` -> (handle with feed
    and stop, done(), pid), measured from after its device is open until it is idle again."""
    handle, done, pid = start(work)
    try:
        cpu0 = kit.cpu_of(pid)
        handle.feed(ride.data)  # type: ignore[attr-defined]
        kit.wait_until(done, 300, f"{work.name} to take the whole ride")
        return kit.settle(pid) - cpu0
    finally:
        handle.stop()  # type: ignore[attr-defined]


class _Process:
    """A non-tracker reader (gpsd, the pynmea2 loop) on its own pty."""

    def __init__(self, work: Path, cmd: Callable[[str], list[str]], ready: str | None) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.gps = kit.PtyWriter.open(work / "gps0", timeout=5.0)
        self.log = work / "reader.log"
        self.proc = kit.start_reader(cmd(str(self.gps.path)), self.log)
        if ready:
            kit.wait_until(lambda: ready in self.log.read_text() or self.proc.poll() is not None,
                           30, f"{cmd} to start")  # fmt: skip
        else:
            time.sleep(1.0)  # gpsd opens its device at once with -n
        if self.proc.poll() is not None:
            raise SystemExit(f"bench: {cmd} exited: {self.log.read_text()[-1000:]}")

    def feed(self, data: bytes) -> None:
        for i in range(0, len(data), 4096):
            self.gps.write(data[i : i + 4096])

    def stop(self) -> None:
        kit.stop_process(self.proc)
        self.gps.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_ingest(args: argparse.Namespace, work: Path) -> list[Row]:
    ride = kit.ride(args.epochs, 10.0, glonass=args.epoch == "multi-gnss")
    readers: dict[str, Callable[[Path], tuple[object, Callable[[], bool], int]]] = {}

    def tracker(w: Path):
        d = kit.Daemon.start(w)
        return d, (lambda: kit.stored(d.db) >= ride.valid), d.proc.pid

    def pynmea2(w: Path):
        p = _Process(w, lambda dev: [sys.executable, "-c", kit.PYNMEA2_LOOP, dev], "open")
        return p, (lambda: True), p.proc.pid

    readers["tracker run (decode and store)"] = tracker
    gpsd = kit.gpsd_binary()
    if gpsd:
        def gpsd_reader(w: Path):
            port = _free_port()
            p = _Process(w, lambda dev: [gpsd, "-N", "-n", "-b", "-S", str(port),
                                         "-F", str(w / "gpsd.sock"), dev], None)  # fmt: skip
            return p, (lambda: True), p.proc.pid

        readers["gpsd (reference decoder)"] = gpsd_reader
    readers["bare pynmea2.parse loop"] = pynmea2
    best: dict[str, float] = {}
    for r in range(args.rounds):
        for name, start in readers.items():
            cpu = _cpu_reading(start, ride, work / f"ingest-{r}-{len(best)}-{name.split()[0]}")
            best[name] = min(cpu, best.get(name, cpu))
    n = ride.sentences
    us = {name: 1e6 * cpu / n for name, cpu in best.items()}
    ours = us["tracker run (decode and store)"]
    rows: list[Row] = []
    for name, v in us.items():
        row: Row = {"part": "ingest", "what": name, "value": round(v, 2), "unit": "µs/sentence"}
        if name != "tracker run (decode and store)":
            row["ratio"] = round(ours / v, 2)
            row["note"] = f"tracker run / {name.split()[0]}"
        rows.append(row)
    end = ride.data.index(b"\n", ride.data.index(b"VTG"))  # an epoch ends with its VTG
    epoch = ride.data[:end].split(b"\n")
    shape = " ".join(line[3:6].decode() for line in epoch)
    rows.append({"part": "ingest", "what": f"the ride: {ride.epochs} epochs at 10 Hz",
                 "value": n, "unit": f"sentences ({shape})"})  # fmt: skip
    if not gpsd:
        rows.append({"part": "ingest", "what": "gpsd", "value": None,
                     "note": "not installed: apt-get install gpsd"})  # fmt: skip
    return rows


# -- wear, idle and live: real time, run side by side ----------------------------------------

LEAN_WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA page_size = 1024")
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA synchronous = FULL")
conn.execute("CREATE TABLE fix (id INTEGER PRIMARY KEY, time REAL, lat REAL, lon REAL, alt REAL,"
             " speed REAL, course REAL, quality INTEGER, sats INTEGER, hdop REAL)")
print("ready", flush=True)
for line in sys.stdin:
    t = float(line)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO fix (time, lat, lon, alt, speed, course, quality, sats, hdop) "
                 "VALUES (?, 47.1 + ?, 7.6, 512.3, 5.1, 181.2, 1, 9, 0.9)", (t, t * 1e-9))
    conn.execute("COMMIT")
    print(t, flush=True)
"""


WINDOWS = (1.0, 2.0, 5.0, 10.0)  # [storage] commit_interval_s values a rider may choose


def bench_wear(args: argparse.Namespace, work: Path) -> list[Row]:
    """Bytes written per fix, live at 1 Hz: tracker with the default settings (and with the
    other commit windows offered) against the lean design, all fed the same epochs together."""
    warm, n = 10, args.wear_fixes
    epochs = kit.ride_epochs(warm + n + 2, 1.0)
    daemons = {w: kit.Daemon.start(work / f"wear-{w:g}", storage=f"commit_interval_s = {w}\n"
                                   if w != 1.0 else "") for w in WINDOWS}  # fmt: skip
    lean_db = work / "wear-lean" / "lean.db"
    lean_db.parent.mkdir(parents=True)
    lean = subprocess.Popen([sys.executable, "-c", LEAN_WRITER, str(lean_db)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert lean.stdout is not None and lean.stdin is not None
        lean.stdout.readline()
        pids = {**{w: d.proc.pid for w, d in daemons.items()}, "lean": lean.pid}
        marks: dict[object, list[int]] = {k: [] for k in pids}
        t0 = time.monotonic()
        for i, data in enumerate(epochs):
            time.sleep(max(0.0, t0 + i - time.monotonic()))
            for d in daemons.values():
                d.feed(data)
            lean.stdin.write(f"{1.78e9 + i}\n")
            lean.stdin.flush()
            lean.stdout.readline()
            if i in (warm, warm + n):
                # The fix of epoch i-1 is stored by now (the window is 1 s; give it 0.5 s more).
                time.sleep(0.5)
                for k, pid in pids.items():
                    marks[k].append(kit.written_of(pid))
        kb = {k: (v[1] - v[0]) / n / 1024 for k, v in marks.items()}
    finally:
        for d in daemons.values():
            d.stop()
        lean.stdin.close()  # type: ignore[union-attr]
        lean.wait(timeout=10)
    lean_kb = kb["lean"]
    rows: list[Row] = []
    for w in WINDOWS:
        default = w == 1.0
        row: Row = {"part": "wear", "what": f"tracker run, 1 Hz live, commit_interval_s = {w:g}"
                    + (" (default)" if default else ""), "value": round(kb[w], 2),
                    "unit": "KiB written/fix",
                    "note": f"{kb[w] * 86400 / 1024:.0f} MB a day at 1 Hz"}  # fmt: skip
        if default:
            row["ratio"] = round(kb[w] / lean_kb, 2) if lean_kb else float("nan")
            row["note"] = "tracker / lean; " + str(row["note"])
        rows.append(row)
    rows.append({"part": "wear", "what": "lean design (rowid table, WAL, FULL, 1 KiB pages)",
                 "value": round(lean_kb, 2), "unit": "KiB written/fix",
                 "note": f"{lean_kb * 86400 / 1024:.0f} MB a day at 1 Hz"})  # fmt: skip
    return rows


def bench_idle(args: argparse.Namespace, work: Path) -> list[Row]:
    """CPU over args.idle_s with the GPS silent and both backends configured, nothing to send."""
    from tracker.testing.gpsr import GpsrServer
    from tracker.testing.mapmytracks import MapMyTracksServer

    mmt = MapMyTracksServer(users={"rider": "pw"}).start()
    gpsr = GpsrServer(users={"rider": "web"})
    gpsr.make_token("rider", "post", 0, 4_000_000_000, key="tok")
    gpsr.start()
    extra = (f'[mapmytracks]\nurl = "{mmt.url}"\nusername = "rider"\npassword = "pw"\n\n'
             f'[gpsr]\nurl = "{gpsr.url}"\ntoken = "tok"\n')  # fmt: skip
    d = kit.Daemon.start(work / "idle", extra)
    try:
        time.sleep(5)  # the senders' first checks and the first runtime rows
        cpu0 = kit.cpu_of(d.proc.pid)
        time.sleep(args.idle_s)
        cpu = kit.cpu_of(d.proc.pid) - cpu0
    finally:
        d.stop()
        mmt.stop()
        gpsr.stop()
    return [{"part": "idle", "what": f"tracker run, GPS silent, 2 backends, {args.idle_s:g} s",
             "value": round(cpu, 3), "unit": "s CPU", "note": "target < 0.05 s over 60 s"}]


def bench_live(args: argparse.Namespace, work: Path) -> list[Row]:
    """CPU share of one core at 10 Hz written in real time, no backend."""
    seconds = args.live_s
    epochs = kit.ride_epochs(int(seconds * 10) + 50, 10.0)
    d = kit.Daemon.start(work / "live")
    try:
        for data in epochs[:50]:  # warm-up: the first commits, the activity's start
            d.feed(data)
            time.sleep(0.1)
        cpu0, t0 = kit.cpu_of(d.proc.pid), time.monotonic()
        for i, data in enumerate(epochs[50:]):
            time.sleep(max(0.0, t0 + i / 10 - time.monotonic()))
            d.feed(data)
        share = (kit.cpu_of(d.proc.pid) - cpu0) / (time.monotonic() - t0)
    finally:
        d.stop()
    return [{"part": "live", "what": "tracker run at 10 Hz in real time (5 sentence types)",
             "value": round(100 * share, 2), "unit": "% of one core", "note": "target < 1 %"}]


def run_side_by_side(parts: list[Callable[[], list[Row]]]) -> list[Row]:
    """Real-time benchmarks run together: each waits on the clock, not the CPU."""
    results: list[list[Row]] = [[] for _ in parts]
    errors: list[BaseException] = []

    def run(i: int, part: Callable[[], list[Row]]) -> None:
        try:
            results[i] = part()
        except BaseException as e:  # reported after the others finish
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, p)) for i, p in enumerate(parts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [row for rows in results for row in rows]


# -- memory, start-up, drain: the existing benchmarks -----------------------------------------


def bench_memory(args: argparse.Namespace, work: Path) -> list[Row]:
    from tracker.testing import soak

    (work / "memory").mkdir()
    samples = soak.soak(int(args.memory_hours * 3600 * 10), 10.0, work / "memory")
    q = soak.quarters(samples)
    growth = q[-1].rss_kb - q[1].rss_kb
    peak = max(s.rss_kb for s in samples)
    return [
        {"part": "memory", "what": f"peak RSS, {args.memory_hours:g} h at 10 Hz replayed fast, "
         "2 backends with faults, simulated sensor", "value": round(peak / 1024, 1),
         "unit": "MB", "note": "target < 32 MB"},
        {"part": "memory", "what": "RSS growth, 2nd to last quarter",
         "value": round(growth / 1024, 2), "unit": "MB", "note": "target: flat"},
    ]  # fmt: skip


def bench_startup(args: argparse.Namespace, work: Path) -> list[Row]:
    out = subprocess.run([sys.executable, str(kit.ROOT / "scripts" / "bench_startup.py"),
                          "--runs", str(args.startup_runs), "--json"], cwd=kit.ROOT,
                         capture_output=True, text=True, check=True)  # fmt: skip
    data = json.loads(out.stdout.strip().splitlines()[-1])
    floor = data["python -c pass"]
    rows: list[Row] = [{"part": "startup", "what": "python -c pass", "value": round(floor * 1e3, 1),
                        "unit": "ms CPU"}]  # fmt: skip
    for name, target in (("tracker --help", 3), ("tracker status", 6)):
        rows.append({"part": "startup", "what": name, "value": round(data[name] * 1e3, 1),
                     "unit": "ms CPU", "ratio": round(data[name] / floor, 2),
                     "note": f"/ python -c pass; target <= {target}x"})  # fmt: skip
    return rows


def bench_drain(args: argparse.Namespace, work: Path) -> list[Row]:
    out = subprocess.run([sys.executable, str(kit.ROOT / "scripts" / "bench_sender.py"),
                          "--points", str(args.drain_points), "--dir", str(work), "--json"],
                         cwd=kit.ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return [{"part": "drain", "what": f"{args.drain_points} queued fixes to Map My Tracks",
             "value": round(data["points_per_s"]), "unit": "fixes/s",
             "ratio": round(data["speedup"], 1),
             "note": "/ one request per point; target >= 50x"}]  # fmt: skip


PARTS = ("ingest", "realtime", "memory", "startup", "drain")


def machine() -> dict[str, object]:
    model = ""
    for path in ("/proc/device-tree/model", "/sys/devices/virtual/dmi/id/product_name"):
        try:
            model = Path(path).read_text().strip("\0\n ")
            break
        except OSError:
            pass
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith(("model name", "Model"))), platform.machine())  # fmt: skip
    revision = subprocess.run(["git", "-C", str(kit.ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
    return {"cpu": cpu, "cores": os.cpu_count(), "model": model,
            "python": platform.python_version(), "kernel": platform.release(),
            "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "revision": revision}  # fmt: skip


def table(rows: list[Row]) -> str:
    lines = ["| part | what | value | ratio | note |", "|---|---|---|---|---|"]
    for r in rows:
        value = "-" if r.get("value") is None else f"{r['value']} {r.get('unit', '')}".strip()
        ratio = f"{r['ratio']}x" if "ratio" in r else ""
        lines.append(f"| {r['part']} | {r['what']} | {value} | {ratio} | {r.get('note', '')} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
    ap.add_argument("--quick", action="store_true", help="small sizes (a minute or two in all)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epoch", choices=("multi-gnss", "gps"), default="multi-gnss",
                    help="ingest's epoch: RMC GGA, GSA and GSV for GPS and GLONASS (two GSA, "
                         "four GSV), VTG; or GPS alone (one GSA, three or four GSV)")  # fmt: skip
    args = ap.parse_args()
    q = args.quick
    args.epochs = 2_000 if q else 20_000
    args.rounds = 1 if q else args.rounds
    args.wear_fixes, args.idle_s, args.live_s = (20, 15.0, 15.0) if q else (80, 60.0, 60.0)
    args.memory_hours = 0.1 if q else 2.0
    args.startup_runs = 3 if q else 10
    args.drain_points = 5_000 if q else 100_000
    wanted = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        ap.error(f"--only: unknown part(s) {', '.join(unknown)}; expected {', '.join(PARTS)}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp:
        work = Path(tmp)
        for part in wanted:
            print(f"bench: {part} ...", file=sys.stderr, flush=True)
            try:
                if part == "realtime":
                    rows += run_side_by_side([lambda: bench_wear(args, work),
                                              lambda: bench_idle(args, work),
                                              lambda: bench_live(args, work)])  # fmt: skip
                else:
                    rows += globals()[f"bench_{part}"](args, work)
            except (Exception, SystemExit) as e:  # one broken part must not lose the others
                print(f"bench: {part} failed: {e!r}", file=sys.stderr, flush=True)
                rows.append({"part": part, "what": "FAILED", "value": None, "note": repr(e)})
    info = machine()
    model = f", {info['model']}" if info["model"] else ""
    print(f"\nOn {info['cpu']} ({info['cores']} cores{model}), Python {info['python']}, "
          f"{info['at']}, tracker {info['revision']}:\n")  # fmt: skip
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
