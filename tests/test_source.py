"""The source session (tracker/source.py) driven step by step: its clock and its randomness
injected, so the backoff is checked without waiting. The sources behind it are tested against
real lines in test_gps.py, test_inputs.py and test_sensors.py."""

from __future__ import annotations

import logging
import threading

import pytest

from tracker.retry import RetryPolicy
from tracker.source import LineStatus, Session


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Line:
    """A line whose opens and reads follow a script: an exception is raised, anything else
    returned; `closed` counts closes."""

    def __init__(self, opens: list, reads: list, clock: Clock, read_s: float = 0.0) -> None:
        self.opens, self.reads = opens, reads
        self.clock, self.read_s = clock, read_s
        self.closed = 0

    def open(self) -> str:
        result = self.opens.pop(0)
        if isinstance(result, BaseException):
            raise result
        return result

    def read(self, line: str) -> bytes:
        self.clock.t += self.read_s  # the read waits this long before what it returns
        result = self.reads.pop(0)
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self, line: str) -> None:
        self.closed += 1


def session(line: Line, clock: Clock, got: list, **kw) -> Session[str, bytes]:
    return Session(
        "test line", open=line.open, read=line.read, got=lambda c, now: got.append((c, now)),
        close=line.close, status=kw.pop("status", LineStatus()), log=logging.getLogger("t"),
        retry=RetryPolicy(1.0, 8.0), clock=clock, rand=lambda: 0.5, **kw,
    )  # fmt: skip


def test_a_chunk_is_stamped_when_its_read_returns():
    clock = Clock()
    got: list = []
    line = Line(["port"], [b"$A\r\n", b""], clock, read_s=0.75)
    s = session(line, clock, got)
    assert s.step() == 0.0  # open
    s.step()
    s.step()
    assert got == [(b"$A\r\n", 1000.75), (b"", 1001.5)]  # after each wait, not before it


def test_failed_opens_back_off_with_jitter_up_to_the_cap_and_a_good_read_resets_it(caplog):
    caplog.set_level(logging.INFO, logger="t")
    clock = Clock()
    got: list = []
    gone = FileNotFoundError(2, "No such file or directory")
    line = Line([gone] * 6 + ["port"], [b"x"], clock)
    status = LineStatus()
    s = session(line, clock, got, status=status)
    waits = []
    for _ in range(6):
        waits.append(s.step())
        assert s.step() == pytest.approx(waits[-1])  # not due yet: the rest of the wait
        clock.t += waits[-1]
    # Half (rand 0.5) of 1, 2, 4, 8, 8, 8: doubling up to the cap.
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert (status.state, status.error, s.attempts) == ("connecting", gone.strerror, 6)
    assert s.tried.is_set()
    assert s.step() == 0.0 and status.state == "open" and status.connects == 1
    assert s.retry.failures == 6  # an open alone does not reset it...
    s.step()
    assert s.retry.failures == 0  # ...a read that returned something does
    assert [r.getMessage() for r in caplog.records] == [
        "test line not available (No such file or directory); retrying every 8 s at most "
        "until it is back",
        "test line back after 16 s",  # 15.5 s of waits
    ]


def test_a_line_lost_after_good_reads_reopens_at_once_one_that_drops_at_once_backs_off(caplog):
    caplog.set_level(logging.INFO, logger="t")
    clock = Clock()
    got: list = []
    reset = ConnectionResetError(104, "Connection reset by peer")
    line = Line(["a", "b", "c"], [b"x", reset, reset, b"y"], clock)
    status = LineStatus()
    s = session(line, clock, got, status=status)
    s.step()
    s.step()  # a good read
    assert s.step() == 0.0  # lost
    assert (status.state, status.error, line.closed) == ("lost", "Connection reset by peer", 1)
    assert s.step() == 0.0  # reopened at once
    assert s.step() == 0.0  # lost again without a good read: the next open waits
    assert s.step() == pytest.approx(0.5)
    clock.t += 0.5
    assert s.step() == 0.0 and status.connects == 3 and status.state == "open"
    assert sum("lost" in r.getMessage() for r in caplog.records) == 2
    assert sum("back after" in r.getMessage() for r in caplog.records) == 2


def test_an_unexpected_error_closes_the_line_and_goes_to_the_worker_loop():
    clock = Clock()
    got: list = []
    line = Line(["a"], [KeyError("bug")], clock)
    s = session(line, clock, got)
    s.step()
    with pytest.raises(KeyError):
        s.step()
    assert line.closed == 1 and s.status.state == "lost"


def test_run_closes_the_line_and_says_stopped_at_the_stop(caplog):
    clock = Clock()
    ended: list = []
    stop = threading.Event()
    line = Line(["a"], [b"x"] * 1000, clock)

    def got(chunk: bytes, now: float) -> None:
        if len(ended) == 0 and chunk:
            stop.set()

    s = Session("test line", open=line.open, read=line.read, got=got, close=line.close,
                ended=ended.append, status=LineStatus(), log=logging.getLogger("t"),
                retry=RetryPolicy(1.0, 8.0), clock=clock)  # fmt: skip
    s.run("test", stop)
    assert line.closed == 1 and ended == [clock.t] and s.status.state == "stopped"
