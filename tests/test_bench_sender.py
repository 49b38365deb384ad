"""scripts/bench_sender.py, in a small size: it drives the real MapMyTracksSender through the
constructor the registry uses, which it once fell behind (the benchmark then failed in
scripts/bench only). Its figures are not asserted as times: only what it counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_drain_benchmark_runs_and_its_baseline_is_one_request_a_point(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_sender.py"), "--points", "400",
         "--baseline-points", "30", "--dir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()}
    # run, points, requests, ...: "one per point (1)" splits into four words before its numbers
    baseline = rows["one"][4:]
    batched = next(v for k, v in rows.items() if k == "batched")[4:]
    assert int(baseline[0]) == 30 and int(baseline[1]) >= 30  # at least a request a point
    assert int(batched[0]) == 400 and int(batched[1]) <= 10  # 100 growing to 1000 a request
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["speedup"] > 1 and result["points_per_s"] > 0
