"""The senders' typed, versioned delivery state (tracker/senders/state.py): the JSON of the
releases before it (version 0) reads as it is, so a unit upgraded in the middle of a ride keeps
its pending marker and sends nothing twice; a state from a newer release stops that backend
and keeps the data. (The same through a real sender and server: tests/test_sender_mapmytracks.py,
test_upgraded_mid_ride_... and test_a_newer_state_....)"""

from __future__ import annotations

import pytest

from tracker.senders import gpsr, mapmytracks
from tracker.senders.state import STATE_VERSION, Pending, StateError

# What the releases before typed state wrote (no "v"): copied from a unit's database.
MMT_V0 = {
    "done_through": 3,
    "activities": {
        "4": {"token": "6f1c0d", "phase": "started", "remote_id": 1000, "last_time": 1780000123,
              "pending": {"kind": "update", "first_time": 1780000100,
                          "last_time": 1780000123, "last_id": 57},
              "start_sent": True},
    },
}  # fmt: skip
GPSR_V0 = {"pending": {"first_time": 5, "last_time": 9, "last_id": 12}, "recent": [3, 4]}


def test_a_version_0_map_my_tracks_state_reads_typed_and_writes_version_1():
    st = mapmytracks.State.from_json(MMT_V0)
    assert st.done_through == 3
    a = st.activities[4]
    assert (a.token, a.phase, a.remote_id, a.last_time, a.start_sent) == (
        "6f1c0d", "started", 1000, 1780000123, True
    )
    assert a.pending == Pending("update", 1780000100, 1780000123, 57)
    out = st.to_json()
    assert out["v"] == STATE_VERSION == 1
    assert out["activities"]["4"].pop("samples_id") is None  # new in version 1: unknown
    assert {k: v for k, v in out.items() if k != "v"} == MMT_V0  # the same keys, typed
    assert mapmytracks.State.from_json(st.to_json()) == st


def test_a_version_0_gpsr_state_reads_typed():
    st = gpsr.State.from_json(GPSR_V0)
    assert st.pending == Pending("post", 5, 9, 12) and st.recent == [3, 4]
    assert gpsr.State.from_json(st.to_json()) == st
    assert gpsr.State.from_json({}) == gpsr.State()


@pytest.mark.parametrize("cls", [mapmytracks.State, gpsr.State])
def test_a_state_from_a_newer_release_is_refused(cls):
    with pytest.raises(StateError, match="newer than this tracker reads"):
        cls.from_json({"v": STATE_VERSION + 1})
