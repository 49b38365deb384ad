"""The shared worker loop (tracker/worker.py) and what it buys the recorder: a thread that
survives a bug in one step, and memory that stays bounded when the writer is stuck."""

from __future__ import annotations

import logging
import queue
import threading

from support import stored_times, wait_for
from test_recorder import Running, fixes

from tracker.config import Config, StorageConfig
from tracker.recorder import Recorder
from tracker.worker import run_loop


def test_the_loop_beats_steps_waits_and_survives_errors(caplog):
    stop = threading.Event()
    now = [100.0]
    beats, waits, steps = [], [], []

    def step() -> float:
        steps.append(now[0])
        if len(steps) == 2:
            raise ValueError("a bad packet")
        if len(steps) == 4:
            stop.set()
        return 30.0

    def wait(s: float) -> None:  # injected: nothing sleeps
        waits.append(s)
        now[0] += s

    caplog.set_level(logging.ERROR)
    failures = run_loop("test", step, stop, beat=beats.append, clock=lambda: now[0], wait=wait,
                        error_wait_s=2.0, max_wait_s=5.0)  # fmt: skip
    assert failures == 1
    assert steps == [100.0, 105.0, 107.0, 112.0]
    assert beats == steps  # a beat before every step, from the injected clock
    assert waits == [5.0, 2.0, 5.0]  # capped at max_wait_s; the error wait; none after stop
    [record] = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert "test" in record.getMessage() and "a bad packet" in record.getMessage()
    assert record.exc_info is not None  # the traceback is in the log


def test_repeated_errors_are_logged_once_a_minute_with_a_count(caplog):
    stop = threading.Event()
    now = [0.0]
    n = [0]

    def step() -> float:
        n[0] += 1
        if n[0] == 50:
            stop.set()
        raise RuntimeError("again")

    def wait(s: float) -> None:
        now[0] += s

    caplog.set_level(logging.ERROR)
    assert run_loop("t", step, stop, clock=lambda: now[0], wait=wait, error_wait_s=5.0) == 50
    logged = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert 4 <= len(logged) <= 6  # 250 s of failures, one line a minute
    assert "more like this" in logged[-1].getMessage()


def test_the_recorder_survives_an_unexpected_error_and_stores_what_it_holds(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    run = Running(tmp_path / "tracker.db")
    try:
        real = run.recorder._store_fixes
        calls = [0]

        def flaky(act, batch):
            calls[0] += 1
            if calls[0] == 1 and batch:
                raise KeyError("a bug in one commit")
            return real(act, batch)

        run.recorder._store_fixes = flaky
        ride = fixes(30)
        run.feed(ride)
        wait_for(lambda: len(stored_times(tmp_path / "tracker.db")) == 30, timeout=20,
                 what="the held fixes stored after the error")  # fmt: skip
        assert run.thread.is_alive()
        assert calls[0] >= 2
    finally:
        run.close()
    assert any("recorder: unexpected error" in r.getMessage() for r in caplog.records)
    assert sorted(stored_times(tmp_path / "tracker.db")) == [round(f.time, 3) for f in ride]


def test_a_full_inbox_drops_counts_and_never_blocks_a_source(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    inbox: queue.Queue = queue.Queue(maxsize=3)
    rec = Recorder(Config(storage=StorageConfig(path=tmp_path / "t.db")), inbox,
                   threading.Event())  # fmt: skip
    batch = fixes(2)
    for _ in range(5):
        rec.offer(batch)  # the recorder is not running: nothing takes them
    assert inbox.qsize() == 3
    assert rec.stats.dropped_inbox == 4
    assert rec.runtime().recorder.dropped_inbox == 4
    assert any("inbox full" in r.getMessage() for r in caplog.records)
