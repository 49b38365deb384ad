"""Hostile replies against a real daemon (issue 14): both test servers answer with a captive
portal's HTML, random bytes, a 50 MB body and a reply trickled a byte at a time, after having
applied the request (all but `html`, which a portal sends in the server's place). Every such
reply is a failure, never an acknowledgement: the run ends with every fix on each server
exactly once, each kind logged with the backend named and rate-limited, and the daemon's peak
RSS no higher than a faultless run's plus a little (the 50 MB were never held).

The same ride and config run twice in one test, without faults and then with them, so the
memory bound is measured on this machine rather than guessed.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from pathlib import Path

import pytest
from support import (
    Daemon,
    assert_points_match,
    epochs,
    first_of_each_second,
    gpsr_section,
    mmt_section,
    stored_fixes,
    stored_times,
    stream,
    wait_for,
)
from test_backends_e2e import (
    ALWAYS,
    LIVE_HZ,
    PASSWORD,
    TOKEN,
    assert_gpsr_holds,
    backlogs,
    prepared,
    servers,
)

from tracker.senders.gpsr import NAME as GPSR
from tracker.senders.mapmytracks import NAME as MMT
from tracker.testing.faults import HOSTILE_KINDS, Faults

pytestmark = pytest.mark.slow

HOSTILE = ("html", *HOSTILE_KINDS)
TIMEOUT_S = 1.0  # connect and read: the overall deadline is 1 + 2 * 1 = 3 s
TRICKLE_S = 0.5  # each byte well inside the read timeout; a reply takes 8 s or (far) more
DEADLINE_S = TIMEOUT_S + 2 * TIMEOUT_S  # HttpTransport's overall deadline
MAX_STREAM_S = 35.0
RSS_SLACK_KB = 10 * 1024
RSS_MAX_KB = 100 * 1024
# What each kind looks like in the daemon's log, per backend (its messages name the backend).
LOGGED = {
    "html": {MMT: "HTML page instead of a reply", GPSR: "HTML page instead of a reply"},
    "garbage": {MMT: "unreadable XML reply", GPSR: "unreadable JSON reply"},
    "huge": {MMT: "-byte limit", GPSR: "-byte limit"},
    "trickle": {MMT: "incomplete at the time limit", GPSR: "incomplete at the time limit"},
}


def hostile(seed: int) -> Faults:
    return Faults(html=0.12, garbage=0.12, huge=0.12, trickle=0.1, trickle_s=TRICKLE_S,
                  seed=seed)  # fmt: skip


def peak_rss_kb(d: Daemon) -> int:
    """The daemon's peak resident set (VmHWM), read while it runs."""
    assert d.proc is not None
    text = Path(f"/proc/{d.proc.pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE).group(1))


def ride_through(workdir: Path, gps, *, faulty: bool) -> tuple[int, str]:
    """One daemon with both backends over fresh servers, a ride written fast; with `faulty`
    the servers are hostile until every kind happened on both, then well again. Returns the
    daemon's peak RSS (kB) and its log, after checking every fix is on each server once."""
    workdir.mkdir()
    with ExitStack() as stack:
        mmt, gpsr = servers(
            stack,
            mmt_faults=hostile(20261401) if faulty else None,
            gpsr_faults=hostile(20261402) if faulty else None,
        )
        timeouts = {"connect_timeout_s": TIMEOUT_S, "read_timeout_s": TIMEOUT_S}
        d = prepared(Daemon(workdir, gps.path, ALWAYS
                            + mmt_section(mmt.url, PASSWORD, offline_upload="off", **timeouts)
                            + gpsr_section(gpsr.url, TOKEN, **timeouts)))  # fmt: skip
        stack.callback(d.stop)
        d.start()
        d.wait_gps_open()
        ride = epochs(4000, rate_hz=LIVE_HZ)

        def every_kind_seen() -> bool:
            return all(s.count(fault=k) for s in (mmt, gpsr) for k in HOSTILE)

        position = stream(gps, ride, 0, 8.0, pace_s=0.02)  # ~80 s of riding, ~400 fixes
        if faulty:
            while not every_kind_seen() and position < len(ride):
                position = stream(gps, ride, position, 1.0, pace_s=0.02)
                assert position < MAX_STREAM_S / 0.02, "streamed long enough"
            seen = {type(s).__name__: {k: s.count(fault=k) for k in HOSTILE} for s in (mmt, gpsr)}
            assert every_kind_seen(), seen
            mmt.faults.clear()
            gpsr.faults.clear()
        last = round(ride[position - 1].unix, 3)
        wait_for(lambda: last in stored_times(d.db), timeout=30, what="the last fix stored")
        wait_for(lambda: backlogs(d) == {MMT: 0, GPSR: 0}, timeout=45, what="both backlogs 0")
        assert d.status()["quarantined"] == {MMT: 0, GPSR: 0}
        rss = peak_rss_kb(d)
        assert d.terminate() == 0

        fixes = stored_fixes(d.db)
        (remote,) = mmt.activities.values()  # a lost start_activity reply was found, not redone
        assert mmt.duplicate_points(remote.id) == [] and mmt.superseded == []
        assert_points_match(remote.points, first_of_each_second(fixes))
        assert_gpsr_holds(gpsr, fixes)
        for server in (mmt, gpsr):
            assert_trickle_cut_at_the_deadline(server.requests)
        return rss, d.log_text()


def assert_trickle_cut_at_the_deadline(requests: list) -> None:
    """After each trickled reply the (one) sender of that server asked again within the
    deadline plus its backoff: it gave up on the dripping reply, not waited it out."""
    for i, r in enumerate(requests):
        if r.fault == "trickle":
            later = [n.time for n in requests[i + 1 :]]
            assert later, "the trickled request was retried"
            assert min(later) - r.time < DEADLINE_S + 0.5 + 2.0, (r, min(later) - r.time)


def test_hostile_replies_from_both_servers_are_failures_every_fix_once_no_memory_held(
    tmp_path, gps
):
    calm_rss, calm_log = ride_through(tmp_path / "calm", gps, faulty=False)
    rss, log = ride_through(tmp_path / "hostile", gps, faulty=True)

    for kind, by_backend in LOGGED.items():
        assert kind == "html" or not any(t in calm_log for t in by_backend.values())
        for backend, text in by_backend.items():
            lines = [ln for ln in log.splitlines() if text in ln and f"{backend} " in ln]
            # At least once, with the backend named; rate-limited: once a minute per kind.
            assert 1 <= len(lines) <= 3, (kind, backend, lines)
    assert rss < RSS_MAX_KB and rss <= calm_rss + RSS_SLACK_KB, (rss, calm_rss)
    for secret in (PASSWORD, TOKEN):
        assert secret not in log
