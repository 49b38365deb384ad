"""The bounds every decoded fix is held to, and the lone time outlier filter (tracker/plausible.py),
with hand-written sentences whose checksums are valid: what a receiver, a cable or a multiplexer
may really hand over."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from test_nmea import gga, rmc, run, s, t, zda

from tracker import plausible
from tracker.fix import Fix
from tracker.gpsd import GpsdDecoder
from tracker.nmea import REJECT_REASONS, Decoder
from tracker.plausible import TimeFilter

GOOD = Fix(time=t(2026, 6, 14, 9, 30, 0), lat=48.1, lon=11.5, alt=545.4, speed=5.0, course=84.0,
           quality=1, sats=8, hdop=0.9, vdop=1.3, pdop=1.6, err_lat=2.0, err_lon=2.5,
           err_alt=4.0)  # fmt: skip


def decode(*sentences: str) -> tuple[Decoder, list[Fix]]:
    dec = Decoder()
    return dec, run(*sentences, dec=dec)


def counted(dec: Decoder) -> dict[str, int]:
    return {k: v for k, v in dec.stats.rejected_by.items() if v}


# -- the bounds, through the NMEA decoder ------------------------------------------------------


@pytest.mark.parametrize(
    ("sentences", "field", "reason"),
    [
        ([rmc("093000", date="140626", speed="510000000.0")], "speed", "implausible_speed"),
        ([rmc("093000", date="140626", speed="inf")], "speed", "implausible_speed"),
        ([rmc("093000", date="140626", speed="nan")], "speed", "implausible_speed"),
        ([rmc("093000", date="140626", speed="-3.5")], "speed", "implausible_speed"),
        ([rmc("093000", date="140626", course="400.0")], "course", "implausible_course"),
        ([rmc("093000", date="140626", course="-inf")], "course", "implausible_course"),
        ([rmc("093000", date="140626"), gga("093000", alt="1e300")], "alt", "implausible_alt"),
        ([rmc("093000", date="140626"), gga("093000", alt="inf")], "alt", "implausible_alt"),
        ([rmc("093000", date="140626"), gga("093000", alt="-20000")], "alt", "implausible_alt"),
        ([rmc("093000", date="140626"), gga("093000", hdop="-1")], "hdop", "implausible_dop"),
        ([rmc("093000", date="140626"), gga("093000", hdop="0.0")], "hdop", "implausible_dop"),
        ([rmc("093000", date="140626"), gga("093000", hdop="1000")], "hdop", "implausible_dop"),
        ([rmc("093000", date="140626"), gga("093000", sats="999")], "sats", "implausible_sats"),
        ([rmc("093000", date="140626"), s("GPGSA,A,3,04,05,,09,12,,,24,,,,,nan,1.3,2.1")],
         "pdop", "implausible_dop"),
        ([rmc("093000", date="140626"), s("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,inf")],
         "vdop", "implausible_dop"),
        ([rmc("093000", date="140626"), s("GPGST,093000.00,0.006,1,1,273.6,inf,0.020,1")],
         "err_lat", "implausible_error"),
        ([rmc("093000", date="140626"), s("GPGST,093000.00,0.006,1,1,273.6,0.023,-2,1")],
         "err_lon", "implausible_error"),
    ],
)  # fmt: skip
def test_an_impossible_value_becomes_unknown_and_the_fix_stays(sentences, field, reason) -> None:
    dec, fixes = decode(*sentences)
    [fix] = fixes
    assert getattr(fix, field) is None
    assert fix.time == t(2026, 6, 14, 9, 30, 0) and fix.lat == pytest.approx(48.1173, abs=1e-4)
    assert counted(dec) == {reason: 1}
    assert dec.stats.rejected == 1 and dec.stats.fixes == 1


def test_every_impossible_value_of_one_fix_at_once_each_reason_once() -> None:
    dec, [fix] = decode(
        rmc("093000", date="140626", speed="inf", course="999"),
        gga("093000", alt="1e300", hdop="-1", sats="999"),
        s("GPGSA,A,3,04,05,,09,12,,,24,,,,,-1,-1,-1"),
    )
    assert (fix.speed, fix.course, fix.alt, fix.hdop, fix.sats, fix.vdop, fix.pdop) == (None,) * 7
    assert counted(dec) == {"implausible_speed": 1, "implausible_course": 1,
                            "implausible_alt": 1, "implausible_dop": 1,
                            "implausible_sats": 1}  # fmt: skip


def test_values_at_the_edges_of_the_bounds_are_kept() -> None:
    dec, [fix] = decode(
        rmc("093000", date="140626", speed=f"{plausible.SPEED_MAX / (1852 / 3600) - 0.0001:.4f}",
            course="360.0"),
        gga("093000", alt="-430.5", hdop="99.99", sats="200"),
    )  # fmt: skip
    assert fix.speed == pytest.approx(plausible.SPEED_MAX, rel=1e-6)
    assert (fix.course, fix.alt, fix.hdop, fix.sats) == (360.0, -430.5, 99.99, 200)
    assert dec.stats.rejected == 0


@pytest.mark.parametrize(
    ("sentences", "reason"),
    [
        ([rmc("093000", date="050180")], "implausible_time"),  # before the GPS epoch
        ([zda("092959", 14, 6, 2100), gga("093000")], "implausible_time"),
        ([zda("092959", 14, 6, 9999), gga("093000")], "implausible_time"),
        ([zda("092959", 31, 12, 1979), gga("093000")], "implausible_time"),
    ],
)
def test_an_impossible_time_drops_the_fix(sentences, reason) -> None:
    dec, fixes = decode(*sentences)
    assert fixes == []
    assert counted(dec) == {reason: 1} and dec.stats.fixes == 0


def test_the_reasons_are_in_the_decoders_counters_and_its_status_dict() -> None:
    assert set(plausible.REASONS) <= set(REJECT_REASONS)
    dec, _ = decode(rmc("093000", date="140626", speed="inf"))
    d = dec.stats.as_dict()
    assert d["rejected_by"]["implausible_speed"] == 1
    assert d["rejected"] == sum(d["rejected_by"].values()) == 1


def test_the_log_line_names_the_value(caplog) -> None:
    decode(rmc("093000", date="140626", speed="510000000.0"))
    [line] = [r.getMessage() for r in caplog.records if "impossible" in r.getMessage()]
    assert "speed" in line and "set to unknown" in line and "\n" not in line


def test_check_returns_the_same_object_when_nothing_is_out() -> None:
    stats = Decoder().stats
    assert plausible.check(GOOD, stats) is GOOD
    assert stats.rejected == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"time": math.nan}, "implausible_time"),
        ({"time": math.inf}, "implausible_time"),
        ({"lat": math.nan}, "implausible_position"),
        ({"lat": 90.5}, "implausible_position"),
        ({"lon": -math.inf}, "implausible_position"),
    ],
)
def test_check_drops_a_fix_without_a_possible_time_or_position(change, reason) -> None:
    stats = Decoder().stats
    assert plausible.check(replace(GOOD, **change), stats) is None
    assert stats.rejected_by[reason] == 1


# -- the same bounds for gpsd:// ----------------------------------------------------------------


def tpv(**kw) -> bytes:
    d = {"class": "TPV", "device": "/dev/ttyUSB0", "mode": 3, "status": 1,
         "time": "2026-06-14T09:30:00.000Z", "lat": 48.1, "lon": 11.5, "altMSL": 545.4,
         "speed": 5.0, "track": 84.0} | kw  # fmt: skip
    return json.dumps(d).encode() + b"\n"


def test_gpsd_reports_are_held_to_the_same_bounds() -> None:
    dec = GpsdDecoder()
    sky = json.dumps({"class": "SKY", "hdop": -1, "vdop": 1.2, "pdop": 1e9, "uSat": 999})
    fixes = dec.feed(tpv(speed=5.1e8 * 1852 / 3600, altMSL=1e300) + sky.encode() + b"\n")
    fixes += dec.feed(tpv(time="2026-06-14T09:30:01.000Z", track=-5))
    fixes += dec.feed(tpv(time="1979-06-14T09:30:02.000Z"))  # completes the one before
    fixes += dec.flush()
    assert len(fixes) == 2
    first, second = fixes
    assert (first.speed, first.alt, first.hdop, first.pdop, first.sats) == (None,) * 5
    assert first.vdop == 1.2 and first.lat == 48.1
    assert second.course is None and second.speed == 5.0 and second.sats is None  # same SKY
    assert counted(dec) == {"implausible_speed": 1, "implausible_alt": 1, "implausible_dop": 2,
                            "implausible_sats": 2, "implausible_course": 1,
                            "implausible_time": 1}  # fmt: skip
    assert dec.stats.fixes == 2


# -- the lone time outlier filter ------------------------------------------------------------


T0 = t(2026, 6, 14, 9, 30, 0)


def fix_at(time: float) -> Fix:
    return replace(GOOD, time=time)


class Feed:
    """A TimeFilter fed one fix per `step_s` of arrival time, as a live receiver would."""

    def __init__(self, step_s: float = 1.0) -> None:
        self.stats = Decoder().stats
        self.filter = TimeFilter(self.stats)
        self.now = 1000.0
        self.step = step_s
        self.out: list[float] = []

    def __call__(self, *times: float) -> list[float]:
        got = []
        for x in times:
            self.now += self.step
            got += [f.time for f in self.filter([fix_at(x)], self.now)]
        self.out += got
        return got

    @property
    def outliers(self) -> int:
        return self.stats.rejected_by["time_outlier"]


def ride(n: int, start: float = T0) -> list[float]:
    return [start + i for i in range(n)]


@pytest.mark.parametrize(
    "glitch",
    [
        t(1999, 6, 1, 9, 30, 10),  # an RMC dated 1999: a week roll-over glitch
        t(2099, 6, 14, 9, 30, 10),  # a ZDA dated 2099
        T0 + 10 + 3600,  # an hour ahead
        T0 + 10 + 86400,  # a day ahead
        T0 + 10 - 3600,  # an hour back
        T0 + 10 + 60,  # a minute ahead
    ],
)
def test_a_lone_outlier_is_dropped_and_the_ride_goes_on(glitch) -> None:
    feed = Feed()
    feed(*ride(10))
    assert feed(glitch) == []  # held: only the next epoch can tell
    assert feed(T0 + 11) == [T0 + 11]  # back in line: the glitch was alone
    feed(*ride(10, T0 + 12))
    assert feed.out == ride(9) + [T0 + 9, T0 + 11] + ride(10, T0 + 12)
    assert feed.outliers == 1
    assert feed.filter.dropped_at == plausible.utc_text(glitch)


def test_fixes_in_line_pass_at_once_and_are_the_same_list() -> None:
    feed = Feed()
    feed(T0)
    assert feed(T0 + 1) == [T0, T0 + 1]  # the very first fix waits for the second
    fixes = [fix_at(T0 + 2 + i / 10) for i in range(10)]
    assert feed.filter(fixes, feed.now + 1) is fixes


def test_a_jump_that_lasts_is_passed_on_one_epoch_late() -> None:
    feed = Feed()
    feed(*ride(5))
    era = 1024 * 7 * 86400
    assert feed(T0 + 5 + era) == []
    assert feed(T0 + 6 + era) == [T0 + 5 + era, T0 + 6 + era]
    assert feed(T0 + 7 + era) == [T0 + 7 + era]
    assert feed.outliers == 0


def test_a_receiver_whole_eras_behind_from_the_start_is_consistent() -> None:
    feed = Feed()
    behind = T0 - 1024 * 7 * 86400
    feed(*ride(20, behind))
    assert feed.out == ride(20, behind) and feed.outliers == 0


def test_a_jump_back_that_lasts_is_passed_on() -> None:
    feed = Feed()
    feed(*ride(5))
    feed(*ride(5, T0 - 3600))
    assert feed.out == ride(5) + ride(5, T0 - 3600) and feed.outliers == 0


def test_repeats_and_small_steps_back_pass_for_the_lifecycle_to_drop() -> None:
    feed = Feed()
    feed(T0, T0 + 1, T0 + 1, T0 - 2, T0 + 2)
    assert feed.out == [T0, T0 + 1, T0 + 1, T0 - 2, T0 + 2]


def test_a_gap_as_long_as_the_time_that_passed_is_no_jump() -> None:
    feed = Feed()
    feed(*ride(3))
    feed.now += 600  # a tunnel, the cable pulled: ten minutes without a fix
    assert feed(T0 + 603) == [T0 + 603]
    assert feed.outliers == 0


def test_sparse_fixes_written_faster_than_real_time_are_held_never_lost() -> None:
    feed = Feed(step_s=0.01)  # a replay: 30 s of fixes a hundredth of a second apart
    times = [T0, T0 + 1] + [T0 + 30 * i for i in range(1, 10)]
    feed(*times)
    assert feed.out == times[:-1] and feed.outliers == 0
    assert feed.filter.held is not None and feed.filter.held.time == times[-1]


def test_two_outliers_in_a_row_far_from_each_other_are_both_dropped() -> None:
    feed = Feed()
    feed(*ride(5))
    feed(T0 + 5 + 86400, t(1999, 6, 1, 0, 0, 0), T0 + 6, T0 + 7)
    assert feed.out == ride(5) + [T0 + 6, T0 + 7]
    assert feed.outliers == 2


def test_the_first_fix_as_an_outlier_never_passes() -> None:
    feed = Feed()
    feed(t(1999, 6, 1, 0, 0, 0), *ride(5))
    assert feed.out == ride(5)
    assert feed.outliers == 1


# -- outputs ------------------------------------------------------------------------------------


def test_no_nonfinite_makes_strict_json() -> None:
    value = {"a": math.inf, "b": [1.0, -math.inf, {"c": math.nan}], "d": (2, "x"), "e": None}
    text = json.dumps(plausible.no_nonfinite(value), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [1.0, None, {"c": None}], "d": [2, "x"],
                                "e": None}  # fmt: skip
