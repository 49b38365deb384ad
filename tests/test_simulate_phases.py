"""tracker.simulate's phased rides (park, ride, bad spot): the spec, each phase's statistics,
the NMEA they make (read back with our own decoder), and `tracker simulate --phases`."""

from __future__ import annotations

import argparse
import hashlib
import itertools
import statistics
import threading
import time
from datetime import UTC, datetime

import pytest
import serial

from tracker import simulate as sim
from tracker.nmea import Decoder
from tracker.simulate import (
    SENTENCES,
    Epoch,
    FaultRates,
    Phase,
    RoutePoint,
    bearing_deg,
    generated_loop,
    haversine_m,
    parse_phases,
    simulate,
    simulate_phases,
)
from tracker.simulate.routes import offset_position

START = datetime(2026, 6, 1, 8, 0, 0, tzinfo=UTC)
LOOP = generated_loop(47.0, 7.6, 300.0)
SPEC = "park:60,ride:1200,park:600,ride:1200,bad:1800,ride:900,park:1200"


def straight(length_m: float = 20_000.0) -> list[RoutePoint]:
    lat, lon = offset_position(47.0, 7.6, length_m * 0.6, length_m * 0.8)
    return [RoutePoint(47.0, 7.6, 500.0), RoutePoint(lat, lon, 520.0)]


def phased(spec: str | list[Phase], **kw) -> list[Epoch]:
    kw.setdefault("start_time", START)
    route = kw.pop("route", LOOP)
    return list(simulate_phases(route, spec, **kw))


def of(epochs: list[Epoch], kind: str) -> list[list[Epoch]]:
    """The phases of `kind`, each as its run of epochs."""
    return [list(g) for k, g in itertools.groupby(epochs, key=lambda e: e.phase) if k == kind]


def dist(a: Epoch | RoutePoint, b: Epoch | RoutePoint) -> float:
    return haversine_m(a.lat, a.lon, b.lat, b.lon)


def angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.fixture(scope="module")
def full_ride() -> list[Epoch]:
    """The ride of the brief, 6960 epochs at 1 Hz."""
    return phased(SPEC, seed=5)


# --- simulate() is unchanged ----------------------------------------------------------------


def test_simulate_gives_the_same_bytes_as_before_phases_existed():
    # Hashed before simulate()'s loop was shared with the phases: noise, every sentence and
    # every fault kind, so any change in what simulate() draws or writes shows.
    faults = FaultRates(
        checksum=0.02, garbage=0.02, truncate=0.02, overlong=0.01, outage=0.01, silence=0.01
    )
    epochs = simulate(
        LOOP,
        start_time=START,
        rate_hz=2,
        noise_m=2.0,
        sentences=SENTENCES,
        seed=3,
        duration_s=300,
        faults=faults,
    )
    data = b"".join(e.data for e in epochs)
    digest = "0896a4931400cb0db6fbeb74a7c0a9d5726435c3a7c703ddcd6e1f6c3285b119"
    assert hashlib.sha256(data).hexdigest() == digest


def test_simulate_epochs_have_no_phase_and_move_when_the_rider_does():
    (e,) = simulate(LOOP, start_time=START, duration_s=1)
    assert e.phase == "" and e.moving
    (e,) = simulate(LOOP, start_time=START, duration_s=1, speed_mps=0)
    assert not e.moving


# --- the spec -------------------------------------------------------------------------------


def test_parse_phases():
    assert parse_phases(SPEC)[:3] == [Phase("park", 60), Phase("ride", 1200), Phase("park", 600)]
    assert len(parse_phases(SPEC)) == 7
    assert parse_phases(" Park : 1.5 , ride:20m,BAD:1h, ride:.5,park:30s") == [
        Phase("park", 1.5),
        Phase("ride", 1200),
        Phase("bad", 3600),
        Phase("ride", 0.5),
        Phase("park", 30),
    ]


@pytest.mark.parametrize(
    "spec,message",
    [
        ("", "no phase given"),
        ("  ", "no phase given"),
        ("park:60,,ride:10", "phase 2 is empty"),
        ("park:60,", "phase 2 is empty"),
        ("walk:60", "phase 1 'walk:60': unknown kind 'walk' (known: park, ride, bad)"),
        ("park:10,ride", "phase 2 'ride': no duration"),
        ("park:", "phase 1 'park:': no duration"),
        ("ride:fast", "phase 1 'ride:fast': 'fast' is not a duration"),
        ("ride:-5", "'-5' is not a duration"),
        ("ride:1e3", "'1e3' is not a duration"),
        ("ride:nan", "'nan' is not a duration"),
        ("ride:10d", "'10d' is not a duration"),
        ("ride:0", "phase 1 'ride:0': the duration must be more than 0"),
        ("park:10,ride:0.0m", "phase 2 'ride:0.0m': the duration must be more than 0"),
    ],
)
def test_parse_phases_errors_name_the_problem(spec, message):
    with pytest.raises(ValueError) as info:
        parse_phases(spec)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_phase_checks_itself():
    with pytest.raises(ValueError, match="unknown phase kind 'walk'"):
        Phase("walk", 10)
    with pytest.raises(ValueError, match="not a positive duration"):
        Phase("park", 0)


@pytest.mark.parametrize(
    "kw",
    [
        {"rate_hz": 0},
        {"speed_mps": -1},
        {"talker": "gn"},
        {"sentences": ("GGA", "XYZ")},
        {"start_time": datetime(2026, 6, 1)},
        {"phases": []},
        {"phases": "park:10,run:5"},
    ],
)
def test_bad_arguments_raise_value_error(kw):
    phases = kw.pop("phases", "park:10")
    with pytest.raises(ValueError):
        phased(phases, **kw)


# --- the ride as a whole --------------------------------------------------------------------


def test_phases_follow_each_other_for_their_durations(full_ride):
    assert len(full_ride) == 6960
    assert [e.index for e in full_ride] == list(range(6960))
    runs = [(k, len(list(g))) for k, g in itertools.groupby(full_ride, key=lambda e: e.phase)]
    assert [(p.kind, round(p.duration_s)) for p in parse_phases(SPEC)] == runs
    assert all(e.valid and e.fix for e in full_ride)
    assert {e.moving for e in full_ride if e.phase != "ride"} == {False}


def test_durations_at_other_rates_and_fractions():
    epochs = phased("park:2.5,ride:3.3", rate_hz=2)
    assert [e.phase for e in epochs] == ["park"] * 5 + ["ride"] * 7
    assert epochs[-1].offset_s == 5.5


def test_deterministic_for_a_seed():
    kw = {"sentences": SENTENCES, "faults": FaultRates(checksum=0.01, outage=0.005), "seed": 7}
    a, b = phased("park:200,ride:200,bad:300", **kw), phased("park:200,ride:200,bad:300", **kw)
    assert [e.data for e in a] == [e.data for e in b]
    assert a == b
    other = phased("park:200,ride:200,bad:300", **{**kw, "seed": 8})
    assert [e.data for e in a] != [e.data for e in other]
    # Later phases do not change earlier ones.
    c = phased("park:200,ride:200,park:50", **kw)
    assert [e.data for e in c[:400]] == [e.data for e in a[:400]]


def test_faults_apply_as_in_simulate():
    epochs = phased("park:600,bad:600", faults=FaultRates(checksum=0.02, outage=0.01), seed=2)
    assert any("checksum" in e.faults for e in epochs)
    assert any(not e.fix for e in epochs)
    for e in epochs:
        assert e.valid == (e.fix and not e.faults)
        if not e.fix:
            assert (e.sats, e.hdop) == (0, 99.99)


# --- park -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_park_wanders_a_few_metres_around_the_spot(seed):
    epochs = phased("park:1800", seed=seed)
    spot = LOOP[0]
    d = [dist(e, spot) for e in epochs]
    assert max(d) <= 25.0
    assert 1.0 < statistics.mean(d) < 12.0
    # Correlated, not white: from one second to the next it moves centimetres, not metres.
    assert max(dist(a, b) for a, b in itertools.pairwise(epochs)) < 1.0
    assert all(0.7 <= e.hdop <= 1.5 and 8 <= e.sats <= 12 for e in epochs)
    assert not any(e.moving for e in epochs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_park_speed_is_noise_with_single_epoch_spikes(seed):
    epochs = phased("park:1800", seed=seed)
    speeds = [e.speed for e in epochs]
    spikes = [i for i, s in enumerate(speeds) if s > 0.41]
    assert 5 <= len(spikes) <= 10  # about one every 3-5 minutes
    for i in spikes:
        assert 2.0 <= speeds[i] <= 5.0 and epochs[i].hdop <= 1.5
        assert all(s <= 0.41 for s in speeds[max(i - 1, 0) : i] + speeds[i + 1 : i + 2])
    for a, b in itertools.pairwise(spikes):
        assert 179 <= b - a <= 301
    assert len({round(e.course) for e in epochs}) > 300  # a standing receiver's course is noise


# --- ride -----------------------------------------------------------------------------------


def test_ride_ramps_up_from_standstill_cruises_and_stops(full_ride):
    for ride in of(full_ride, "ride"):
        speeds = [e.speed for e in ride]
        assert not ride[0].moving and all(e.moving for e in ride[1:])
        assert speeds[0] < 0.3 and speeds[-1] < 0.8
        # 0.3-0.5 m/s2 up to cruise speed, and down again.
        up = next(i for i, s in enumerate(speeds) if s >= 5.5)
        down = len(speeds) - next(i for i, s in enumerate(reversed(speeds)) if s >= 5.5)
        assert 10 <= up <= 20 and 10 <= len(speeds) - down <= 20
        for t, s in enumerate(speeds[:8]):
            assert 0.3 * t - 0.3 < s < 0.5 * t + 0.3
        cruise = speeds[up + 10 : down - 10]
        assert statistics.mean(cruise) == pytest.approx(6.0, abs=0.05)
        assert max(abs(s - 6.0) for s in cruise) < 0.4
        assert all(0.7 <= e.hdop <= 1.5 and 8 <= e.sats <= 12 for e in ride)


def test_a_short_ride_never_reaches_cruise_speed():
    (ride,) = of(phased("park:10,ride:20,park:10", seed=3), "ride")
    top = max(e.speed for e in ride)
    assert 2.2 < top < 5.3  # 20 s at 0.3-0.5 m/s2 up and down: at most 5 m/s
    assert ride[0].speed < 0.3 and ride[-1].speed < 0.8


def test_ride_distance_matches_its_speeds_and_rides_continue_where_they_stopped():
    route = straight()
    epochs = phased("park:30,ride:300,park:120,ride:200,park:30", route=route, seed=4)
    ride1, ride2 = of(epochs, "ride")
    _, park, last = of(epochs, "park")
    for ride in (ride1, ride2):
        ridden = sum(e.speed for e in ride)  # 1 s apart
        assert dist(ride[0], ride[-1]) == pytest.approx(ridden, abs=15.0)
        for a, b in itertools.pairwise(ride[20:-20]):
            assert angle_diff(bearing_deg(a.lat, a.lon, b.lat, b.lon), a.course) < 10
    assert dist(ride1[0], route[0]) < 15
    assert max(dist(e, ride1[-1]) for e in park) < 30
    assert dist(ride2[0], ride1[-1]) < 30
    assert dist(ride2[-1], route[0]) > dist(ride1[-1], route[0]) + 800
    assert max(dist(e, ride2[-1]) for e in last) < 30


# --- bad spot -------------------------------------------------------------------------------


def walks(epochs: list[Epoch]) -> list[tuple[int, int]]:
    """(first, end) index ranges of the phantom walks: the only bad-spot speeds of 1 m/s on."""
    out, start = [], None
    for i, e in enumerate([*epochs, None]):
        fast = e is not None and e.speed >= 1.0
        if fast and start is None:
            start = i
        elif not fast and start is not None:
            out.append((start, i))
            start = None
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bad_spot_has_poor_dops_and_larger_drift(seed):
    epochs = phased("bad:1800", seed=seed)
    spot = LOOP[0]
    assert all(4.0 <= e.hdop <= 8.0 and 4 <= e.sats <= 6 for e in epochs)
    in_walk = {i for a, b in walks(epochs) for i in range(a, b)}
    still = [e for i, e in enumerate(epochs) if i not in in_walk]
    assert max(dist(e, spot) for e in still) <= 50.0
    assert max(dist(e, spot) for e in still) > 10.0
    assert sum(e.speed < 0.5 for e in still) / len(still) > 0.95
    assert not any(e.moving for e in epochs)
    # HDOP jumps every few seconds (2-6 s at a time; a walk may cut a run short).
    runs = [len(list(g)) for _, g in itertools.groupby(still, key=lambda e: e.hdop)]
    assert max(runs) <= 6 and 3.0 <= statistics.mean(runs) <= 5.5
    assert len({e.hdop for e in still}) > 200


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bad_spot_phantom_walks(seed):
    epochs = phased("bad:1800", seed=seed)
    found = walks(epochs)
    assert 6 <= len(found) <= 15  # every 2-4 minutes
    for a, b in found:
        walk = epochs[a:b]
        assert 10 <= len(walk) <= 20
        assert all(e.sats == 4 and 6.0 <= e.hdop <= 8.0 for e in walk)
        assert all(1.0 <= e.speed <= 3.0 for e in walk)
        courses = [e.course for e in walk]
        assert max(angle_diff(c, courses[0]) for c in courses) < 6
        # The position walks with the reported speed and course...
        for p, e in itertools.pairwise(epochs[a - 1 : b]):
            assert dist(p, e) == pytest.approx(e.speed, abs=0.1)
            assert angle_diff(bearing_deg(p.lat, p.lon, e.lat, e.lon), e.course) < 5
        # ...and snaps back to where it was when the walk ends.
        if b < len(epochs):
            assert dist(epochs[a - 1], epochs[b]) < 3.0
            assert dist(walk[-1], epochs[b]) > 0.5 * sum(e.speed for e in walk)
    for (a1, _), (a2, _) in itertools.pairwise(found):
        assert 119 <= a2 - a1 <= 241


def test_phantom_walks_last_seconds_whatever_the_rate():
    epochs = phased("bad:900", rate_hz=5, seed=1)
    found = walks(epochs)
    assert found and all(50 <= b - a <= 100 for a, b in found)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_park_after_a_bad_spot_settles_within_seconds(seed):
    (park,) = of(phased("bad:600,park:600", seed=seed), "park")
    assert max(dist(e, LOOP[0]) for e in park[12:]) <= 25.0


# --- the NMEA, read back --------------------------------------------------------------------


def test_our_decoder_reads_back_the_epochs():
    epochs = phased("park:200,ride:150,bad:300", sentences=SENTENCES, seed=9)
    dec = Decoder()
    fixes = [f for e in epochs for f in dec.feed(e.data)] + dec.flush()
    assert len(fixes) == len(epochs)
    for e, f in zip(epochs, fixes, strict=True):
        assert f.time == pytest.approx(e.unix)
        assert (f.lat, f.lon) == (pytest.approx(e.lat, abs=1e-9), pytest.approx(e.lon, abs=1e-9))
        assert f.speed == pytest.approx(e.speed, abs=1e-6)
        assert f.course == pytest.approx(e.course, abs=0.005)
        assert (f.sats, f.hdop, f.vdop, f.pdop) == (e.sats, e.hdop, e.vdop, e.pdop)
        assert f.err_lat == pytest.approx(3.0 * e.hdop, abs=0.051)  # GST: 3 m per HDOP
    assert {f.sats for f in fixes} >= {4, 5, 6} and max(f.sats for f in fixes) >= 8


# --- CLI ------------------------------------------------------------------------------------


def cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tracker simulate")
    sim.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_writes_a_phased_ride_to_a_file(tmp_path, capsys):
    out = tmp_path / "phased.nmea"
    args = cli(
        [
            "--phases", "park:60,ride:2m,bad:90", "--loop", "47.0,7.6,300", "--rate", "2",
            "--speed", "7", "--seed", "3", "--fast", "--sentences", "GGA,RMC,GST",
            "--start", "2026-06-01T08:00:00Z", "--out", str(out),
        ]
    )  # fmt: skip
    assert sim.main(args) == 0
    expected = phased(
        "park:60,ride:120,bad:90",
        rate_hz=2,
        speed_mps=7,
        seed=3,
        sentences=("GGA", "RMC", "GST"),
    )
    assert len(expected) == 540
    assert out.read_bytes() == b"".join(e.data for e in expected)
    assert "540 epochs, 540 valid fixes" in capsys.readouterr().err


def test_cli_phases_into_a_pty_paced(tmp_path, capsys):
    link = tmp_path / "gps"
    args = cli(
        [
            "--pty", str(link), "--phases", "park:1,ride:2", "--rate", "5", "--speedup", "10",
            "--start", "2026-06-01T08:00:00Z", "--sentences", "RMC,GGA",
        ]
    )  # fmt: skip
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(sim.main(args)))
    thread.start()
    got = b""
    try:
        deadline = time.monotonic() + 5
        while not link.is_symlink() and time.monotonic() < deadline:
            time.sleep(0.02)
        port = serial.serial_for_url(str(link), timeout=1.0)
        try:
            # Until the simulator has finished and closed the pty (a hang-up), whatever the
            # pauses: on a busy machine an empty 1 s read is no end of the ride.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                chunk = port.read(port.in_waiting or 1)
                got += chunk
                if not chunk and not thread.is_alive():
                    break
        except serial.SerialException:
            pass  # the simulator finished and closed the pty: a hang-up
        finally:
            port.close()
    finally:
        thread.join(10)
    assert status == [0]
    expected = phased("park:1,ride:2", route=sim.demo_route(), rate_hz=5, sentences=("RMC", "GGA"))
    assert len(expected) == 15 and got == b"".join(e.data for e in expected)
    assert "15 epochs, 15 valid fixes" in capsys.readouterr().err
