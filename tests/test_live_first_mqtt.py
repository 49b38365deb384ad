"""`[mqtt] catch_up = "live_first"` (docs/mqtt.md): after an outage the present is published
first (retained as `retain` says), then the history oldest first, never retained, with more
messages in flight. The sender is stepped in the test's thread against a real Mosquitto
(tests/mosquitto.py) with a real SQLite store; new fixes are stored between steps, as the
recorder stores them while the backlog goes out.
"""

from __future__ import annotations

from mosquitto import Broker, Subscriber
from support import drive, wait_for
from test_mqtt import (
    NAME,
    T0,
    TOPIC,
    assert_every_second_once,
    broker,
    delivered,
    more,
    retained,
    ride,
    seconds,
    sender,
    sub,
)

from tracker.senders.mqtt import CATCH_UP_INFLIGHT, State

BACKLOG = 3600  # an hour at 1 Hz

__all__ = ["broker", "sub"]  # test_mqtt's fixtures: Mosquitto with the rider's login, a subscriber


def tst(sub: Subscriber) -> list[int]:
    return [m["tst"] for m in sub.locations(TOPIC)]


def come_back(s, broker: Broker, sub: Subscriber) -> None:
    """The sender meets the outage, then the broker is back on the same port (and the test
    subscriber on it: subscribing again, it would get the retained location once more)."""
    subscribed = sub.subscriptions
    broker.stop()
    drive(s, lambda: s.status.state == "retrying")
    broker.start()
    wait_for(lambda: sub.subscriptions > subscribed, what="the subscriber back")


def test_mqtt_live_first_publishes_the_present_first_then_the_history(broker, sub, store, db):
    aid = ride(store, BACKLOG)
    newest = int(T0) + BACKLOG - 1
    s = sender(broker, db, catch_up="live_first", retain=True, events=False)
    come_back(s, broker, sub)
    most, live, t = 0, [], T0 + BACKLOG
    for i in range(3000):
        if delivered(store, s) and i > 10:
            break
        if i % 5 == 4:  # the rider goes on at 1 Hz
            more(store, aid, 1, t0=t)
            live.append(int(t))
            t += 1
        if i == 20:  # mid-history, no acknowledgement coming: how much goes in flight
            with broker.frozen():
                s.step()
                s.step()
                most = len(s._window)
        s.step()
    else:
        raise AssertionError(f"not delivered: {s.status}")
    want = seconds(store)
    wait_for(lambda: set(tst(sub)) >= set(want), what="every second")
    got = tst(sub)
    assert got[0] == newest  # the present first
    assert_every_second_once(sub, want)
    history = [x for x in got if x < newest]
    assert history == sorted(history)  # the history oldest first
    last_history = got.index(history[-1])
    during = [x for x in live if got.index(x) < last_history]
    assert len(during) > 3 and during == [x for x in got if x in set(during)]  # ahead, in order
    assert most == CATCH_UP_INFLIGHT  # more in flight while catching up than max_inflight
    s.step()  # idle: nothing older than the present pending, the fill is over
    assert s._inflight() == 20  # and back once live
    assert s._client.max_inflight_messages == CATCH_UP_INFLIGHT  # paho's, for a connection
    assert b'"tst":%d' % live[-1] in retained(broker)  # a new subscriber sees the present
    st = State.from_json(store.get_state(NAME))
    assert st.runs == [] and st.filled is None and st.last_time == live[-1]
    s.close()


def test_mqtt_in_order_is_unchanged_by_default(broker, sub, store, db):
    ride(store, 300)
    s = sender(broker, db, events=False)
    come_back(s, broker, sub)
    drive(s, lambda: delivered(store, s), steps=2000)
    want = seconds(store)
    wait_for(lambda: set(tst(sub)) >= set(want), what="every second")
    assert tst(sub) == want
    s.close()


def test_mqtt_a_short_backlog_goes_in_order_even_in_live_first(broker, sub, store, db):
    ride(store, 10)
    s = sender(broker, db, catch_up="live_first", events=False)
    drive(s, lambda: delivered(store, s))
    wait_for(lambda: len(tst(sub)) >= 10, what="every second")
    assert tst(sub) == seconds(store)
    s.close()


def test_mqtt_a_crash_during_the_history_loses_nothing(broker, sub, store, db):
    """A sender gone without a word while history messages are in flight: the next process
    goes on with the history (the runs are in the store), nothing is lost, and repeats are
    at most what was in flight."""
    aid = ride(store, 600)
    s = sender(broker, db, catch_up="live_first", events=False)
    drive(s, lambda: len(set(tst(sub))) >= 150, steps=2000)  # the present, then some history
    with broker.frozen():  # no PUBACK comes back...
        more(store, aid, 1, t0=T0 + 600)
        s.step()
        in_flight = len(s._window)
        assert in_flight > 0
        s._client.socket().close()  # ...and the sender is gone without a DISCONNECT (SIGKILL)
        s.store.close()
    st = State.from_json(store.get_state(NAME))
    assert st.runs and st.runs[0][0] == int(T0) + 599
    again = sender(broker, db, catch_up="live_first", events=False)
    drive(again, lambda: delivered(store, again), steps=2000)
    want = seconds(store)
    wait_for(lambda: set(tst(sub)) >= set(want), what="every second")
    assert_every_second_once(sub, want, dup_max=in_flight)
    got = tst(sub)
    assert got[0] == int(T0) + 599 and max(got) == int(T0) + 600
    again.close()
