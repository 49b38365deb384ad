"""The json-gpsr test server over real HTTP on 127.0.0.1, seen from a `requests` client."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tracker.testing.faults import ALL_KINDS, Faults
from tracker.testing.gpsr import GpsrServer

ROOT = Path(__file__).resolve().parents[1]
AUTH = ("rider", "secret")
T0 = 1_780_000_200  # a multiple of 300: the start of a stats period


class Clock:
    """A server clock the test moves by hand."""

    def __init__(self, now: float = T0 + 3600) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> Iterator[GpsrServer]:
    with GpsrServer(users={"rider": "secret", "other": "pw2"}, clock=clock) as s:
        yield s


@pytest.fixture
def post_token(server: GpsrServer) -> str:
    return server.make_token("rider", "post").key


def fix(t, lat: float = 51.37, lon: float = 1.15, **extra) -> dict:
    return {"t": t, "l": [lat, lon], **extra}


def send(server: GpsrServer, token: str, fixes, timeout: float = 5.0, **extra) -> dict:
    """POST /input, check the reply is a 200 JSON object, return it."""
    body = fixes if isinstance(fixes, str) else json.dumps(fixes)
    r = requests.post(server.url + "input", data={"token": token, "fixes": body, **extra},
                      timeout=timeout)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()


def get(server: GpsrServer, path: str, auth=AUTH, status: int = 200, **params):
    r = requests.get(server.url + path, params=params, auth=auth, timeout=5)
    assert r.status_code == status, r.text
    return r.json()


def form(server: GpsrServer, path: str, auth=AUTH, **data) -> requests.Response:
    return requests.post(server.url + path, data=data, auth=auth, timeout=5)


def times(reply: dict) -> list:
    return [f["t"] for f in reply["data"]]


# -- /input ---------------------------------------------------------------------------------


def test_input_stores_and_acknowledges_every_time_as_posted(server, clock, post_token):
    clock.now += 0.7
    fixes = [
        fix(T0, al=12.5, ha=3.1, va=4.2, vv=[5.5, 270.0], tag="ride"),
        fix([T0 + 1, T0 + 2, T0 + 3], lat="51.3700001", lon="1.15", poi="stop"),
        fix(str(T0 + 4)),
        fix((T0 + 5) * 1000 + 250),  # milliseconds
    ]
    reply = send(server, post_token, fixes)
    assert reply["fix_tlist"] == [T0, T0 + 1, T0 + 2, T0 + 3, str(T0 + 4), (T0 + 5) * 1000 + 250]
    assert "error" not in reply
    stored = server.fixes("rider")
    assert [f.t for f in stored] == [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4, (T0 + 5) * 1000 + 250]
    assert [f.seconds for f in stored] == [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5.25]
    assert {f.t_i for f in stored} == {T0 + 3600}
    first, list_fix = stored[0], stored[2]
    assert first.as_json() == {
        "al": 12.5, "l": [51.37, 1.15], "t": T0, "t_i": T0 + 3600, "tag": "ride",
        "vv": [5.5, 270.0], "ha": 3.1, "va": 4.2,
    }  # fmt: skip
    assert (list_fix.lat, list_fix.poi, list_fix.tag) == (51.3700001, "stop", None)
    assert server.fixes("other") == []
    [rec] = server.requests
    assert (rec.name, rec.user, rec.status, rec.processed) == ("/input", "rider", 200, True)
    assert server.count("/input", processed=True) == 1


def test_input_refuses_bad_fixes_one_by_one(server, post_token):
    fixes = [
        fix(T0),
        {"l": [51.0, 1.0]},
        {"t": T0 + 2},
        fix(T0 + 3.5),
        fix(T0 + 4, lat="north"),
        fix(T0 + 5, lat=91),
        fix(T0 + 6, t_i=T0),
        fix([]),
        fix(True),
        fix(-5),
        "not an object",
        fix(T0 + 11, vv=[1.0]),
        fix(T0 + 12, al=float("nan")),
        fix(T0 + 13, tag=7),
        fix(T0 + 14),
    ]
    reply = send(server, post_token, fixes)
    assert reply["fix_tlist"] == [T0, T0 + 14]
    errors = reply["error"].split("; ")
    assert [e.split(":")[0] for e in errors] == [f"fix {i}" for i in range(1, 14)]
    assert "missing t" in errors[0] and "missing l" in errors[1]
    assert "t_i" in errors[5]
    assert [f.t for f in server.fixes("rider")] == [T0, T0 + 14]


@pytest.mark.parametrize(
    ("body", "reason"),
    [("[{", "not JSON"), ('{"t": 1}', "not a list"), (None, "missing fixes")],
)
def test_input_refuses_a_broken_request_whole(server, post_token, body, reason):
    data = {"token": post_token}
    if body is not None:
        data["fixes"] = body
    r = requests.post(server.url + "input", data=data, timeout=5)
    assert r.status_code == 200
    assert r.json()["fix_tlist"] == [] and reason in r.json()["error"]
    assert server.fixes("rider") == []


def test_duplicates_are_stored_and_counted(server, post_token):
    send(server, post_token, [fix(T0), fix(T0 + 1)])
    reply = send(server, post_token, [fix(T0 + 1), fix([T0 + 2, T0 + 2])])
    assert reply["fix_tlist"] == [T0 + 1, T0 + 2, T0 + 2]
    assert len(server.fixes("rider")) == 5
    assert [f.t for f in server.duplicates("rider")] == [T0 + 1, T0 + 2]
    send(server, post_token, [fix(T0 * 1000 + 1)])  # same second, not the same instant
    assert len(server.duplicates("rider")) == 2


def test_input_token_validity(server, clock):
    now = clock.now
    cases = {
        "missing": None,
        "unknown": "no-such-token",
        "future": server.make_token("rider", "post", now + 10, now + 100).key,
        "expired": server.make_token("rider", "post", now - 100, now - 1).key,
        "ends now": server.make_token("rider", "post", now - 100, now).key,
        "curpos": server.make_token("rider", "curpos").key,
        "search": server.make_token("rider", "search").key,
        "auto_curpos": server.make_token("rider", "auto_curpos").key,
    }
    for what, key in cases.items():
        data = {"fixes": json.dumps([fix(T0)])}
        if key is not None:
            data["token"] = key
        r = requests.post(server.url + "input", data=data, timeout=5)
        assert r.status_code == 403, what
        assert r.json()["error"], what
    assert server.fixes("rider") == []
    assert server.count("/input", status=403, processed=False) == len(cases)
    begins_now = server.make_token("rider", "post", now, now + 1).key
    assert send(server, begins_now, [fix(T0)])["fix_tlist"] == [T0]
    r = requests.post(server.url + "input", data={"fixes": "[]"}, auth=AUTH, timeout=5)
    assert r.status_code == 403  # basic auth alone cannot post


def test_a_token_comes_alive_and_expires_with_the_clock(server, clock):
    now = clock.now
    key = server.make_token("rider", "post", now + 60, now + 120).key
    assert get(server, "tt", token=key) == {"result": False}
    clock.now = now + 60
    assert get(server, "tt", token=key) == {"result": True}
    assert send(server, key, [fix(T0)])["fix_tlist"] == [T0]
    clock.now = now + 120
    assert get(server, "tt", token=key) == {"result": False}
    assert key not in [t.key for t in server.tokens()]  # removed from the system
    r = requests.post(server.url + "input", data={"token": key, "fixes": "[]"}, timeout=5)
    assert r.status_code == 403
    assert get(server, "tt") == {"result": False}


def test_input_is_post_only(server, post_token):
    r = requests.get(server.url + "input", params={"token": post_token, "fixes": "[]"}, timeout=5)
    assert r.status_code == 405 and "error" in r.json()


def test_input_makes_and_extends_the_auto_curpos_token(server, clock, post_token):
    assert send(server, post_token, [])["meta"] == {"view_url": ""}
    [auto] = [t for t in server.tokens("rider") if t.type == "auto_curpos"] or [None]
    assert auto is None
    reply = send(server, post_token, [fix(T0)])
    [auto] = [t for t in server.tokens("rider") if t.type == "auto_curpos"]
    assert reply["meta"]["view_url"] == f"/j?token={auto.key}"
    assert (auto.begin, auto.end) == (clock.now, clock.now + 3600)
    clock.now += 1000
    send(server, post_token, [fix(T0 + 1)])
    [again] = [t for t in server.tokens("rider") if t.type == "auto_curpos"]
    assert again.key == auto.key and again.end == clock.now + 3600
    assert get(server, "j", auth=None, token=auto.key)["data"]["t"] == T0 + 1


# -- partial acknowledgement ----------------------------------------------------------------


def test_partial_ack_share_stores_a_random_subset_and_the_rest_can_be_resent(server, post_token):
    server.partial_ack = 0.5
    posted = [T0 + i for i in range(10)]
    acked = send(server, post_token, [fix(t) for t in posted])["fix_tlist"]
    assert len(acked) == 5 and acked == sorted(acked)
    assert acked != posted[:5]  # a subset with gaps, not a prefix (seeded)
    assert [f.t for f in server.fixes("rider")] == acked
    pending = [t for t in posted if t not in acked]
    rounds = 0
    while pending:  # what a sender does: resend what was not acknowledged
        rounds += 1
        acked = send(server, post_token, [fix(t) for t in pending])["fix_tlist"]
        assert acked, "a share > 0 always makes progress"
        pending = [t for t in pending if t not in acked]
    assert rounds <= 4
    assert sorted(f.t for f in server.fixes("rider")) == posted
    assert server.duplicates("rider") == []


def test_partial_ack_share_works_per_time_of_a_list(server, post_token):
    server.partial_ack = 0.34
    acked = send(server, post_token, [fix([T0, T0 + 1, T0 + 2])])["fix_tlist"]
    assert len(acked) == 2 and set(acked) < {T0, T0 + 1, T0 + 2}


def test_partial_ack_predicate_and_zero(server, post_token):
    server.partial_ack = lambda f: f["t"] % 2 == 0 and f.get("tag") != "skip"
    fixes = [fix(T0), fix(T0 + 1), fix([T0 + 2, T0 + 3, T0 + 4]), fix(T0 + 6, tag="skip")]
    assert send(server, post_token, fixes)["fix_tlist"] == [T0, T0 + 2, T0 + 4]
    server.partial_ack = 0.0
    reply = send(server, post_token, [fix(T0 + 8)])
    assert reply["fix_tlist"] == [] and "error" not in reply
    server.partial_ack = None
    assert send(server, post_token, [fix(T0 + 8)])["fix_tlist"] == [T0 + 8]
    with pytest.raises(ValueError):
        server.partial_ack = 1.5


def test_partial_ack_share_is_seeded():
    def run(seed):
        with GpsrServer(seed=seed) as s:
            s.partial_ack = 0.3
            key = s.make_token("rider", "post").key
            return send(s, key, [fix(T0 + i) for i in range(20)])["fix_tlist"]

    assert run(4) == run(4) and run(4) != run(5)


# -- /j -------------------------------------------------------------------------------------


def test_curpos_is_the_last_fix_entered(server, post_token):
    assert get(server, "j") == {"found": False, "error": "no fix"}
    send(server, post_token, [fix(T0 + 10, al=3), fix(T0 + 20, tag="x")])
    send(server, post_token, [fix(T0 + 5)])  # an old fix entered last
    reply = get(server, "j")
    assert reply["found"] is True and reply["data"]["t"] == T0 + 5
    assert get(server, "j", auth=("other", "pw2"))["found"] is False


def test_curpos_with_tokens(server, clock, post_token):
    send(server, post_token, [fix(T0, tag="a"), fix(T0 + 1)])
    for type_ in ("curpos", "search", "post"):
        key = server.make_token("rider", type_).key
        assert get(server, "j", auth=None, token=key)["data"]["t"] == T0 + 1, type_
    tagged = server.make_token("rider", "search", q="ft=t").key
    assert get(server, "j", auth=None, token=tagged)["data"]["t"] == T0
    future = server.make_token("rider", "curpos", clock.now + 5, clock.now + 10).key
    assert "error" in get(server, "j", auth=None, status=403, token=future)
    assert "error" in get(server, "j", auth=None, status=403, token="nope")
    assert "error" in get(server, "j", auth=AUTH, status=403, token="nope")  # token wins


# -- /f -------------------------------------------------------------------------------------


@pytest.fixture
def ride(server, clock, post_token) -> list[int]:
    """25 fixes one minute apart from T0: every 5th tagged "climb", every 7th with a poi;
    entered in two batches, the second read 100 s after the first."""
    ts = [T0 + 60 * i for i in range(25)]

    def make(i, t):
        extra = {}
        if i % 5 == 0:
            extra["tag"] = "climb"
        if i % 7 == 0:
            extra["poi"] = f"poi {i}"
        return fix(t, **extra)

    send(server, post_token, [make(i, t) for i, t in enumerate(ts[:12])])
    clock.now += 100
    send(server, post_token, [make(i, t) for i, t in enumerate(ts) if i >= 12])
    return ts


def test_fixes_page_through_everything(server, ride):
    seen, offset, pages = [], 0, 0
    while True:
        reply = get(server, "f", p="true", l="10", o=str(offset))
        assert reply["found"] is True
        seen += times(reply)
        offset = reply["offset"]
        pages += 1
        if not reply["more"]:
            break
    assert seen == ride and pages == 3 and offset == 25
    reply = get(server, "f", o="25")
    assert reply == {"found": False, "error": "no fixes", "offset": 25, "more": False}


def test_fixes_defaults_and_order(server, ride):
    reply = get(server, "f")
    assert times(reply) == ride and reply["more"] is False and reply["offset"] == 25
    reply = get(server, "f", d="desc", l="3")
    assert times(reply) == ride[::-1][:3] and reply["more"] is True and reply["offset"] == 3
    assert set(reply["data"][0]) == {"l", "t", "t_i"}
    assert "error" in get(server, "f", d="sideways")
    assert "error" in get(server, "f", l="0")
    assert "error" in get(server, "f", o="-1")
    assert "error" in get(server, "f", p="maybe")


def test_fixes_page_is_capped(server, post_token):
    send(server, post_token, [fix(T0 + i) for i in range(1005)])
    reply = get(server, "f", l="5000")
    assert len(reply["data"]) == 1000 and reply["more"] is True and reply["offset"] == 1000


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("r=(T0,T0+180]", [60, 120, 180]),
        ("r=[T0,T0+180)", [0, 60, 120]),
        ("r=[T0,T0+180]", [0, 60, 120, 180]),
        ("r=(T0,T0+180)", [60, 120]),
        ("r=(T0+1320,]", [1380, 1440]),
        ("r=(,T0+60]", [0, 60]),
        ("r=(T0,T0+600];ft=t", [300, 600]),
        ("r=[T0,T0+600];ft=p", [0, 420]),
        ("ft=n;r=[T0,T0+240]", [60, 120, 180, 240]),
        ("r=[T0,T0+600];ft=b", list(range(0, 601, 60))),
        ("", list(range(0, 1441, 60))),
    ],
)
def test_fixes_q_interval_syntax(server, ride, q, expected):
    def t(m):
        return str(T0 + int(m.group(1) or 0))

    query = re.sub(r"T0(?:\+(\d+))?", t, q)
    reply = get(server, "f", q=query, l="100")
    got = [x - T0 for x in times(reply)] if reply["found"] else []
    assert got == expected
    # the seed's client escape()s q, then the form encoding encodes it again
    assert get(server, "f", q=urllib.parse.quote(query, safe=""), l="100") == reply


@pytest.mark.parametrize("q", ["r=1,2", "r=(a,b]", "ft=x", "x=1", "r"])
def test_fixes_bad_q_is_an_error(server, ride, q):
    assert "error" in get(server, "f", q=q)


def test_fixes_by_readtime(server, clock, ride):
    first_read = clock.now - 100
    reply = get(server, "f", tf="readtime", q=f"r=({first_read},]")
    assert times(reply) == ride[12:]
    reply = get(server, "f", tf="readtime", q=f"r=[{first_read},{first_read}]")
    assert times(reply) == ride[:12]
    assert "error" in get(server, "f", tf="fixtime")


def test_search_token_fixes_its_query(server, clock, ride):
    key = server.make_token("rider", "search", q=f"r=[{T0},{T0 + 600}];ft=t", d="desc").key
    reply = get(server, "f", auth=None, token=key, q="", d="asc")  # the token's params win
    assert times(reply) == [T0 + 600, T0 + 300, T0]
    curpos = server.make_token("rider", "curpos").key
    assert times(get(server, "f", auth=None, token=curpos, l="2")) == ride[:2]
    assert "error" in get(server, "f", auth=None, status=403, token="nope")
    assert get(server, "f", auth=None, status=401)["error"] == "authentication failed"


def test_stats_per_period(server, ride):
    reply = get(server, "f", p="false")
    assert reply["found"] is True and reply["more"] is False and reply["offset"] == 25
    # five minutes per period: fixes 0-4, 5-9, ... ; tags every 5th, pois every 7th
    assert reply["data"] == {
        str(T0): {"climb": 1, "POI": 1, "naked fixes": 4},
        str(T0 + 300): {"climb": 1, "POI": 1, "naked fixes": 3},
        str(T0 + 600): {"climb": 1, "POI": 1, "naked fixes": 3},
        str(T0 + 900): {"climb": 1, "naked fixes": 4},
        str(T0 + 1200): {"climb": 1, "POI": 1, "naked fixes": 3},
    }
    assert sum(sum(c.values()) for c in reply["data"].values()) == 25 + 1  # fix 0 counts twice


def test_stats_page_like_fixes_and_add_up(server, ride):
    total: dict[str, dict[str, int]] = {}
    offset = 0
    while True:
        reply = get(server, "f", p="false", l="7", o=str(offset))
        for period, counts in reply["data"].items():
            for k, v in counts.items():
                total.setdefault(period, {}).setdefault(k, 0)
                total[period][k] += v
        offset = reply["offset"]
        if not reply["more"]:
            break
    assert total == get(server, "f", p="false")["data"]
    reply = get(server, "f", p="false", tf="readtime")
    # binned by receive time: both batches were read within one period
    assert reply["data"] == {str(T0 + 3600): {"climb": 5, "POI": 4, "naked fixes": 17}}


def test_stats_rm_removes_the_page(server, ride):
    q = f"r=[{T0},{T0 + 600}]"
    r = form(server, "f", p="false", rm="true", q=q, l="4")
    assert r.status_code == 200
    reply = r.json()
    assert reply["data"] == {str(T0): {"climb": 1, "POI": 1, "naked fixes": 3}}
    assert reply["offset"] == 0 and reply["more"] is True
    assert [f.t - T0 for f in server.fixes("rider")][:3] == [240, 300, 360]
    while reply["more"]:
        reply = form(server, "f", p="false", rm="true", q=q, l="4").json()
    assert [f.t for f in server.fixes("rider")] == ride[11:]
    assert form(server, "f", p="false", rm="true", q=q).json()["found"] is False


def test_stats_rm_needs_post_the_login_and_p_false(server, ride):
    assert "error" in get(server, "f", status=405, p="false", rm="true")
    key = server.make_token("rider", "curpos").key
    r = requests.post(server.url + "f", data={"p": "false", "rm": "true", "token": key},
                      timeout=5)  # fmt: skip
    assert r.status_code == 403
    assert "error" in form(server, "f", p="true", rm="true").json()
    assert len(server.fixes("rider")) == 25
    assert form(server, "f", p="false", rm="false").json()["found"] is True  # POST reads too


# -- tokens ---------------------------------------------------------------------------------


def test_token_list_and_test(server, clock):
    now = int(clock.now)
    post = server.make_token("rider", "post", 1297554731, now + 50, key="A!JfRUBdRxdUpiJBxcPkJy")
    later = server.make_token("rider", "curpos", now + 10, now + 20)
    server.make_token("rider", "search", q="ft=p")
    server.make_token("other", "curpos")
    server.make_token("rider", "curpos", now - 20, now - 10)  # expired: not listed
    listed = get(server, "t")
    assert listed[0] == {
        "begin": 1297554731, "end": now + 50, "token": "A!JfRUBdRxdUpiJBxcPkJy",
        "type_number": 3, "type": "post", "id": post.id,
    }  # fmt: skip
    assert [(t["type"], t["type_number"]) for t in listed] == [
        ("post", 3), ("curpos", 0), ("search", 2),
    ]  # fmt: skip
    assert listed[2]["params"] == {"q": "ft=p"}
    assert get(server, "tt", auth=None, token=post.key) == {"result": True}
    assert get(server, "tt", auth=None, token=later.key) == {"result": False}  # not yet
    assert get(server, "t", auth=("rider", "nope"), status=401)["error"]


def test_make_update_and_remove_tokens(server, clock, post_token):
    now = int(clock.now)
    r = form(server, "mk_t", t="curpos", b=str(now), e=str(now + 300))
    assert r.status_code == 200
    made = r.json()
    assert made["type"] == "curpos" and made["type_number"] == 0
    assert (made["begin"], made["end"]) == (now, now + 300)
    assert get(server, "tt", auth=None, token=made["token"]) == {"result": True}
    send(server, post_token, [fix(T0)])
    assert get(server, "j", auth=None, token=made["token"])["found"] is True

    r = form(server, "up_t", k=made["id"], b=str(now + 100), e=str(now + 200))
    assert r.status_code == 200 and r.json()["begin"] == now + 100
    assert get(server, "tt", auth=None, token=made["token"]) == {"result": False}
    assert get(server, "j", auth=None, status=403, token=made["token"])["error"]

    r = form(server, "rm_t", k=made["id"])
    assert r.status_code == 200 and r.json() == {"result": True}
    assert made["id"] not in [t["id"] for t in get(server, "t")]
    assert form(server, "rm_t", k=made["id"]).status_code == 404

    r = form(server, "mk_t", t="search", b=str(now), e=str(now + 60), q="ft=t", l="5", x="1")
    assert r.status_code == 200 and r.json()["params"] == {"q": "ft=t", "l": "5"}


@pytest.mark.parametrize(
    ("path", "data", "status"),
    [
        ("mk_t", {"t": "auto_curpos", "b": "1", "e": "2"}, 400),
        ("mk_t", {"t": "admin", "b": "1", "e": "2"}, 400),
        ("mk_t", {"t": "post", "b": "1"}, 400),
        ("mk_t", {"t": "post", "b": "5", "e": "5"}, 400),
        ("mk_t", {"t": "post", "b": "x", "e": "5"}, 400),
        ("mk_t", {"t": "search", "b": "1", "e": "2", "q": "ft=z"}, 400),
        ("up_t", {"k": "tok999", "b": "1", "e": "2"}, 404),
        ("up_t", {"b": "1", "e": "2"}, 400),
        ("rm_t", {"k": "tok999"}, 404),
    ],
)
def test_token_changes_fail_with_an_http_status(server, path, data, status):
    r = form(server, path, **data)
    assert r.status_code == status and r.json()["error"]
    assert [t.type for t in server.tokens()] == []


def test_token_changes_need_the_login_and_stay_within_the_user(server):
    theirs = server.make_token("other", "post")
    assert form(server, "rm_t", auth=None, k=theirs.id).status_code == 401
    assert form(server, "rm_t", k=theirs.id).status_code == 404
    r = requests.get(server.url + "mk_t", params={"t": "post", "b": "1", "e": "2"},
                     auth=AUTH, timeout=5)  # fmt: skip
    assert r.status_code == 405
    assert [t.id for t in server.tokens()] == [theirs.id]


def test_token_change_redirects_with_r(server):
    r = form(server, "mk_t", t="post", b="1", e=str(T0 * 2), r="https://example.org/back?x=1&y=2")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert 'content="0; url=https://example.org/back?x=1&amp;y=2"' in r.text
    [tok] = server.tokens("rider")
    assert tok.type == "post"


def test_make_token_validates(server):
    for bad in [
        dict(user="nobody", type="post"),
        dict(user="rider", type="admin"),
        dict(user="rider", type="post", begin=10, end=10),
        dict(user="rider", type="post", q="ft=t"),
        dict(user="rider", type="search", q="ft=z"),
    ]:
        with pytest.raises(ValueError):
            server.make_token(**bad)
    server.make_token("rider", "post", key="fixed")
    with pytest.raises(ValueError):
        server.make_token("rider", "post", key="fixed")


# -- JSONP, /g, errors ----------------------------------------------------------------------


def test_jsonp_everywhere(server, post_token):
    r = requests.post(server.url + "input", timeout=5,
                      data={"token": post_token, "fixes": json.dumps([fix(T0)]),
                            "callback": "cb"})  # fmt: skip
    assert r.headers["Content-Type"].startswith("application/javascript")
    m = re.fullmatch(r"cb\((.*)\);", r.text, re.S)
    assert m and json.loads(m.group(1))["fix_tlist"] == [T0]
    for path, params in [("j", {}), ("f", {"p": "false"}), ("t", {}), ("tt", {"token": "x"}),
                         ("g", {})]:  # fmt: skip
        r = requests.get(server.url + path, params={**params, "callback": "my.ns.$fn_2"},
                         auth=AUTH, timeout=5)  # fmt: skip
        assert r.status_code == 200 and r.text.startswith("my.ns.$fn_2(") and r.text.endswith(");")
        json.loads(r.text[len("my.ns.$fn_2(") : -2])
    r = requests.get(server.url + "j", params={"callback": "cb"}, timeout=5)  # no auth
    assert r.status_code == 401 and r.text.startswith("cb({")
    r = requests.get(server.url + "j", params={"callback": "alert(1)//"}, auth=AUTH, timeout=5)
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/json")


def test_graphics(server):
    g = get(server, "g")
    assert g["curpos_s"] == {"a": "/mi/curpos_s.png", "m": {"a": [7, 37], "s": [56, 41]}}
    key = server.make_token("rider", "curpos").key
    g = get(server, "g", auth=None, token=key)
    assert g["naked"]["a"] == f"/s/naked.png?token={urllib.parse.quote(key)}"


def test_unknown_path_and_method(server):
    r = requests.get(server.url + "nothing", auth=AUTH, timeout=5)
    assert r.status_code == 404 and "error" in r.json()
    r = requests.put(server.url + "j", auth=AUTH, timeout=5)
    assert r.status_code == 501  # http.server answers methods it has no handler for
    assert server.count("/nothing", status=404, processed=False) == 1


def test_recording_never_holds_the_password(server):
    get(server, "j", auth=AUTH)
    requests.get(server.url + "t", auth=("rider", "s3cr3t-wrong"), timeout=5)
    form(server, "mk_t", t="post", b="1", e="2", password="secret")
    recorded = repr(server.requests)
    assert "secret" not in recorded and "s3cr3t" not in recorded
    assert [r.user for r in server.requests] == ["rider"] * 3


# -- faults, seen from the client -----------------------------------------------------------


def test_fail_500_is_not_processed(server, post_token):
    server.faults.set(fail_500=1.0)
    r = requests.post(server.url + "input", timeout=5,
                      data={"token": post_token, "fixes": json.dumps([fix(T0)])})  # fmt: skip
    assert r.status_code == 500
    assert server.fixes("rider") == []
    [rec] = server.requests
    assert (rec.name, rec.fault, rec.status, rec.processed) == ("/input", "fail_500", 500, False)


def test_reset_before_processing(server, post_token):
    server.faults.set(reset=1.0)
    with pytest.raises(requests.ConnectionError):
        send(server, post_token, [fix(T0)])
    assert server.fixes("rider") == []
    [rec] = server.requests
    assert (rec.fault, rec.status, rec.processed) == ("reset", None, False)


def test_reset_is_a_real_rst(server):
    server.faults.set(reset=1.0)
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(b"GET /tt?token=x HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            s.recv(1024)


def test_dropped_reply_was_stored_and_a_resend_is_a_duplicate(server, post_token):
    server.faults.set(drop_reply=1.0, only={"/input"})
    with pytest.raises(requests.ConnectionError):
        send(server, post_token, [fix(T0), fix(T0 + 1)])
    [rec] = server.requests
    assert (rec.fault, rec.status, rec.processed) == ("drop_reply", None, True)
    assert [f.t for f in server.fixes("rider")] == [T0, T0 + 1]
    assert get(server, "j")["data"]["t"] == T0 + 1  # /j is not faulted: `only`
    server.faults.clear()
    assert send(server, post_token, [fix(T0), fix(T0 + 1)])["fix_tlist"] == [T0, T0 + 1]
    assert len(server.duplicates("rider")) == 2


def test_slow_reply_times_out_but_was_processed(server, post_token):
    server.faults.set(slow=1.0, slow_s=2.0)
    t = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        send(server, post_token, [fix(T0)], timeout=0.3)
    assert time.monotonic() - t < 1.5
    assert len(server.fixes("rider")) == 1
    server.faults.set(slow_s=0.2)
    assert send(server, post_token, [fix(T0 + 1)])["fix_tlist"] == [T0 + 1]
    assert all(r.fault == "slow" and r.processed for r in server.requests)


def test_stop_ends_a_slow_reply_at_once():
    s = GpsrServer(faults=Faults(slow=1.0, slow_s=60)).start()
    key = s.make_token("rider", "post").key
    errors: list[Exception] = []

    def call():
        try:
            send(s, key, [fix(T0)], timeout=30)
        except requests.RequestException as e:
            errors.append(e)

    th = threading.Thread(target=call)
    th.start()
    deadline = time.monotonic() + 5
    while not s.fixes("rider"):
        assert time.monotonic() < deadline, "/input was not processed"
        time.sleep(0.02)
    t = time.monotonic()
    s.stop()
    assert time.monotonic() - t < 2.0
    th.join(5)
    assert errors and isinstance(errors[0], requests.ConnectionError)
    [rec] = s.requests
    assert rec.fault == "slow" and rec.status is None and rec.processed


def test_html_captive_portal(server, post_token):
    server.faults.set(html=1.0)
    r = requests.post(server.url + "input", timeout=5,
                      data={"token": post_token, "fixes": json.dumps([fix(T0)])})  # fmt: skip
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        r.json()
    assert server.fixes("rider") == [] and not server.requests[0].processed


def test_retry_after(server):
    server.faults.set(retry_after=1.0, retry_after_s=7)
    codes = set()
    for _ in range(12):
        r = requests.get(server.url + "tt", params={"token": "x"}, timeout=5)
        assert r.headers["Retry-After"] == "7"
        codes.add(r.status_code)
    assert codes == {429, 503}
    assert server.count(processed=True) == 0


def test_truncated_reply(server, post_token):
    server.faults.set(truncate=1.0)
    r = requests.post(server.url + "input", timeout=5,
                      data={"token": post_token, "fixes": json.dumps([fix(T0)])})  # fmt: skip
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    assert len(server.fixes("rider")) == 1 and server.requests[0].fault == "truncate"


def test_offline_switch_resets_everything_then_recovers(server):
    server.faults.offline = True
    for _ in range(3):
        with pytest.raises(requests.ConnectionError):
            get(server, "tt", token="x")
    server.faults.offline = False
    assert get(server, "tt", token="x") == {"result": False}
    assert [r.fault for r in server.requests] == ["offline"] * 3 + [None]


def test_server_seed_makes_a_faulty_run_repeatable():
    def run(seed):
        with GpsrServer(faults=Faults(fail_500=0.5), seed=seed) as s:
            return [
                requests.get(s.url + "tt", params={"token": "x"}, timeout=5).status_code
                for _ in range(20)
            ]

    assert run(3) == run(3)
    assert set(run(3)) == {200, 500}


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_kept_alive_session_recovers_after_each_fault(server, kind):
    server.faults.set(**{kind: 1.0}, slow_s=0.5)
    session = requests.Session()
    with contextlib.suppress(requests.RequestException):
        session.get(server.url + "tt", params={"token": "x"}, timeout=0.2)
    server.faults.clear()
    for _ in range(2):
        r = session.get(server.url + "tt", params={"token": "x"}, timeout=5)
        assert r.status_code == 200 and r.json() == {"result": False}
    assert [r.fault for r in server.requests] == [kind, None, None]


# -- restart on the same port ---------------------------------------------------------------


def test_unreachable_then_back_on_the_same_port_with_the_same_state():
    first = GpsrServer().start()
    key = first.make_token("rider", "post").key
    session = requests.Session()
    assert session.get(first.url + "tt", params={"token": key}, timeout=5).json()["result"]
    assert send(first, key, [fix(T0)])["fix_tlist"] == [T0]
    port, url = first.port, first.url
    first.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(url + "tt", params={"token": key}, timeout=2)
    second = GpsrServer(port=port, state=first.state).start()
    try:
        assert second.url == url
        assert send(second, key, [fix(T0 + 1)])["fix_tlist"] == [T0 + 1]  # the token survived
        assert times(get(second, "f")) == [T0, T0 + 1]
        assert [r.name for r in second.requests] == ["/tt", "/input", "/input", "/f"]
    finally:
        second.stop()
    first.start()
    try:
        assert first.port == port and get(first, "j")["data"]["t"] == T0 + 1
    finally:
        first.stop()
    first.stop()  # idempotent


# -- command line ---------------------------------------------------------------------------


def test_cli_serves_input_with_a_fixed_token():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker.testing.gpsr", "--port", "0", "--user", "ann:pw",
         "--token", "post:demo-token", "--fail-500", "0", "--seed", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert m, line + proc.stderr.read() if proc.poll() is not None else line
        url = m.group(1)
        r = requests.post(url + "input", timeout=5,
                          data={"token": "demo-token", "fixes": json.dumps([fix(T0)])})  # fmt: skip
        assert r.status_code == 200 and r.json()["fix_tlist"] == [T0]
        r = requests.get(url + "j", auth=("ann", "pw"), timeout=5)
        assert r.json()["data"]["t"] == T0
        r = requests.get(url + "t", auth=("ann", "pw"), timeout=5)
        [post] = [t for t in r.json() if t["type"] == "post"]
        assert post["token"] == "demo-token" and post["end"] > time.time() + 5 * 365 * 86400
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "/input user=ann status=200" in err


def test_cli_refuses_a_bad_token_argument():
    proc = subprocess.run(
        [sys.executable, "-m", "tracker.testing.gpsr", "--port", "0", "--token", "admin:x"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2 and "TYPE:KEY" in proc.stderr
