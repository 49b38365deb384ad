"""tracker.simulate: the NMEA it writes, checked with pynmea2 and plain geometry, and its CLI."""

from __future__ import annotations

import argparse
import math
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import gpxpy
import gpxpy.gpx
import pynmea2
import pytest
import serial

import tracker
from tracker import simulate as sim
from tracker.simulate import (
    SENTENCES,
    Epoch,
    FaultRates,
    RoutePoint,
    bearing_deg,
    demo_route,
    generated_loop,
    haversine_m,
    load_route,
    parse_faults,
    run,
    simulate,
)
from tracker.simulate.routes import RoutePath, offset_position

START = datetime(2026, 6, 1, 8, 0, 0, tzinfo=UTC)
KNOTS = 3600 / 1852


def lines_of(epoch: Epoch) -> list[str]:
    text = epoch.data.decode("ascii")
    assert text.endswith("\r\n")
    parts = text.split("\r\n")
    assert parts[-1] == ""
    return parts[:-1]


def messages(epoch: Epoch) -> dict[str, pynmea2.NMEASentence]:
    return {
        m.sentence_type: m for m in (pynmea2.parse(line, check=True) for line in lines_of(epoch))
    }


def straight(bearing: float, length_m: float = 2000.0) -> list[RoutePoint]:
    lat, lon = offset_position(
        47.0,
        7.6,
        length_m * math.sin(math.radians(bearing)),
        length_m * math.cos(math.radians(bearing)),
    )
    return [RoutePoint(47.0, 7.6, 500.0), RoutePoint(lat, lon, 520.0)]


def ride(**kw) -> list[Epoch]:
    kw.setdefault("start_time", START)
    route = kw.pop("route", None) or generated_loop(47.0, 7.6, 300.0)
    return list(simulate(route, **kw))


# --- clean output ---------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1.0, 5.0, 10.0, 25.0])
def test_every_sentence_has_a_correct_checksum_and_parses(rate):
    epochs = ride(rate_hz=rate, sentences=SENTENCES, noise_m=2.0, duration_s=30)
    assert len(epochs) == round(30 * rate)
    seen = Counter()
    for e in epochs:
        assert e.valid and e.fix and e.faults == ()
        for line in lines_of(e):
            assert len(line) + 2 <= sim.MAX_NMEA_LINE
            body, star, cs = line[1:].rpartition("*")
            assert line[0] == "$" and star and int(cs, 16) == sim.nmea_checksum(body)
            msg = pynmea2.parse(line, check=True)
            seen[msg.sentence_type] += 1
    per_epoch = {k: n / len(epochs) for k, n in seen.items()}
    assert set(per_epoch) == set(SENTENCES)
    assert all(per_epoch[k] == 1 for k in SENTENCES if k != "GSV")
    assert per_epoch["GSV"] >= 2  # 14 satellites, 4 a message


def test_sentences_come_in_the_order_given_with_the_talker():
    (e,) = ride(duration_s=1, sentences=("RMC", "GLL", "GGA"), talker="GP")
    assert [line[:6] for line in lines_of(e)] == ["$GPRMC", "$GPGLL", "$GPGGA"]


def test_gsv_uses_a_constellation_talker_not_gn():
    (e,) = ride(duration_s=1, sentences=("GSV",), talker="GN")
    assert all(line.startswith("$GPGSV") for line in lines_of(e))


def test_glonass_splits_the_same_sky_into_two_gsa_and_two_gsv_groups():
    kw = {"duration_s": 120, "sentences": SENTENCES, "faults": FaultRates(outage=0.02), "seed": 4}
    single, multi = ride(**kw), ride(glonass=True, **kw)
    assert len(single) == len(multi) and any(not e.fix for e in multi)
    for a, b in zip(single, multi, strict=True):
        assert replace(a, data=b"") == replace(b, data=b"")  # the truth is the same
        kinds = [line[1:6] for line in lines_of(b)]
        assert kinds[:4] == ["GNGGA", "GNRMC", "GNGSA", "GNGSA"]
        gsv = [pynmea2.parse(line, check=True) for line in lines_of(b) if "GSV" in line]
        assert kinds[4 : 4 + len(gsv)] == [m.talker + "GSV" for m in gsv]
        talkers = [m.talker for m in gsv]
        assert talkers == sorted(talkers, reverse=True)  # GPS first, then GLONASS
        # Every satellite of the single-constellation epoch, GLONASS ones numbered 64 higher.
        view = {int(getattr(m, f"sv_prn_num_{k}")) for m in gsv for k in range(1, 5)
                if getattr(m, f"sv_prn_num_{k}")}  # fmt: skip
        plain = [pynmea2.parse(line) for line in lines_of(a) if "GSV" in line]
        assert {p if p < 65 else p - 64 for p in view} == {
            int(getattr(m, f"sv_prn_num_{k}")) for m in plain for k in range(1, 5)
            if getattr(m, f"sv_prn_num_{k}")
        }  # fmt: skip
        assert any(p > 64 for p in view) and any(p < 33 for p in view)
        for talker in ("GP", "GL"):
            group = [m for m in gsv if m.talker == talker]
            assert [int(m.msg_num) for m in group] == list(range(1, len(group) + 1))
            assert all(int(m.num_messages) == len(group) for m in group)
        gsa = [pynmea2.parse(line, check=True) for line in lines_of(b) if "GSA" in line]
        used = [int(getattr(m, f"sv_id{k:02d}")) for m in gsa for k in range(1, 13)
                if getattr(m, f"sv_id{k:02d}")]  # fmt: skip
        assert len(used) == (a.sats if a.fix else 0)
        assert all(m.mode_fix_type == ("3" if a.fix else "1") for m in gsa)
        assert {p if p < 65 else p - 64 for p in used} <= {p if p < 65 else p - 64 for p in view}


def test_glonass_needs_the_gn_talker():
    with pytest.raises(ValueError, match="glonass needs the multi-GNSS talker GN"):
        ride(duration_s=1, talker="GP", glonass=True)


def test_decoded_values_match_the_epoch():
    for e in ride(rate_hz=2, noise_m=3.0, duration_s=60, sentences=SENTENCES):
        m = messages(e)
        gga, rmc, vtg, gsa = m["GGA"], m["RMC"], m["VTG"], m["GSA"]
        for msg in (gga, rmc, m["GLL"]):
            assert msg.latitude == pytest.approx(e.lat, abs=1e-9)
            assert msg.longitude == pytest.approx(e.lon, abs=1e-9)
        assert float(gga.altitude) == pytest.approx(e.alt)
        assert gga.gps_qual == 1 and int(gga.num_sats) == min(e.sats, 12)
        assert float(gga.horizontal_dil) == e.hdop
        assert (float(gsa.pdop), float(gsa.hdop), float(gsa.vdop)) == (e.pdop, e.hdop, e.vdop)
        assert sum(1 for i in range(1, 13) if getattr(gsa, f"sv_id{i:02d}")) == min(e.sats, 12)
        assert rmc.status == "A" and rmc.datetime.replace(tzinfo=UTC) == e.time
        assert float(rmc.spd_over_grnd) == pytest.approx(e.speed * KNOTS, abs=1e-3)
        assert float(rmc.true_course) == pytest.approx(e.course, abs=0.005)
        assert float(vtg.spd_over_grnd_kmph) == pytest.approx(e.speed * 3.6, abs=1e-3)
        assert m["GST"].std_dev_latitude == pytest.approx(3.0)
        assert e.unix == e.time.timestamp()


def test_sats_and_dops_are_plausible_and_vary_a_little():
    epochs = ride(duration_s=1200)
    sats = {e.sats for e in epochs}
    hdops = [e.hdop for e in epochs]
    assert sats <= set(range(7, 15)) and len(sats) > 1
    assert min(hdops) >= 0.5 and max(hdops) < 2.0 and len(set(hdops)) > 3
    # A little: consecutive seconds never jump far.
    assert max(abs(a.hdop - b.hdop) for a, b in pairwise(epochs)) < 0.5
    for e in epochs:
        assert e.vdop > e.hdop and e.pdop == pytest.approx(math.hypot(e.hdop, e.vdop), abs=0.01)


# --- time -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate,fractions", [(10.0, 10), (25.0, 25)])
def test_times_advance_by_one_over_the_rate_with_fractions(rate, fractions):
    epochs = ride(rate_hz=rate, duration_s=3)
    step = timedelta(seconds=1 / rate)
    for i, (a, b) in enumerate(pairwise(epochs)):
        assert b.time - a.time == step
        assert b.offset_s - a.offset_s == pytest.approx(1 / rate)
        assert a.index == i
    stamps = [messages(e)["GGA"].timestamp for e in epochs]
    assert [s.microsecond for s in stamps[:fractions]] == [
        round(k * 1_000_000 / rate) for k in range(fractions)
    ]
    # The text itself: hhmmss.ss
    gga_times = [lines_of(e)[0].split(",")[1] for e in epochs[:3]]
    expected = {
        10.0: ["080000.00", "080000.10", "080000.20"],
        25.0: ["080000.00", "080000.04", "080000.08"],
    }
    assert gga_times == expected[rate]


def test_a_start_with_a_fraction_and_an_odd_rate_stay_on_centiseconds():
    start = datetime(2026, 6, 1, 8, 0, 0, 123456, tzinfo=UTC)
    epochs = ride(rate_hz=3, duration_s=2, start_time=start)
    assert [e.time.microsecond for e in epochs] == [120000, 450000, 790000, 120000, 450000, 790000]


def test_midnight_rollover_changes_the_date_in_rmc_and_zda():
    start = datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC)
    epochs = ride(rate_hz=2, duration_s=4, start_time=start, sentences=("RMC", "ZDA"))
    dates = []
    for e in epochs:
        rmc, zda = lines_of(e)
        rmc_f, zda_f = rmc.split(","), zda.split(",")
        dates.append((rmc_f[1], rmc_f[9], "".join(zda_f[2:5])))
        m = messages(e)
        assert m["RMC"].datetime.replace(tzinfo=UTC) == e.time
        assert m["ZDA"].datetime.replace(tzinfo=UTC) == e.time
    assert dates == [
        ("235958.00", "311226", "31122026"),
        ("235958.50", "311226", "31122026"),
        ("235959.00", "311226", "31122026"),
        ("235959.50", "311226", "31122026"),
        ("000000.00", "010127", "01012027"),
        ("000000.50", "010127", "01012027"),
        ("000001.00", "010127", "01012027"),
        ("000001.50", "010127", "01012027"),
    ]


def test_start_time_must_be_aware():
    with pytest.raises(ValueError, match="timezone"):
        ride(duration_s=1, start_time=datetime(2026, 6, 1, 8))


# --- motion ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rate,speed", [(1.0, 6.0), (10.0, 8.0), (25.0, 12.0)])
def test_positions_follow_the_route_at_the_speed(rate, speed):
    route = demo_route()
    epochs = list(simulate(route, rate_hz=rate, speed_mps=speed, start_time=START, duration_s=300))
    expected = speed / rate
    for a, b in pairwise(epochs):
        # Chords cut corners and positions carry 2 cm of rounding: a few per cent.
        assert haversine_m(a.lat, a.lon, b.lat, b.lon) == pytest.approx(
            expected, rel=0.03, abs=0.03
        )
    for e in epochs[:: max(1, int(rate))]:
        nearest = min(haversine_m(e.lat, e.lon, p.lat, p.lon) for p in route)
        assert nearest < 40  # route points are ~50 m apart
    assert (epochs[0].lat, epochs[0].lon) == pytest.approx((route[0].lat, route[0].lon), abs=1e-6)
    assert epochs[0].alt == pytest.approx(route[0].ele, abs=0.05)


def test_one_loop_ends_where_it_started_and_lasts_length_over_speed():
    route = generated_loop(47.0, 7.6, 500.0)
    length = RoutePath(route).length
    epochs = list(simulate(route, speed_mps=5.0, start_time=START))
    assert len(epochs) == math.floor(length / 5.0) + 1
    assert haversine_m(epochs[-1].lat, epochs[-1].lon, route[0].lat, route[0].lon) < 5.0
    two = list(simulate(route, speed_mps=5.0, start_time=START, loops=2))
    assert len(two) == math.floor(2 * length / 5.0) + 1


def test_an_open_route_is_ridden_out_and_back_without_a_jump():
    route = straight(45.0, 1000.0)
    epochs = list(simulate(route, speed_mps=10.0, start_time=START, loops=2))
    assert RoutePath(route).length == pytest.approx(1000.0, abs=0.1)
    assert len(epochs) in (200, 201)  # 2000 m at 10 m/s, give or take a float
    steps = [haversine_m(a.lat, a.lon, b.lat, b.lon) for a, b in pairwise(epochs)]
    assert max(steps) < 10.1
    far = epochs[100]
    assert haversine_m(far.lat, far.lon, route[1].lat, route[1].lon) < 0.1
    assert epochs[50].course == pytest.approx(45.0, abs=0.1)
    assert epochs[150].course == pytest.approx(225.0, abs=0.1)
    assert haversine_m(epochs[-1].lat, epochs[-1].lon, route[0].lat, route[0].lon) < 10.1
    # Elevation interpolated along the segment, both ways.
    assert epochs[50].alt == pytest.approx(510.0, abs=0.1)
    assert epochs[150].alt == pytest.approx(510.0, abs=0.1)


@pytest.mark.parametrize("bearing", [0.0, 90.0, 180.0, 270.0, 123.0])
def test_speed_in_knots_and_kmh_and_course_from_the_segment(bearing):
    (e,) = list(
        simulate(
            straight(bearing), speed_mps=10.0, start_time=START, duration_s=1, sentences=SENTENCES
        )
    )
    m = messages(e)
    assert float(m["RMC"].spd_over_grnd) == pytest.approx(19.438, abs=0.001)
    assert float(m["VTG"].spd_over_grnd_kts) == pytest.approx(19.438, abs=0.001)
    assert float(m["VTG"].spd_over_grnd_kmph) == pytest.approx(36.0, abs=0.001)
    assert float(m["RMC"].true_course) % 360 == pytest.approx(bearing, abs=0.02)
    assert float(m["VTG"].true_track) % 360 == pytest.approx(bearing, abs=0.02)
    assert e.speed == pytest.approx(10.0, abs=1e-3)


def test_noise_moves_positions_by_about_the_given_metres_and_is_seeded():
    clean = ride(duration_s=600)
    noisy = ride(duration_s=600, noise_m=5.0, seed=3)
    again = ride(duration_s=600, noise_m=5.0, seed=3)
    assert [e.data for e in noisy] == [e.data for e in again]
    errors = [haversine_m(a.lat, a.lon, b.lat, b.lon) for a, b in zip(clean, noisy, strict=True)]
    rms = math.sqrt(sum(x * x for x in errors) / len(errors))
    assert 2.0 < rms < 12.0  # 5 m per axis is ~7 m horizontal; a random walk wanders
    steps = [haversine_m(a.lat, a.lon, b.lat, b.lon) for a, b in pairwise(noisy)]
    # Correlated noise: it moves ~1.3 m a second per axis at 5 m, never many sigmas at once.
    assert max(steps) < 6.0 + 8.0


def test_a_standing_rider_needs_a_duration():
    with pytest.raises(ValueError, match="duration"):
        simulate([RoutePoint(47.0, 7.6)], start_time=START)
    epochs = list(simulate([RoutePoint(47.0, 7.6)], start_time=START, duration_s=5))
    assert len(epochs) == 5 and {(e.lat, e.lon) for e in epochs} == {(47.0, 7.6)}
    assert all(e.alt == 0.0 for e in epochs)


def test_loops_zero_never_ends():
    it = simulate(generated_loop(47.0, 7.6, 50.0), speed_mps=10.0, start_time=START, loops=0)
    epochs = [next(it) for _ in range(500)]  # far more than one 330 m loop takes
    assert epochs[-1].index == 499


@pytest.mark.parametrize(
    "kw",
    [
        {"rate_hz": 0},
        {"speed_mps": -1},
        {"noise_m": -1},
        {"loops": -1},
        {"talker": "gn"},
        {"sentences": ("GGA", "XYZ")},
        {"sentences": ()},
        {"duration_s": 0},
    ],
)
def test_bad_arguments_raise_value_error(kw):
    with pytest.raises(ValueError):
        simulate(generated_loop(47.0, 7.6, 300.0), start_time=START, **kw)


# --- faults ---------------------------------------------------------------------------------

FAULTY = FaultRates(
    checksum=0.02, garbage=0.02, truncate=0.02, overlong=0.01, outage=0.01, silence=0.005
)


def faulty(**kw) -> list[Epoch]:
    kw.setdefault("duration_s", 3000)
    kw.setdefault("faults", FAULTY)
    return ride(**kw)


def test_faults_are_deterministic_for_a_seed():
    a, b, c = faulty(seed=7), faulty(seed=7), faulty(seed=8)
    assert [e.data for e in a] == [e.data for e in b]
    assert [e.faults for e in a] == [e.faults for e in b]
    assert [e.data for e in a] != [e.data for e in c]


def test_one_fault_kind_does_not_move_another():
    alone = faulty(faults=FaultRates(checksum=0.05))
    mixed = faulty(faults=FaultRates(checksum=0.05, garbage=0.05, truncate=0.05))
    assert [e.faults.count("checksum") for e in alone] == [
        e.faults.count("checksum") for e in mixed
    ]
    # Faults never move the ride itself.
    clean = ride(duration_s=3000)
    assert [(e.lat, e.lon, e.time) for e in clean] == [(e.lat, e.lon, e.time) for e in mixed]


@pytest.mark.parametrize("kind", ["checksum", "garbage", "truncate", "overlong"])
def test_line_faults_appear_at_the_configured_rate(kind):
    p = 0.03
    epochs = faulty(faults=FaultRates(**{kind: p}), duration_s=2000)
    lines = 4 * len(epochs)  # GGA, RMC, GSA, VTG
    n = sum(e.faults.count(kind) for e in epochs)
    sigma = math.sqrt(lines * p * (1 - p))
    assert abs(n - lines * p) < 4 * sigma


def test_checksum_faults_fail_the_check_and_nothing_else_does():
    epochs = faulty(faults=FaultRates(checksum=0.05))
    bad = 0
    for e in epochs:
        for line in lines_of(e):
            try:
                pynmea2.parse(line, check=True)
            except pynmea2.ChecksumError:
                bad += 1
        assert e.valid == (not e.faults)
    assert bad == sum(e.faults.count("checksum") for e in epochs) > 0


def test_garbage_includes_bytes_that_are_not_utf8():
    epochs = faulty(faults=FaultRates(garbage=0.05))
    hit = [e for e in epochs if "garbage" in e.faults]
    assert hit
    undecodable = 0
    for e in hit:
        try:
            e.data.decode("utf-8")
        except UnicodeDecodeError:
            undecodable += 1
    assert undecodable == len(hit)
    # Every real sentence is still there, findable from its '$'.
    for e in hit:
        assert e.data.count(b"$GN") == 4


def test_truncated_sentences_run_into_the_next_line():
    epochs = faulty(faults=FaultRates(truncate=0.05))
    stream = b"".join(e.data for e in epochs)
    lines = stream.split(b"\r\n")
    glued = [line for line in lines if line.count(b"$") == 2]
    ends_mid = sum(1 for e in epochs if not e.data.endswith(b"\r\n"))
    truncations = sum(e.faults.count("truncate") for e in epochs)
    # Two truncations in a row glue three pieces; otherwise each truncation makes one glued line.
    assert truncations > 0 and len(glued) + (1 if not stream.endswith(b"\n") else 0) <= truncations
    assert all(b"*" in line.split(b"$")[-1] for line in glued)
    # The epoch after one that ended mid-line is not valid: its first line is glued.
    for a, b in pairwise(epochs):
        if not a.data.endswith(b"\n"):
            assert not b.valid
    assert ends_mid > 0


def test_overlong_lines_are_longer_than_nmea_allows():
    epochs = faulty(faults=FaultRates(overlong=0.02))
    long_lines = [
        line for e in epochs for line in e.data.split(b"\r\n") if len(line) + 2 > sim.MAX_NMEA_LINE
    ]
    assert len(long_lines) == sum(e.faults.count("overlong") for e in epochs) > 0
    assert all(200 <= len(line) <= 4010 for line in long_lines)


def test_outages_are_runs_without_a_fix():
    epochs = faulty(faults=FaultRates(outage=0.01, outage_s=(5, 20)), duration_s=3000, rate_hz=2)
    runs, current = [], 0
    for e in epochs:
        if "outage" in e.faults:
            assert not e.fix and not e.valid
            m = messages(e)
            assert m["RMC"].status == "V" and m["GGA"].gps_qual == 0
            assert m["GGA"].latitude == 0.0 and m["GGA"].lat == ""
            assert m["VTG"].spd_over_grnd_kts is None
            current += 1
        else:
            assert e.fix and e.valid
            if current:
                runs.append(current)
            current = 0
    assert runs and all(10 <= n <= 40 for n in runs)  # 5-20 s at 2 Hz
    summary = sim.Summary()
    for e in epochs:
        summary.add(e)
    assert summary.faults["outage"] == len(runs) + (1 if current else 0)
    assert summary.outage_epochs == sum(1 for e in epochs if not e.fix)


def test_outage_and_silence_rates_are_per_second_whatever_the_rate():
    f = FaultRates(outage=0.01, silence=0.01, outage_s=(2, 2), silence_s=(2, 2))
    starts = {}
    for rate in (1.0, 10.0):
        summary = sim.Summary()
        for e in faulty(faults=f, rate_hz=rate, duration_s=4000):
            summary.add(e)
        starts[rate] = (summary.faults["outage"], summary.faults["silence"])
    for kind in (0, 1):
        n1, n10 = starts[1.0][kind], starts[10.0][kind]
        # ~4000 s x 0.01 / (1 + 0.01 x 2 s busy) ~ 39 runs each; Poisson-sized slack.
        assert 20 < n1 < 60 and 20 < n10 < 60


def test_silence_is_a_gap_in_the_output():
    epochs = faulty(faults=FaultRates(silence=0.01, silence_s=(3, 3)), duration_s=2000)
    silent = [e for e in epochs if "silence" in e.faults]
    assert silent and all(e.data == b"" and not e.valid and e.fix for e in silent)
    indexes = [e.index for e in silent]
    runs = [1]
    for a, b in pairwise(indexes):
        runs[-1:] = [runs[-1] + 1] if b == a + 1 else [runs[-1], 1]
    assert all(n % 3 == 0 for n in runs)  # 3 s at 1 Hz each (runs may touch)


def test_valid_means_fault_free_with_a_fix():
    epochs = faulty(seed=11)
    counts = Counter(k for e in epochs for k in e.faults)
    assert all(counts[k] > 0 for k in sim.FAULT_KINDS)
    valid = [e for e in epochs if e.valid]
    assert 0 < len(valid) < len(epochs)
    for e in valid:
        assert e.fix and not e.faults
        m = messages(e)  # parses cleanly, checksums and all
        assert m["RMC"].status == "A" and m["GGA"].gps_qual == 1
    for e in epochs:
        if not e.fix:
            assert not e.valid


def test_without_a_position_sentence_nothing_is_valid():
    assert not any(e.valid for e in ride(duration_s=5, sentences=("ZDA", "GSA")))


# --- --faults syntax ------------------------------------------------------------------------


def test_parse_faults():
    f = parse_faults(
        "checksum=0.01, garbage=0.01,truncate=0.01,overlong=0.001,outage=0.002,silence=0.001,"
        "outage_s=10-60,silence_s=5"
    )
    assert f == FaultRates(0.01, 0.01, 0.01, 0.001, 0.002, 0.001, (10.0, 60.0), (5.0, 5.0))
    assert parse_faults(f.to_spec()) == f
    assert parse_faults("") == FaultRates() == parse_faults("none")
    assert not FaultRates().any and f.any


@pytest.mark.parametrize(
    "spec,message",
    [
        ("bogus=0.1", "unknown fault 'bogus'"),
        ("checksum=0.1,crc=0.2", "unknown fault 'crc'"),
        ("checksum", "fault 'checksum' needs a value"),
        ("checksum=", "fault 'checksum' needs a value"),
        ("checksum=1.5", "fault 'checksum': '1.5' is not a probability"),
        ("garbage=lots", "fault 'garbage': 'lots' is not a probability"),
        ("outage=nan", "fault 'outage': 'nan' is not a probability"),
        ("outage_s=30-5", "fault 'outage_s': '30-5'"),
        ("silence_s=0", "fault 'silence_s': '0'"),
        ("checksum=0.1,checksum=0.2", "fault 'checksum' given twice"),
    ],
)
def test_parse_faults_errors_name_the_culprit(spec, message):
    with pytest.raises(ValueError) as exc:
        parse_faults(spec)
    assert str(exc.value).startswith(message)
    assert "\n" not in str(exc.value)


# --- routes ---------------------------------------------------------------------------------


def write_gpx(path: Path, kind: str) -> Path:
    gpx = gpxpy.gpx.GPX()
    coords = [(47.0, 7.6, 500.0), (47.001, 7.601, 505.0), (47.002, 7.603, None)]
    if kind == "track":
        track = gpxpy.gpx.GPXTrack()
        for seg_coords in (coords[:2], coords[2:]):
            seg = gpxpy.gpx.GPXTrackSegment()
            seg.points = [gpxpy.gpx.GPXTrackPoint(a, b, elevation=c) for a, b, c in seg_coords]
            track.segments.append(seg)
        gpx.tracks.append(track)
    elif kind == "route":
        route = gpxpy.gpx.GPXRoute()
        route.points = [gpxpy.gpx.GPXRoutePoint(a, b, elevation=c) for a, b, c in coords]
        gpx.routes.append(route)
    else:
        gpx.waypoints = [gpxpy.gpx.GPXWaypoint(a, b, elevation=c) for a, b, c in coords]
    path.write_text(gpx.to_xml())
    return path


@pytest.mark.parametrize("kind", ["track", "route", "waypoints"])
def test_load_route_from_gpx(tmp_path, kind):
    route = load_route(write_gpx(tmp_path / f"{kind}.gpx", kind))
    assert route == [
        RoutePoint(47.0, 7.6, 500.0),
        RoutePoint(47.001, 7.601, 505.0),
        RoutePoint(47.002, 7.603, None),
    ]
    # A missing elevation takes the last known one.
    epochs = list(simulate(route, start_time=START))
    assert epochs[-1].alt == pytest.approx(505.0)


def test_tracks_win_over_routes_and_waypoints(tmp_path):
    path = write_gpx(tmp_path / "t.gpx", "track")
    gpx = gpxpy.parse(path.read_text())
    gpx.waypoints = [gpxpy.gpx.GPXWaypoint(10.0, 10.0)]
    path.write_text(gpx.to_xml())
    assert load_route(path)[0] == RoutePoint(47.0, 7.6, 500.0)


def test_load_route_errors(tmp_path):
    empty = tmp_path / "empty.gpx"
    empty.write_text(gpxpy.gpx.GPX().to_xml())
    with pytest.raises(ValueError, match="no track, route or waypoint"):
        load_route(empty)
    junk = tmp_path / "junk.gpx"
    junk.write_text("this is not xml")
    with pytest.raises(ValueError, match="not a GPX file"):
        load_route(junk)
    with pytest.raises(OSError):
        load_route(tmp_path / "missing.gpx")


def test_generated_loop_is_closed_round_and_gently_rolling():
    route = generated_loop(47.0, 7.6, 1000.0, points=120)
    assert len(route) == 121 and route[0] == route[-1]
    radii = [haversine_m(47.0, 7.6, p.lat, p.lon) for p in route]
    assert min(radii) > 750 and max(radii) < 1250
    grades = [
        abs(b.ele - a.ele) / haversine_m(a.lat, a.lon, b.lat, b.lon) for a, b in pairwise(route)
    ]
    assert max(grades) < 0.05 and max(p.ele for p in route) - min(p.ele for p in route) > 10
    assert RoutePath(route).closed


def test_the_bundled_demo_route():
    path = Path(tracker.__file__).parent / "data" / sim.DEMO_ROUTE
    assert path.stat().st_size < 100_000
    gpx = gpxpy.parse(path.read_text())
    assert gpx.version == "1.1" and gpx.tracks and "Synthetic" in gpx.description
    route = demo_route()
    assert route == load_route(path)
    assert 300 <= len(route) <= 1000
    p = RoutePath(route)
    assert p.closed and 15_000 < p.length < 25_000
    eles = [pt.ele for pt in route]
    assert all(e is not None for e in eles) and 100 < max(eles) - min(eles) < 400
    for a, b in pairwise(route):
        d = haversine_m(a.lat, a.lon, b.lat, b.lon)
        assert 20 < d < 80 and abs(b.ele - a.ele) / d < 0.12
    # Smooth: the heading never turns sharply between consecutive segments.
    bearings = [bearing_deg(a.lat, a.lon, b.lat, b.lon) for a, b in pairwise(route)]
    turns = [abs((b - a + 180) % 360 - 180) for a, b in pairwise(bearings)]
    assert max(turns) < 45


# --- run() ----------------------------------------------------------------------------------


def test_run_paces_epochs_in_real_time_with_speedup():
    epochs = ride(rate_hz=10, duration_s=2)
    stamps: list[float] = []
    out = bytearray()

    def write(data: bytes) -> None:
        stamps.append(time.monotonic())
        out.extend(data)

    summary = run(epochs, write, speedup=4.0)
    assert bytes(out) == b"".join(e.data for e in epochs)
    assert summary.epochs == 20 and summary.valid == 20 and summary.bytes == len(out)
    assert stamps[-1] - stamps[0] == pytest.approx(1.9 / 4, abs=0.1)


def test_run_stops_at_once_on_the_stop_event():
    stop = threading.Event()
    written: list[bytes] = []
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    summary = run(ride(duration_s=60), written.append, stop=stop)
    assert time.monotonic() - t0 < 1.0
    assert summary.epochs == len(written) == 1


def test_run_fast_writes_everything_and_skips_silence():
    epochs = faulty(faults=FaultRates(silence=0.02), duration_s=500)
    written: list[bytes] = []
    seen: list[int] = []
    summary = run(epochs, written.append, realtime=False, progress=lambda e: seen.append(e.index))
    assert seen == list(range(500))
    assert len(written) == sum(1 for e in epochs if e.data) < 500
    assert summary.silent_epochs == 500 - len(written)
    assert "silence" in summary.format()


# --- CLI ------------------------------------------------------------------------------------


def cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tracker simulate")
    sim.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_writes_a_file_fast(tmp_path, capsys):
    out = tmp_path / "ride.nmea"
    args = cli(
        [
            "--loop", "47.0,7.6,300", "--rate", "5", "--speed", "7", "--fast",
            "--sentences", "GGA,RMC,GSV", "--start", "2026-06-01T08:00:00Z", "--out", str(out),
        ]
    )  # fmt: skip
    assert sim.main(args) == 0
    expected = list(
        simulate(
            generated_loop(47.0, 7.6, 300),
            rate_hz=5,
            speed_mps=7,
            start_time=START,
            sentences=("GGA", "RMC", "GSV"),
        )
    )
    data = out.read_bytes()
    assert data == b"".join(e.data for e in expected)
    gsv_lines = len(lines_of(expected[0])) - 2
    assert data.count(b"\r\n") == len(expected) * (2 + gsv_lines)
    err = capsys.readouterr().err
    assert f"{len(expected)} epochs, {len(expected)} valid fixes" in err


def test_cli_defaults_to_the_demo_ride_on_stdout(capfdbinary):
    args = cli(["--fast", "--duration", "3", "--seed", "1", "--start", "2026-06-01T23:59:59+00:00"])
    assert sim.main(args) == 0
    captured = capfdbinary.readouterr()
    lines = captured.out.split(b"\r\n")
    assert len(lines) == 3 * 4 + 1 and lines[0].startswith(b"$GNGGA,235959.00,")
    assert b"RMC,000000.00,A," in captured.out and b",020626," in captured.out
    assert b"3 epochs" in captured.err


def test_cli_faults_summary(tmp_path, capsys):
    out = tmp_path / "f.nmea"
    args = cli(
        ["--fast", "--duration", "2000", "--faults", "checksum=0.05,outage=0.01", "--out", str(out)]
    )
    assert sim.main(args) == 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "checksum" in err and "outage" in err and "epochs)" in err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--faults", "checksum=0.1,bogus=1"], "--faults: unknown fault 'bogus'"),
        (["--faults", "truncate=2"], "--faults: fault 'truncate': '2' is not a probability"),
        (["--sentences", "GGA,XXX"], "--sentences: unknown sentence 'XXX'"),
        (["--start", "yesterday"], "--start: 'yesterday'"),
        (["--loop", "47.0"], "--loop:"),
        (["--rate", "0"], "--rate: out of range"),
        (["--talker", "g"], "--talker:"),
        (["--route", "/nonexistent/ride.gpx"], "--route:"),
        (["--phases", "park:10,ride:0"], "--phases: phase 2 'ride:0': the duration must be"),
        (["--phases", "nap:10"], "--phases: phase 1 'nap:10': unknown kind 'nap'"),
        (["--phases", "park:10", "--duration", "5"], "--phases: not with --duration"),
        (["--phases", "park:10", "--loops", "2"], "--phases: not with --loops"),
        (["--phases", "park:10", "--noise", "3"], "--phases: not with --noise"),
        (["--phases", "park:10", "--speed", "-1"], "--speed: out of range"),
        (["--glonass", "--talker", "GP"], "--glonass: needs --talker GN, not 'GP'"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(argv, message, capsys, tmp_path):
    out = tmp_path / "never.nmea"
    assert sim.main(cli([*argv, "--fast", "--out", str(out)])) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tracker simulate: error: {message}")
    assert err.count("\n") == 1
    assert not out.exists()


def test_cli_streams_into_a_pty_for_a_serial_reader(tmp_path, capsys):
    link = tmp_path / "gps"
    args = cli(
        [
            "--pty", str(link), "--loop", "47.0,7.6,300", "--rate", "10", "--duration", "3",
            "--speedup", "10", "--start", "2026-06-01T08:00:00Z", "--sentences", "RMC,GGA",
        ]
    )  # fmt: skip
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(sim.main(args)))
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not link.is_symlink() and time.monotonic() < deadline:
            time.sleep(0.02)
        port = serial.serial_for_url(str(link), timeout=1.0)
        try:
            got = b""
            while True:
                # Small reads: pyserial drops what one read() gathered if the port hangs up in it.
                chunk = port.read(port.in_waiting or 1)
                got += chunk
                if not chunk:
                    break
        except serial.SerialException:
            pass  # the simulator finished and closed the pty: a hang-up
        finally:
            port.close()
    finally:
        thread.join(10)
    assert status == [0]
    expected = list(
        simulate(
            generated_loop(47.0, 7.6, 300),
            rate_hz=10,
            start_time=START,
            duration_s=3,
            sentences=("RMC", "GGA"),
        )
    )
    assert got == b"".join(e.data for e in expected)  # every byte, CRLF and all
    assert not link.exists()
    err = capsys.readouterr().err
    assert "NMEA on /dev/" in err and "0 bytes dropped" in err
