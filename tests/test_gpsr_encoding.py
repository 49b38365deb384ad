"""json-gpsr encoding and reply parsing: pure functions, no network."""

from __future__ import annotations

import json
import math

import pytest

from tracker.senders.gpsr import (
    accuracy,
    encode_batch,
    encode_fixes,
    fix_object,
    parse_fix_page,
    parse_input_reply,
    parse_token_test,
    wire_time,
)
from tracker.senders.transport import Rejected, SecretError, Transient, read_secret
from tracker.store import StoredFix

T0 = 1_780_000_000.0


def fx(i: int, t: float, lat: float = 51.0, lon: float = 1.0, **kw) -> StoredFix:
    kw.setdefault("activity_id", 1)
    return StoredFix(t, lat, lon, id=i, **kw)


def test_wire_time_seconds_floor_and_millis_rounded():
    assert wire_time(T0 + 0.999) == int(T0)
    assert wire_time(T0 + 0.1, millis=True) == int(T0) * 1000 + 100  # not ...099
    assert len(str(wire_time(T0, millis=True))) == 13


def test_accuracy_prefers_gst_then_dop_times_uere():
    gst = fx(1, T0, err_lat=3.0, err_lon=4.0, err_alt=6.0, hdop=9.0, vdop=9.0)
    assert accuracy(gst) == (5.0, 6.0)
    dop = fx(2, T0, hdop=1.2, vdop=2.0)
    assert accuracy(dop) == pytest.approx((6.0, 10.0))
    assert accuracy(dop, uere_m=3.0) == pytest.approx((3.6, 6.0))
    assert accuracy(fx(3, T0)) == (None, None)


def test_fix_object_fields_and_omissions():
    f = fx(1, T0, 51.123456789, -0.5, alt=12.34, speed=4.567, course=271.25, hdop=1.0)
    obj = fix_object(f, 5, tag="ride", poi="cafe")
    assert obj == {
        "t": 5, "l": [51.1234568, -0.5], "al": 12.3, "ha": 5.0,
        "vv": [4.57, 271.2], "tag": "ride", "poi": "cafe",
    }  # fmt: skip
    bare = fix_object(fx(2, T0, speed=1.0), 6)  # speed without a course: no vv
    assert bare == {"t": 6, "l": [51.0, 1.0]}
    assert "nan" not in encode_fixes([fix_object(fx(3, T0, alt=math.nan), 7)])


def test_seconds_mode_sends_the_first_fix_of_each_second_and_acks_all():
    fixes = [fx(i + 1, T0 + i / 10, lat=51 + i * 1e-4, speed=5.0) for i in range(25)]
    fixes[13] = fx(14, T0 + 1.3, poi="bridge")
    b = encode_batch(fixes)
    assert [o["t"] for o in b.objects] == [int(T0), int(T0) + 1, int(T0) + 2]
    assert b.objects[0]["l"][0] == 51.0
    assert b.objects[1]["poi"] == "bridge"  # a note on a thinned fix goes with its second
    assert b.ids_by_time[int(T0) + 1] == list(range(11, 21))
    assert sorted(b.acknowledged([int(T0) + 2, 999])) == list(range(21, 26))


def test_millis_mode_sends_every_fix():
    fixes = [fx(i + 1, T0 + i / 10) for i in range(5)]
    b = encode_batch(fixes, millis=True)
    assert [o["t"] for o in b.objects] == [int(T0) * 1000 + 100 * i for i in range(5)]


def test_times_already_acknowledged_are_covered_not_sent():
    fixes = [fx(1, T0 + 0.5), fx(2, T0 + 1.0)]
    b = encode_batch(fixes, acked_times=[int(T0)])
    assert b.covered == [1] and [o["t"] for o in b.objects] == [int(T0) + 1]


def test_tags_per_activity():
    fixes = [fx(1, T0, activity_id=1), fx(2, T0 + 1, activity_id=2)]
    b = encode_batch(fixes, tags={1: "Morning", 2: None})
    assert b.objects[0]["tag"] == "Morning" and "tag" not in b.objects[1]


def test_stationary_fixes_are_one_object_with_a_time_list():
    still = [fx(i + 1, T0 + i, 51.0 + i * 1e-6, 1.0, hdop=1.0, speed=0.1) for i in range(4)]
    moving = fx(5, T0 + 4, 51.001, 1.0, hdop=1.0, speed=6.0)
    b = encode_batch([*still, moving], compress=True)
    assert b.objects[0]["t"] == [int(T0) + i for i in range(4)]
    assert b.objects[1]["t"] == int(T0) + 4
    assert b.times == [int(T0) + i for i in range(5)]
    assert b.acknowledged([int(T0) + 2]) == [3]  # every time is acknowledged on its own
    assert len(encode_batch([*still, moving]).objects) == 5  # off by default


def test_compression_breaks_on_distance_speed_poi_and_tag():
    a = fx(1, T0, hdop=1.0)  # ha 5 m
    far = fx(2, T0 + 1, 51.0001, hdop=1.0)  # ~11 m away
    assert len(encode_batch([a, far], compress=True).objects) == 2
    fast = fx(2, T0 + 1, speed=3.0, hdop=1.0)
    assert len(encode_batch([a, fast], compress=True).objects) == 2
    poi = fx(2, T0 + 1, poi="here", hdop=1.0)
    b = encode_batch([a, poi], compress=True)
    assert len(b.objects) == 2 and b.objects[1]["poi"] == "here"
    other = fx(2, T0 + 1, activity_id=2, hdop=1.0)
    assert len(encode_batch([a, other], compress=True, tags={1: "x", 2: "y"}).objects) == 2
    # No accuracy known: only the very same position counts.
    assert len(encode_batch([fx(1, T0), fx(2, T0 + 1)], compress=True).objects) == 1
    assert len(encode_batch([fx(1, T0), fx(2, T0 + 1, 51.000001)], compress=True).objects) == 2


def test_input_reply_parsing():
    r = parse_input_reply(b'{"fix_tlist": [1, "2", 3.0, [4, 5], "x", true], "meta": {}}')
    assert r.times == {1, 2, 3, 4, 5} and r.error is None
    r = parse_input_reply(json.dumps({"fix_tlist": [7], "error": "quota"}).encode())
    assert r.times == {7} and r.error == "quota"
    assert parse_input_reply(b"{}").times == frozenset()
    with pytest.raises(Transient) as e:
        parse_input_reply(b'{"fix_tlist": [1')
    assert e.value.maybe_applied
    with pytest.raises(Transient):
        parse_input_reply(b"[1, 2]")


def test_token_test_parsing():
    assert parse_token_test(b'{"result": true}') is True
    assert parse_token_test(b'{"result": false}') is False
    with pytest.raises(Transient):
        parse_token_test(b'{"result": "yes"}')


def test_fix_page_parsing():
    page = parse_fix_page(b'{"found": true, "data": [{"t": 5}, {"t": [6, 7]}, {"t": "8"}],'
                          b' "more": true, "offset": 100}')  # fmt: skip
    assert page.times == (5, 6, 7, 8) and page.more and page.offset == 100
    assert parse_fix_page(b'{"found": false}').times == ()
    assert parse_fix_page(b'{"found": false, "error": "no fixes", "more": false}').times == ()
    with pytest.raises(Rejected):
        parse_fix_page(b'{"error": "bad token type"}')


def test_token_secret_messages_say_token(tmp_path):
    with pytest.raises(SecretError, match="no token: set token or token_file.*gpsr-token"):
        read_secret(None, None, "gpsr-token", {}, what="token")
    with pytest.raises(SecretError, match="cannot read the token file"):
        read_secret(None, tmp_path / "missing", "gpsr-token", {}, what="token")
