"""The status page under a long flood: a real `tracker run` (open-file limit 1024, as the
unit) reading a 10 Hz ride in real time, its page flooded in waves (half-open connections and
bursts of whole requests) while a browser-like client polls it; the daemon's CPU against the
same run's quiet phase, its peak RSS, threads and descriptors, the fixes lost and the polls'
latency. The suite runs a short form with assertions (tests/test_web_flood.py); this prints.

    .venv/bin/python scripts/bench_web_flood.py [--seconds 60] [--half-open 1500] [--burst 500]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchkit import Daemon, cpu_of, ride_epochs, stored, wait_until

GET = b"GET /api/status HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def request(addr: tuple[str, int]) -> float | None:
    """One whole request; its latency in seconds, or None when it got no complete reply."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(addr, timeout=30) as s:
            s.sendall(GET)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    return time.monotonic() - t0 if data.startswith(b"HTTP/1.1 200") else None


def wave(addr: tuple[str, int], half_open: int, burst: int) -> tuple[int, int]:
    """Half-open connections (half a head or nothing), then a burst; (answered, asked)."""
    held = []
    for i in range(half_open):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(addr)
        held.append((s, i % 2 == 1))
    time.sleep(0.2)  # let the handshakes complete before half a head goes out
    for s, partial in held:
        if partial:
            with contextlib.suppress(OSError):
                s.send(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")
    with ThreadPoolExecutor(25) as pool:
        got = list(pool.map(lambda _: request(addr), range(burst)))
    for s, _ in held:
        s.close()
    return sum(g is not None for g in got), burst


def proc_counts(pid: int) -> tuple[int, int, float]:
    """Threads, open descriptors and current RSS (MB) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return (int(fields["Threads"]), len(os.listdir(f"/proc/{pid}/fd")),
            int(fields["VmRSS"].split()[0]) / 1024)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="of flood (and as long quiet)")
    p.add_argument("--half-open", type=int, default=1500)
    p.add_argument("--burst", type=int, default=500)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = ("127.0.0.1", port)
    rate = 10.0
    epochs = ride_epochs(int(rate * (2 * args.seconds + 30)), rate)
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon.start(Path(tmp), f'[web]\nlisten = "127.0.0.1:{port}"\n',
                         storage="commit_interval_s = 1.0")  # fmt: skip
        try:
            subprocess.run(["prlimit", f"--pid={d.proc.pid}", "--nofile=1024:1024"], check=True)
            wait_until(lambda: "status page at" in d.log.read_text(), 30, "the page")
            fed = 0
            stop = threading.Event()

            def feed() -> None:  # the receiver at its own pace, flood or not
                nonlocal fed
                t0 = time.monotonic()
                while fed < len(epochs) and not stop.is_set():
                    d.gps.write(epochs[fed])
                    fed += 1
                    stop.wait(max(0.0, t0 + fed / rate - time.monotonic()))

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            peak = [0, 0, 0.0]

            def phase(seconds: float, flood: bool) -> dict[str, object]:
                """A browser polling every 0.5 s and /proc sampled, with or without waves."""
                polls: list[float | None] = []
                answered = asked = 0
                done = threading.Event()

                def browser() -> None:
                    while not done.wait(0.5):
                        polls.append(request(addr))

                def sampler() -> None:
                    while not done.wait(0.05):
                        for i, v in enumerate(proc_counts(d.proc.pid)):
                            peak[i] = max(peak[i], v)

                helpers = [threading.Thread(target=browser), threading.Thread(target=sampler)]
                for h in helpers:
                    h.start()
                c0, t0 = cpu_of(d.proc.pid), time.monotonic()
                while time.monotonic() - t0 < seconds:
                    if flood:
                        a, n = wave(addr, args.half_open, args.burst)
                        answered, asked = answered + a, asked + n
                    else:
                        done.wait(0.5)
                wall = time.monotonic() - t0
                cpu = cpu_of(d.proc.pid) - c0
                done.set()
                for h in helpers:
                    h.join()
                ok = [x for x in polls if x is not None]
                return {"cpu_per_s": cpu / wall, "polls": len(polls),
                        "polls_failed": len(polls) - len(ok),
                        "poll_median_s": statistics.median(ok) if ok else float("nan"),
                        "poll_max_s": max(ok, default=float("nan")),
                        "burst_answered": answered, "burst_asked": asked}  # fmt: skip

            lines0 = len(d.log.read_text().splitlines())
            quiet = phase(args.seconds, flood=False)
            flooded = phase(args.seconds, flood=True)
            lines = len(d.log.read_text().splitlines()) - lines0
            stop.set()
            feeder.join()
            wait_until(lambda: stored(d.db) >= fed, 30, "every fix fed stored")
            kept = stored(d.db)
        finally:
            d.stop()
    print(f"fixes fed {fed}, stored {kept}")
    for name, ph in (("quiet", quiet), ("flooded", flooded)):
        print(f"{name:8} CPU {ph['cpu_per_s']:.3f} s/s, polls {ph['polls']} "
              f"({ph['polls_failed']} failed), median {ph['poll_median_s']:.3f} s, "
              f"max {ph['poll_max_s']:.3f} s, burst {ph['burst_answered']}/{ph['burst_asked']}")
    ratio = flooded["cpu_per_s"] / quiet["cpu_per_s"] if quiet["cpu_per_s"] else float("inf")
    print(f"CPU flooded / quiet: {ratio:.1f}x; peak threads {peak[0]}, descriptors {peak[1]}, "
          f"RSS {peak[2]:.1f} MB; {lines} log lines")


if __name__ == "__main__":
    main()
