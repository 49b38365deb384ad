"""The senders' typed, versioned delivery state (tracker/senders/state.py): each backend's state
class has its own version and a migration from every older one, so a unit upgraded in the
middle of a ride keeps its pending marker and sends nothing twice; a state from a newer release
stops that backend only and keeps the data. (The same through a real sender and server:
tests/test_sender_mapmytracks.py, test_upgraded_mid_ride_... and test_a_newer_state_....)"""

from __future__ import annotations

import pytest

from tracker.senders import gpsr, mapmytracks, mqtt, traccar
from tracker.senders.state import Pending, StateError, upgrade

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
TRACCAR_V0 = {"pending": {"first_time": 7, "last_time": 7, "last_id": 3}, "last_time": 6,
              "sent": [["id", "u"], ["timestamp", "7"]], "last_accepted": [["id", "u"]]}
MQTT_V0 = {"last_time": 1780000123, "started": 2, "ended": 1}

# Version 1, as the releases with one global STATE_VERSION = 1 wrote it.
MMT_V1 = {"v": 1, "done_through": 3, "activities": {"4": {
    **MMT_V0["activities"]["4"], "samples_id": 90,
    "pending": {"kind": "start", "first_time": 1, "last_time": 2, "last_id": 5}}}}
GPSR_V1 = {"v": 1, "recent": [3], "pending": {"kind": "post", "first_time": 5, "last_id": 12}}
TRACCAR_V1 = {**TRACCAR_V0, "v": 1, "pending": {"kind": "position", "first_time": 7,
                                                 "last_time": 7, "last_id": 3}}
MQTT_V1 = {**MQTT_V0, "v": 1}

BACKENDS = [mapmytracks.State, gpsr.State, traccar.State, mqtt.State]


def test_a_version_0_map_my_tracks_state_reads_typed_with_its_marker():
    st = mapmytracks.State.from_json(MMT_V0)
    assert st.done_through == 3
    a = st.activities[4]
    assert (a.token, a.phase, a.remote_id, a.last_time, a.start_sent) == (
        "6f1c0d", "started", 1000, 1780000123, True
    )
    assert a.pending == Pending("update", 1780000100, 1780000123, 57)
    out = st.to_json()
    assert out["v"] == mapmytracks.State.VERSION
    assert out["activities"]["4"].pop("samples_id") is None  # new in version 1: unknown
    assert {k: v for k, v in out.items() if k != "v"} == MMT_V0  # the same keys, typed
    assert mapmytracks.State.from_json(st.to_json()) == st


def test_a_version_0_marker_without_a_kind_gets_its_backends_one_kind():
    assert gpsr.State.from_json(GPSR_V0).pending == Pending("post", 5, 9, 12)
    assert gpsr.State.from_json(GPSR_V0).recent == [3, 4]
    st = traccar.State.from_json(TRACCAR_V0)
    assert st.pending == Pending("position", 7, 7, 3)
    assert st.sent == {"id": "u", "timestamp": "7"} and st.last_time == 6
    assert mqtt.State.from_json(MQTT_V0) == mqtt.State(1780000123, 2, 1)


def test_a_version_1_state_of_each_backend_keeps_its_marker():
    mmt = mapmytracks.State.from_json(MMT_V1).activities[4]
    assert mmt.pending == Pending("start", 1, 2, 5) and mmt.samples_id == 90
    assert gpsr.State.from_json(GPSR_V1).pending == Pending("post", 5, None, 12)
    assert traccar.State.from_json(TRACCAR_V1).pending == Pending("position", 7, 7, 3)
    assert mqtt.State.from_json(MQTT_V1).last_time == 1780000123


@pytest.mark.parametrize("cls", BACKENDS)
def test_every_state_round_trips_at_its_own_version(cls):
    for doc in (MMT_V0, MMT_V1) if cls is mapmytracks.State else (
        {gpsr.State: GPSR_V0, traccar.State: TRACCAR_V0, mqtt.State: MQTT_V0}[cls],
        {gpsr.State: GPSR_V1, traccar.State: TRACCAR_V1, mqtt.State: MQTT_V1}[cls],
    ):  # fmt: skip
        st = cls.from_json(doc)
        assert st.to_json()["v"] == cls.VERSION
        assert cls.from_json(st.to_json()) == st
    assert cls.from_json({}) == cls()


@pytest.mark.parametrize("cls", BACKENDS)
def test_a_state_from_a_newer_release_is_refused(cls):
    with pytest.raises(StateError, match="newer than this tracker reads"):
        cls.from_json({"v": cls.VERSION + 1})


def test_migrations_run_one_version_at_a_time_and_newer_is_refused_per_backend():
    steps = {0: lambda d: {**d, "a": 1}, 1: lambda d: {**d, "b": d["a"] + 1}}
    assert upgrade({}, "x", 2, steps) == {"v": 2, "a": 1, "b": 2}
    assert upgrade({"v": 1, "a": 5}, "x", 2, steps) == {"v": 2, "a": 5, "b": 6}
    with pytest.raises(StateError, match="x: stored delivery state version 3"):
        upgrade({"v": 3}, "x", 2, steps)
    with pytest.raises(StateError, match="not an object"):
        upgrade([], "x", 2, steps)  # type: ignore[arg-type]


def test_a_marker_without_a_kind_in_a_versioned_document_is_refused():
    with pytest.raises(StateError, match="kind"):
        gpsr.State.from_json({"v": 1, "pending": {"first_time": 5}})
