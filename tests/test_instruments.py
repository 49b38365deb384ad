"""Boat instrument sentences (tracker/instruments.py, through tracker/nmea.py's Decoder): values
worked out by hand from the NMEA 0183 field definitions, and the real captures of
../shared/corpus/gpsd that carry instrument sentences, read against gpsd where it reports them."""

from __future__ import annotations

import json
import math
from functools import reduce
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker import instruments
from tracker.fix import INSTRUMENT_KINDS
from tracker.nmea import MAX_READINGS, Decoder, decode_file

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "gpsd"
KNOT = 1852 / 3600  # m/s, by definition of the knot (1 nm = 1852 m, per hour)


def nmea(body: str) -> str:
    """`$body*hh` with its checksum: the XOR of the characters between `$` and `*`."""
    return f"${body}*{reduce(lambda a, c: a ^ ord(c), body, 0):02X}"


def readings(*bodies: str, dec: Decoder | None = None) -> list[tuple[str, float]]:
    dec = dec or Decoder()
    dec.feed("".join(nmea(b) + "\r\n" for b in bodies).encode())
    return dec.take_readings()


def close(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [k for k, _ in got] == [k for k, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-9)


# -- hand-worked examples, one per sentence ----------------------------------------------------


def test_the_checksum_helper_agrees_with_a_published_sentence() -> None:
    # The humminbird-M37 capture's own line.
    assert nmea("INDPT,2.2,0.0") == "$INDPT,2.2,0.0*47"


def test_dbt_takes_metres_else_feet_else_fathoms() -> None:
    close(readings("SDDBT,7.5,f,2.3,M,1.2,F"), [("depth", 2.3)])
    close(readings("SDDBT,10.0,f,,M,,F"), [("depth", 10.0 * 0.3048)])  # 1 ft = 0.3048 m
    close(readings("SDDBT,,f,,M,2.0,F"), [("depth", 2.0 * 6 * 0.3048)])  # 1 fathom = 6 ft
    assert readings("SDDBT,,f,,M,,F") == []  # no bottom


def test_dpt_depth_below_transducer_and_with_the_offset() -> None:
    # Offset positive: transducer to waterline; negative: transducer to keel.
    close(readings("SDDPT,4.1,0.5"), [("depth", 4.1), ("depth_surface", 4.6)])
    close(readings("SDDPT,4.1,-0.7,100"), [("depth", 4.1), ("depth_keel", 3.4)])
    close(readings("INDPT,2.2,0.0"), [("depth", 2.2)])  # no offset given: the transducer's
    close(readings("SDDPT,4.1,"), [("depth", 4.1)])
    assert readings("SDDPT,,0.5") == []


def test_mwv_relative_and_true_in_every_speed_unit() -> None:
    close(readings("IIMWV,045.0,R,12.6,N,A"),
          [("wind_angle_app", 45.0), ("wind_speed_app", 12.6 * KNOT)])  # fmt: skip
    close(readings("WIMWV,310.5,T,20.0,K,A"),
          [("wind_angle_true", 310.5), ("wind_speed_true", 20.0 / 3.6)])  # fmt: skip
    close(readings("WIMWV,010,R,5.5,M,A"), [("wind_angle_app", 10.0), ("wind_speed_app", 5.5)])
    close(readings("WIMWV,010,R,10,S,A"),
          [("wind_angle_app", 10.0), ("wind_speed_app", 10 * 1609.344 / 3600)])  # fmt: skip


def test_mwv_with_status_v_gives_nothing() -> None:
    dec = Decoder()
    assert readings("IIMWV,045.0,R,12.6,N,V", dec=dec) == []
    assert dec.stats.instruments == 1 and dec.stats.rejected == 0  # accepted, not an error


def test_mwd_true_direction_and_speed() -> None:
    close(readings("WIMWD,270.0,T,262.0,M,15.0,N,7.7,M"),
          [("wind_dir_true", 270.0), ("wind_speed_true", 7.7)])  # fmt: skip
    close(readings("WIMWD,270.0,T,,M,15.0,N,,M"),  # no m/s: from the knots
          [("wind_dir_true", 270.0), ("wind_speed_true", 15.0 * KNOT)])  # fmt: skip


def test_hdg_deviation_then_variation() -> None:
    # Sensor 100.0, deviation 2.5 W: magnetic 97.5; variation 3.0 E: true 100.5.
    close(readings("HCHDG,100.0,2.5,W,3.0,E"), [("heading_mag", 97.5), ("heading_true", 100.5)])
    # Deviation E crosses north; variation W.
    close(readings("HCHDG,359.0,2.0,E,10.0,W"), [("heading_mag", 1.0), ("heading_true", 351.0)])
    close(readings("HCHDG,045.3,,,,"), [("heading_mag", 45.3)])  # a compensated compass


def test_hdt_and_hdm() -> None:
    close(readings("GPHDT,274.07,T"), [("heading_true", 274.07)])
    close(readings("HCHDM,093.6,M"), [("heading_mag", 93.6)])
    assert readings("GPHDT,,T") == []  # the Hemisphere before its heading is known


def test_vhw_speed_through_water() -> None:
    close(readings("VWVHW,,T,,M,5.2,N,9.6,K"), [("water_speed", 5.2 * KNOT)])
    close(readings("VWVHW,,T,,M,,N,9.0,K"), [("water_speed", 2.5)])


def test_vlw_logs_in_metres() -> None:
    close(readings("VWVLW,1234.5,N,12.3,N"),
          [("log_total", 1234.5 * 1852), ("log_trip", 12.3 * 1852)])  # fmt: skip
    close(readings("VWVLW,1234.5,N,12.3,N,1300.0,N,13.0,N"),  # NMEA 4: ground distances not kept
          [("log_total", 1234.5 * 1852), ("log_trip", 12.3 * 1852)])  # fmt: skip


def test_mtw_celsius() -> None:
    close(readings("INMTW,17.9,C"), [("water_temp", 17.9)])
    close(readings("YXMTW,-1.5,C"), [("water_temp", -1.5)])


def test_xdr_temperature_pressure_voltage_by_type_and_id() -> None:
    close(readings("WIXDR,C,19.5,C,AIRTEMP,P,1.0132,B,BARO,U,12.6,V,BATT1"),
          [("air_temp", 19.5), ("air_pressure", 101320.0), ("battery_v", 12.6)])  # fmt: skip
    close(readings("YDXDR,C,14.0,C,ENV_WATER_T"), [("water_temp", 14.0)])
    close(readings("WIXDR,P,101300,P,"), [("air_pressure", 101300.0)])  # pascal, no id
    # Pitch and roll (A), humidity (H), an engine's temperature: not ours.
    assert readings("HCXDR,A,171,D,PITCH,A,-37,D,ROLL,G,367,,MAGX") == []
    assert readings("IIXDR,C,85.0,C,ENGINE#0,H,60,P,HUMIDITY") == []


def test_rsa_starboard_rudder_negative_to_port() -> None:
    close(readings("IIRSA,-5.5,A,,V"), [("rudder", -5.5)])
    close(readings("IIRSA,12.0,A,11.0,A"), [("rudder", 12.0)])
    assert readings("IIRSA,12.0,V,,V") == []  # not valid


def test_any_talker() -> None:
    for talker in ("II", "IN", "SD", "WI", "HC", "YX", "GP", "VW"):
        close(readings(f"{talker}MTW,10.0,C"), [("water_temp", 10.0)])


def test_malformed_fields_are_unparsable_and_give_nothing() -> None:
    dec = Decoder()
    bad = ("IIMWV,abc,R,12.6,N,A", "IIMWV,45,R,12.6,Q,A", "IIMWV,45,X,12.6,N,A", "SDDPT,nan,0",
           "HCHDT,400.0,T", "SDDBT,,f,-3,M,,F", "INMTW,17.9,F", "IIHDG,10,1,X,,",
           "IIRSA,200,A,,V", "IIMWV,45,R")  # fmt: skip
    assert readings(*bad, dec=dec) == []
    assert dec.stats.rejected_by["unparsable"] == len(bad)
    assert dec.stats.instruments == 0


def test_a_bad_checksum_rejects_an_instrument_sentence() -> None:
    dec = Decoder()
    line = nmea("INDPT,2.2,0.0")[:-2] + "00"
    dec.feed(line.encode() + b"\r\n")
    assert dec.take_readings() == [] and dec.stats.rejected_by["checksum"] == 1


def test_without_checksums_a_truncated_sentence_is_refused() -> None:
    dec = Decoder()  # a receiver that never sends checksums (old instruments)
    dec.feed(b"$IIMWV,045.0,R,12.6,N,A\r\n$IIMWV,045.0,R\r\n")
    close(dec.take_readings(), [("wind_angle_app", 45.0), ("wind_speed_app", 12.6 * KNOT)])
    assert dec.stats.no_checksum == 1 and dec.stats.rejected_by["unparsable"] == 1


def test_readings_keep_the_streams_order_and_are_taken_once() -> None:
    dec = Decoder()
    dec.feed((nmea("INDPT,2.2,0.0") + "\r\n" + nmea("INMTW,17.9,C") + "\r\n").encode())
    dec.feed((nmea("INDPT,2.1,0.0") + "\r\n").encode())
    assert dec.take_readings() == [("depth", 2.2), ("water_temp", 17.9), ("depth", 2.1)]
    assert dec.take_readings() == []
    assert dec.stats.sentences == 3 and dec.stats.instruments == 3 and dec.stats.ignored == 0


def test_readings_nobody_takes_are_bounded() -> None:
    dec = Decoder()
    dec.feed(((nmea("INDPT,2.2,0.0") + "\r\n") * (MAX_READINGS + 10)).encode())
    assert len(dec.take_readings()) == MAX_READINGS
    assert dec.stats.readings_dropped == 10


def test_instrument_sentences_change_no_fix() -> None:
    rmc = nmea("GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W")
    gga = nmea("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    plain = Decoder().feed(f"{rmc}\r\n{gga}\r\n".encode())
    dec = Decoder()
    mixed = dec.feed(f"{nmea('SDDPT,4.1,0.5')}\r\n{rmc}\r\n{nmea('IIMWV,45,R,5,N,A')}\r\n"
                     f"{gga}\r\n{nmea('INMTW,17.9,C')}\r\n".encode())  # fmt: skip
    assert mixed == plain and len(dec.take_readings()) == 5


def test_every_kind_has_a_unit_a_label_and_a_shown_form() -> None:
    assert tuple(instruments.UNITS) == INSTRUMENT_KINDS
    assert instruments.display("wind_speed_app", 12.6 * KNOT) == "12.6 kn"
    assert instruments.display("air_pressure", 101320.0) == "1013 hPa"
    assert instruments.display("log_trip", 12.3 * 1852) == "12.3 nm"
    assert instruments.display("water_temp", 17.9) == "17.9 °C"
    for kind in INSTRUMENT_KINDS:
        assert instruments.display(kind, 1.0)


# -- the real captures -------------------------------------------------------------------------

needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"no gpsd capture corpus at {CORPUS} (../shared/corpus)"
)


def corpus_sentences(name: str, stype: str) -> list[str]:
    return [
        line.strip()
        for line in (CORPUS / name).read_text(errors="replace").splitlines()
        if line.startswith("$") and line[3:6] == stype
    ]


@needs_corpus
def test_humminbird_dpt_and_mtw_each_decoded_to_the_value_in_the_sentence() -> None:
    """Every DPT and MTW of the Humminbird Matrix 37, against its own fields (gpsd's .chk has
    no report of either to compare with)."""
    name = "humminbird-M37.log"
    want = []
    for line in (CORPUS / name).read_text().splitlines():
        if line[3:6] == "DPT":
            depth, offset = line[7 : line.index("*")].split(",")[:2]
            assert float(offset) == 0.0  # no offset: the depth below the transducer alone
            want.append(("depth", float(depth)))
        elif line[3:6] == "MTW":
            temp, unit = line[7 : line.index("*")].split(",")
            assert unit == "C"
            want.append(("water_temp", float(temp)))
    dec = Decoder()
    decode_file(CORPUS / name, dec)
    assert len(want) == len(corpus_sentences(name, "DPT")) + len(corpus_sentences(name, "MTW"))
    assert len(want) == 49
    assert dec.take_readings() == want
    assert dec.stats.instruments == 49 and dec.stats.rejected == 0


@needs_corpus
def test_hemisphere_hdt_against_gpsds_attitude_reports() -> None:
    """Every HDT of the Hemisphere: 211 empty ones while it has no heading (nothing from
    either of us), then 4 with one, each of which gpsd reports as ATT `heading`."""
    name = "hemi.log"
    hdts = corpus_sentences(name, "HDT")
    with_heading = [float(s[7 : s.index(",", 7)]) for s in hdts if s[7] != ","]
    gpsd = [
        json.loads(line)["heading"]
        for line in (CORPUS / (name + ".chk")).read_text().splitlines()
        if line.startswith('{"class":"ATT"')
    ]
    dec = Decoder()
    decode_file(CORPUS / name, dec)
    got = dec.take_readings()
    assert len(hdts) == 215 and dec.stats.instruments == 215
    assert [k for k, _ in got] == ["heading_true"] * 4
    assert [v for _, v in got] == with_heading == pytest.approx(gpsd, abs=1e-9)


@needs_corpus
def test_tnt_xdr_attitude_is_accepted_and_gives_no_reading() -> None:
    """The TNT Revolution's XDRs carry pitch, roll and magnetometer counts: none of our kinds."""
    dec = Decoder()
    decode_file(CORPUS / "tnt-revolution.log", dec)
    assert dec.take_readings() == []
    assert dec.stats.instruments == len(corpus_sentences("tnt-revolution.log", "XDR")) == 10


@needs_corpus
def test_every_instrument_sentence_of_the_corpus_decodes_without_rejection() -> None:
    total = 0
    for log in sorted(CORPUS.glob("*.log")):
        dec = Decoder()
        decode_file(log, dec)
        n = sum(len(corpus_sentences(log.name, t)) for t in instruments.INSTRUMENT_TYPES)
        assert dec.stats.instruments == n, log.name
        assert all(math.isfinite(v) for _, v in dec.take_readings())
        total += n
    assert total == 33 + 16 + 215 + 10


# -- anything at all ---------------------------------------------------------------------------

FIELD = st.one_of(
    st.sampled_from(["", "A", "V", "R", "T", "N", "K", "M", "S", "C", "E", "W", "B", "P", "U",
                     "AIR", "WATER", "BATT", "1e308", "-0", "nan", "inf", "12.5", "-7"]),
    st.text(alphabet="0123456789.-+eE,", max_size=8),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(instruments.INSTRUMENT_TYPES)), st.lists(FIELD, max_size=14))
def test_any_fields_give_finite_readings_or_a_value_error(stype, fields):
    try:
        got = instruments.decode(stype, fields)
    except ValueError:
        return
    for kind, value in got:
        assert kind in INSTRUMENT_KINDS and math.isfinite(value)
