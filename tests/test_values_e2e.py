"""End to end: a ride with impossible values, each in a sentence with a valid checksum, through a
real pty into a real `tracker run` delivering to both HTTP test servers (Map My Tracks and
json-gpsr), with the status page on (issue 21, "impossible values").

The glitches are the issue's: speed 5.1e8 knots, `inf` and negative; altitude 1e300 and `inf`;
HDOP -1; 999 satellites; one RMC dated 1999, one ZDA dated 2099, one epoch an hour ahead and one
a day ahead, each then back. The outcome is read where a user would: the servers' data, the
store (read-only), `tracker export`, `tracker status --json` and the page's JSON, which is
parsed strictly (no NaN, no Infinity) while the ride streams.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from support import (
    USER,
    assert_points_match,
    epochs,
    first_of_each_second,
    free_port,
    gpsr_section,
    mmt_section,
    stored_activities,
    stored_fixes,
    stream,
    wait_for,
)
from test_backends_e2e import ALWAYS, PASSWORD, TOKEN, prepared, servers

from tracker import plausible
from tracker.nmea import DecoderStats
from tracker.simulate import Epoch, nmea_checksum
from tracker.store import StoredFix

pytestmark = pytest.mark.slow

RATE_HZ = 5.0


def strict(text: bytes | str) -> object:
    """json.loads refusing NaN and Infinity, as a browser's JSON.parse does."""

    def refuse(name: str) -> None:
        raise AssertionError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# --- glitches: an epoch's sentences edited, checksums recomputed --------------------------------


def sentence(fields: list[str]) -> bytes:
    body = ",".join(fields)
    return f"${body}*{nmea_checksum(body):02X}\r\n".encode()


def lines(e: Epoch) -> list[list[str]]:
    """The epoch's sentences as fields, the address first ("GNRMC")."""
    out = []
    for raw in e.data.decode().split("\r\n"):
        if raw:
            out.append(raw[1 : raw.index("*")].split(","))
    return out


def edit(kind: str, changes: dict[int, str]) -> Callable[[Epoch], bytes]:
    """Set fields (numbered after the address) of the epoch's sentence of `kind`."""

    def apply(e: Epoch) -> bytes:
        out = b""
        for f in lines(e):
            if f[0].endswith(kind):
                for i, v in changes.items():
                    f[i + 1] = v
            out += sentence(f)
        return out

    return apply


def shifted(delta: timedelta, *, date_only: bool = False) -> Callable[[Epoch], bytes]:
    """The whole epoch at its time + delta (RMC's date and every time field), or only RMC's date."""

    def apply(e: Epoch) -> bytes:
        t = e.time + delta
        out = b""
        for f in lines(e):
            if f[0].endswith("RMC"):
                f[9] = f"{t:%d%m%y}"
            if not date_only and f[0][2:] in ("RMC", "GGA"):
                f[1] = f"{t:%H%M%S}.{t.microsecond // 10000:02d}"
            out += sentence(f)
        return out

    return apply


def zda_2099(e: Epoch) -> bytes:
    """A ZDA dated 2099 before the epoch's GGA, and no RMC: the epoch takes the ZDA's date."""
    t = e.time
    out = sentence([f"{e.data[1:3].decode()}ZDA", f"{t:%H%M%S}.{t.microsecond // 10000:02d}",
                    f"{t:%d}", f"{t:%m}", "2099", "00", "00"])  # fmt: skip
    for f in lines(e):
        if not f[0].endswith("RMC"):
            out += sentence(f)
    return out


# Value glitches: the fix stays, the value becomes unknown. Time glitches: the epoch is dropped.
VALUE_GLITCHES = {
    "speed 5.1e8 kn": (edit("RMC", {6: "510000000.0"}), "speed", "implausible_speed"),
    "speed inf": (edit("RMC", {6: "inf"}), "speed", "implausible_speed"),
    "negative speed": (edit("RMC", {6: "-12.5"}), "speed", "implausible_speed"),
    "altitude 1e300": (edit("GGA", {8: "1e300"}), "alt", "implausible_alt"),
    "altitude inf": (edit("GGA", {8: "inf"}), "alt", "implausible_alt"),
    "HDOP -1": (edit("GGA", {7: "-1"}), "hdop", "implausible_dop"),
    "999 satellites": (edit("GGA", {6: "999"}), "sats", "implausible_sats"),
}
TIME_GLITCHES = {
    "RMC dated 1999": edit("RMC", {8: "010699"}),
    "ZDA dated 2099": zda_2099,
    "an hour ahead": shifted(timedelta(hours=1)),
    "a day ahead": shifted(timedelta(days=1), date_only=True),
}


def glitched_ride() -> tuple[list[Epoch], dict[int, str], dict[int, str]]:
    """The simulator's ride with a glitch every 6 s of it (each on the first epoch of its
    second, so what a server gets of that second is the glitched fix); the epochs by index
    with a value glitch, and with a time glitch."""
    ride = epochs(600, rate_hz=RATE_HZ)
    values, times = {}, {}
    names = [*VALUE_GLITCHES, *TIME_GLITCHES]
    for k, name in enumerate(names):
        i = 50 + 30 * k
        if name in VALUE_GLITCHES:
            data = VALUE_GLITCHES[name][0](ride[i])
            values[i] = name
        else:
            data = TIME_GLITCHES[name](ride[i])
            times[i] = name
        ride[i] = replace(ride[i], data=data)
    return ride, values, times


def in_bounds(f: StoredFix) -> bool:
    return plausible.check(f, DecoderStats()) is f


def test_a_ride_with_impossible_values_is_one_activity_delivered_once_with_nothing_absurd(
    daemon, gps
):
    ride, value_glitches, time_glitches = glitched_ride()
    good_times = [round(e.unix, 3) for i, e in enumerate(ride) if i not in time_glitches]
    port = free_port()
    polls = {"/api/status": 0, "/api/track": 0, "/api/activities": 0}

    def poll_page() -> None:
        for path in polls:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                    strict(r.read())
            except (urllib.error.URLError, ConnectionError):
                continue  # the page starts once the store is open
            polls[path] += 1

    with ExitStack() as stack:
        mmt, gpsr = servers(stack)
        d = prepared(daemon(
            ALWAYS + mmt_section(mmt.url, PASSWORD, offline_upload="off")
            + gpsr_section(gpsr.url, TOKEN) + f'[web]\nlisten = "127.0.0.1:{port}"\n'
        ))  # fmt: skip
        d.start()
        d.wait_gps_open()
        position = 0
        while position < len(ride):
            position = stream(gps, ride, position, 1.0, pace_s=0.02)
            poll_page()  # strictly parsed during the ride
        wait_for(lambda: [round(f.time, 3) for f in stored_fixes(d.db)] == good_times, 60,
                 what="every good fix stored")  # fmt: skip
        wait_for(lambda: d.status()["pending"] == {"mapmytracks": 0, "gpsr": 0}, 90,
                 what="both backlogs empty")  # fmt: skip
        poll_page()
        assert all(polls.values()), polls

        # Stored: every good fix once, in one activity, nothing out of bounds.
        fixes = stored_fixes(d.db)
        assert [round(f.time, 3) for f in fixes] == good_times
        assert len(stored_activities(d.db)) == 1
        assert all(f.activity_id == fixes[0].activity_id for f in fixes)
        assert all(in_bounds(f) for f in fixes)
        by_time = {round(f.time, 3): f for f in fixes}
        for i, name in value_glitches.items():
            _, field, _ = VALUE_GLITCHES[name]
            assert getattr(by_time[round(ride[i].unix, 3)], field) is None, name

        # Sent: one activity on Map My Tracks with every second once, json-gpsr every second once.
        [remote] = mmt.activities.values()
        assert_points_match(sorted(remote.points), first_of_each_second(fixes))
        got = sorted(gpsr.fixes(USER), key=lambda f: f.t)
        assert gpsr.duplicates(USER) == []
        assert [f.t for f in got] == [math.floor(f.time) for f in first_of_each_second(fixes)]
        for g in got:
            for v in (g.lat, g.lon, g.al, g.ha, g.va, *(g.vv or ())):
                assert v is None or math.isfinite(v), g
        assert len({f.tag for f in got}) == 1

        # Counted by reason where the rider looks; `tracker status --json` strict JSON too.
        done = d.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        status = strict(done.stdout)
        reasons = status["rejected"]["by_reason"]
        for name, (_, _, reason) in VALUE_GLITCHES.items():
            assert reasons[reason] >= 1, (name, reasons)
        assert reasons["time_outlier"] == len(TIME_GLITCHES), reasons
        assert status["fixes"] == len(good_times)
        log = d.log_text()
        assert "NMEA fix with impossible values: speed 262366666" in log  # named, once a minute
        assert "far in time from the fixes around it" in log

        # Exported: nothing non-finite in any format.
        for fmt in ("gpx", "csv", "geojson"):
            done = d.cli("export", "--format", fmt, "-o", "-")
            assert done.returncode == 0, done.stderr
            assert not re.search(r"\b(-?inf|nan|infinity)\b", done.stdout, re.IGNORECASE), fmt
            if fmt == "geojson":
                strict(done.stdout)
        assert d.terminate() == 0


def test_the_glitches_carry_valid_checksums() -> None:
    """The test's own check: every glitched epoch is well-formed NMEA a receiver could send."""
    ride, values, times = glitched_ride()
    for i in [*values, *times]:
        for raw in ride[i].data.decode().split("\r\n"):
            if raw:
                body, cs = raw[1:].split("*")
                assert int(cs, 16) == nmea_checksum(body)
    assert len(values) == 7 and len(times) == 4
    assert isinstance(ride[0].time, datetime)
