"""The decoder against gpsd on the captures of ~60 real receivers (../shared/corpus/gpsd).

Every `NAME.log` with a `NAME.log.chk` is decoded and compared with what gpsd 3.2x reported
for it: each TPV report with `mode` >= 2, a `time` and a position is a valid epoch of gpsd's;
gpsd reports an epoch several times as its sentences come in, and the last report for a time
is its final word. Every such epoch must be among our fixes with the same time (to the
millisecond) and position. Where we differ, the raw sentences were read to find out who is
right, and the difference is listed below with the reason; the lists must match exactly, so
a new difference fails and so does a fixed one.

Position tolerance: gpsd takes the position of the last sentence of the epoch, we take the
most precise one (more decimals; GGA on a tie), and the coarsest position sentences in the
corpus give minutes to 3 decimals (Garmin 48, TripNav 204: 0.001' = 1.7e-5 deg). Two
sentences of one epoch rounded differently differ by at most half of that, 8.3e-6 deg, under a
metre: so 1e-5 deg. Any real disagreement (another solution) is metres or more.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path

import pytest

from tracker.fix import Fix
from tracker.nmea import Decoder, decode_file

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "gpsd"
if not CORPUS.is_dir():
    pytest.skip(f"no gpsd capture corpus at {CORPUS}", allow_module_level=True)

ALL_LOGS = sorted(CORPUS.glob("*.log"))
LOGS = [p for p in ALL_LOGS if p.with_name(p.name + ".chk").is_file()]

TOLERANCE_DEG = 1e-5
GPS_ERA_MS = 1024 * 7 * 86400 * 1000

# -- where we store an epoch that gpsd did not report (file, time) -> why we are right ------

DATED_LATER = (
    "the first valid epoch: gpsd reported it before the date arrived, later in the same epoch "
    "(an RMC after the GGA/GLL) or with the next RMC/ZDA, so its reports have no time; we hold "
    "the epoch until the receiver's date comes and store it"
)
CAPTURE_END = (
    "the capture ends, or was cut and spliced, during this epoch: gpsd waits for the "
    "sentence that ends this receiver's cycle, which never comes; we complete it when the "
    "next epoch begins or on flush (the corpus README: the last fix must be stored)"
)
NO_ENDER = (
    "a valid epoch (RMC A, GGA quality 1) of a cycle that lacks the sentence gpsd learned as "
    "its end (this receiver sends GLL only in some cycles), so gpsd reported nothing for it"
)
LEARNING = (
    "this receiver sends a different sentence each second (RMC, GLL, RMC, GGA...); gpsd's "
    "cycle detector, still learning, reported nothing for this valid epoch"
)
SPLIT_CYCLE = (
    "a 2-second split cycle: RMC+GGA stamped with even seconds, GLL with the odd ones. gpsd "
    "reports once per cycle, at the GLL it learned as the end; the RMC+GGA epoch with its own "
    "receiver time is a fix of its own"
)
NO_CHECKSUM = (
    "the HP 58534A sends no checksums at all; gpsd's regression output for it has no report, "
    "the sentences are complete and valid (GGA quality 1, 7 satellites, ZDA date)"
)

ONLY_OURS: dict[tuple[str, str], str] = {
    ("blumax-gps009.log", "2008-07-18T14:28:19.299Z"): DATED_LATER,
    ("bn-9015.log", "2010-06-12T17:10:02.972Z"): DATED_LATER,
    ("bt451.log", "2009-12-09T15:25:04.500Z"): DATED_LATER,
    ("bt451.log", "2009-12-09T15:25:08.500Z"): CAPTURE_END,
    ("bt451.log", "2009-12-09T14:33:08.500Z"): CAPTURE_END,
    ("ch-4701.log", "2008-05-29T12:34:33.000Z"): DATED_LATER,
    ("ch-4701.log", "2008-05-29T12:35:00.000Z"): CAPTURE_END,
    ("ericsson-gru04.log", "2026-02-06T17:06:55.000Z"): DATED_LATER,
    ("garmin38.log", "2002-10-08T14:22:14.000Z"): DATED_LATER,
    ("garmin48.log", "2001-06-06T22:53:10.000Z"): SPLIT_CYCLE,
    ("garmin48.log", "2001-06-06T22:53:12.000Z"): SPLIT_CYCLE,
    ("garmin48.log", "2001-06-06T22:53:14.000Z"): SPLIT_CYCLE,
    ("garmin48.log", "2001-06-06T22:53:16.000Z"): SPLIT_CYCLE,
    ("garmin48.log", "2001-06-06T22:53:18.000Z"): SPLIT_CYCLE,
    ("garmin48.log", "2001-06-06T22:53:34.000Z"): SPLIT_CYCLE,
    ("gp-320fw-2019-03-28.log", "2019-03-28T16:45:16.990Z"): DATED_LATER,
    ("gp-320fw-2019-03-28.log", "2019-03-28T16:45:19.990Z"): NO_ENDER,
    ("gp-320fw-2019-04-06-overflow.log", "2019-04-06T23:57:23.020Z"): DATED_LATER,
    ("gp-320fw-2019-04-06-overflow.log", "2019-04-06T23:57:26.020Z"): NO_ENDER,
    ("gr601-w.log", "2013-10-24T14:32:51.000Z"): DATED_LATER,
    ("hp58534a.log", "2010-10-25T22:24:49.000Z"): NO_CHECKSUM,
    ("hp58534a.log", "2010-10-25T22:24:50.000Z"): NO_CHECKSUM,
    ("humminbird-M37.log", "2006-09-16T19:41:03.000Z"): LEARNING,
    ("humminbird-M37.log", "2006-09-16T19:41:04.000Z"): LEARNING,
    ("motorola-t805.log", "2007-12-18T21:26:14.879Z"): DATED_LATER,
    ("mr-350p.log", "2012-07-04T05:11:33.000Z"): DATED_LATER,
    ("mtk-3301.log", "2008-08-23T08:14:36.000Z"): DATED_LATER,
    ("quectel-l76k-nmea.log", "2026-08-05T05:53:04.000Z"): CAPTURE_END,
    ("rgm3800.log", "2008-08-21T10:25:23.342Z"): DATED_LATER,
    ("st-teseo-liv3f.log", "2026-03-16T20:34:51.000Z"): DATED_LATER,
    ("st-teseo-liv3f.log", "2026-03-16T20:35:20.000Z"): CAPTURE_END,
    ("tn204.log", "2002-10-26T23:01:49.000Z"): LEARNING,
    ("ublox-lea-5h.log", "2010-08-21T08:37:36.000Z"): CAPTURE_END,
}

# -- where gpsd reports an epoch that we do not store -------------------------------------

ONLY_GPSD: dict[tuple[str, str], str] = {
    ("tn204.log", "2002-10-26T23:01:55.000Z"): (
        "GGA quality 1 from 2 satellites used: no satellite fix can come from 2, the receiver "
        "is coasting. gpsd has the same rule (fewer than 3 satellites in a GP/GN GGA is no "
        "fix) but its mode is last-writer-wins and the GLL after it set it back; we side with "
        "the satellite count"
    ),
}

# -- where gpsd's position for an epoch is not the receiver's fix --------------------------

AVERAGED = (
    "gpsd's last report for this second takes its position from $PERC,GPavp, the Ericsson "
    "timing receiver's long-term averaged position (sent once a minute), not the epoch's "
    "fix; its earlier reports for the same second agree with our GNS/GLL position"
)
OTHER_POSITION: dict[tuple[str, str], str] = {
    ("ericsson-gru04-02-70sec.log", "2026-02-12T21:37:13.000Z"): AVERAGED,
    ("ericsson-gru04-02-70sec.log", "2026-02-12T21:38:13.000Z"): AVERAGED,
}

# -- files whose fixes are not in time order although gpsd's are ---------------------------

NOT_IN_ORDER: dict[str, str] = {
    "ericsson-gru04.log": (
        "a spliced capture: a GGA at 17:06:55 comes before a GLL/ZDA at 17:06:00; gpsd could "
        "not date the first (no date yet) so its list has one epoch; we date it with the ZDA "
        "that follows and keep the receiver's order"
    ),
}

# -- files where gpsd moved the receiver's date forward by 1024-week GPS eras ---------------
# The README warns that some gpsd versions do this to old captures (a 2015 date reported as
# 2034; gpsdecode 3.22 on a dev machine moves ublox-lea-5h from 2010 to 2030). The receiver's
# date is the one we keep; for a file listed here, gpsd's time is ours plus k eras. None of the
# .chk files of this corpus snapshot does it: every gpsd time there is the receiver's date.
ERA_SHIFTED: dict[str, int] = {}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ms_of(text: str) -> int:
    """gpsd's "2010-08-21T08:37:23.000Z" to integer milliseconds."""
    dt = datetime.strptime(text.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f" if "." in text else
                           "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)  # fmt: skip
    return round(dt.timestamp() * 1000)


def gpsd_epochs(chk: Path) -> tuple[dict[int, tuple[float, float]], list[int]]:
    """gpsd's valid epochs: time (ms) -> position of its last report, and every report's
    time in the order gpsd made them."""
    final: dict[int, tuple[float, float]] = {}
    order: list[int] = []
    for line in chk.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue  # an echoed sentence
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if (
            report.get("class") == "TPV"
            and report.get("mode", 0) >= 2
            and "time" in report
            and "lat" in report
            and "lon" in report
        ):
            ms = ms_of(report["time"])
            final[ms] = (report["lat"], report["lon"])
            order.append(ms)
    return final, order


def ms(fix: Fix) -> int:
    return round(fix.time * 1000)


@pytest.mark.parametrize("log", LOGS, ids=[p.name for p in LOGS])
def test_every_valid_gpsd_epoch_is_stored_with_the_same_time_and_position(log: Path) -> None:
    name = log.name
    fixes = decode_file(log)
    gpsd, gpsd_order = gpsd_epochs(log.with_name(name + ".chk"))
    shift = ERA_SHIFTED.get(name, 0) * GPS_ERA_MS
    # A time can repeat (humminbird-M37's clock goes back 13 s): the last fix for a time is
    # compared with gpsd's last report for it.
    ours = {ms(f) + shift: f for f in fixes}

    only_gpsd = {iso(t) for t in gpsd if t not in ours}
    only_ours = {iso(t) for t in ours if t not in gpsd}
    moved = {
        iso(t)
        for t, (lat, lon) in gpsd.items()
        if t in ours
        and (abs(ours[t].lat - lat) > TOLERANCE_DEG or abs(ours[t].lon - lon) > TOLERANCE_DEG)
    }
    assert only_gpsd == {t for f, t in ONLY_GPSD if f == name}, "gpsd epochs we did not store"
    assert only_ours == {t for f, t in ONLY_OURS if f == name}, "fixes gpsd did not report"
    assert moved == {t for f, t in OTHER_POSITION if f == name}, "positions that differ"

    gpsd_sorted = all(a <= b for a, b in zip(gpsd_order, gpsd_order[1:], strict=False))
    ours_sorted = all(a.time <= b.time for a, b in zip(fixes, fixes[1:], strict=False))
    if gpsd_sorted and name not in NOT_IN_ORDER:
        assert ours_sorted, "fixes out of time order where gpsd's are in order"
    if name in NOT_IN_ORDER:
        assert gpsd_sorted and not ours_sorted  # the exception still holds


def test_the_exception_lists_name_existing_files() -> None:
    names = {p.name for p in LOGS}
    for f, _ in (*ONLY_OURS, *ONLY_GPSD, *OTHER_POSITION):
        assert f in names
    assert set(NOT_IN_ORDER) <= names and set(ERA_SHIFTED) <= names


@pytest.mark.parametrize("log", ALL_LOGS, ids=[p.name for p in ALL_LOGS])
def test_raw_file_bytes_in_odd_chunks_decode_the_same_without_raising(log: Path) -> None:
    """The whole file as a port would deliver it, comment header included, in 7-byte reads."""
    expected = decode_file(log)
    data = log.read_bytes()
    dec = Decoder()
    fixes = [f for i in range(0, len(data), 7) for f in dec.feed(data[i : i + 7])]
    fixes += dec.flush()
    assert fixes == expected
    assert dec.stats.sentences + dec.stats.ignored > 0
    assert dec.stats.rejected == sum(dec.stats.rejected_by.values())


def test_corrupted_captures_never_raise_and_never_yield_an_impossible_fix() -> None:
    rng = random.Random(20240601)
    for log in ALL_LOGS:
        data = bytearray(log.read_bytes())
        for _ in range(len(data) // 50):  # about one damaged byte in 50
            i = rng.randrange(len(data))
            op = rng.random()
            if op < 0.4:
                data[i] ^= 1 << rng.randrange(8)
            elif op < 0.7:
                del data[i]
            else:
                data[i:i] = bytes([rng.choice(b"$*,\r\n0123456789ABCDEF\x00\xff")])
        dec = Decoder()
        fixes = [f for i in range(0, len(data), 61) for f in dec.feed(bytes(data[i : i + 61]))]
        fixes += dec.flush()
        for f in fixes:
            assert -90 <= f.lat <= 90 and -180 <= f.lon <= 180, log.name
        assert dec.stats.rejected > 0, log.name


def test_sentences_with_broken_fields_and_good_checksums_never_raise() -> None:
    """The checksum stops line noise; this is what gets past it: a receiver's (or a fuzzer's)
    nonsense with a correct checksum. Every corpus sentence, its fields mangled."""
    rng = random.Random(20240602)
    alphabet = b"0123456789.,-+*$ABCDEFNSEWVMTKn\x00\xff :"
    out = []
    for log in ALL_LOGS:
        for line in log.read_bytes().splitlines():
            if not line.startswith(b"$"):
                continue
            star = line.rfind(b"*")
            body = bytearray(line[1:star] if star > 0 else line[1:])
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(body) + 1)
                op = rng.random()
                if op < 0.4 and i < len(body):
                    body[i] = rng.choice(alphabet)
                elif op < 0.7 and i < len(body):
                    del body[i]
                else:
                    body[i:i] = bytes([rng.choice(alphabet)])
            cs = reduce(lambda a, c: a ^ c, body, 0)
            out.append(b"$" + bytes(body) + b"*%02X" % cs)
    dec = Decoder()
    data = b"\r\n".join(out) + b"\r\n"
    fixes = [f for i in range(0, len(data), 300) for f in dec.feed(data[i : i + 300])]
    fixes += dec.flush()
    for f in fixes:
        assert -90 <= f.lat <= 90 and -180 <= f.lon <= 180
    assert dec.stats.rejected_by["unparsable"] > 1000
    assert dec.stats.fixes > 0


def test_our_field_split_agrees_with_pynmea2_on_every_sentence_we_parse() -> None:
    """The decoder splits RMC, GGA, GNS, GLL, GST, VTG, GSA and ZDA itself (tracker.nmea
    .fields) instead of calling pynmea2.parse: the fields must be pynmea2's, sentence by
    sentence, over every capture, and what pynmea2 refuses we refuse too."""
    import pynmea2

    from tracker.nmea import fields

    kinds = {"RMC", "GGA", "GNS", "GLL", "GST", "VTG", "GSA", "ZDA"}
    compared = 0
    for log in ALL_LOGS:
        for raw in log.read_bytes().splitlines():
            line = raw.strip()
            if line[:1] != b"$" or line[3:6].decode("latin-1") not in kinds or line[1:2] == b"P":
                continue
            try:
                text = line.decode()
            except UnicodeDecodeError:
                continue  # rejected as non_utf8 before any split
            body = text[: text.index("*")] if "*" in text else text
            try:
                theirs = pynmea2.parse(body).data
            except pynmea2.ParseError:
                with pytest.raises(ValueError):
                    fields(body)
                continue
            assert fields(body) == theirs, (log.name, text)
            compared += 1
    assert compared > 5_000  # the captures hold thousands of them
