#!/usr/bin/env python3
"""What draining a backlog to Map My Tracks costs: points a second, HTTP requests per 1,000
points and bytes on the wire per point, batched against one request per point.

A store gets N fixes in one activity (1 Hz GPS times, so the sender thins none of them; no
sensor samples), the activity is ended, and the real MapMyTracksSender (offline_upload off,
interval 0) drains it to the project's Map My Tracks test server on 127.0.0.1 with no faults:
get_time, start_activity, update_activity until every fix is acknowledged, stop_activity. The
sender is stepped in this thread (`Sender.step`, the body of its loop, which never waits at
interval 0), so the time is the sender's work, the server's and the loopback's, nothing else.

Bytes are counted at the server, by wrapping its connection's reader and writer: request bytes
are what the sender sent (request line, headers including basic auth, body), reply bytes what
came back. TCP/IP and TLS overhead are not included (the test server is plain http).

The batched run has the rider's settings: requests of `batch_max_points` (--batch) that grow
to `catch_up_max_points` (1000) while a backlog drains. The baseline, one request per point
(batch_max_points = catch_up_max_points = 1), is measured in the same run on
fewer points (--baseline-points, 5,000 by default: at a request per point 100,000 would take
minutes) and compared per point. Both runs share the machine: the server runs in this process,
so its CPU competes with the sender's. Nothing here asserts anything; the ratios are the point.

    .venv/bin/python scripts/bench_sender.py [--points 100000] [--baseline-points 5000]
                                             [--batch 100]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracker.fix import Fix  # noqa: E402
from tracker.senders.mapmytracks import NAME, MapMyTracksSender, Settings  # noqa: E402
from tracker.store import open_store  # noqa: E402
from tracker.testing import faults as faults_module  # noqa: E402
from tracker.testing.mapmytracks import MapMyTracksServer  # noqa: E402

USER, PASSWORD = "rider", "secret"
T0 = 1_780_000_000.0
FILL_CHUNK = 10_000


class _Counting:
    """A file object that counts the bytes read from or written to it."""

    def __init__(self, inner: Any, counter: ByteCounter, kind: str) -> None:
        self._inner = inner
        self._counter = counter
        self._kind = kind

    def _count(self, data: Any) -> Any:
        if data:
            self._counter.add(self._kind, len(data))
        return data

    def read(self, *args: Any) -> bytes:
        return self._count(self._inner.read(*args))

    def readline(self, *args: Any) -> bytes:
        return self._count(self._inner.readline(*args))

    def write(self, data: bytes) -> int:
        self._count(data)
        return self._inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class ByteCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes = {"request": 0, "reply": 0}
        self.connections = 0

    def add(self, kind: str, n: int) -> None:
        with self._lock:
            self.bytes[kind] += n

    def reset(self) -> None:
        with self._lock:
            self.bytes = {"request": 0, "reply": 0}
            self.connections = 0


def counting_server(counter: ByteCounter) -> MapMyTracksServer:
    """The test server, unchanged, with its request handler wrapped to count bytes."""

    class CountingHandler(faults_module._Handler):
        def setup(self) -> None:
            super().setup()
            with counter._lock:
                counter.connections += 1
            self.rfile = _Counting(self.rfile, counter, "request")
            self.wfile = _Counting(self.wfile, counter, "reply")

    server = MapMyTracksServer(users={USER: PASSWORD}).start()
    assert server._httpd is not None
    server._httpd.RequestHandlerClass = CountingHandler  # before any client connects
    return server


@dataclass
class Result:
    name: str
    points: int
    requests: int
    connections: int
    request_bytes: int
    reply_bytes: int
    wall_s: float
    steps: int

    @property
    def per_1000(self) -> float:
        return 1000.0 * self.requests / self.points

    @property
    def request_bytes_per_point(self) -> float:
        return self.request_bytes / self.points

    @property
    def reply_bytes_per_point(self) -> float:
        return self.reply_bytes / self.points

    @property
    def points_per_s(self) -> float:
        return self.points / self.wall_s


def bench_fix(i: int) -> Fix:
    """The i-th fix: one a second, ~0.1 m apart, the altitude varying (realistic encodings)."""
    t = T0 + i
    return Fix(t, 51.0 + i * 1e-6, 1.0 + i * 1e-6, 10.0 + (i % 500) * 0.1, speed=7.0,
               course=90.0, quality=1, sats=10, hdop=0.8)  # fmt: skip


def fill(db: Path, n: int) -> int:
    """n fixes at 1 Hz in one ended activity; returns its id."""
    store = open_store(db)
    try:
        a = store.start_activity("Bench ride", "cycling", "private", (), T0)
        for lo in range(0, n, FILL_CHUNK):
            store.add_fixes(a.id, [bench_fix(i) for i in range(lo, min(n, lo + FILL_CHUNK))])
        store.end_activity(a.id, T0 + n, "bench")
        return a.id
    finally:
        store.close()


def run(
    name: str, root: Path, points: int, batch: int, counter: ByteCounter, catch_up: int
) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix="bench-sender-", dir=root))
    server = None
    sender = None
    try:
        db = workdir / "tracker.db"
        aid = fill(db, points)
        counter.reset()
        server = counting_server(counter)
        options = Settings(url=server.url, username=USER, batch_max_points=batch, interval_s=0.0,
                          catch_up_max_points=catch_up, offline_upload="off")  # fmt: skip
        sender = MapMyTracksSender(options, threading.Event(),
                                   lambda: open_store(db, check=False),
                                   secret=lambda: PASSWORD)  # fmt: skip
        steps = 0
        started = time.perf_counter()
        while True:
            sender.step()
            steps += 1
            assert sender.store is not None
            if sender.store.get_state(NAME).get("done_through", 0) >= aid:
                break
            if sender.status.state in ("retrying", "disabled"):
                raise SystemExit(f"{name}: the sender failed: {sender.status}")
        wall = time.perf_counter() - started
        left = sender.store.pending().get(NAME)
        if left:
            raise SystemExit(f"{name}: {left} fixes still pending after the drain")
        (remote,) = server.activities.values()
        if len(remote.points) != points or remote.live:
            raise SystemExit(f"{name}: the server holds {len(remote.points)} of {points} points")
        return Result(
            name, points, server.count(), counter.connections, counter.bytes["request"],
            counter.bytes["reply"], wall, steps,
        )  # fmt: skip
    finally:
        if sender is not None:
            sender.close()
            if sender.store is not None:
                sender.store.close()
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=100_000, help="queued fixes (default 100000)")
    p.add_argument("--baseline-points", type=int, default=5_000,
                   help="fixes for the one-request-per-point baseline (default 5000)")  # fmt: skip
    p.add_argument("--batch", type=int, default=Settings.batch_max_points,
                   help="batch_max_points of the batched run (default %(default)s)")  # fmt: skip
    p.add_argument("--dir", type=Path, default=None, help="where the databases go (default tmp)")
    p.add_argument("--json", action="store_true",
                   help="end with one line of JSON: points/s, speed-up (scripts/bench)")
    args = p.parse_args()
    if min(args.points, args.baseline_points, args.batch) < 1:
        p.error("--points, --baseline-points and --batch must be positive")

    logging.basicConfig(level=logging.ERROR)  # not the plain-http warning: it is loopback
    counter = ByteCounter()
    root = Path(tempfile.mkdtemp(prefix="bench-sender-", dir=args.dir))
    try:
        batched = run(f"batched ({args.batch} to {Settings.catch_up_max_points})", root,
                      args.points, args.batch, counter, Settings.catch_up_max_points)  # fmt: skip
        base = run("one per point (1)", root, args.baseline_points, 1, counter, 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        "Map My Tracks sender draining a backlog to the local test server (no faults)"
    )
    print(f"{'run':<20} {'points':>8} {'requests':>8} {'req/1000 pts':>12} {'conns':>5} "
          f"{'req B/pt':>9} {'reply B/pt':>10} {'points/s':>9} {'wall s':>7}")  # fmt: skip
    for r in (batched, base):
        print(f"{r.name:<20} {r.points:>8} {r.requests:>8} {r.per_1000:>12.2f} "
              f"{r.connections:>5} {r.request_bytes_per_point:>9.1f} "
              f"{r.reply_bytes_per_point:>10.1f} {r.points_per_s:>9.0f} "
              f"{r.wall_s:>7.2f}")  # fmt: skip
    print(f"baseline measured on {base.points} points and compared per point; the batched run "
          f"on {batched.points}")  # fmt: skip
    print("ratios, baseline / batched (per point):")
    ratios = (
        ("requests", base.per_1000 / batched.per_1000, "fewer batched"),
        ("request bytes", base.request_bytes_per_point / batched.request_bytes_per_point,
         "fewer batched"),
        ("reply bytes", base.reply_bytes_per_point / batched.reply_bytes_per_point,
         "fewer batched"),
        ("points per second", batched.points_per_s / base.points_per_s, "faster batched"),
    )  # fmt: skip
    for what, ratio, meaning in ratios:
        print(f"  {what:<18} x{ratio:.1f} {meaning}")
    if args.json:
        print(json.dumps({"points_per_s": batched.points_per_s, "speedup": ratios[3][1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
