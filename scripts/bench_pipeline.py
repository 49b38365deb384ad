#!/usr/bin/env python3
"""The whole ingest pipeline as a rider runs it: `tracker run` reading a pty, CPU and peak RSS,
this tree against a baseline revision measured in the same run.

One simulated ride (the bundled route, RMC, GGA, GSA and VTG at --rate Hz, --epochs epochs;
with --multi-gnss RMC, GGA, two GSA, four GSV and VTG, a GPS + GLONASS receiver's) is
generated once; every round, each tree gets a fresh database and a real `tracker run` process
(`python -m tracker` from that tree) that reads the bytes from a pseudo-terminal, written as fast
as it takes them. When every fix is stored, the process's CPU (user + system, from its rusage)
and peak RSS (VmHWM) are read and it is stopped with SIGTERM. Each figure is the minimum over
--rounds; ratios are this tree / the baseline. No backend is configured (sending is another
benchmark: scripts/bench_sender.py).

    .venv/bin/python scripts/bench_pipeline.py [--baseline REV] [--epochs 20000] [--rate 10]
        [--multi-gnss]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracker import simulate  # noqa: E402
from tracker.pty import PtyWriter  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from benchkit import cpu_of, rss_of, stored  # noqa: E402  (what every benchmark reads from /proc)


@dataclass
class Result:
    cpu_s: float
    rss_mb: float
    stored: int


def ride_bytes(epochs: int, rate: float, multi_gnss: bool = False) -> tuple[bytes, int]:
    sentences = ("RMC", "GGA", "GSA", "GSV", "VTG") if multi_gnss else ("RMC", "GGA", "GSA", "VTG")
    gen = simulate.simulate(
        simulate.demo_route(), rate_hz=rate, speed_mps=7.0, loops=0,
        start_time=datetime(2026, 6, 1, 8, tzinfo=UTC), sentences=sentences, glonass=multi_gnss,
    )  # fmt: skip
    eps = [e for _, e in zip(range(epochs), gen, strict=False)]
    return b"".join(e.data for e in eps), sum(e.valid for e in eps)


def run_once(tree: Path, data: bytes, valid: int, work: Path) -> Result:
    work.mkdir(parents=True)
    writer = PtyWriter.open(work / "gps0", timeout=5.0)
    db = work / "tracker.db"
    cfg = work / "tracker.toml"
    cfg.write_text(
        f'[gps]\ndevice = "{writer.path}"\nbaudrate = 115200\n\n[storage]\npath = "{db}"\n'
    )
    log = (work / "daemon.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker", "run", "-c", str(cfg)],
        cwd=tree, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while " open at " not in (work / "daemon.log").read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{tree}: the daemon never opened the GPS ({work}/daemon.log)")
            time.sleep(0.05)
        for i in range(0, len(data), 4096):
            writer.write(data[i : i + 4096])
        deadline = time.monotonic() + 300
        last, since = -1, time.monotonic()
        while (n := stored(db)) < valid and time.monotonic() < deadline:
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since > 10:
                break  # nothing new for 10 s: take what is there
            time.sleep(0.2)
        cpu, rss = cpu_of(proc.pid), rss_of(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        return Result(cpu, rss, stored(db))
    finally:
        if proc.poll() is None:
            proc.kill()
        writer.close()
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default="HEAD", help="git revision to compare with")
    ap.add_argument("--epochs", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--multi-gnss",
        action="store_true",
        help="a GPS + GLONASS receiver's epoch: RMC, GGA, two GSA, four GSV, VTG",
    )
    args = ap.parse_args()
    data, valid = ride_bytes(args.epochs, args.rate, args.multi_gnss)
    sentences = data.count(b"\n")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base),
                        args.baseline], check=True)  # fmt: skip
        try:
            trees = {"baseline": base, "this tree": ROOT}
            best: dict[str, Result] = {}
            for r in range(args.rounds):
                for name, tree in trees.items():
                    res = run_once(tree, data, valid, Path(tmp) / f"{r}-{name.replace(' ', '_')}")
                    old = best.get(name)
                    best[name] = Result(
                        min(res.cpu_s, old.cpu_s) if old else res.cpu_s,
                        min(res.rss_mb, old.rss_mb) if old else res.rss_mb,
                        res.stored,
                    )
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           check=False)  # fmt: skip
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline],
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    print(f"{args.epochs} epochs at {args.rate:g} Hz, {sentences} sentences, {valid} valid; "
          f"best of {args.rounds}")  # fmt: skip
    b = best["baseline"]
    for name, res in best.items():
        print(f"  {name:10s} CPU {res.cpu_s:6.2f} s ({1e6 * res.cpu_s / sentences:5.1f} µs a "
              f"sentence, {res.cpu_s / b.cpu_s:4.2f}x)  peak RSS {res.rss_mb:5.1f} MB "
              f"({res.rss_mb / b.rss_mb:4.2f}x)  stored {res.stored}")  # fmt: skip
    print(f"  baseline = {args.baseline} ({rev})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
