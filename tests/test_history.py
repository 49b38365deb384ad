"""A backend's `history` key, in the store (issue 24): fixes older than the history a server
is to get are settled unsent, counted, and kept for exports and the ride list."""

from __future__ import annotations

from tracker.fix import Fix
from tracker.store import open_store

T0 = 1_780_000_000.0


def fix(t: float) -> Fix:
    return Fix(time=T0 + t, lat=48.1 + t * 1e-5, lon=11.5, alt=500.0, speed=5.0, course=90.0,
               quality=1, sats=9, hdop=0.9)  # fmt: skip


def test_hold_back_settles_the_old_part_of_a_backlog_unsent(tmp_path):
    store = open_store(tmp_path / "tracker.db")
    a = store.start_activity("Ride", "cycling", "private", [], T0)
    store.add_fixes(a.id, [fix(i) for i in range(100)])
    store.add_fixes(None, [fix(100 + i) for i in range(5)])  # parked: not for 'activities'
    store.register_backend("gpsr")
    store.register_backend("traccar", "all")
    first = store.next_batch("gpsr", 10)
    store.acknowledge("gpsr", [f.id for f in first])  # sent before the outage
    store.acknowledge("gpsr", [first[-1].id + 50])  # one acknowledged out of order

    assert store.hold_back("gpsr", T0 + 10) == 0  # nothing pending is that old
    assert store.hold_back("gpsr", T0 + 90) == 79  # 10..89 but the one already acknowledged
    assert [f.time - T0 for f in store.next_batch("gpsr", 100)] == list(range(90, 100))
    assert store.pending()["gpsr"] == 10
    assert store.hold_back("traccar", T0 + 102) == 102  # its scope holds the parked fixes too
    assert store.held_back() == {"gpsr": 79, "traccar": 102}
    assert store.hold_back("gpsr", T0 + 90) == 0  # idempotent
    assert store.held_back()["gpsr"] == 79
    # Kept: the ride still has every fix.
    assert len(list(store.iter_fixes(a.id))) == 100
    store.close()


def test_a_new_fix_after_a_hold_is_sent(tmp_path):
    store = open_store(tmp_path / "tracker.db")
    a = store.start_activity("Ride", "cycling", "private", [], T0)
    store.register_backend("mqtt")
    store.add_fixes(a.id, [fix(i) for i in range(20)])
    assert store.hold_back("mqtt", T0 + 20) == 20
    assert store.next_batch("mqtt", 10) == []
    store.add_fixes(a.id, [fix(20)])
    assert [f.time for f in store.next_batch("mqtt", 10)] == [T0 + 20]
    store.close()


def test_holding_back_one_activity_leaves_another_ones_backlog(tmp_path):
    """Map My Tracks holds back within the ride in progress only: an earlier ride's fixes
    (below the ones held, so the cursor cannot pass them) stay to be sent."""
    store = open_store(tmp_path / "tracker.db")
    earlier = store.start_activity("Morning", "cycling", "private", [], T0)
    store.add_fixes(earlier.id, [fix(i) for i in range(10)])
    store.end_activity(earlier.id, T0 + 10, "stopped")
    now = store.start_activity("Evening", "cycling", "private", [], T0 + 100)
    store.add_fixes(now.id, [fix(100 + i) for i in range(100)])
    store.register_backend("mapmytracks")
    assert store.hold_back("mapmytracks", T0 + 190, activity_id=now.id) == 90
    left = store.next_batch("mapmytracks", 1000)
    assert [f.time - T0 for f in left] == list(range(10)) + list(range(190, 200))
    assert store.pending()["mapmytracks"] == 20
    store.close()
