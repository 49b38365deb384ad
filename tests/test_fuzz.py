"""Property-based fuzzing (hypothesis) of everything that parses outside input: the NMEA decoder,
the Map My Tracks and json-gpsr reply parsers, the GATT and ANT+ decoders, the config loader.

The property is the same everywhere: whatever comes in, nothing escapes but the documented error
type (the decoder: nothing at all), with a non-empty one-line message, and what is returned is
finite and within bounds. Runs are derandomized (the same examples on every run and machine) and
bounded: the whole file takes a few seconds. Every bug these found is an `@example` below.
"""

from __future__ import annotations

import dataclasses
import math
from functools import reduce
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tracker import button_config, config, plausible
from tracker.backends import REGISTRY, settings_class
from tracker.gpsd import GpsdDecoder
from tracker.nmea import REJECT_REASONS, Decoder, DecoderStats
from tracker.senders import gpsr, mapmytracks
from tracker.senders.transport import Rejected, SendError, Transient
from tracker.sensors import ant, gatt
from tracker.sensors import config as sensors_config

# Derandomized: a failure found once is found on every run; no example database in the tree.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def one_line(e: BaseException) -> None:
    msg = str(e)
    assert msg.strip(), f"{type(e).__name__} without a message"
    assert "\n" not in msg and "\r" not in msg, f"multi-line message: {msg!r}"


# --- NMEA -----------------------------------------------------------------------------------


def sentence(body: str) -> bytes:
    """`$body*hh` with the checksum of body's UTF-8 bytes (so it reaches the field parsers)."""
    raw = body.encode()
    return b"$%s*%02X" % (raw, reduce(lambda a, c: a ^ c, raw, 0))


def epoch(tm: str) -> list[str]:
    """The bodies of one complete epoch at time `tm`: every kind the decoder reads."""
    return [
        f"GPGGA,{tm},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
        "GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1",
        "GPGSV,2,1,08,01,40,083,46,02,17,308,41,12,07,344,39,14,22,228,45",
        f"GNGNS,{tm}.00,4807.038,N,01131.000,E,AAN,10,0.9,545.4,46.9,,,V",
        f"GPGST,{tm}.00,0.006,0.023,0.020,273.6,0.023,0.020,0.031",
        f"GPRMC,{tm},A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W,A",
        "GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A",
        f"GPGLL,4807.038,N,01131.000,E,{tm},A,A",
        f"GPZDA,{tm},23,03,1994,00,00",
    ]


BODIES = epoch("123519") + epoch("123520")
STREAM = b"".join(sentence(b) + b"\r\n" for b in BODIES)

# Field text: arbitrary (no line end or `$`, so one fuzzed sentence stays one line), numbers
# at the edges of float(), and plausible numeric shapes.
TRICKY = ["", "nan", "NaN", "inf", "-inf", "1e999", "-1e999", "-0", "+12", "1_0", "0x1F", "٣",
          " 1", "-1", "9999.9999", "-4807.038", "18000.000", "9000.0001", "235960", "-10000",
          "99999999999999999999", "0", "A", "V", "N", "E", "W", "S", "*", "**", ",",
          "."]  # fmt: skip
field_text = st.one_of(
    st.sampled_from(TRICKY),
    st.from_regex(r"[-+]?\d{0,6}(\.\d{0,4})?", fullmatch=True),
    st.text(st.characters(codec="utf-8", exclude_characters="$\r\n"), max_size=12),
)


@st.composite
def fuzzed_sentence(draw: st.DrawFn) -> bytes:
    """A valid sentence with some fields replaced by arbitrary text, checksum recomputed."""
    fields = draw(st.sampled_from(BODIES)).split(",")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(1, len(fields) - 1))
        fields[i] = draw(field_text)
    if draw(st.booleans()):  # too few or too many fields
        n = draw(st.integers(1, len(fields) + 3))
        fields = (fields + [draw(field_text) for _ in range(3)])[:n]
    return sentence(",".join(fields))


@st.composite
def mutated_stream(draw: st.DrawFn) -> bytes:
    """The valid stream with bytes flipped, inserted and deleted."""
    data = bytearray(STREAM)
    for _ in range(draw(st.integers(1, 12))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "byte"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(
                st.binary(min_size=1, max_size=8) | st.sampled_from([b"$", b"\n", b"*", b","])
            )
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        else:
            data[i] = draw(st.integers(0, 255))
    return bytes(data)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def in_bounds(f) -> bool:
    """Every value of the fix finite and within what a receiver can report (docs/values.md),
    checked here on its own, not through the decoder's check."""
    p = plausible

    def within(x, lo, hi, *, above=False) -> bool:
        return x is None or (math.isfinite(x) and (lo < x if above else lo <= x) and x <= hi)

    return (
        p.TIME_MIN <= f.time < p.TIME_MAX
        and -90 <= f.lat <= 90 and -180 <= f.lon <= 180
        and within(f.alt, p.ALT_MIN, p.ALT_MAX)
        and within(f.speed, 0, p.SPEED_MAX)
        and within(f.course, 0, 360)
        and within(f.sats, 0, p.SATS_MAX)
        and all(within(d, 0, p.DOP_MAX, above=True) for d in (f.hdop, f.vdop, f.pdop))
        and all(within(e, 0, p.ERR_MAX) for e in (f.err_lat, f.err_lon, f.err_alt))
    )  # fmt: skip


# Counted once per fix or epoch, not per sentence: the accounting below leaves them out.
PER_FIX = ("no_date", *plausible.REASONS)


def per_sentence(s: DecoderStats) -> int:
    return s.sentences + s.ignored + s.rejected - sum(s.rejected_by[r] for r in PER_FIX)


def check_decoder(dec: Decoder, fixes: list) -> None:
    for f in fixes:
        assert math.isfinite(f.time), f
        assert math.isfinite(f.lat) and -90.0 <= f.lat <= 90.0, f
        assert math.isfinite(f.lon) and -180.0 <= f.lon <= 180.0, f
        assert in_bounds(f), f
    s = dec.stats
    assert set(s.rejected_by) == set(REJECT_REASONS)
    assert s.rejected == sum(s.rejected_by.values())
    assert min(s.rejected_by.values()) >= 0
    assert s.fixes == len(fixes)


def decode(data: bytes, cuts: list[int]) -> tuple[Decoder, list]:
    dec = Decoder()
    fixes = []
    for piece in chunks(data, cuts):
        fixes += dec.feed(piece)
    fixes += dec.flush()
    return dec, fixes


def test_nmea_base_stream_decodes() -> None:
    """The fuzzing's starting point is clean: two fixes, nothing rejected."""
    dec, fixes = decode(STREAM, [])
    assert len(fixes) == 2 and dec.stats.rejected == 0
    assert dec.stats.sentences == len(BODIES)


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=4))
def test_nmea_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    check_decoder(*decode(data, cuts))


@settings(FUZZ, max_examples=300)
@given(mutated_stream(), st.lists(st.integers(0, 2000), max_size=4))
def test_nmea_mutated_stream(data: bytes, cuts: list[int]) -> None:
    check_decoder(*decode(data, cuts))


@settings(FUZZ, max_examples=300)
@given(st.lists(fuzzed_sentence(), min_size=1, max_size=6), st.booleans())
@example([sentence("GPZDA,123519,23,03,99999999999999999999,00,00")], False)  # OverflowError
@example([sentence("GPGGA,-10000,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")], True)
def test_nmea_fuzzed_fields(fuzzed: list[bytes], between_epochs: bool) -> None:
    """Sentences that pass the checksum with arbitrary fields: each one is accounted for (accepted,
    ignored or rejected) and no fix is out of bounds, also mixed into a valid stream."""
    dec = Decoder()
    fixes = []
    if between_epochs:
        fixes += dec.feed(b"".join(sentence(b) + b"\r\n" for b in epoch("123518")))
    for line in fuzzed:
        before = per_sentence(dec.stats)
        fixes += dec.feed(line + b"\r\n")
        assert per_sentence(dec.stats) - before == 1, line
    if between_epochs:
        fixes += dec.feed(b"".join(sentence(b) + b"\r\n" for b in epoch("123521")))
    fixes += dec.flush()
    check_decoder(dec, fixes)


# Values at the edges of what a float and a receiver can say: the impossible ones a receiver, a
# cable or a multiplexer really hands over with a valid checksum (issue 21), and the bounds.
EXTREME = ["inf", "-inf", "nan", "1e300", "-1e300", "1e999", "510000000.0", "-12.5", "-1", "999",
           "0", "0.0", "-0", "99.99", "100", "100.01", "360", "360.1", "600", "600.1", "1e-300",
           "-1000", "-1000.1", "100000", "100000.1", "200", "201", "18000", "4294967296",
           "99999999999999999999"]  # fmt: skip
extreme_number = st.one_of(
    st.sampled_from(EXTREME),
    st.floats().map(repr),
    st.integers(-(10**6), 10**6).map(str),
)
# The numeric fields of each sentence of `epoch()` (after the address), and the date fields.
NUMERIC = {"GGA": (6, 7, 8, 10), "GSA": (14, 15, 16), "GNS": (6, 7, 8), "RMC": (6, 7),
           "VTG": (0, 4, 6), "GST": (1, 2, 3, 5, 6, 7)}  # fmt: skip


@st.composite
def extreme_epoch(draw: st.DrawFn) -> list[bytes]:
    """A complete epoch (every kind the decoder reads), valid checksums, with numeric fields
    replaced by extreme values and sometimes an extreme date (RMC ddmmyy, ZDA year)."""
    tm = draw(st.sampled_from(["123519", "123520", "235959.99", "000000"]))
    out = []
    for body in epoch(tm):
        fields = body.split(",")
        kind = fields[0][2:]
        for i in NUMERIC.get(kind, ()):
            if draw(st.integers(0, 2)) == 0:
                fields[i + 1] = draw(extreme_number)
        if kind == "RMC" and draw(st.booleans()):
            day, month = draw(st.integers(1, 31)), draw(st.integers(1, 12))
            yy = draw(st.integers(0, 99))
            fields[9] = f"{day:02d}{month:02d}{yy:02d}"
        if kind == "ZDA" and draw(st.booleans()):
            fields[4] = str(draw(st.sampled_from([1979, 1980, 1999, 2099, 2100, 9999, 1])))
        out.append(sentence(",".join(fields)))
    return out


@settings(FUZZ, max_examples=400)
@given(st.lists(extreme_epoch(), min_size=1, max_size=4), st.booleans())
@example([[sentence(f"GPRMC,123519,A,4807.038,N,01131.000,E,{v},084.4,230394,003.1,W,A")
           for v in ("510000000.0", "inf", "-12.5")]], False)  # fmt: skip
@example([[sentence("GPGGA,123519,4807.038,N,01131.000,E,1,999,-1,1e300,M,46.9,M,,"),
           sentence("GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W,A")]],
         True)  # fmt: skip
def test_nmea_extreme_values_never_leave_the_bounds(epochs: list[list[bytes]], split: bool) -> None:
    """Valid-checksum epochs with extreme fields: every fix emitted is within the bounds, every
    sentence is accounted for once, and what was out of bounds is counted by reason."""
    dec = Decoder()
    fixes = []
    for lines in epochs:
        if split:
            for line in lines:
                before = per_sentence(dec.stats)
                fixes += dec.feed(line + b"\r\n")
                assert per_sentence(dec.stats) - before == 1, line
        else:
            fixes += dec.feed(b"".join(line + b"\r\n" for line in lines))
    fixes += dec.flush()
    check_decoder(dec, fixes)
    assert dec.stats.fixes == len(fixes)


gpsd_number = st.one_of(st.floats(), st.sampled_from([5.1e8, -1.0, 999, 1e300, 0, 600.1, 100.01]),
                        st.integers(-(10**20), 10**20), st.none(), st.text(max_size=3))  # fmt: skip


gpsd_day = st.sampled_from(["2026-06-14", "1979-01-01", "2100-01-01"])


@FUZZ
@given(st.lists(st.tuples(*[gpsd_number] * 6, gpsd_day), min_size=1, max_size=4))
def test_gpsd_extreme_values_never_leave_the_bounds(reports: list[tuple]) -> None:
    """gpsd's JSON, where json.loads already turns 1e999 into inf: the same bounds."""
    import json

    dec = GpsdDecoder()
    fixes = []
    for k, (speed, alt, track, hdop, sats, err, when) in enumerate(reports):
        tpv = {"class": "TPV", "mode": 3, "time": f"{when}T09:30:0{k}Z", "lat": 48.1, "lon": 11.5,
               "speed": speed, "altMSL": alt, "track": track}  # fmt: skip
        sky = {"class": "SKY", "hdop": hdop, "vdop": err, "pdop": hdop, "uSat": sats}
        gst = {"class": "GST", "time": tpv["time"], "lat": err, "lon": err, "alt": err}
        data = b"".join(json.dumps(x).encode() + b"\n" for x in (tpv, sky, gst))
        fixes += dec.feed(data)
    fixes += dec.flush()
    for f in fixes:
        assert in_bounds(f), f
    assert dec.stats.fixes == len(fixes)


@st.composite
def ride_with_lone_outliers(draw: st.DrawFn) -> tuple[list[float], set[int]]:
    """A 1 Hz ride with single epochs far from their neighbours (at least two good epochs
    apart, never the first two), as (times, indices of the outliers)."""
    n = draw(st.integers(5, 60))
    t0 = 1_781_000_000.0
    times = [t0 + i for i in range(n)]
    bad: set[int] = set()
    for i in draw(st.lists(st.integers(2, n - 2), max_size=6)):
        if not {i - 2, i - 1, i, i + 1} & bad:
            bad.add(i)
            jump = draw(st.sampled_from([3600.0, 86400.0, -3600.0, -86400.0, 60.0, -60.0,
                                         -27 * 365 * 86400.0, 73 * 365 * 86400.0]))  # fmt: skip
            times[i] += jump
    return times, bad


@FUZZ
@given(ride_with_lone_outliers(), st.floats(0.001, 2.0))
def test_lone_time_outliers_are_dropped_and_nothing_else(ride, pace_s: float) -> None:
    """Whatever the pace the fixes arrive at (a replay faster than real time too), exactly the
    lone outliers are dropped, each counted, and every good fix is passed on in order."""
    from dataclasses import replace

    from tracker.fix import Fix

    times, bad = ride
    stats = DecoderStats()
    filt = plausible.TimeFilter(stats)
    out = []
    now = 0.0
    base = Fix(0.0, 48.1, 11.5)
    for t in times:
        now += pace_s
        out += [f.time for f in filt([replace(base, time=t)], now)]
    assert out == [t for i, t in enumerate(times) if i not in bad]
    assert stats.rejected_by["time_outlier"] == len(bad)


# --- Map My Tracks replies --------------------------------------------------------------------


def mmt_check(body: bytes) -> None:
    """parse_reply and, on what it returns, every parser of a message's fields."""
    try:
        msg = mapmytracks.parse_reply(body, "fuzz")
        mapmytracks.parse_points(msg.fields.get("points", ""))
        mapmytracks.parse_server_time(msg)
        mapmytracks.parse_activity_id(msg, "fuzz")
    except (Transient, Rejected) as e:
        one_line(e)


xml_text = st.one_of(
    st.sampled_from(["error", "activity_started", "time", "42", "1e999", "inf", "nan", " 7 ",
                     "1700000000,48.1,11.5,545 1700000001,48.2,11.6",
                     "1,2 3,4,5,6 x,y,z", "1,nan,inf,", "1e999,1,2"]),
    st.text(st.characters(codec="utf-8"), max_size=30),
)  # fmt: skip
tag = st.sampled_from(["type", "reason", "activity_id", "server_time", "points", "activities",
                       "activity", "message", "x"])  # fmt: skip


def escape(text: str, raw: bool) -> str:
    if raw:
        return text
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@st.composite
def xml_doc(draw: st.DrawFn) -> bytes:
    """`<message>` documents with known and unknown children, two levels of nesting, the text
    escaped or (sometimes) raw, sometimes cut short."""
    raw = draw(st.booleans()) and draw(st.booleans())

    def element(depth: int) -> str:
        name = draw(tag)
        if depth < 2 and draw(st.booleans()):
            inner = "".join(element(depth + 1) for _ in range(draw(st.integers(0, 3))))
        else:
            inner = escape(draw(xml_text), raw)
        return f"<{name}>{inner}</{name}>"

    root = draw(st.sampled_from(["message", "message", "messages", "html"]))
    children = "".join(element(0) for _ in range(draw(st.integers(0, 5))))
    head = draw(st.sampled_from(["", '<?xml version="1.0" encoding="UTF-8"?>', "\n  ",
                                 '<?xml version="1.0" encoding="latin-1"?>']))  # fmt: skip
    doc = f"{head}<{root}>{children}</{root}>".encode()
    if draw(st.integers(0, 9)) == 0:
        doc = doc[: draw(st.integers(0, len(doc)))]
    return doc


@FUZZ
@given(st.binary(max_size=300))
@example(b'<?xml version="1.0" encoding="x-no-such"?><message/>')
@example(b"<!DOCTYPE m [<!ENTITY e 'x'>]><message>&e;</message>")
def test_mapmytracks_reply_arbitrary_bytes(body: bytes) -> None:
    mmt_check(body)


@settings(FUZZ, max_examples=300)
@given(xml_doc())
@example(b"<message><type>error</type><reason>line one\nline two</reason></message>")
@example(b"<message><type>time</type><server_time>1e999</server_time></message>")
@example(b"<message><points>1e999,48.1,11.5,0</points></message>")
def test_mapmytracks_reply_xml(body: bytes) -> None:
    mmt_check(body)


# --- json-gpsr replies ------------------------------------------------------------------------

json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(["1700000000", "1e999", "nan", "-1", "1.5"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["fix_tlist", "error", "result", "found", "data", "t", "more", "offset"])
        | st.text(max_size=6), inner, max_size=5),
    max_leaves=20,
)  # fmt: skip


def gpsr_check(body: bytes) -> None:
    for parse in (gpsr.parse_input_reply, gpsr.parse_token_test, gpsr.parse_fix_page):
        try:
            parse(body)
        except SendError as e:
            assert isinstance(e, Transient | Rejected), e
            one_line(e)


@FUZZ
@given(st.binary(max_size=300))
@example(b"[" * 100_000)  # RecursionError from json
def test_gpsr_reply_arbitrary_bytes(body: bytes) -> None:
    gpsr_check(body)


@settings(FUZZ, max_examples=300)
@given(json_value)
@example({"fix_tlist": [10**400]})  # OverflowError from math.isfinite
@example({"data": [{"t": 10**400}]})
@example({"error": "line one\nline two"})
def test_gpsr_reply_json(doc: object) -> None:
    import json

    gpsr_check(json.dumps(doc).encode())


def test_gpsr_deeply_nested_times() -> None:
    """Lists within lists are walked without recursion limits."""
    body = b'{"fix_tlist":' + b"[" * 900 + b"5" + b"]" * 900 + b"}"
    assert gpsr.parse_input_reply(body).times == {5}


# --- GATT and ANT+ decoders -------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=40))
def test_gatt_heart_rate(data: bytes) -> None:
    try:
        hr = gatt.decode_heart_rate(data)
    except gatt.MalformedPacket as e:
        one_line(e)
        return
    assert 0 <= hr.bpm <= 0xFFFF
    assert hr.energy_kj is None or 0 <= hr.energy_kj <= 0xFFFF
    assert all(math.isfinite(r) and 0 <= r < 64 for r in hr.rr_s)


@FUZZ
@given(st.binary(max_size=20))
def test_gatt_csc(data: bytes) -> None:
    try:
        m = gatt.decode_csc(data)
    except gatt.MalformedPacket as e:
        one_line(e)
        return
    for part in (m.wheel, m.crank):
        assert part is None or (part.revolutions >= 0 and 0 <= part.event_time <= 0xFFFF)


@FUZZ
@given(st.binary(max_size=40))
def test_gatt_cycling_power(data: bytes) -> None:
    try:
        p = gatt.decode_cycling_power(data)
    except gatt.MalformedPacket as e:
        one_line(e)
        return
    assert -32768 <= p.watts <= 32767
    assert p.balance_pct is None or 0 <= p.balance_pct <= 127.5
    assert p.energy_kj is None or 0 <= p.energy_kj <= 0xFFFF


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
                          st.floats(0, 100, allow_nan=False)), max_size=12))  # fmt: skip
def test_crank_cadence(packets: list[tuple[int, int, float]]) -> None:
    cad = gatt.CrankCadence()
    now = 0.0
    for revs, ticks, dt in packets:
        now += dt
        rpm = cad.update(gatt.CrankData(revs, ticks), now)
        assert rpm is None or (math.isfinite(rpm) and 0 <= rpm <= gatt.MAX_CADENCE_RPM)


@FUZZ
@given(st.binary(max_size=16))
def test_ant_pages(data: bytes) -> None:
    for decode_page in (ant.decode_hr, ant.decode_power, ant.decode_speed_cadence,
                        ant.decode_cadence):  # fmt: skip
        try:
            value = decode_page(data)
        except gatt.MalformedPacket as e:
            one_line(e)
            continue
        if decode_page is ant.decode_hr:
            assert value is None or 1 <= value <= 255
        elif decode_page is ant.decode_power:
            assert value is None or (0 <= value[0] <= 0xFFFF and value[1] in (None, *range(255)))
        else:
            assert 0 <= value.revolutions <= 0xFFFF and 0 <= value.event_time <= 0xFFFF
    assert ant.extended_device_number(data) in (None, *range(0x10000))


# --- the configuration ------------------------------------------------------------------------

# Values that pass some validator, so that parsing gets past the first key.
NEAR_VALID = [
    True, False, 1, 5, 17, 9600, 0.5, 2.0, 30.0, 3600, 86400, -1, 0, "", " ", "x",
    "auto", "always", "manual", "cycling", "private", "public", "drop_oldest", "info", "DEBUG",
    "send", "thin", "gpx", "off", "UTC", "Europe/Paris", "Nowhere/Atlantis", "../etc/passwd",
    "{Type} {start:%Y-%m-%d}", "{start.year}", "{start[0]}", "{type.upper}", "{0}", "{x}",
    "%Y %", "~/a.db", "~no-such-user-xyz/a.db", "/tmp/x", "127.0.0.1:8080", "0.0.0.0:80",
    "[::1]:8080", "host:99999", "https://example.org/", "http://", "C0:FF:EE:12:34:56",
    "hr", "power", "cadence", "speed_cadence", "ble", "ant", "i2c", "simulated", "big",
    ["hr"], ["cad", "pwr"], ["a,b"], [], ["x" * 60],
]  # fmt: skip
toml_value = st.recursive(
    st.sampled_from(NEAR_VALID) | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip
BACKEND_KEYS = {name: list(settings_class(name).keys()) for name in REGISTRY}
BUTTON_KEYS = {"button": list(button_config.KEYS)}  # the button's settings live with it
SECTION_KEYS = {name: list(keys) for name, (_, keys) in config.SCHEMA.items()}
SECTION_KEYS |= BUTTON_KEYS | BACKEND_KEYS
SENSOR_KEYS = sorted({*sensors_config.COMMON, *(k for t in sensors_config.BY_TYPE.values()
                                                for k in t)})  # fmt: skip
odd_key = st.text(max_size=8)


def table(keys: list[str]) -> st.SearchStrategy[dict[str, object]]:
    return st.dictionaries(st.sampled_from(keys) | odd_key, toml_value, max_size=5)


sensor_entry = st.builds(
    lambda t, body: {"type": t, **body} if t is not None else body,
    st.sampled_from([*sensors_config.TYPES, None, 3]),
    table(SENSOR_KEYS),
)
section = st.one_of(
    *(st.tuples(st.just(name), table(keys)) for name, keys in SECTION_KEYS.items()),
    st.tuples(st.just("sensors"), st.lists(sensor_entry, max_size=3) | toml_value),
    st.tuples(odd_key, toml_value),
)
document = st.lists(section, max_size=4).map(dict)


def floats_in(cfg: config.Config) -> list[tuple[str, float]]:
    parts = [cfg.gps, cfg.storage, cfg.activity, cfg.button, *cfg.sensors, *cfg.backends.values()]
    return [
        (f"{type(p).__name__}.{f.name}", v)
        for p in parts
        if p is not None
        for f in dataclasses.fields(p)
        if isinstance(v := getattr(p, f.name), float)
    ]


def config_check(data: dict[str, object]) -> None:
    try:
        cfg = config.parse(data)
    except config.ConfigError as e:
        one_line(e)
        assert "[" in str(e) or "sensors" in str(e), f"names no section: {e}"
        return
    for name, v in floats_in(cfg):
        assert math.isfinite(v), f"{name} = {v}"


@settings(FUZZ, max_examples=400)
@given(document)
@example({"storage": {"path": "~no-such-user-xyz/a.db"}})  # RuntimeError from expanduser
@example({"activity": {"title": "{start.year}"}})  # AttributeError from str.format
@example({"activity": {"title": "{start[0]}"}})  # TypeError from str.format
@example({"gps": {"reconnect_max_s": math.nan}})  # nan accepted
@example({"storage": {"max_mb": math.inf}})  # inf accepted
@example({"sensors": [{"type": "i2c", "bus": 1, "address": 64, "register": 0, "kind": "pwr",
                       "scale": math.nan}]})  # fmt: skip
@example({"gps\nx": {}})  # section name with a line end in the message
@example({"gps": {"baud\nrate": 1}})  # key name with a line end in the message
def test_config_parse(data: dict[str, object]) -> None:
    config_check(data)


TOML_SEEDS = [
    b'[gps]\ndevice = "/dev/ttyUSB0"\nbaudrate = 9600\n',
    b'[activity]\ntype = "cycling"\ntags = ["a", "b"]\nmax_hdop = 5.0\n',
    b'[[sensors]]\ntype = "ant"\nprofile = "hr"\n',
    b'[mapmytracks]\nusername = "u"\npassword = "p"\n',
    b"[storage]\nmax_mb = nan\ncommit_interval_s = inf\n",
]


@st.composite
def toml_bytes(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    data = bytearray(draw(st.sampled_from(TOML_SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i : i + draw(st.integers(0, 2))] = draw(st.binary(max_size=3))
    return bytes(data)


@settings(FUZZ, max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(toml_bytes())
@example(b"\xff")  # UnicodeDecodeError from tomllib
@example(b"a = " + b"[" * 5000)  # deep nesting
def test_config_load(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "tracker.toml"
    path.write_bytes(raw)
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        one_line(e)
        assert str(e).startswith(f"{path}: "), e
        return
    for name, v in floats_in(cfg):
        assert math.isfinite(v), f"{name} = {v}"


def test_config_load_directory(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=str(tmp_path)):
        config.load(tmp_path)
