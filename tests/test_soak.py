"""The soak's short form (tracker/testing/soak.py; scripts/soak runs the 2-hour ride): a real
daemon sending to both servers with every fault on does not grow in memory, threads or open
files between the second and the last quarter of the ride."""

from __future__ import annotations

import pytest

from tracker.testing.soak import quarters, soak

pytestmark = pytest.mark.slow


def test_memory_threads_and_files_stay_flat_under_every_fault(tmp_path):
    # 10 minutes of GPS time at 10 Hz, 40x real time: 15 s of senders working through faults.
    samples = soak(epochs=6000, rate_hz=10.0, workdir=tmp_path, speedup=40.0)
    q = quarters(samples)
    assert len(samples) > 40
    assert q[3].rss_kb - q[1].rss_kb < 3 * 1024, q  # a few MB at most
    assert q[3].threads <= q[1].threads + 1, q  # a sender's request thread may come and go
    assert q[3].fds <= q[1].fds + 2, q
