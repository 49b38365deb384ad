#!/usr/bin/env python3
"""CPU time per NMEA sentence: our Decoder against a bare pynmea2 loop and gpsd's gpsdecode.

Input: every line of every capture in ../shared/corpus/gpsd (comment header removed), i.e.
~12,000 sentences of ~60 real receivers, proprietary and broken ones included. Each contender
gets exactly the same lines:

  decoder   tracker.nmea.Decoder.feed() on the raw bytes in serial-sized chunks, one Decoder
            per capture, flush() at its end: framing, checksums, epochs, Fix objects.
  pynmea2   the baseline, `pynmea2.parse(line)` on each line (exceptions caught), nothing more.
  gpsdecode gpsd's decoder (Debian package gpsd-clients), if on PATH, in a child process fed
            the corpus repeated --gpsd-copies times; its CPU comes from RUSAGE_CHILDREN, minus
            the same for an empty input (process start-up). Twice: as is, writing the JSON
            reports the .chk files hold (~240 bytes a sentence), and with -m, which decodes
            everything the same way but prints nothing (only a table at the end): gpsd's
            decoding cost alone. gpsd does more than we do (satellite tables from GSV, error
            estimates, DOPs from satellite geometry), so this is a yardstick, not a race.

CPU time is process time (user + system), never wall-clock; each figure is the best of
--repeat runs, the usual way to filter out other load on the machine. Ratios are against the
pynmea2 loop measured in the same run.

    .venv/bin/python scripts/bench_ingest.py [--repeat 7] [--chunk 256] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pynmea2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracker.nmea import Decoder  # noqa: E402  (after the path set-up, for a plain checkout)

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "gpsd"


def load(corpus: Path) -> list[bytes]:
    """Each capture's bytes without its '#' comment lines."""
    captures = []
    for log in sorted(corpus.glob("*.log")):
        with log.open("rb") as f:
            captures.append(b"".join(line for line in f if not line.startswith(b"#")))
    return captures


def best_cpu(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def gpsdecode_cpu(cmd: list[str], data: bytes, repeat: int) -> float:
    """Best child CPU seconds of gpsdecode decoding `data`, start-up subtracted."""
    with tempfile.TemporaryFile() as full, tempfile.TemporaryFile() as empty:
        full.write(data)

        def run(f: object) -> float:
            f.seek(0)  # type: ignore[attr-defined]
            before = children_cpu()
            subprocess.run(cmd, stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return children_cpu() - before

        startup = min(run(empty) for _ in range(repeat))
        return max(min(run(full) for _ in range(repeat)) - startup, 0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--repeat", type=int, default=7, help="runs per contender; the best counts")
    ap.add_argument("--chunk", type=int, default=256, help="bytes per feed(), like a serial read")
    ap.add_argument("--gpsd-copies", type=int, default=20, help="corpus copies fed to gpsdecode")
    args = ap.parse_args()

    if not args.corpus.is_dir():
        print(f"no corpus at {args.corpus}", file=sys.stderr)
        return 2
    logging.disable(logging.WARNING)  # the corpus has deliberately bad input: no log spam
    captures = load(args.corpus)
    lines = [
        line.decode("utf-8", "replace")
        for data in captures
        for line in data.splitlines()
        if line.strip()
    ]
    n = len(lines)
    chunk = args.chunk
    fixes = 0

    def ours() -> None:
        nonlocal fixes
        fixes = 0
        for data in captures:
            dec = Decoder()
            for i in range(0, len(data), chunk):
                fixes += len(dec.feed(data[i : i + chunk]))
            fixes += len(dec.flush())

    def bare() -> None:
        parse = pynmea2.parse
        for line in lines:
            try:
                parse(line)
            except Exception:  # noqa: BLE001, S112 - the baseline only pays for the attempt
                continue

    # Interleaved, so that a change in machine load hits both alike.
    t_ours = t_bare = float("inf")
    for _ in range(2):
        t_bare = min(t_bare, best_cpu(bare, args.repeat))
        t_ours = min(t_ours, best_cpu(ours, args.repeat))

    rows = [
        ("pynmea2.parse loop (baseline)", t_bare / n, ""),
        ("tracker.nmea.Decoder.feed", t_ours / n, f"{fixes} fixes"),
    ]
    exe = shutil.which("gpsdecode")
    if exe:
        copies = args.gpsd_copies
        data = b"".join(captures) * copies
        variants = (
            ("gpsdecode (JSON reports)", [exe]),
            ("gpsdecode -m (decode only)", [exe, "-m"]),
        )
        for name, cmd in variants:
            t_gpsd = gpsdecode_cpu(cmd, data, max(3, args.repeat // 2))
            rows.append((name, t_gpsd / (n * copies), f"{copies} corpus copies"))
    else:
        rows.append(("gpsd gpsdecode", None, "not on PATH (apt-get install gpsd-clients)"))

    print(f"{n} sentences from {len(captures)} captures, best of {args.repeat} runs, CPU time")
    print(f"{'':32} {'us/sentence':>12} {'vs pynmea2':>11}")
    for name, per, note in rows:
        if per is None:
            print(f"{name:32} {'-':>12} {'-':>11}  {note}")
        else:
            print(f"{name:32} {per * 1e6:12.2f} {per / rows[0][1]:10.2f}x  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
