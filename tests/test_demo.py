"""The README's first command: the whole demo, as a rider would run it (faster)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from support import ROOT

pytestmark = pytest.mark.slow


def test_the_demo_stores_and_delivers_every_fix(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tracker", "demo", "--dir", str(tmp_path / "demo"),
         "--speedup", "400"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Result: OK" in done.stdout
    assert "0 duplicates" in done.stdout
    # The figures reconcile: the last progress line's rejections are the summary's, which are
    # what the same bytes through the decoder give; the stored fixes add up both ways.
    out = done.stdout
    last = [line for line in out.splitlines() if line.startswith("ride 100%")][-1]
    total = int(re.search(r"rejected:.*: (\d+) in all", out).group(1))
    assert last.endswith(f"rejected {total}")
    assert "the same bytes through tracker.nmea here count the same" in out
    stored = re.search(r"stored:\s+(\d+) fix(?:es)?: (\d+) of \d+ intact epochs, (\d+) from "
                       r"epochs whose fault.*?, (\d+) from no-fix", out)
    n, intact, faulted, no_fix = map(int, stored.groups())
    assert n == intact + faulted + no_fix
    place = re.search(r"(\d+) in the activity \(sent\), (?:(\d+) paused.*?, )?(\d+) before .*?, "
                      r"(\d+) parked", out)
    assert n == sum(int(g) for g in place.groups() if g)
    # Each server holds what the activity sent, and the fixes it got live after the last
    # movement before the idle end parked them (said, when there are any).
    sent = int(place.group(1))
    for what in (r"mapmytracks:\s+activity \d+, (\d+) points?", r"json-gpsr:\s+(\d+) fix(?:es)?"):
        m = re.search(what + r" \(0 duplicates(?:; (\d+) of them sent live after the last "
                      r"movement, then parked)?\)", out)
        assert m, what
        assert int(m.group(1)) == sent + int(m.group(2) or 0), m.group(0)
    assert (tmp_path / "demo" / "ride.gpx").stat().st_size > 100_000


def test_bad_network_faults_are_one_line_and_exit_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tracker", "demo", "--dir", str(tmp_path / "demo"),
         "--network-faults", "meteor=0.5"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "meteor" in done.stderr
