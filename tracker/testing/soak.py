"""A soak: a long ride replayed fast through a pty into a real `tracker run`, both test servers
injecting every fault, while the daemon's resident memory, threads and open files are sampled.
A daemon that runs for days must not grow: each is compared between the second and the last
quarter of the ride (the first quarter is warm-up: imports, caches, the store's first pages).

    python -m tracker.testing.soak [--hours 2] [--rate 10]     (scripts/soak runs this)

The suite runs a short form (tests/test_soak.py). Nothing here asserts a wall-clock time.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tracker import simulate
from tracker.pty import PtyWriter
from tracker.testing.faults import ALL_KINDS, Faults
from tracker.testing.gpsr import GpsrServer
from tracker.testing.mapmytracks import MapMyTracksServer

USER, PASSWORD, TOKEN = "rider", "soak-pw", "soak-token"
RATES = {"reset": 0.02, "fail_500": 0.02, "retry_after": 0.01, "html": 0.02, "drop_reply": 0.03,
         "truncate": 0.02, "slow": 0.02}  # fmt: skip


@dataclass(frozen=True)
class Sample:
    epoch: int  # epochs written so far
    rss_kb: int
    threads: int
    fds: int


@dataclass(frozen=True)
class Quarter:
    rss_kb: int  # the largest seen in the quarter
    threads: int
    fds: int


def _proc(pid: int) -> tuple[int, int, int]:
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, threads, len(os.listdir(f"/proc/{pid}/fd"))


def _faults(seed: int) -> Faults:
    """Every kind the servers know (the hostile replies too), at a few percent each."""
    rates: dict[str, Any] = {k: RATES.get(k, 0.01) for k in ALL_KINDS}  # **kwargs, mixed types
    return Faults(seed=seed, slow_s=0.5, retry_after_s=1, trickle_s=0.5, **rates)


def soak(
    epochs: int, rate_hz: float = 10.0, workdir: Path | None = None, speedup: float = 60.0
) -> list[Sample]:
    """Replay `epochs` epochs at `speedup` times real time into a daemon sending to both
    test servers with every fault on; the samples taken every quarter second meanwhile."""
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    work = Path(tmp.name) if tmp else workdir
    assert work is not None
    mmt = MapMyTracksServer(users={USER: PASSWORD}, faults=_faults(1)).start()
    gpsr = GpsrServer(users={USER: "web"}, faults=_faults(2)).start()
    gpsr.make_token(USER, "post", 0, 4_000_000_000, key=TOKEN)
    writer = PtyWriter.open(work / "gps0", timeout=5.0)
    cfg = work / "tracker.toml"
    timeouts = "connect_timeout_s = 1\nread_timeout_s = 1\nbackoff_max_s = 1\ninterval_s = 1\n"
    cfg.write_text(
        f'[gps]\ndevice = "{writer.path}"\nbaudrate = 115200\n\n'
        f'[storage]\npath = "{work / "tracker.db"}"\n\n[activity]\nstart = "always"\n\n'
        f'[mapmytracks]\nurl = "{mmt.url}"\nusername = "{USER}"\npassword = "{PASSWORD}"\n'
        f"{timeouts}\n"
        f'[gpsr]\nurl = "{gpsr.url}"\ntoken = "{TOKEN}"\n{timeouts}\n'
        '[[sensors]]\ntype = "simulated"\n'
    )
    log = (work / "daemon.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "tracker", "run", "-c", str(cfg)],
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    samples: list[Sample] = []
    try:
        deadline = time.monotonic() + 30
        while " open at " not in (work / "daemon.log").read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the daemon never opened the GPS ({work}/daemon.log)")
            time.sleep(0.05)
        ride = simulate.simulate(
            simulate.demo_route(), rate_hz=rate_hz, speed_mps=7.0, loops=0,
            start_time=datetime(2026, 6, 1, 8, tzinfo=UTC), seed=3,
        )  # fmt: skip
        written = [0]
        done = threading.Event()

        def sample() -> None:  # every quarter second of wall time while the ride plays
            while not done.wait(0.25):
                samples.append(Sample(written[0], *_proc(proc.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        def counted(e: simulate.Epoch) -> None:
            written[0] += 1

        simulate.run(itertools.islice(ride, epochs), writer.write, realtime=True,
                     speedup=speedup, progress=counted)  # fmt: skip
        done.set()
        sampler.join(timeout=5)
        samples.append(Sample(epochs, *_proc(proc.pid)))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        writer.close()
        mmt.stop()
        gpsr.stop()
        if tmp is not None:
            tmp.cleanup()
    return samples


def quarters(samples: list[Sample]) -> list[Quarter]:
    n = len(samples)
    out = []
    for q in range(4):
        part = samples[q * n // 4 : (q + 1) * n // 4] or samples[-1:]
        out.append(Quarter(max(s.rss_kb for s in part), max(s.threads for s in part),
                           max(s.fds for s in part)))  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=2.0, help="of GPS time (default 2)")
    ap.add_argument("--rate", type=float, default=10.0, help="epochs a second (default 10)")
    ap.add_argument("--speedup", type=float, default=60.0, help="times real time (default 60)")
    args = ap.parse_args()
    epochs = int(args.hours * 3600 * args.rate)
    qs = quarters(soak(epochs, args.rate, speedup=args.speedup))
    print(f"{epochs} epochs at {args.rate:g} Hz, both backends, every fault on")
    for i, q in enumerate(qs, 1):
        print(f"  quarter {i}: peak RSS {q.rss_kb / 1024:6.1f} MB  threads {q.threads:3d}  "
              f"open files {q.fds:3d}")  # fmt: skip
    grew = qs[3].rss_kb - qs[1].rss_kb
    print(f"  last vs second quarter: RSS {grew / 1024:+.1f} MB, threads "
          f"{qs[3].threads - qs[1].threads:+d}, open files {qs[3].fds - qs[1].fds:+d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
