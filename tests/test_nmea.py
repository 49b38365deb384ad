"""Unit tests of tracker.nmea with hand-written sentences (checksums computed here)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import reduce

import pytest

from tracker import simulate
from tracker.fix import Fix
from tracker.nmea import MAX_HELD, MAX_LINE, MAX_SENTENCE, REJECT_REASONS, Decoder, decode_file

KNOT = 1852 / 3600


def s(body: str, checksum: str | None = None) -> str:
    """A sentence with its correct checksum (or the one given), without line end."""
    cs = f"{reduce(lambda a, c: a ^ ord(c), body, 0):02X}" if checksum is None else checksum
    return f"${body}*{cs}"


def stream(*sentences: str, eol: str = "\r\n") -> bytes:
    return "".join(x + eol for x in sentences).encode()


def run(*sentences: str, eol: str = "\r\n", dec: Decoder | None = None) -> list[Fix]:
    """Feed the sentences in one go, then flush: every fix they make."""
    dec = dec or Decoder()
    return dec.feed(stream(*sentences, eol=eol)) + dec.flush()


def t(y: int, mo: int, d: int, h: int, mi: int, sec: float) -> float:
    whole = int(sec)
    return datetime(y, mo, d, h, mi, whole, tzinfo=UTC).timestamp() + (sec - whole)


def rmc(tm: str, lat: str = "4807.0380", lon: str = "01131.0000", status: str = "A",
        date: str = "230394", talker: str = "GP", speed: str = "022.4", course: str = "084.4",
        mode: str = "A", ns: str = "N", ew: str = "E") -> str:  # fmt: skip
    return s(
        f"{talker}RMC,{tm},{status},{lat},{ns},{lon},{ew},{speed},{course},{date},003.1,W,{mode}"
    )


def gga(tm: str, lat: str = "4807.0380", lon: str = "01131.0000", q: int = 1, sats: str = "08",
        hdop: str = "0.9", alt: str = "545.4", talker: str = "GP", ns: str = "N",
        ew: str = "E") -> str:  # fmt: skip
    return s(f"{talker}GGA,{tm},{lat},{ns},{lon},{ew},{q},{sats},{hdop},{alt},M,46.9,M,,")


def zda(tm: str, d: int = 23, m: int = 3, y: int = 1994, talker: str = "GP") -> str:
    return s(f"{talker}ZDA,{tm},{d:02d},{m:02d},{y},00,00")


GSA = s("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1")
GSV = s("GPGSV,2,1,08,01,40,083,46,02,17,308,41,12,07,344,39,14,22,228,45")
VTG = s("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A")
GST = s("GPGST,123519.00,0.006,0.023,0.020,273.6,0.023,0.020,0.031")


# -- sentence types and fields -----------------------------------------------------------


def test_rmc_alone_gives_time_position_speed_course() -> None:
    [fix] = run(rmc("123519.00"))
    assert fix.time == t(1994, 3, 23, 12, 35, 19)
    assert fix.lat == pytest.approx(48 + 7.038 / 60, abs=1e-9)
    assert fix.lon == pytest.approx(11 + 31.0 / 60, abs=1e-9)
    assert fix.speed == pytest.approx(22.4 * KNOT)
    assert fix.course == pytest.approx(84.4)
    assert (fix.alt, fix.quality, fix.sats, fix.hdop) == (None, None, None, None)


def test_southern_and_western_hemispheres_are_negative() -> None:
    [fix] = run(rmc("123519", ns="S", ew="W"))
    assert fix.lat < 0 and fix.lon < 0
    assert fix.lat == pytest.approx(-(48 + 7.038 / 60))


def test_one_epoch_of_gga_rmc_gsa_gst_vtg_gsv_merges_into_one_fix_with_every_field() -> None:
    dec = Decoder()
    fixes = run(
        gga("123519.00", lat="4807.03801", lon="01131.00002", sats="08", hdop="0.9"),
        rmc("123519.00"),
        VTG,
        GSA,
        GSV,
        GST,
        dec=dec,
    )
    assert fixes == [
        Fix(
            time=t(1994, 3, 23, 12, 35, 19),
            lat=pytest.approx(48 + 7.03801 / 60, abs=1e-10),
            lon=pytest.approx(11 + 31.00002 / 60, abs=1e-10),
            alt=545.4,
            speed=pytest.approx(22.4 * KNOT),  # RMC's, not VTG's 5.5 kn
            course=84.4,
            quality=1,
            sats=8,
            hdop=0.9,  # GGA's, not GSA's 1.3
            vdop=2.1,
            pdop=2.5,
            err_lat=0.023,
            err_lon=0.020,
            err_alt=0.031,
        )
    ]
    assert dec.stats.sentences == 6
    assert dec.stats.fixes == 1
    assert dec.stats.rejected == 0


def test_a_repeated_gsa_and_a_gga_repeating_rmcs_position_decode_like_fresh_ones() -> None:
    # Both are shortcuts (the GSA's bytes and the position's text are remembered): a fix
    # must not tell them from a first decoding, and a GSA that differs must be read again.
    gsa2 = s("GPGSA,A,3,04,05,,09,12,,,24,,,,,3.5,1.8,2.9")
    epochs = [
        (rmc("123519"), gga("123519"), GSA),
        (rmc("123520"), gga("123520", lat="4807.0390"), GSA),  # GGA moved: its own position
        (rmc("123521"), gga("123521"), gsa2),
        (rmc("123522"), gga("123522"), GSA[:-1] + "0"),  # a bad checksum, same length
    ]
    dec = Decoder()
    fixes = run(*[x for e in epochs for x in e], dec=dec)
    fresh = [run(*e, dec=Decoder())[0] for e in epochs[:3]]
    assert fixes[:3] == fresh
    assert [(f.pdop, f.vdop) for f in fixes] == [(2.5, 2.1), (2.5, 2.1), (3.5, 2.9), (None, None)]
    assert fixes[1].lat == pytest.approx(48 + 7.039 / 60, abs=1e-10)  # GGA's finer-or-equal text
    assert dec.stats.rejected_by["checksum"] == 1


def test_a_repeated_gsa_that_ends_the_cycle_is_learned_as_its_end_like_a_fresh_one() -> None:
    def cycles(gsas: list[str]) -> Decoder:
        dec = Decoder()
        dec.feed(stream(*[x for i, g in enumerate(gsas) for x in (
            rmc(f"12351{i}"), gga(f"12351{i}"), g)]))  # fmt: skip
        return dec

    changing = [s(f"GPGSA,A,3,04,05,,09,12,,,24,,,,,2.{i},1.3,2.1") for i in range(6)]
    repeated, fresh = cycles([GSA] * 6), cycles(changing)
    # The cycle's end decides when a fix leaves (without waiting for the next epoch).
    assert repeated._enders == fresh._enders == {b"GPGSA"}
    assert repeated.stats.fixes == fresh.stats.fixes == 6


@pytest.mark.parametrize("talker", ["GP", "G!", "G\u00e9", "1A", "G,"])
def test_the_decoder_takes_a_sentence_exactly_when_fields_splits_it(talker: str) -> None:
    from tracker.nmea import fields

    body = f"{talker}GGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
    try:
        fields("$" + body)
        splits = True
    except ValueError:
        splits = False
    dec = Decoder()
    fixes = run(zda("123519"), s(body), dec=dec)
    assert (len(fixes) == 1) is splits
    assert dec.stats.rejected + dec.stats.ignored == (0 if splits else 1)  # é: two bytes


def test_vtg_gives_speed_and_course_when_there_is_no_rmc() -> None:
    [fix] = run(zda("123519"), gga("123519"), VTG)
    assert fix.speed == pytest.approx(5.5 * KNOT)
    assert fix.course == pytest.approx(54.7)


def test_old_vtg_without_unit_letters() -> None:
    [fix] = run(zda("123519"), gga("123519"), s("GPVTG,054.7,034.4,005.5,010.2"))
    assert fix.speed == pytest.approx(5.5 * KNOT)
    assert fix.course == pytest.approx(54.7)


def test_vtg_with_only_kmh() -> None:
    [fix] = run(zda("123519"), gga("123519"), s("GPVTG,,T,,M,,N,36.0,K,A"))
    assert fix.speed == pytest.approx(10.0)
    assert fix.course is None


def test_gll_gives_a_fix_with_a_known_date() -> None:
    [fix] = run(zda("123519"), s("GPGLL,4916.45,N,12311.12,W,123519.50,A,A"))
    assert fix.time == t(1994, 3, 23, 12, 35, 19.5)
    assert fix.lat == pytest.approx(49 + 16.45 / 60)
    assert fix.lon == pytest.approx(-(123 + 11.12 / 60))


def test_gns_gives_position_altitude_satellites_and_a_quality() -> None:
    [fix] = run(
        zda("123519"),
        s("GNGNS,123519.00,4807.038,N,01131.000,E,DAN,14,0.8,545.4,46.9,,,V"),
    )
    assert (fix.alt, fix.sats, fix.hdop, fix.quality) == (545.4, 14, 0.8, 2)  # D: differential


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "GB", "BD", "QZ", "IN"])
def test_every_talker_is_decoded(talker: str) -> None:
    fixes = run(gga("123519", talker=talker), rmc("123519", talker=talker))
    assert len(fixes) == 1
    assert fixes[0].alt == 545.4


def test_satellites_used_prefer_the_gn_talker_else_add_up_the_systems() -> None:
    # SiRFstarV: one GGA per system, no GN one: the counts add up.
    [fix] = run(gga("123519", sats="08"), gga("123519", sats="02", talker="GL"), rmc("123519"))
    assert fix.sats == 10
    # Telit: per-system GGAs and a GNS with the total; a Furuno-like GGA "00" next to it.
    [fix] = run(
        gga("123519", sats="05"),
        gga("123519", sats="01", talker="GA"),
        s("GNGNS,123519.00,4807.038,N,01131.000,E,AAAN,14,1.3,545.4,46.9,,,V"),
        gga("123519", sats="00", talker="GN"),
        rmc("123519"),
    )
    assert fix.sats == 14


def test_the_position_with_more_decimals_wins_whatever_the_order() -> None:
    precise = gga("123519", lat="4807.038012", lon="01131.000034")
    coarse = rmc("123519", lat="4807.0380", lon="01131.0000")
    for order in ((precise, coarse), (coarse, precise)):
        [fix] = run(*order)
        assert fix.lat == pytest.approx(48 + 7.038012 / 60, abs=1e-11)
        assert fix.lon == pytest.approx(11 + 31.000034 / 60, abs=1e-11)


def test_two_digit_years_pivot_at_1980() -> None:
    assert run(rmc("120000", date="060199"))[0].time == t(1999, 1, 6, 12, 0, 0)
    assert run(rmc("120000", date="060180"))[0].time == t(1980, 1, 6, 12, 0, 0)
    assert run(rmc("120000", date="050179"))[0].time == t(2079, 1, 5, 12, 0, 0)
    # The day before the GPS epoch (1980-01-06): no receiver time, the fix is dropped
    # (tracker/plausible.py; test_plausible.py has the other bounds).
    assert run(rmc("120000", date="050180")) == []


def test_the_receivers_date_is_kept_even_when_it_is_an_old_gps_era() -> None:
    # A receiver with the 1024-week bug says 1999 for 2019: we store what it said.
    [fix] = run(rmc("120000", date="210899"))
    assert fix.time == t(1999, 8, 21, 12, 0, 0)


# -- checksums -----------------------------------------------------------------------------


def test_a_bad_checksum_rejects_the_sentence() -> None:
    dec = Decoder()
    good = rmc("123519")
    bad = good[:-2] + ("00" if good[-2:] != "00" else "01")
    assert run(bad, dec=dec) == []
    assert dec.stats.rejected_by["checksum"] == 1
    assert dec.stats.sentences == 0


def test_a_corrupted_field_fails_the_checksum() -> None:
    good = gga("123519")
    corrupted = good.replace("4807.0380", "4807.0880")
    dec = Decoder()
    assert run(corrupted, rmc("123519", lat="4807.0380"), dec=dec)[0].lat == pytest.approx(
        48 + 7.038 / 60
    )
    assert dec.stats.rejected_by["checksum"] == 1


def test_lower_case_checksum_digits_are_accepted() -> None:
    sentence = rmc("123519")
    assert len(run(sentence[:-2] + sentence[-2:].lower())) == 1


@pytest.mark.parametrize("tail", ["*7", "*7G", "*", "*123"])
def test_a_malformed_checksum_is_a_checksum_error(tail: str) -> None:
    dec = Decoder()
    body = rmc("123519").split("*")[0]
    assert run(body + tail, dec=dec) == []
    assert dec.stats.rejected_by["checksum"] == 1


def test_sentences_without_checksum_are_accepted_from_a_receiver_that_never_sends_one() -> None:
    dec = Decoder()
    no_cs = [x.split("*")[0] for x in (gga("222449"), zda("222449", 25, 10, 2010))]
    [fix] = run(*no_cs, dec=dec)
    assert fix.time == t(2010, 10, 25, 22, 24, 49)
    assert dec.stats.no_checksum == 2
    assert dec.stats.rejected == 0


def test_a_missing_checksum_is_rejected_once_the_receiver_has_sent_checksums() -> None:
    dec = Decoder()
    fixes = run(rmc("123519"), rmc("123520").split("*")[0], dec=dec)
    assert [f.time for f in fixes] == [t(1994, 3, 23, 12, 35, 19)]
    assert dec.stats.rejected_by["checksum"] == 1


def test_after_the_line_went_quiet_a_receiver_without_checksums_is_accepted_again() -> None:
    dec = Decoder()
    assert len(run(rmc("123519"), dec=dec)) == 1  # flushed: the line went quiet
    assert len(run(rmc("123520").split("*")[0], dec=dec)) == 1  # another receiver?


def test_a_truncated_sentence_without_checksum_is_not_trusted() -> None:
    dec = Decoder()
    truncated = rmc("123519").split("*")[0][:40]  # "...,4807.0380,N,01131" : cut in a field
    assert run(truncated, dec=dec) == []
    assert dec.stats.rejected_by["unparsable"] == 1


# -- framing and bad input -----------------------------------------------------------------


def test_lf_and_crlf_line_ends_give_the_same_fixes() -> None:
    sentences = (gga("123519"), rmc("123519"), gga("123520"), rmc("123520"))
    assert run(*sentences, eol="\n") == run(*sentences, eol="\r\n")
    assert len(run(*sentences, eol="\n")) == 2


def test_garbage_is_counted_and_skipped() -> None:
    dec = Decoder()
    data = b"\x00\x17\xfe\xff noise\r\n" + stream(rmc("123519")) + b"~~~~\n\n\r\n"
    fixes = dec.feed(data) + dec.flush()
    assert len(fixes) == 1
    assert dec.stats.rejected_by["garbage"] == 2
    assert dec.stats.sentences == 1


def test_noise_before_a_sentence_on_the_same_line_does_not_lose_it() -> None:
    dec = Decoder()
    fixes = dec.feed(b"\xff\xfe" + stream(rmc("123519"))) + dec.flush()
    assert len(fixes) == 1
    assert dec.stats.rejected_by["garbage"] == 1


def test_a_non_utf8_sentence_with_a_valid_checksum_is_rejected() -> None:
    body = b"GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W\xe9"
    line = b"$" + body + b"*%02X\r\n" % reduce(lambda a, c: a ^ c, body, 0)
    dec = Decoder()
    assert dec.feed(line) + dec.flush() == []
    assert dec.stats.rejected_by["non_utf8"] == 1


def test_overlong_sentences_are_rejected_but_long_ones_up_to_the_limit_pass() -> None:
    # NMEA 0183 allows 82 characters; real receivers send longer ones (GSV with many fields,
    # proprietary sentences), so the decoder accepts up to 200, and no more.
    limit = 200
    assert limit == MAX_SENTENCE
    base = gga("123519").split("*")[0][1:]
    long_ok = s(base + "," * (limit - len(base) - 4))  # "$" + body + "*hh" = limit
    too_long = s(base + "," * (limit - len(base) - 3))
    assert len(long_ok) == limit and len(too_long) == limit + 1
    dec = Decoder()
    assert len(run(long_ok, rmc("123519"), dec=dec)) == 1
    dec = Decoder()
    fixes = run(too_long, dec=dec)
    assert fixes == []
    assert dec.stats.rejected_by["overlong"] == 1


def test_long_proprietary_sentences_are_ignored_not_overlong() -> None:
    dec = Decoder()
    run(s("PMTKCHN," + ",".join(["14001"] * 32)), dec=dec)  # 203 characters, like the MTK-3301
    assert dec.stats.ignored == 1
    assert dec.stats.rejected == 0


def test_a_run_without_line_end_is_dropped_and_the_buffer_stays_bounded() -> None:
    dec = Decoder()
    junk = b"\x55" * (MAX_LINE + 1) + b"$GPRMC,12"
    for i in range(0, len(junk), 100):
        assert dec.feed(junk[i : i + 100]) == []
        assert len(dec._buf) <= MAX_LINE
    assert dec.stats.rejected_by["overlong"] == 1
    # The end of the overlong run is dropped with it; the next line decodes normally.
    fixes = dec.feed(b"3519\r\n" + stream(rmc("123519"))) + dec.flush()
    assert len(fixes) == 1
    assert dec.stats.rejected == 1


def test_a_partial_line_at_the_start_of_the_stream_is_skipped() -> None:
    dec = Decoder()
    whole = stream(rmc("123519"), rmc("123520"))
    fixes = dec.feed(whole[20:]) + dec.flush()  # we started reading mid-sentence
    assert [f.time for f in fixes] == [t(1994, 3, 23, 12, 35, 20)]
    assert dec.stats.rejected_by["partial"] == 1


def test_two_sentences_on_one_line_are_both_decoded() -> None:
    dec = Decoder()
    fixes = run(gga("123519") + rmc("123519"), dec=dec)  # the line end between them was lost
    assert len(fixes) == 1 and fixes[0].alt == 545.4 and fixes[0].speed is not None
    assert dec.stats.sentences == 2


def test_a_sentence_cut_short_by_the_next_one_is_partial() -> None:
    dec = Decoder()
    # The triton400 capture has "$GPGGA,030130$GPGLL,...": the GGA lost its tail.
    fixes = run("$GPGGA,123519" + rmc("123519"), dec=dec)
    assert len(fixes) == 1
    assert dec.stats.rejected_by["partial"] == 1


def test_proprietary_and_ais_sentences_are_ignored_not_rejected() -> None:
    dec = Decoder()
    fixes = run(
        s("PGRME,15.0,M,45.0,M,25.0,M"),
        s("PUBX,00,081350.00,4717.113210,N,00833.915187,E,546.589,G3,2.1,2.0,0.007,77.52"),
        "!AIVDM,1,1,,A,13u?etPv2;0n:dDPwUM1U1Cb069D,0*23",
        s("GPTXT,01,01,02,u-blox ag - www.u-blox.com"),
        s("GPRMB,A,,,,,,,,,,,,V"),
        rmc("123519"),
        dec=dec,
    )
    assert len(fixes) == 1
    assert dec.stats.ignored == 5
    assert dec.stats.rejected == 0


def test_instrument_sentences_are_decoded_not_ignored_and_other_types_stay_ignored() -> None:
    """Instrument types (tracker/instruments.py) from any talker are decoded into readings;
    a proprietary sentence of the same three letters and instrument types we do not decode
    (VWR, MDA) are ignored as before."""
    dec = Decoder()
    fixes = run(
        s("IIMWV,045.0,R,12.6,N,A"),
        s("PXMTW,17.9,C"),
        s("IIVWR,045.0,R,12.6,N,,M,,K"),
        s("WIMDA,29.9,I,1.013,B,19.5,C,,C,,,,C,,T,,M,,N,,M"),
        rmc("123519"),
        dec=dec,
    )
    assert len(fixes) == 1
    knot = 1852 / 3600
    assert dec.take_readings() == [("wind_angle_app", 45.0), ("wind_speed_app", 12.6 * knot)]
    assert dec.stats.instruments == 1 and dec.stats.ignored == 3 and dec.stats.sentences == 2


@pytest.mark.parametrize(
    "sentence",
    [
        rmc("123519", lat="48O7.038"),  # letter O, and a valid checksum
        rmc("123519", lat="9107.038"),  # 91 degrees
        rmc("123519", lon="01171.000"),  # 71 minutes
        rmc("123519", ns="X"),
        rmc("123519", speed="fast"),
        gga("12:35:19"),
        gga("253519"),
        gga("123519", q="x"),  # type: ignore[arg-type]
        s("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3"),  # a field short
        s("GPZDA,123519,31,02,2024,00,00"),  # 31 February
    ],
)
def test_a_sentence_with_a_broken_field_is_unparsable(sentence: str) -> None:
    dec = Decoder()
    assert run(sentence, dec=dec) == []
    assert dec.stats.rejected_by["unparsable"] == 1
    assert dec.stats.sentences == 0


def test_bytearray_and_memoryview_input() -> None:
    data = stream(rmc("123519"))
    for buf in (bytearray(data), memoryview(data)):
        dec = Decoder()
        assert len(dec.feed(buf) + dec.flush()) == 1


def test_any_chunking_gives_the_same_fixes_and_counters() -> None:
    data = (
        b"5.55442,N,00434*7F\r\n"  # the tail of a sentence: we started mid-line
        + stream(
            zda("235958.00", 31, 12, 2023),
            gga("235958.00"),
            GSA,
            "$GPGGA,2359$",  # a cut-short sentence
            s("PGRME,15.0,M,45.0,M,25.0,M"),
            rmc("235959.00", date="311223"),
            gga("235959.00"),
            GSV,
            s("GPGLL,4807.038,N,01131.000,E,235959.00,A,A"),
            rmc("000000.00", date="010124"),
            gga("000000.00"),
            rmc("000000.00", date="010124")[:-1] + "0",  # probably a bad checksum
            GST.replace("123519.00", "000000.00"),
        )
        + b"\xff\xfegarbage\n"
        + b"\x55" * (MAX_LINE + 3)  # a run with no end in sight (wrong baud rate)
        + b"\n"
        + b"\x55" * (MAX_LINE - 200)  # long garbage, then a sentence on the same line
        + stream(gga("000000.50"), eol="\n")
        + stream(rmc("000001.00", date="010124"))[:-2]  # no line end at the end
    )
    reference = Decoder()
    expected = reference.feed(data) + reference.flush()
    assert [f.time for f in expected] == [
        t(2023, 12, 31, 23, 59, 58),
        t(2023, 12, 31, 23, 59, 59),
        t(2024, 1, 1, 0, 0, 0),
        t(2024, 1, 1, 0, 0, 0.5),
        t(2024, 1, 1, 0, 0, 1),
    ]
    for cut in range(1, len(data)):
        dec = Decoder()
        got = dec.feed(data[:cut]) + dec.feed(data[cut:]) + dec.flush()
        assert got == expected, f"split at byte {cut}"
        assert dec.stats == reference.stats, f"split at byte {cut}"
    dec = Decoder()
    got = [f for i in range(len(data)) for f in dec.feed(data[i : i + 1])] + dec.flush()
    assert got == expected
    assert dec.stats == reference.stats


# -- epochs ---------------------------------------------------------------------------------


def test_a_gga_only_receiver_uses_the_date_of_an_earlier_zda_and_rolls_over_at_midnight() -> None:
    fixes = run(
        zda("235959.00", 31, 12, 2023),
        gga("235959.00"),
        gga("235959.50"),
        gga("000000.00"),
        gga("000000.50"),
        gga("235958.00"),  # going back 2.5 s, not forward by a day
        gga("000001.00"),
    )
    assert [f.time for f in fixes] == [
        t(2023, 12, 31, 23, 59, 59),
        t(2023, 12, 31, 23, 59, 59.5),
        t(2024, 1, 1, 0, 0, 0),
        t(2024, 1, 1, 0, 0, 0.5),
        t(2023, 12, 31, 23, 59, 58),
        t(2024, 1, 1, 0, 0, 1),
    ]


def test_a_gga_only_stream_rolls_over_every_midnight_after_one_date() -> None:
    tms = ["120000", "235959", "000001", "120000", "235959", "000001", "060000"]
    fixes = run(zda("115959", 1, 1, 2024), *(gga(x) for x in tms))
    days = [datetime.fromtimestamp(f.time, UTC).day for f in fixes]
    assert days == [1, 1, 2, 2, 2, 3, 3]


def test_a_zda_stamped_ahead_of_the_fix_still_dates_it_across_midnight() -> None:
    # mr-350p stamps ZDA with the next second: GGA 23:59:59 follows ZDA 00:00:00 of the next day.
    [fix] = run(zda("000000.000", 1, 1, 2024), gga("235959.000"))
    assert fix.time == t(2023, 12, 31, 23, 59, 59)


def test_a_zda_every_second_dates_a_gga_receiver_across_midnight() -> None:
    fixes = run(
        *(x for tm, d in (("235959", 31), ("000000", 1), ("000001", 1)) for x in (
            zda(tm, d, 12 if d == 31 else 1, 2023 if d == 31 else 2024), gga(tm)))
    )  # fmt: skip
    assert [f.time for f in fixes] == [
        t(2023, 12, 31, 23, 59, 59),
        t(2024, 1, 1, 0, 0, 0),
        t(2024, 1, 1, 0, 0, 1),
    ]


def test_a_zda_with_an_unchanged_date_still_moves_the_reference_time() -> None:
    # 13 h without a fix, ZDA every now and then: the fix at 23:30 is on the ZDA's day, not
    # the day before (which is what a reference stuck at 10:00 would give).
    [fix] = run(zda("100000", 5, 6, 2024), zda("230000", 5, 6, 2024), gga("233000"))
    assert fix.time == t(2024, 6, 5, 23, 30, 0)


def test_a_zda_with_a_bad_checksum_is_rejected_even_with_a_known_date() -> None:
    dec = Decoder()
    bad = zda("230000", 5, 6, 2024)[:-2] + "00"
    fixes = run(zda("100000", 5, 6, 2024), bad, gga("233000"), dec=dec)
    assert dec.stats.rejected_by["checksum"] == 1
    assert fixes[0].time == t(2024, 6, 4, 23, 30, 0)  # 13.5 h after 10:00 is nearer the eve


def test_epochs_before_the_first_date_are_held_until_it_comes() -> None:
    dec = Decoder()
    first = dec.feed(stream(gga("235958"), gga("235959"), gga("000000")))
    assert first == []
    later = dec.feed(stream(zda("000000", 1, 1, 2024), gga("000001"))) + dec.flush()
    assert [f.time for f in later] == [
        t(2023, 12, 31, 23, 59, 58),
        t(2023, 12, 31, 23, 59, 59),
        t(2024, 1, 1, 0, 0, 0),
        t(2024, 1, 1, 0, 0, 1),
    ]
    assert dec.stats.rejected == 0


def test_without_any_date_valid_epochs_are_dropped_as_no_date() -> None:
    dec = Decoder()
    fixes = run(*(gga(f"1200{i:02d}") for i in range(3)), dec=dec)
    assert fixes == []
    assert dec.stats.rejected_by["no_date"] == 3
    assert dec.stats.fixes == 0


def test_the_held_epochs_are_bounded() -> None:
    dec = Decoder()
    n = MAX_HELD + 5
    dec.feed(
        stream(*(gga(f"{12 + i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}") for i in range(n)))
    )
    assert len(dec._held) <= MAX_HELD
    assert dec.stats.rejected_by["no_date"] >= 5


def test_an_rmc_only_receiver_gets_every_epoch_and_the_last_one_on_flush() -> None:
    dec = Decoder()
    tms = [f"1235{i:02d}" for i in range(10)]
    fixes = dec.feed(stream(*(rmc(x) for x in tms)))
    assert len(fixes) >= 8  # the last ones wait for the next one, or for flush
    fixes += dec.flush()
    assert [f.time for f in fixes] == [t(1994, 3, 23, 12, 35, i) for i in range(10)]


def test_an_epoch_completes_at_the_learned_end_of_cycle_without_waiting() -> None:
    dec = Decoder()

    def cycle(tm: str) -> bytes:
        return stream(rmc(tm), VTG, gga(tm), GSA, GSV, s(f"GPGLL,4807.038,N,01131.000,E,{tm},A,A"))

    for sec in range(3):  # learning: GLL comes last twice
        dec.feed(cycle(f"12351{sec}"))
    for sec in range(3, 8):
        fixes = dec.feed(cycle(f"12351{sec}"))
        assert [f.time for f in fixes] == [t(1994, 3, 23, 12, 35, 10 + sec)]
    assert dec.flush() == []


def test_ten_and_twenty_five_hz_keep_the_fraction_the_receiver_sent() -> None:
    for hz, decimals in ((10, 1), (25, 2)):
        step = 1 / hz
        tms = [f"1200{int(i * step):02d}.{round((i * step) % 1 * 10**decimals):0{decimals}d}"
               for i in range(2 * hz)]  # fmt: skip
        dec = Decoder()
        fixes = run(*(x for tm in tms for x in (rmc(tm), gga(tm))), dec=dec)
        expected = [t(1994, 3, 23, 12, 0, 0) + i * step for i in range(2 * hz)]
        assert [round(f.time, 6) for f in fixes] == [round(x, 6) for x in expected]
        assert dec.stats.invalid_epochs == 0


def test_time_fields_with_different_fraction_digits_are_one_epoch() -> None:
    # triton400: GLL "030129.000", GGA "030129.00", RMC "030129.0"
    [fix] = run(s("GPGLL,4807.038,N,01131.000,E,123519.000,A,A"), gga("123519.00"), rmc("123519.0"))
    assert fix.alt == 545.4 and fix.speed is not None


@pytest.mark.parametrize(
    "sentences",
    [
        [rmc("123519", status="V")],
        [rmc("123519", mode="N")],
        [zda("123519"), gga("123519", q=0)],
        [zda("123519"), s("GPGLL,4807.038,N,01131.000,E,123519,V,N")],
        [zda("123519"), s("GPGLL,4807.038,N,01131.000,E,123519,A,N")],
        [zda("123519"), s("GNGNS,123519.00,4807.038,N,01131.000,E,NNN,00,,,,,,V")],
        [rmc("123519", status="V", mode="S"), gga("123519", q=8)],  # Garmin simulator mode
        [gga("123519", q=6, sats="00"), rmc("123519", status="V", mode="E")],  # DR, no sky
        [rmc("123519"), gga("123519", sats="00")],  # quality 1 from no satellite (Hemisphere)
        [rmc("123519", lat="", lon="")],  # valid, but no position
        [s("GPRMC,,V,,,,,,,,,,N"), s("GPGGA,,,,,,0,00,99.99,,,,,,"), s("GPGLL,,,,,,V,N")],
    ],
)
def test_invalid_epochs_are_not_emitted(sentences: list[str]) -> None:
    dec = Decoder()
    assert run(*sentences, dec=dec) == []
    assert dec.stats.fixes == 0


def test_estimated_and_simulated_fixes_alone_are_valid_and_say_so() -> None:
    assert run(zda("123519"), gga("123519", q=6, sats="00"))[0].quality == 6
    assert run(zda("123519"), gga("123519", q=8))[0].quality == 8
    assert len(run(rmc("123519", mode="E"))) == 1


def test_invalid_epochs_are_counted_and_do_not_stop_later_fixes() -> None:
    dec = Decoder()
    fixes = run(rmc("123519", status="V"), rmc("123520", status="V"), rmc("123521"), dec=dec)
    assert [f.time for f in fixes] == [t(1994, 3, 23, 12, 35, 21)]
    assert dec.stats.invalid_epochs == 2


def test_flush_emits_the_last_epoch_and_is_idempotent() -> None:
    dec = Decoder()
    assert dec.feed(stream(gga("123519"), rmc("123519"))) == []
    [fix] = dec.flush()
    assert fix.time == t(1994, 3, 23, 12, 35, 19)
    assert dec.flush() == []
    assert dec.flush() == []


def test_flush_decodes_an_unterminated_last_sentence_only_with_a_checksum() -> None:
    dec = Decoder()
    dec.feed(rmc("123519").encode())  # no line end: the capture (or the cable) ended there
    assert len(dec.flush()) == 1
    dec = Decoder()
    dec.feed(zda("123519").split("*")[0].encode())
    assert dec.flush() == []
    assert dec.stats.rejected_by["partial"] == 1


def test_untimed_sentences_before_the_first_timed_one_join_its_epoch() -> None:
    [fix] = run(GSA, VTG, gga("123519"), zda("123519"))
    assert (fix.pdop, fix.vdop, fix.course) == (2.5, 2.1, 54.7)


def test_a_late_sentence_unlearns_an_ender_that_came_too_early() -> None:
    dec = Decoder()

    def cycle(tm: str) -> list[str]:
        return [rmc(tm), gga(tm)]

    # A burst lost twice after the RMC teaches "RMC ends the cycle", so the next epoch is
    # completed at its RMC; its GGA then comes late, and RMC is unlearned.
    fixes = dec.feed(stream(*cycle("120000"), rmc("120001"), rmc("120002"), *cycle("120003")))
    assert [f.alt for f in fixes] == [545.4, None, None, None]  # 12:00:03 lost its GGA
    assert dec.stats.late == 1
    assert dec._enders == set()
    fixes = dec.feed(stream(*cycle("120004"), *cycle("120005"))) + dec.flush()
    assert [f.alt for f in fixes] == [545.4, 545.4]
    assert dec._enders == {b"GPGGA"}


def test_a_redundant_late_gll_does_not_unlearn() -> None:
    # gp-320fw sends GLL in every other cycle only: the cycle is learned to end at GGA.
    gll = "GPGLL,4807.038,N,01131.000,E,{},A,A"
    dec = Decoder()
    data = []
    for sec in range(8):
        tm = f"1200{sec:02d}"
        data += [rmc(tm), gga(tm)] + ([s(gll.format(tm))] if sec % 2 else [])
    fixes = dec.feed(stream(*data)) + dec.flush()
    assert len(fixes) == 8
    assert b"GPGGA" in dec._enders


# -- against the project's receiver simulator ------------------------------------------------

FAULTS = "checksum=0.01,garbage=0.01,truncate=0.01,overlong=0.002,outage=0.02,silence=0.01"


@pytest.mark.parametrize("faults", ["", FAULTS], ids=["clean", "faults"])
@pytest.mark.parametrize("rate", [1, 5, 10, 25])
@pytest.mark.parametrize(
    "sentences",
    [
        simulate.DEFAULT_SENTENCES,  # GGA RMC GSA VTG
        ("RMC",),
        ("GGA", "ZDA"),
        ("GLL", "ZDA"),
        ("ZDA", "GST", "GGA"),
        ("RMC", "GSV", "GSA", "GLL"),
        simulate.SENTENCES,
    ],
    ids="-".join,
)
def test_simulated_receivers_at_1_to_25_hz(sentences: tuple[str, ...], rate: int, faults: str):
    """Every epoch the simulator marks valid (a fix, every byte intact) is stored with its time
    and position; nothing is stored for an epoch without a fix; times only go forward.
    Silence (a pulled cable) makes the reader call flush(), as it does after a quiet second."""
    check_simulated_receiver(sentences, rate, faults)


MULTI_GNSS = ("RMC", "GGA", "GSA", "GSV", "VTG")  # with glonass: two GSA, four GSV an epoch


@pytest.mark.parametrize("faults", ["", FAULTS], ids=["clean", "faults"])
@pytest.mark.parametrize("rate", [1, 10])
def test_simulated_multi_gnss_receivers(rate: int, faults: str):
    check_simulated_receiver(MULTI_GNSS, rate, faults, glonass=True)


def test_a_second_constellation_changes_no_fix():
    """GPS + GLONASS (two GSA, a GSV group each) gives the very fixes GPS alone gives."""
    def fixes(glonass: bool) -> list[Fix]:
        dec = Decoder()
        epochs = simulate.simulate(
            simulate.demo_route(), rate_hz=10, start_time=datetime(2026, 6, 1, 8, tzinfo=UTC),
            sentences=MULTI_GNSS, faults=simulate.parse_faults("outage=0.05"), seed=3,
            duration_s=120, glonass=glonass,
        )  # fmt: skip
        return [f for e in epochs for f in dec.feed(e.data)] + dec.flush()

    single = fixes(False)
    assert len(single) > 300 and single == fixes(True)


def check_simulated_receiver(
    sentences: tuple[str, ...], rate: int, faults: str, *, glonass: bool = False
) -> None:
    epochs = simulate.simulate(
        simulate.demo_route(),
        rate_hz=rate,
        start_time=datetime(2026, 6, 1, 23, 59, 30, tzinfo=UTC),  # across midnight
        sentences=sentences,
        faults=simulate.parse_faults(faults),
        seed=7,
        duration_s=60,
        glonass=glonass,
    )
    dec = Decoder()
    fixes: list[Fix] = []
    truth = {}
    for e in epochs:
        truth[round(e.unix * 1000)] = e
        fixes += dec.feed(e.data) if e.data else dec.flush()
    fixes += dec.flush()
    ours = {round(f.time * 1000): f for f in fixes}
    assert len(ours) == len(fixes)
    assert all(a.time < b.time for a, b in zip(fixes, fixes[1:], strict=False))
    for ms, e in truth.items():
        if e.valid:
            assert ms in ours, f"valid epoch {e.time} not stored"
            assert ours[ms].lat == pytest.approx(e.lat, abs=1e-6)
            assert ours[ms].lon == pytest.approx(e.lon, abs=1e-6)
    for ms in ours:
        assert ms in truth and truth[ms].fix, f"stored a fix for {iso(ms)}, which had none"
    assert dec.stats.fixes == len(fixes) >= sum(e.valid for e in truth.values()) > 0


def test_a_receiver_that_never_sends_a_date_gives_no_fix() -> None:
    """No RMC, no ZDA: the system clock is no substitute on a Pi without RTC."""
    epochs = simulate.simulate(
        simulate.demo_route(),
        start_time=datetime(2026, 6, 1, 12, tzinfo=UTC),
        sentences=("GGA", "GSA", "GSV", "GLL"),
        duration_s=10,
    )
    dec = Decoder()
    fixes = [f for e in epochs for f in dec.feed(e.data)] + dec.flush()
    assert fixes == []
    assert dec.stats.rejected_by["no_date"] == 10


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


# -- logging, counters, files ----------------------------------------------------------------


def test_bad_input_is_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tracker.nmea")
    dec = Decoder()
    bad = rmc("123519")[:-2] + "00"
    dec.feed(stream(*[bad] * 100, *["garbage"] * 100))
    records = [r for r in caplog.records if r.name == "tracker.nmea"]
    assert len(records) == 2  # one per kind, not 200
    assert "checksum" in records[0].getMessage()
    assert "garbage" in records[1].getMessage()
    assert dec.stats.rejected == 200


def test_with_no_interval_every_bad_line_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tracker.nmea")
    dec = Decoder(log_interval_s=0.0)
    dec.feed(stream(*["garbage"] * 5))
    assert len([r for r in caplog.records if r.name == "tracker.nmea"]) == 5


def test_stats_as_dict_is_plain_and_consistent() -> None:
    dec = Decoder()
    run("garbage", rmc("123519")[:-2] + "00", rmc("123519"), s("PGRME,1"), dec=dec)
    d = dec.stats.as_dict()
    assert set(d["rejected_by"]) == set(REJECT_REASONS)
    assert d["rejected"] == sum(d["rejected_by"].values()) == 2
    assert (d["sentences"], d["fixes"], d["ignored"]) == (1, 1, 1)
    d["rejected_by"]["checksum"] = 99  # a copy: the status page cannot change the counters
    assert dec.stats.rejected_by["checksum"] == 1


def test_decode_file_skips_comment_lines_and_flushes(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "capture.log"
    path.write_bytes(b"# Name: test, receiver\n" + stream(gga("123519"), rmc("123519")))
    dec = Decoder()
    fixes = decode_file(path, dec)
    assert len(fixes) == 1
    assert dec.stats.rejected == 0
