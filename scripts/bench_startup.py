#!/usr/bin/env python3
"""What a `tracker` command costs to start, in CPU, against a bare interpreter.

On a Pi Zero every command a rider or a script runs (`tracker status` from a cron job, a
shell prompt) pays the interpreter's start-up plus every module the CLI imports; the daemon
pays it at each restart. This measures user+sys CPU of child processes (getrusage
RUSAGE_CHILDREN deltas around each one), the minimum over N runs (the least disturbed run is
the closest to the true cost), for

    python -c pass                      the floor, measured in the same run
    python -m tracker --help
    python -m tracker status -c <tmp>   a fresh database with a few fixes

and prints each as a ratio to the floor. Nothing is asserted: numbers vary by machine, the
ratios are the point. The tracker measured is the one in the current directory (so a
`git worktree` of another revision can be measured with this same script).

    .venv/bin/python scripts/bench_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def cpu_of(cmd: list[str], env: dict[str, str]) -> float:
    """user+sys CPU seconds of one run of `cmd` (which must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def make_config(tmp: Path) -> Path:
    """A config whose database holds a few fixes, made by the tracker under measure."""
    db = tmp / "tracker.db"
    seed = (
        "import sys\n"
        "from tracker.fix import Fix\n"
        "from tracker.store import open_store\n"
        "store = open_store(sys.argv[1])\n"
        "store.add_fixes(None, [Fix(time=1.7e9 + i, lat=47.0 + i * 1e-5, lon=7.6, alt=500.0,\n"
        "                           speed=5.0, quality=1, sats=9, hdop=0.9) for i in range(20)])\n"
        "store.close()\n"
    )
    subprocess.run([sys.executable, "-c", seed, str(db)], check=True)
    config = tmp / "tracker.toml"
    config.write_text(f'[gps]\ndevice = "/nonexistent"\n\n[storage]\npath = "{db}"\n')
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per command (default 10)")
    parser.add_argument("--json", action="store_true",
                        help="end with a JSON line: command -> CPU s (scripts/bench)")
    args = parser.parse_args()

    env = dict(os.environ)
    # The tracker of the current directory, whatever the venv has installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    py = sys.executable
    with tempfile.TemporaryDirectory() as d:
        config = make_config(Path(d))
        backends = Path(d) / "backends.toml"
        backends.write_text(
            config.read_text()
            + '\n[mapmytracks]\nusername = "rider"\npassword = "x"\n'
            + '\n[gpsr]\nurl = "https://gpsr.example/"\ntoken = "x"\n'
        )
        commands = {
            "python -c pass": [py, "-c", "pass"],
            "tracker --help": [py, "-m", "tracker", "--help"],
            "tracker status": [py, "-m", "tracker", "status", "-c", str(config)],
            # A unit's real config names a backend: parsing its section loads that module.
            "tracker status, 2 backends": [py, "-m", "tracker", "status", "-c", str(backends)],
        }
        best = {name: float("inf") for name in commands}
        for _ in range(args.runs):  # interleaved, so a slow moment hits every command alike
            for name, cmd in commands.items():
                best[name] = min(best[name], cpu_of(cmd, env))
    floor = best["python -c pass"]
    print(f"{'command':<16} {'CPU ms':>8} {'ratio':>6}   (minimum of {args.runs} runs)")
    for name, cpu in best.items():
        print(f"{name:<16} {cpu * 1000:8.1f} {cpu / floor:6.2f}")
    if args.json:
        print(json.dumps(best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
