"""The demo's summary reconciles: every receiver fault the simulator injects is accounted for in
the decoder's counts (or named where it cost nothing), and the counts add up to what the same
bytes through the daemon's decoder give. The whole demo, which also holds the daemon's own
counts to these, runs in tests/test_demo.py."""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, datetime

import pytest

from tracker import demo, nmea, simulate
from tracker.words import plural

EVERY_FAULT = "checksum=0.01,garbage=0.01,truncate=0.01,overlong=0.005,outage=0.01,silence=0.01"


def demo_ride(faults: str) -> demo.Ride:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return demo._plan(parser.parse_args(["--faults", faults]))


def summary_of(epochs: list[simulate.Epoch]) -> simulate.Summary:
    summary = simulate.Summary()
    for epoch in epochs:
        summary.add(epoch)
    return summary


@pytest.mark.parametrize("faults", [demo.GPS_FAULTS, EVERY_FAULT])
def test_every_injected_fault_is_counted_or_named_and_the_counts_add_up(faults):
    ride = demo_ride(faults)
    account = demo.decoder_account(ride.epochs)
    # The rows share out exactly what the decoder counted over the whole ride.
    total = Counter()
    for row in account.rows.values():
        total += row.counted
    reference = nmea.Decoder()
    for epoch in ride.epochs:
        reference.feed(epoch.data)
    reference.flush()
    assert +total == +demo._counts(reference.stats) == +demo._counts(account.stats)
    assert account.stats.rejected == sum(account.stats.rejected_by.values())
    # Nothing counted without a fault to account for it.
    assert not +account.rows.get("", demo.FaultRow()).counted
    # Each epoch with a fault shows it: a count, or the sentence no fix needs that it landed
    # in, named. (Two faults in one epoch may make one bad line, so per epoch, not per fault.)
    injected = Counter()
    for key, row in account.rows.items():
        if key:
            assert sum(row.counted.values()) + sum(row.unseen.values()) >= row.epochs, (key, row)
            assert set(row.unseen) <= {"GSV", "VTG", "GSA"}, row.unseen
            for kind in key.split("+"):
                injected[kind] += 1
    summary = summary_of(ride.epochs)
    line_faults = {k for k in ("checksum", "garbage", "truncate", "overlong") if summary.faults[k]}
    assert line_faults == set(injected)
    lines = demo.fault_lines(account, summary)
    assert all("\n" not in line for line in lines)
    assert sum(row.faults for key, row in account.rows.items() if key) == sum(
        summary.faults[k] for k in line_faults
    )


def test_stored_fixes_are_accounted_by_origin_and_by_place():
    ride = demo_ride("none")
    t0 = min(ride.expected)

    class Fix:
        def __init__(self, t, activity_id, local=False):
            self.time, self.activity_id, self.local = t, activity_id, local

    class Activity:
        started_at = t0 + 10.0

    times = sorted(ride.expected)
    fixes = [Fix(t, None) for t in times[:5]] + [Fix(t, 1) for t in times[5:50]]
    fixes += [Fix(t, 1, local=True) for t in times[50:60]] + [Fix(t, None) for t in times[60:70]]
    where = demo.stored_account(ride, fixes, [Activity()])
    assert where.total == 70 == where.valid + where.faulted + where.no_fix
    assert where.total == where.sent + where.local + where.before + where.after
    assert (where.sent, where.local, where.after) == (45, 10, 10)
    assert where.before == sum(1 for t in times[:5] if t < Activity.started_at)


def test_plurals_and_the_next_command_work_from_anywhere(tmp_path, monkeypatch):
    assert plural(1, "fix", "fixes") == "1 fix"
    assert plural(2, "fix", "fixes") == "2 fixes"
    assert plural(0, "duplicate") == "0 duplicates"
    monkeypatch.chdir(tmp_path)
    command = demo.next_command(demo.Path("demo-output/tracker.toml"))
    words = command.split()
    assert all(demo.Path(w).is_absolute() for w in words if "/" in w), command
    assert str(tmp_path / "demo-output" / "tracker.toml") in command


def test_a_ride_of_every_fault_is_deterministic():
    start = datetime(2026, 5, 1, 8, tzinfo=UTC)
    route = simulate.demo_route()
    faults = simulate.parse_faults(EVERY_FAULT)
    one = list(simulate.simulate(route, start_time=start, faults=faults, seed=3, duration_s=300))
    two = list(simulate.simulate(route, start_time=start, faults=faults, seed=3, duration_s=300))
    a, b = demo.decoder_account(one), demo.decoder_account(two)
    assert a.rows == b.rows
