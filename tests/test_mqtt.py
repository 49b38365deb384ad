"""The [mqtt] backend: its settings and OwnTracks encoding (pure), then the sender against a
real Mosquitto on 127.0.0.1 with a real paho subscriber (tests/mosquitto.py).

The sender is driven step by step in the test's thread (`drive`), with jitter 0 so its backoff
never sleeps; the broker is stopped, restarted and started again by its pid. What the rider's
consumer sees is read from the subscriber: every stored second arrives, duplicates only within
the documented window (docs/mqtt.md).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from pathlib import Path

import pytest
from mosquitto import Broker, Subscriber, make_certs, pause
from support import drive, wait_for

from tracker.config import ConfigError, parse
from tracker.fix import Fix, Sample
from tracker.senders.mqtt import (
    NAME,
    MqttSender,
    Settings,
    State,
    activity_event,
    last_will,
    location,
    mqtt_url,
    probe,
)
from tracker.senders.state import StateError
from tracker.store import Activity, Store, StoredFix, open_store

T0 = 1_780_000_000.0
USER, PASSWORD = "rider", "mqtt-Pa55-d0-not-leak"
HOST = "pi-ab"  # the machine name the sender is told, for the derived topic and tid
TOPIC = f"owntracks/{USER}/{HOST}"
FAST = {"interval_s": 0.05, "connect_timeout_s": 2.0, "read_timeout_s": 5.0,
        "backoff_max_s": 0.3}  # fmt: skip


# --- settings --------------------------------------------------------------------------------


def mqtt_section(**keys) -> Settings:
    return parse({"mqtt": {"url": "mqtts://broker.example", **keys}}).backends["mqtt"]


def test_defaults_and_the_scope_key():
    s = mqtt_section(username=USER, password="x")
    assert (s.qos, s.retain, s.send, s.min_point_interval_s, s.max_inflight) == (
        1,
        False,
        "all",
        1.0,
        20,
    )
    assert s.scope() == "all", "a fleet backend: every fix, parked or riding"
    assert mqtt_section(username=USER, password="x", send="activities").scope() == "activities"
    assert s.host_port() == ("broker.example", 8883, True)
    assert mqtt_section().host_port() == ("broker.example", 8883, True)  # anonymous
    plain = parse({"mqtt": {"url": "mqtt://10.0.0.2"}}).backends["mqtt"]
    assert plain.host_port() == ("10.0.0.2", 1883, False)


def test_derived_topic_tid_and_client_id():
    s = mqtt_section(username=USER, password="x")
    assert s.location_topic("bike7") == "owntracks/rider/bike7"
    assert s.tracker_id("bike7") == "e7"
    assert s.session_id("bike7") == "tracker-owntracks-rider-bike7"
    custom = mqtt_section(topic="fleet/unit-12", tid="12", client_id="unit12")
    assert (custom.location_topic(), custom.tracker_id(), custom.session_id()) == (
        "fleet/unit-12", "12", "unit12")  # fmt: skip
    assert mqtt_section(topic="fleet/unit-12").tracker_id() == "12"


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ({"url": "https://broker.example"}, "url"),
        ({"url": "mqtt://"}, "url"),
        ({"url": "mqtt://host/path"}, "url"),
        ({"qos": 3}, "qos"),
        ({"qos": True}, "qos"),
        ({"topic": "owntracks/#"}, "topic"),
        ({"topic": "/owntracks/x"}, "topic"),
        ({"tid": "abc"}, "tid"),
        ({"password": "x"}, "username"),
        ({"username": USER}, "password"),
        ({"url": "mqtt://h", "ca_file": "/etc/ssl/ca.pem"}, "ca_file"),
        ({"send": "some"}, "send"),
        ({"max_inflight": 0}, "max_inflight"),
        ({"min_point_interval_s": 0.5}, "min_point_interval_s"),
        ({"brokr": "x"}, "brokr"),
    ],
)
def test_bad_keys_are_config_errors_naming_the_key(keys, error, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match=rf"\[mqtt\] {error}"):
        parse({"mqtt": {"url": "mqtts://broker.example", **keys}})


def test_url_forms():
    assert mqtt_url("mqtt://h:1884") == "mqtt://h:1884"
    assert mqtt_url("mqtts://[::1]:8883") == "mqtts://[::1]:8883"
    with pytest.raises(ValueError):
        mqtt_url("mqtt://h:99999")


# --- encoding --------------------------------------------------------------------------------


def stored(t: float = T0 + 0.7, **kw) -> StoredFix:
    base = {"alt": 123.46, "speed": 5.0, "course": 359.6, "hdop": 0.9, "vdop": 1.3}
    return StoredFix(t, 51.12345678, -1.2, **{**base, **kw}, id=1, activity_id=1)


def test_an_owntracks_location_has_every_field_in_owntracks_units():
    obj = location(stored(), "ab", {"hr": 141.6, "cad": 88.2, "pwr": 250.0})
    assert obj == {"_type": "location", "tst": int(T0), "lat": 51.1234568, "lon": -1.2,
                   "tid": "ab", "alt": 123, "vel": 18, "cog": 0, "acc": 4, "vac": 6,
                   "hr": 142, "cad": 88, "pwr": 250}  # fmt: skip
    gst = location(stored(err_lat=3.0, err_lon=4.0, err_alt=2.0), "ab")
    assert (gst["acc"], gst["vac"]) == (5, 2)  # GST first, then DOP x 5 m


def test_what_the_receiver_did_not_give_is_left_out():
    obj = location(stored(alt=None, speed=None, course=math.nan, hdop=None, vdop=None), "ab")
    assert set(obj) == {"_type", "tst", "lat", "lon", "tid"}


def test_events_and_the_last_will_are_never_locations():
    a = Activity(3, "uuid3", "Evening ride", "cycling", "private", (), T0, T0 + 60.5, "requested")
    start, end = activity_event(a, "start", "ab"), activity_event(a, "end", "ab")
    assert start["_type"] == end["_type"] == "activity"
    assert (start["event"], start["tst"], end["event"], end["tst"]) == (
        "start",
        int(T0),
        "end",
        int(T0) + 60,
    )
    assert end["reason"] == "requested" and "reason" not in start
    assert last_will(5) == {"_type": "lwt", "tst": 5}


def test_without_paho_the_backend_stops_with_one_clear_error(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)  # import fails
    db = tmp_path / "t.db"
    o = Settings(url="mqtt://127.0.0.1:1", **FAST)
    s = MqttSender(o, threading.Event(), lambda: open_store(db), hostname=HOST)
    s.step()
    assert s.status.state == "disabled" and "pip install" in s.status.last_error
    assert [r.levelname for r in caplog.records].count("ERROR") == 1
    assert probe(o).checks[0].result == "FAIL"
    s.close()


def test_state_round_trip_and_a_newer_version_is_refused():
    st = State(last_time=12, started=3, ended=2)
    assert State.from_json(st.to_json()) == st
    assert State.from_json({}) == State()
    with pytest.raises(StateError):
        State.from_json({"v": 99})


# --- against a real Mosquitto ----------------------------------------------------------------


def ride(store: Store, n: int, *, rate_hz: float = 1.0, t0: float = T0, end: bool = False,
         activity: bool = True) -> int | None:  # fmt: skip
    """A new activity with `n` fixes from `t0` (or `n` fixes outside any activity)."""
    a = store.start_activity("Morning ride", "cycling", "private", (), t0) if activity else None
    aid = a.id if a else None
    more(store, aid, n, rate_hz=rate_hz, t0=t0)
    if end and aid is not None:
        store.end_activity(aid, t0 + n / rate_hz, "requested")
    return aid


def more(store: Store, aid: int | None, n: int, *, t0: float, rate_hz: float = 1.0) -> None:
    store.add_fixes(aid, [Fix(t0 + i / rate_hz, 51.0 + i * 1e-4, 1.0 + i * 1e-4, alt=10.0,
                              speed=5.0, course=90.0, hdop=1.0) for i in range(n)])  # fmt: skip


def seconds(store: Store) -> list[int]:
    return sorted({math.floor(f.time) for f in store.iter_fixes()})


def sender(broker: Broker, db: Path, stop: threading.Event | None = None, *,
           password: str = PASSWORD, **opts) -> MqttSender:  # fmt: skip
    o = Settings(url=opts.pop("url", broker.url), username=USER, password=password,
                 **{**FAST, **opts})  # fmt: skip
    return MqttSender(o, stop or threading.Event(), lambda: open_store(db, check=False),
                      secret=lambda: password, hostname=HOST, rand=lambda: 0.0)  # fmt: skip


def delivered(store: Store, s: MqttSender) -> bool:
    return store.pending().get(NAME) == 0 and not s._window


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path / "broker", users={USER: PASSWORD})
    b.start()
    yield b
    b.stop()


@pytest.fixture
def sub(broker: Broker):
    s = Subscriber(broker, username=USER, password=PASSWORD).start()
    yield s
    s.stop()


def assert_every_second_once(sub: Subscriber, want: list[int], *, dup_max: int = 0) -> None:
    """Every stored second, nothing else, with at most `dup_max` duplicates from the sender.
    (A redelivery by the broker to the subscriber itself, after the subscriber's own session
    resumed, carries the DUP flag: the subscriber's leg, not counted here.)"""
    got = [m.payload["tst"] for m in sub.received(TOPIC, "location")]
    assert sorted(set(got)) == want, "every stored second, nothing else"
    fresh = [m.payload["tst"] for m in sub.received(TOPIC, "location") if not m.dup]
    assert len(fresh) - len(set(fresh)) <= dup_max, f"{len(fresh) - len(set(fresh))} duplicates"


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_every_second_arrives_once_with_its_samples_and_is_acknowledged(broker, sub, store, db,
                                                                         qos):  # fmt: skip
    aid = ride(store, 50, rate_hz=10.0, end=True)
    store.add_samples([Sample(T0 + 1.3, "hr", 140.0), Sample(T0 + 1.5, "hr", 150.0),
                       Sample(T0 + 2.0, "pwr", 210.0)])  # fmt: skip
    s = sender(broker, db, qos=qos)
    drive(s, lambda: delivered(store, s) and s._ended == aid)
    want = seconds(store)
    wait_for(lambda: len(sub.locations(TOPIC)) >= len(want), what="every second")
    wait_for(lambda: len(sub.received(f"{TOPIC}/event")) >= 2, what="start and end")
    assert_every_second_once(sub, want)
    by_t = {m["tst"]: m for m in sub.locations(TOPIC)}
    assert by_t[int(T0) + 1]["hr"] == 140 and by_t[int(T0) + 2]["pwr"] == 210
    first = by_t[int(T0)]
    assert (first["lat"], first["lon"], first["alt"], first["vel"], first["tid"]) == (
        51.0, 1.0, 10, 18, "ab")  # fmt: skip
    assert [m.payload["event"] for m in sub.received(f"{TOPIC}/event")] == ["start", "end"]
    assert {m.payload["_type"] for m in sub.received(TOPIC)} == {"location"}
    st = State.from_json(store.get_state(NAME))
    assert (st.last_time, st.started, st.ended) == (want[-1], aid, aid)
    s.close()


def test_fixes_outside_an_activity_go_unless_send_is_activities(broker, sub, tmp_path):
    for send, want in (("all", 10), ("activities", 0)):
        db = tmp_path / f"{send}.db"
        store = open_store(db)
        ride(store, 10, activity=False)
        s = sender(broker, db, send=send, topic=f"owntracks/{USER}/{send}")
        drive(s, lambda st=store, sn=s: st.pending().get(NAME) == 0 and not sn._window)
        wait_for(lambda w=want, t=send: len(sub.locations(f"owntracks/{USER}/{t}")) == w,
                 what=f"send = {send}")  # fmt: skip
        s.close()
        store.close()
    assert len(sub.locations(f"owntracks/{USER}/activities")) == 0


def test_min_point_interval_thins_and_acknowledges_the_rest(broker, sub, store, db):
    ride(store, 60, rate_hz=2.0)  # 30 s
    s = sender(broker, db, min_point_interval_s=5)
    drive(s, lambda: delivered(store, s))
    wait_for(lambda: len(sub.locations(TOPIC)) >= 6, what="one location per 5 s")
    assert [m["tst"] for m in sub.locations(TOPIC)] == [int(T0) + 5 * i for i in range(6)]
    s.close()


def test_a_late_fix_of_a_sent_second_or_an_earlier_one_is_acknowledged_not_sent(
    broker, sub, store, db
):
    aid = ride(store, 10)
    s = sender(broker, db, events=False)
    drive(s, lambda: delivered(store, s))
    more(store, aid, 1, t0=T0 + 9.5)  # stored after its second went out (10 Hz, a commit)
    more(store, aid, 1, t0=T0 + 3.0)  # the receiver's clock stepped back
    more(store, aid, 1, t0=T0 + 10.0)  # a new second
    drive(s, lambda: delivered(store, s))
    wait_for(lambda: len(sub.locations(TOPIC)) >= 11, what="the new second")
    assert [m["tst"] for m in sub.locations(TOPIC)] == [int(T0) + i for i in range(11)]
    s.close()
    # A new process (a restart) thins against the state's last time, not from scratch.
    more(store, aid, 1, t0=T0 + 10.2)
    again = sender(broker, db, events=False)
    drive(again, lambda: delivered(store, again))
    assert State.from_json(store.get_state(NAME)).last_time == int(T0) + 10
    assert len(sub.locations(TOPIC)) == 11
    again.close()


def test_retain_is_on_the_location_messages_only_when_asked(broker, store, db):
    ride(store, 3)
    s = sender(broker, db, retain=True, events=False)
    drive(s, lambda: delivered(store, s))
    s.close()
    assert b'"tst":%d' % (int(T0) + 2) in retained(broker)


def retained(broker: Broker) -> bytes:
    """What a new subscriber of the location topic gets first: the retained message."""
    import paho.mqtt.client as mqtt

    got: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="late")
    c.username_pw_set(USER, PASSWORD)
    c.on_connect = lambda cl, *a: cl.subscribe(TOPIC, 1)
    c.on_message = lambda cl, u, m: got.append(m.payload) if m.retain else None
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        wait_for(lambda: got, what="the retained location")
    finally:
        c.disconnect()
        c.loop_stop()
    return got[0]


def test_broker_down_then_back_on_the_same_port_every_second_arrives(broker, sub, store, db):
    s = sender(broker, db, max_inflight=5, events=False)
    drive(s, lambda: s._connected)
    with broker.frozen():
        aid = ride(store, 40)
        s.step()
        assert len(s._window) == 5  # five in flight...
    broker.stop()  # ...and the network goes
    drive(s, lambda: s.status.state == "retrying")
    assert store.pending()[NAME] >= 35, "what was not acknowledged stays queued"
    more(store, aid, 20, t0=T0 + 100)  # riding on, offline
    pause(1.0)
    broker.start()
    drive(s, lambda: delivered(store, s), steps=2000)
    want = seconds(store)
    wait_for(lambda: set(m["tst"] for m in sub.locations(TOPIC)) >= set(want), what="all")
    assert_every_second_once(sub, want, dup_max=5)
    assert s.status.state == "ok"
    s.close()


def test_a_broker_restart_resumes_the_session_qos2_arrives_exactly_once(broker, sub, store, db,
                                                                        caplog):  # fmt: skip
    caplog.set_level(logging.INFO)
    ride(store, 60)
    s = sender(broker, db, qos=2, max_inflight=10)
    drive(s, lambda: len(s._window) >= 5)
    broker.restart()  # SIGTERM: the broker saves the sessions, ours and the subscriber's
    more(store, 1, 20, t0=T0 + 100)
    drive(s, lambda: delivered(store, s), steps=2000)
    want = seconds(store)
    wait_for(lambda: set(m["tst"] for m in sub.locations(TOPIC)) >= set(want), what="all")
    assert_every_second_once(sub, want)  # QoS 2 through a resumed session: no duplicate
    assert "(session resumed)" in caplog.text
    s.close()


def test_a_broker_that_lost_our_session_gets_the_window_again(broker, sub, store, db,
                                                              caplog):  # fmt: skip
    caplog.set_level(logging.INFO)
    s = sender(broker, db, qos=2, max_inflight=10, events=False)
    drive(s, lambda: s._connected)
    with broker.frozen():  # the broker takes in nothing more...
        ride(store, 60)
        s.step()
        assert len(s._window) == 10
        broker.kill()  # ...and dies: the ten in flight and our session are gone
    broker.start()
    # The subscriber's session went too: it subscribes again when it is back.
    wait_for(lambda: sub.subscriptions >= 2, what="the subscriber back")
    drive(s, lambda: delivered(store, s), steps=2000)
    want = seconds(store)
    wait_for(lambda: {m["tst"] for m in sub.locations(TOPIC)} >= set(want), what="all")
    assert_every_second_once(sub, want, dup_max=10)
    assert "no longer had our session; publishing the 10 messages in flight again" in caplog.text
    s.close()


def test_a_broker_that_stops_answering_is_noticed_and_delivery_resumes(broker, sub, store, db):
    s = sender(broker, db, max_inflight=5, events=False, read_timeout_s=1.0,
               connect_timeout_s=1.0)  # fmt: skip
    drive(s, lambda: s._connected)
    with broker.frozen():  # a half-open connection: TCP up, nobody answering
        ride(store, 30)
        drive(s, lambda: "no acknowledgement in 1 s" in str(s.status.last_error))
        drive(s, lambda: "no CONNACK" in str(s.status.last_error))
        assert store.pending()[NAME] == 30
    drive(s, lambda: delivered(store, s), steps=2000)
    want = seconds(store)
    wait_for(lambda: {m["tst"] for m in sub.locations(TOPIC)} >= set(want), what="all")
    assert_every_second_once(sub, want, dup_max=5)
    s.close()


def test_a_crashed_sender_publishes_its_window_again_and_the_will_is_sent(broker, sub, store,
                                                                          db):  # fmt: skip
    s = sender(broker, db, max_inflight=8, events=False)
    drive(s, lambda: s._connected)
    with broker.frozen():  # no PUBACK comes back...
        ride(store, 40)
        s.step()
        in_flight = len(s._window)
        assert in_flight == 8
        s._client.socket().close()  # ...and the sender is gone without a DISCONNECT (SIGKILL)
        s.store.close()
    wait_for(lambda: sub.received(TOPIC, "lwt"), what="the last will")
    again = sender(broker, db, max_inflight=8)
    drive(again, lambda: delivered(store, again))
    want = seconds(store)
    wait_for(lambda: set(m["tst"] for m in sub.locations(TOPIC)) >= set(want), what="all")
    assert_every_second_once(sub, want, dup_max=in_flight)
    assert {m.payload["_type"] for m in sub.received(TOPIC)} == {"location", "lwt"}
    again.close()


def test_a_bad_password_is_one_error_and_the_fixes_stay_queued(broker, store, db, caplog):
    ride(store, 10)
    s = sender(broker, db, password="wrong-one")
    with caplog.at_level(logging.INFO):
        drive(s, lambda: s.disabled)
        for _ in range(3):
            s.step()
    assert s.status.state == "disabled" and s.status.auth_failed
    assert store.pending()[NAME] == 10
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "password" in errors[0].getMessage()
    assert "wrong-one" not in caplog.text and "wrong-one" not in repr(s.status)


def test_a_broker_not_listening_is_retried_with_backoff(tmp_path, store, db):
    b = Broker(tmp_path / "nobody")  # configured, never started
    ride(store, 5)
    s = sender(b, db)
    drive(s, lambda: s.status.failures >= 2)
    assert s.status.state == "retrying" and "127.0.0.1" in s.status.last_error
    assert store.pending()[NAME] == 5


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def tls_broker(tmp_path: Path):
    certs = make_certs(tmp_path / "certs")
    b = Broker(tmp_path / "tls", users={USER: PASSWORD}, certs=certs).start()
    yield b, certs
    b.stop()


def test_mqtts_with_the_ca_file_delivers_and_without_it_is_refused(tls_broker, store, db):
    b, certs = tls_broker
    url = f"mqtts://127.0.0.1:{b.port}"
    sub = Subscriber(b, username=USER, password=PASSWORD, ca_file=certs.ca).start()
    try:
        ride(store, 5)
        untrusted = sender(b, db, url=url)  # the system's CAs do not know the test CA
        drive(untrusted, lambda: untrusted.status.failures >= 1)
        assert "certificate" in untrusted.status.last_error
        assert store.pending()[NAME] == 5
        s = sender(b, db, url=url, ca_file=certs.ca)
        drive(s, lambda: delivered(store, s))
        wait_for(lambda: len(sub.locations(TOPIC)) == 5, what="five locations over TLS")
        s.close()
        wrong_name = sender(b, db, url=f"mqtts://localhost:{b.port}",
                            ca_file=certs.ca)  # fmt: skip
        more(store, 1, 1, t0=T0 + 50)
        drive(wrong_name, lambda: wrong_name.status.failures >= 1)
        assert "certificate" in wrong_name.status.last_error or "resolve" in str(
            wrong_name.status.last_error)  # fmt: skip
    finally:
        sub.stop()


# --- doctor ------------------------------------------------------------------------------------


def test_probe_says_what_is_wrong(broker, tls_broker, tmp_path):
    ok = probe(Settings(url=broker.url, username=USER, password=PASSWORD))
    assert [c.result for c in ok.checks] == ["ok", "ok"]
    bad = probe(Settings(url=broker.url, username=USER, password="nope"))
    assert [c.result for c in bad.checks] == ["ok", "FAIL"] and "nope" not in repr(bad)
    down = probe(Settings(url=Broker(tmp_path / "off").url, connect_timeout_s=1))
    assert down.checks[0].result == "FAIL" and "unreachable" in down.checks[0].detail
    b, certs = tls_broker
    url = f"mqtts://127.0.0.1:{b.port}"
    assert probe(Settings(url=url, username=USER, password=PASSWORD,
                          ca_file=certs.ca)).checks[0].result == "ok"  # fmt: skip
    untrusted = probe(Settings(url=url, username=USER, password=PASSWORD))
    assert untrusted.checks[0].result == "FAIL" and "certificate" in untrusted.checks[0].detail


# --- imports -----------------------------------------------------------------------------------


def test_tracker_status_with_an_mqtt_section_does_not_load_paho(tmp_path):
    """`tracker status` parses [mqtt] (tracker/senders/mqtt.py) without paho-mqtt."""
    import subprocess
    import sys

    from support import ROOT

    config = tmp_path / "tracker.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "t.db"}"\n\n[mqtt]\n'
        f'url = "mqtts://broker.example"\nusername = "{USER}"\npassword = "x"\n'
    )
    open_store(tmp_path / "t.db").close()
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print(' '.join(sorted(sys.modules))))\n"
            "from tracker.cli import main\n"
            f"main(['status', '-c', {str(config)!r}])\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, cwd=ROOT)  # fmt: skip
    loaded = done.stdout.split()
    assert "tracker.senders.mqtt" in loaded, done.stderr
    assert not [m for m in loaded if m.startswith("paho")]
