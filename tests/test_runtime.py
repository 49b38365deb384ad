"""Runtime rows (tracker/runtime.py): one typed record shared by the writer and the reader."""

from __future__ import annotations

import pytest

from tracker.runtime import BackendStatus, DaemonStatus, GpsStatus, RecorderCounters


def test_a_renamed_field_fails_where_it_is_written():
    status = BackendStatus()
    status.update(state="ok", failures=0)
    with pytest.raises(AttributeError, match="fixes_send"):
        status.update(fixes_send=3)  # a typo of fixes_sent


def test_rows_round_trip_and_read_what_they_know():
    row = DaemonStatus(pid=7, running=True, recorder=RecorderCounters(fixes_stored=5),
                       gps=GpsStatus(device="/dev/gps0", rejected_by={"checksum": 2}))  # fmt: skip
    assert DaemonStatus.from_json(row.to_json()) == row
    # A row from another release: unknown keys ignored, missing ones defaulted.
    old = {"pid": 3, "recorder": {"fixes_stored": 9, "gone_counter": 1}, "extra": True}
    read = DaemonStatus.from_json(old)
    assert read.pid == 3 and read.recorder.fixes_stored == 9 and read.recorder.held == 0
    assert read.gps == GpsStatus()
    assert DaemonStatus.from_json(None) == DaemonStatus()


def test_a_backend_row_holds_no_secret_field():
    names = set(BackendStatus().to_json())
    assert not {n for n in names if any(w in n for w in ("password", "token", "secret"))}
