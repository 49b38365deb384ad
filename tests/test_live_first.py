"""`[traccar] catch_up = "live_first"`: after an outage the present goes first, then the
history oldest first (docs/traccar.md; MQTT's in test_live_first_mqtt.py). The sender is
stepped in the test's thread against the real OsmAnd test server over HTTP on 127.0.0.1, with
a real SQLite store; new fixes are stored between steps, as the recorder stores them while the
backlog goes out.
"""

from __future__ import annotations

from support import drive
from test_traccar import (
    DEVICE,
    NAME,
    T0,
    add,
    make_sender,
    pending,
    ride,
    seconds,
    server,
    store,
    stored,
)

from tracker.config import parse
from tracker.senders.traccar import State
from tracker.senders.wire import MAX_RUNS, next_history
from tracker.status import collect, render
from tracker.store import Store
from tracker.testing.osmand import OsmAndServer

BACKLOG = 3600  # an hour at 1 Hz


__all__ = ["server", "store"]  # test_traccar's fixtures: the OsmAnd test server, the store


def test_next_history_skips_the_runs_sent_ahead_and_thins_among_itself():
    fixes = [stored(i + 1, T0 + i) for i in range(30)]
    t = int(T0)
    # Runs [t+10, t+12] and [t+20, t+20] went ahead; the history reference is t+2.
    covered, fix, runs, filled = next_history(fixes, [[t + 10, t + 12], [t + 20, t + 20]], t + 2)
    assert covered == fixes[:3] and fix is fixes[3] and runs == [[t + 10, t + 12], [t + 20, t + 20]]
    assert filled == t + 2
    # Past the first run: its end is the reference, the run is gone.
    covered, fix, runs, filled = next_history(fixes[9:], [[t + 10, t + 12], [t + 20, t + 20]],
                                              t + 9)  # fmt: skip
    assert [f.id for f in covered] == [10, 11, 12, 13] and fix is fixes[13]
    assert runs == [[t + 20, t + 20]] and filled == t + 12
    # Thinned among itself: every 5 s after the reference.
    _, fix, _, _ = next_history(fixes, [[t + 20, t + 20]], t, min_interval_s=5)
    assert fix is fixes[5]
    # Past the last run: the history is filled, nothing more to send from here.
    covered, fix, runs, filled = next_history(fixes[20:], [[t + 20, t + 21]], t + 19)
    assert [f.id for f in covered] == [21, 22] and fix is None and runs == [] and filled == t + 21
    # Nothing older than the last run pending: filled too.
    assert next_history(fixes[20:22], [[t + 20, t + 25]], t + 19)[2] == []
    assert next_history(fixes[20:22], [[t + 5, t + 6], [t + 20, t + 25]], t)[2] == []
    # A batch that ends before the last run: not yet known.
    assert next_history(fixes[18:20], [[t + 20, t + 25]], t + 19)[2] == [[t + 20, t + 25]]


def test_state_keeps_the_runs_and_reads_a_version_1_document():
    st = State(last_time=9, runs=[[5, 7], [9, 9]], filled=3, repeats=2)
    assert State.from_json(st.to_json()) == st
    v1 = {"v": 1, "last_time": 4, "pending": {"kind": "position", "last_time": 4, "last_id": 2},
          "sent": [["id", "u"]], "last_accepted": None}  # fmt: skip
    old = State.from_json(v1)
    assert old.runs == [] and old.filled is None and old.repeats == 0 and old.last_time == 4


def come_back(sender, server: OsmAndServer) -> None:
    """The sender meets the outage, then the server answers again."""
    server.faults.offline = True
    drive(sender, lambda: sender.status.state == "retrying")
    assert server.positions(DEVICE) == []
    server.faults.offline = False


def catch_up(sender, server: OsmAndServer, store: Store, aid: int | None, *, next_t: float,
             every: int = 5, burst_at: int | None = None,
             steps: int = 8000) -> tuple[dict[int, int], list[int]]:  # fmt: skip
    """Step `sender` until it has nothing left, storing a new fix (1 Hz GPS time) every
    `every` steps, and at step `burst_at` five at once (a short second gap). Returns, per live
    second stored, how many positions the server held when it was stored; and the burst's
    seconds."""
    stored_at: dict[int, int] = {}
    bursts: list[int] = []
    for i in range(steps):
        if i and i % every == 0:
            burst = 5 if i == burst_at else 1
            for _ in range(burst):
                stored_at[int(next_t)] = len(server.positions(DEVICE))
                if burst > 1:
                    bursts.append(int(next_t))
                add(store, aid, 1, t0=next_t)
                next_t += 1
        elif pending(store) == 0 and i > every:
            return stored_at, bursts
        sender.step()
    raise AssertionError(f"not done after {steps} steps: {sender.status}")


def test_traccar_live_first_sends_the_present_first_then_every_second_once(server, store, db):
    aid = ride(store, BACKLOG)
    newest = int(T0) + BACKLOG - 1
    sender = make_sender(server, db, catch_up="live_first", batch_max_points=100)
    come_back(sender, server)
    stored_at, burst = catch_up(sender, server, store, aid, next_t=newest + 1, burst_at=400)
    got = seconds(server)
    assert newest - got[0] <= 2  # the present first
    assert got[0] == newest
    every = sorted({int(f.time) for f in store.iter_fixes()})
    assert sorted(got) == every and server.duplicates(DEVICE) == []  # every second, once
    history = [s for s in got if s < newest]
    assert history == sorted(history)  # the history oldest first
    assert server.latest(DEVICE).time_ms // 1000 == every[-1]  # the map ends on the present
    # Each new fix went before the rest of the history: within a request or two (the burst's
    # newest first, the four before it fill in as history).
    order = {s: i for i, s in enumerate(got)}
    late = [s for s, n in stored_at.items() if order[s] > n + 1]
    assert len(burst) == 5 and late == burst[:-1], (late, burst)
    sender.step()  # idle: nothing older than the present pending, the fill is over
    st = State.from_json(store.get_state(NAME))
    assert st.runs == [] and st.filled is None and st.repeats == 0
    assert sender.status.fixes_sent == len(got)


def test_traccar_in_order_is_unchanged_by_default(server, store, db):
    aid = ride(store, 300)
    sender = make_sender(server, db)
    come_back(sender, server)
    catch_up(sender, server, store, aid, next_t=T0 + 300, every=10)
    got = seconds(server)
    assert got == sorted({int(f.time) for f in store.iter_fixes()})  # in order, once
    assert State.from_json(store.get_state(NAME)).runs == []


def test_traccar_a_short_backlog_goes_in_order_even_in_live_first(server, store, db):
    ride(store, 10)  # 9 s: in order is as quick
    drive(make_sender(server, db, catch_up="live_first"), lambda: pending(store) == 0)
    assert seconds(server) == [int(T0) + i for i in range(10)]


def test_traccar_a_lost_reply_in_the_history_gives_one_counted_repeat_at_most(server, store,
                                                                             db):  # fmt: skip
    aid = ride(store, 600)
    newest = int(T0) + 599
    sender = make_sender(server, db, catch_up="live_first")
    come_back(sender, server)
    drive(sender, lambda: seconds(server) == [newest])
    server.faults.set(drop_reply=0.2)
    catch_up(sender, server, store, aid, next_t=newest + 1, every=7)
    dropped = [r for r in server.requests if r.fault == "drop_reply"]
    in_history = [r for r in dropped if int(r.params["timestamp"]) < newest]
    assert len(in_history) > 5  # the test exercised what it is about
    dups = server.duplicates(DEVICE)
    # Each lost reply in the history: exactly one repeat (it had arrived), counted; a lost
    # reply to the present is dropped by the server's duplicate filter.
    assert len(dups) == len(in_history) == sender.status.repeats
    assert all(p.time_ms // 1000 < newest for p in dups)
    assert server.filtered(DEVICE) == len(dropped) - len(in_history)
    assert sorted(set(seconds(server))) == sorted({int(f.time) for f in store.iter_fixes()})
    row, _ = store.get_runtime(f"backend:{NAME}")
    assert row["repeats"] == len(in_history)
    cfg = parse({"storage": {"path": str(db)}, "traccar": {"url": server.url, "device_id": DEVICE}})
    assert f"{len(in_history)} sent again after a lost reply" in render(collect(store, cfg))
    assert State.from_json(store.get_state(NAME)).repeats == len(in_history)


def test_traccar_killed_during_the_history_resends_once_and_loses_nothing(server, store, db):
    ride(store, 120)
    first = make_sender(server, db, catch_up="live_first")
    drive(first, lambda: server.count("position") == 20)  # the present, then 19 of history
    server.faults.set(drop_reply=1.0)
    drive(first, lambda: server.count("position") == 21)  # stored, reply lost
    first.close()
    first.store.close()  # the process is gone: what it committed is what the next one finds
    st = State.from_json(store.get_state(NAME))
    assert st.pending.kind == "history" and st.runs == [[int(T0) + 119, int(T0) + 119]]
    server.faults.clear()
    second = make_sender(server, db, catch_up="live_first")
    drive(second, lambda: pending(store) == 0)
    assert sorted(set(seconds(server))) == [int(T0) + i for i in range(120)]
    assert [p.time_ms // 1000 for p in server.duplicates(DEVICE)] == [int(T0) + 19]
    assert second.status.repeats == 1


def test_traccar_killed_sending_the_present_first_keeps_the_history(server, store, db):
    """The marker of the present says it went ahead: the next process resends it and fills
    the history in; nothing older is taken as covered by it."""
    ride(store, 60)
    first = make_sender(server, db, catch_up="live_first")
    server.faults.set(drop_reply=1.0)
    drive(first, lambda: server.count("position") == 1)
    first.close()
    first.store.close()
    assert State.from_json(store.get_state(NAME)).pending.kind == "live"
    server.faults.clear()
    second = make_sender(server, db)  # and the mode changed meanwhile: the fill goes on
    drive(second, lambda: pending(store) == 0)
    assert seconds(server)[0] == int(T0) + 59
    assert sorted(seconds(server)) == [int(T0) + i for i in range(60)]
    assert server.duplicates(DEVICE) == [] and server.filtered(DEVICE) == 1


def test_traccar_runs_are_bounded_on_a_slow_link(server, store, db):
    """Every live fix out of step with the last (a link slower than the fixes): at MAX_RUNS
    stretches the history goes on alone until it passes them; nothing is lost."""
    aid = ride(store, 400)
    sender = make_sender(server, db, catch_up="live_first")
    t = T0 + 400
    for _ in range(MAX_RUNS + 5):
        add(store, aid, 1, t0=t)
        t += 3  # two seconds skipped each time: a new run
        sender.step()
        sender.step()
    assert len(State.from_json(store.get_state(NAME)).runs) == MAX_RUNS
    drive(sender, lambda: pending(store) == 0, steps=2000)
    assert sorted(seconds(server)) == sorted({int(f.time) for f in store.iter_fixes()})
    assert server.duplicates(DEVICE) == []


def test_traccar_an_old_present_left_unanswered_goes_after_the_newest(server, store, db):
    """Coverage lost mid-request: the marked position is an old one once the link is back.
    The newest goes first; the marked fix follows with the history (a possible repeat,
    counted: this server never got it, so none is stored)."""
    aid = ride(store, 40)
    sender = make_sender(server, db, catch_up="live_first")
    come_back(sender, server)  # the request for time +39 went unanswered
    assert State.from_json(store.get_state(NAME)).pending.kind == "live"
    add(store, aid, 30, t0=T0 + 40)  # the ride went on meanwhile
    drive(sender, lambda: pending(store) == 0)
    got = seconds(server)
    assert got[0] == int(T0) + 69
    assert sorted(got) == [int(T0) + i for i in range(70)] and server.duplicates(DEVICE) == []
    assert sender.status.repeats == 1
