"""Pure encoding and reply parsing for Map My Tracks (readings from docs/mapmytracks.md)."""

from __future__ import annotations

import pytest

from tracker.fix import Sample
from tracker.senders.mapmytracks import (
    encode_points,
    encode_samples,
    encode_tags,
    parse_activity_id,
    parse_points,
    parse_reply,
    parse_server_time,
    start_fields,
    thin,
    update_fields,
)
from tracker.senders.transport import Rejected, SecretError, Transient, read_secret
from tracker.store import Activity, StoredFix


def fix(i: int, t: float, lat: float = 51.3704583333333, lon: float = 1.15737333333333,
        alt: float | None = 1.345) -> StoredFix:  # fmt: skip
    return StoredFix(t, lat, lon, alt, id=i, activity_id=1)


ACT = Activity(1, "abc123", "T" * 120, "mountain biking", "public",
               ("training", "whitstable", "x" * 60), 1198052842.0, None, None)  # fmt: skip


def test_points_are_lat_lon_alt_time_space_separated():
    text = encode_points([fix(1, 1198052842.7), fix(2, 1198052844.0, 51.3704586, 1.1573741)])
    assert text == "51.3704583 1.1573733 1.3 1198052842 51.3704586 1.1573741 1.3 1198052844"


def test_point_numbers_are_plain_and_missing_altitude_is_zero():
    assert encode_points([fix(1, 10.0, -0.00000001, 180.0, None)]) == "0 180 0 10"
    assert encode_points([fix(1, 10.0, -33.5, -70.25, -12.04)]) == "-33.5 -70.25 -12 10"
    assert encode_points([]) == ""


def test_samples_are_value_time_pairs_first_per_second():
    samples = [
        Sample(1198052848.2, "hr", 90.4),
        Sample(1198052842.1, "hr", 80.0),
        Sample(1198052842.9, "hr", 85.0),  # same second: dropped
        Sample(1198052842.0, "cad", 33.0),
        Sample(1198052842.0, "pwr", 110.6),
        Sample(1198052843.0, "pwr", float("nan")),
    ]
    assert encode_samples(samples) == {
        "hr": "80 1198052842 90 1198052848",
        "cad": "33 1198052842",
        "pwr": "111 1198052842",
    }
    assert encode_samples([]) == {}


def test_tags_comma_joined_cut_to_50():
    assert encode_tags(["training", " whitstable "]) == "training,whitstable"
    assert encode_tags(["a,b", "", "y" * 60]) == "a b," + "y" * 50


def test_thin_keeps_the_first_fix_of_each_second_after_the_last_sent():
    fixes = [fix(i, 100.0 + i * 0.25) for i in range(12)]  # 100.0 .. 102.75
    assert [f.id for f in thin(fixes, None)] == [0, 4, 8]
    assert [f.id for f in thin(fixes, 100)] == [4, 8]
    assert thin(fixes, 102) == []
    assert [f.id for f in thin(fixes, None, 2.0)] == [0, 8]
    assert [f.id for f in thin(fixes, None, 0.1)] == [0, 4, 8]  # never two in one second


def test_start_fields():
    f = start_fields(ACT, "tok", [fix(1, 1198052842.0)], [Sample(1198052842.0, "hr", 80)], "9.9")
    assert f == {
        "request": "start_activity",
        "title": "T" * 100,
        "privacy": "public",
        "activity": "mountain biking",
        "source": "tracker",
        "version": "9.9",
        "unique_token": "tok",
        "points": "51.3704583 1.1573733 1.3 1198052842",
        "tags": "training,whitstable," + "x" * 50,
        "hr": "80 1198052842",
    }


def test_update_fields():
    f = update_fields(9346, [fix(1, 5.0)], [Sample(5.0, "cad", 44)])
    assert f == {"request": "update_activity", "activity_id": "9346",
                 "points": "51.3704583 1.1573733 1.3 5", "cad": "44 5"}  # fmt: skip


SEED_START = b"""<?xml version="1.0" encoding="UTF-8"?>
<message>
<type>activity_started</type>
<activity_id>9346</activity_id>
</message>"""


def test_parse_seed_replies():
    assert parse_activity_id(parse_reply(SEED_START), "start") == 9346
    t = parse_reply(b"<message><type>time</type><server_time>1242988693</server_time></message>")
    assert parse_server_time(t) == 1242988693
    acts = parse_reply(
        b"<message><author>Rob</author><activities><activity1><id>54</id>"
        b"<title>Wednesday run</title><date>1198053480</date></activity1><activity2><id>500"
        b"</id><title>Bike</title><date>1223050320</date></activity2></activities></message>"
    )
    assert acts.items[1] == {"id": "500", "title": "Bike", "date": "1223050320"}


def test_parse_get_activity_points():
    msg = parse_reply(
        b"<message><complete>Yes</complete><points>\n1198052842,51.3704583333333,"
        b"1.15737333333333,1.345 1198052846,51.370465,1.1573,2\n</points></message>"
    )
    assert msg.fields["complete"] == "Yes"
    assert parse_points(msg.fields["points"]) == [
        (1198052842, 51.3704583333333, 1.15737333333333, 1.345),
        (1198052846, 51.370465, 1.1573, 2.0),
    ]
    assert parse_points("") == []
    with pytest.raises(Transient, match="unreadable point"):
        parse_points("1198052842,abc")


def test_error_reply_is_rejected_with_the_reason():
    with pytest.raises(Rejected, match="latitude out of range"):
        parse_reply(b"<message><type>error</type><reason>latitude out of range</reason></message>")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"<!DOCTYPE html><html><body>Welcome</body></html>", "HTML"),
        (SEED_START[: len(SEED_START) // 2], "unreadable XML"),
        (b"<other/>", "not <message>"),
        (b'<!DOCTYPE m [<!ENTITY a "aaaa">]><message>&a;</message>', "unreadable XML"),
        (b"\x00\xff garbage", "unreadable XML"),
    ],
)
def test_bad_replies_are_transient_with_a_short_reason(body, words):
    with pytest.raises(Transient, match=words) as err:
        parse_reply(body, "mapmytracks update_activity")
    assert len(str(err.value)) < 200 and "\n" not in str(err.value)


def test_unexpected_reply_type_is_transient():
    with pytest.raises(Transient, match="activity_started"):
        parse_activity_id(parse_reply(b"<message><type>activity_updated</type></message>"), "s")
    with pytest.raises(Transient, match="activity_id"):
        parse_activity_id(parse_reply(b"<message><type>activity_started</type></message>"), "s")


def test_read_secret_order(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mapmytracks-password").write_text("from-systemd\n")
    f = tmp_path / "pw"
    f.write_text("from-file\r\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    name = "mapmytracks-password"
    assert read_secret("inline", f, name, env) == "inline"
    assert read_secret(None, f, name, env) == "from-file"
    assert read_secret(None, None, name, env) == "from-systemd"
    with pytest.raises(SecretError, match="mapmytracks-password"):
        read_secret(None, None, name, {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretError, match="empty"):
        read_secret(None, tmp_path / "empty", name, env)
    with pytest.raises(SecretError, match="cannot read") as err:
        read_secret(None, tmp_path / "missing", name, env)
    assert "from-" not in str(err.value)
