#!/usr/bin/env python3
"""A fleet on one broker: N simulated units publishing 1 Hz to one Mosquitto on this machine,
through the real [mqtt] sender, each with its own store file. Messages a second held, the
broker's and the senders' CPU, and nothing lost.

Each unit is a real MqttSender running its real loop (`Sender.run`) in its own thread, with its
own SQLite store (WAL, synchronous=FULL, as on a unit) and its own client id and topic
(`bench/unit<i>`); 25 units share a process (--per-process), whose feeder thread stores one fix
per unit per tick (1 s at --rate 1; GPS times are whole seconds counted per unit, so each fix
is its own location message). QoS 1 by
default. A `mosquitto_sub` process subscribed to `bench/#` writes what it gets to a file, so
counting costs this process nothing; at the end every unit's received `tst` set is compared
with what it stored. The broker is a fresh Mosquitto with its own config, persistence on,
anonymous on 127.0.0.1.

CPU: the broker's from /proc/<pid>/stat; the senders' as the unit processes' CPU time (every
sender thread and the feeders, which stand in for the recorder's commits), over the measured
part of the run (after --warmup seconds). Both as a percentage of one core.

    .venv/bin/python scripts/bench_mqtt.py [--units 200] [--seconds 180] [--qos 1]
                                           [--rate 1] [--warmup 10] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracker.fix import Fix  # noqa: E402
from tracker.senders.mqtt import NAME, MqttSender, Settings  # noqa: E402
from tracker.store import open_store  # noqa: E402

MOSQUITTO = "/usr/sbin/mosquitto"
T0 = 1_780_000_000  # the first GPS second of every unit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(directory: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    (directory / "data").mkdir(parents=True, exist_ok=True)
    conf = directory / "mosquitto.conf"
    conf.write_text("\n".join([
        f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence true",
        f"persistence_location {directory / 'data'}/", f"log_dest file {directory / 'log'}",
        "max_queued_messages 0", "max_connections -1",
        "user root" if os.geteuid() == 0 else "",
    ]) + "\n")  # fmt: skip
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"mosquitto did not start (see {directory / 'log'})") from None
            time.sleep(0.05)


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Result:
    units: int
    seconds: float
    stored: int
    received: int
    lost: int
    duplicates: int
    msgs_per_s: float  # received, over the measured part
    broker_cpu_pct: float
    senders_cpu_pct: float
    drain_s: float  # after the feeder stopped, until every unit's backlog was 0

    def report(self) -> str:
        return "\n".join([
            f"units {self.units}, {self.seconds:g} s at 1 fix/s each",
            f"stored {self.stored} fixes, subscriber received {self.received} locations",
            f"lost {self.lost}, duplicates {self.duplicates}",
            f"held {self.msgs_per_s:.1f} messages/s "
            f"({self.msgs_per_s / max(1, self.units):.2f} per unit)",
            f"broker CPU {self.broker_cpu_pct:.1f} % of one core",
            f"senders CPU {self.senders_cpu_pct:.1f} % of one core (all units and the "
            f"feeder; {10 * self.senders_cpu_pct / max(1, self.units):.2f} ms/s per unit)",
            f"backlog drained {self.drain_s:.1f} s after the last fix",
        ])  # fmt: skip


def unit_worker(first: int, count: int, url: str, qos: int, rate_hz: float, ticks: int,
                start_at: float, warm_at: float, directory: str, out: Any) -> None:  # fmt: skip
    """One process hosting units first..first+count-1: their senders (threads) and a feeder
    storing one fix per unit per tick from wall time `start_at`. Sends back its CPU seconds at
    `warm_at` and after the last tick, and how long its backlogs took to drain.

    Several processes rather than one: paho's loop() uses select(), which takes file
    descriptors below 1024 only, and 200 units' stores and sockets in one process pass that
    (a unit runs one sender, far below it)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    base = Path(directory)
    stop = threading.Event()
    writers, threads = [], []
    for i in range(first, first + count):
        db = base / f"unit{i}.db"
        w = open_store(db)
        w.register_backend(NAME, "all")
        writers.append(w)
        o = Settings(url=url, topic=f"bench/unit{i}", qos=qos, events=False, interval_s=1.0)
        sender = MqttSender(o, stop, lambda db=db: open_store(db, check=False))
        t = threading.Thread(target=sender.run, name=f"unit{i}", daemon=True)
        t.start()
        threads.append(t)
    cpu_warm = None
    for k in range(ticks):
        time.sleep(max(0.0, start_at + k / rate_hz - time.time()))
        if cpu_warm is None and time.time() >= warm_at:
            cpu_warm = time.process_time()
        fix = Fix(T0 + k, 48.0 + k * 1e-5, 11.0, alt=500.0, speed=6.0, course=90.0, hdop=0.9)
        for w in writers:
            w.add_fixes(None, [fix])
    cpu_end = time.process_time()
    last = time.monotonic()
    deadline = last + 120
    while any(w.pending().get(NAME) for w in writers) and time.monotonic() < deadline:
        time.sleep(0.1)
    drain = time.monotonic() - last
    left = sum(w.pending().get(NAME, 0) for w in writers)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    for w in writers:
        w.close()
    out.send({"cpu_warm": cpu_warm or 0.0, "cpu_end": cpu_end, "drain": drain, "left": left})


def run(units: int, seconds: float, *, qos: int = 1, rate_hz: float = 1.0,
        warmup_s: float = 10.0, directory: Path | None = None,
        per_process: int = 25) -> Result:  # fmt: skip
    import multiprocessing

    own = directory is None
    base = Path(tempfile.mkdtemp(prefix="bench-mqtt-")) if directory is None else directory
    base.mkdir(parents=True, exist_ok=True)
    broker, port = start_broker(base / "broker")
    received_file = base / "received.txt"
    ticks = int(seconds * rate_hz)
    procs, pipes = [], []
    sub = None
    try:
        with received_file.open("wb") as out:
            sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q",
                                    "1", "-t", "bench/#", "-v", "-i", "bench-subscriber"],
                                   stdout=out, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(0.5)  # the subscription in place before the first publish
        ctx = multiprocessing.get_context("spawn")
        start_at = time.time() + 3.0 + units / 50  # every process up, every unit connected
        warm_at = start_at + warmup_s
        for first in range(0, units, per_process):
            count = min(per_process, units - first)
            mine, theirs = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=unit_worker, args=(
                first, count, f"mqtt://127.0.0.1:{port}", qos, rate_hz, ticks, start_at,
                warm_at, str(base), theirs))  # fmt: skip
            proc.start()
            procs.append(proc)
            pipes.append(mine)
        time.sleep(max(0.0, warm_at - time.time()))
        warm = (time.monotonic(), cpu_of(broker.pid), _count(received_file))
        time.sleep(max(0.0, start_at + (ticks - 1) / rate_hz - time.time()))
        end = (time.monotonic(), cpu_of(broker.pid), _count(received_file))
        reports = [p.recv() for p in pipes]
        for proc in procs:
            proc.join(timeout=30)
        time.sleep(1.0)  # the subscriber's last deliveries
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        if sub is not None:
            stop_process(sub)
        stop_process(broker)

    per_unit: dict[str, list[int]] = {}
    for line in received_file.read_bytes().splitlines():
        topic, _, payload = line.partition(b" ")
        try:
            tst = json.loads(payload)["tst"]
        except (ValueError, KeyError):
            continue
        per_unit.setdefault(topic.decode(), []).append(tst)
    want = set(range(T0, T0 + ticks))
    lost = sum(len(want - set(per_unit.get(f"bench/unit{i}", []))) for i in range(units))
    received = sum(len(v) for v in per_unit.values())
    dups = sum(len(v) - len(set(v)) for v in per_unit.values())
    span = max(1e-9, end[0] - warm[0])
    result = Result(
        units=units, seconds=seconds, stored=units * ticks, received=received, lost=lost,
        duplicates=dups, msgs_per_s=(end[2] - warm[2]) / span,
        broker_cpu_pct=100 * (end[1] - warm[1]) / span,
        senders_cpu_pct=100 * sum(r["cpu_end"] - r["cpu_warm"] for r in reports) / span,
        drain_s=max(r["drain"] for r in reports),
    )  # fmt: skip
    if own:
        shutil.rmtree(base, ignore_errors=True)
    return result


def _count(path: Path) -> int:
    """Messages the subscriber wrote so far (one line each)."""
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--units", type=int, default=200)
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    p.add_argument("--rate", type=float, default=1.0, help="fixes a second per unit")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds not measured")
    p.add_argument(
        "--per-process",
        type=int,
        default=25,
        help="units a process (paho's select() takes descriptors below 1024)",
    )
    p.add_argument("--dir", type=Path, help="keep the stores and the broker's files here")
    args = p.parse_args(argv)
    if not Path(MOSQUITTO).exists() or shutil.which("mosquitto_sub") is None:
        print("needs Mosquitto: apt install mosquitto mosquitto-clients", file=sys.stderr)
        return 2
    r = run(args.units, args.seconds, qos=args.qos, rate_hz=args.rate,
            warmup_s=min(args.warmup, args.seconds / 2), directory=args.dir,
            per_process=args.per_process)  # fmt: skip
    print(r.report())
    return 0 if r.lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
