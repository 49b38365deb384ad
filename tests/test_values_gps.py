"""The GPS reader with lone time outliers on a real pty: they never leave the reader, and the GPS
clock the sensor samples are stamped with (`GpsReader.clock_offset`) never moves with them."""

from __future__ import annotations

import threading
from dataclasses import replace

from support import epochs, wait_for
from test_values_e2e import TIME_GLITCHES

from tracker.gps import GpsReader
from tracker.pty import PtyWriter


def test_lone_outliers_never_reach_the_recorder_or_move_the_gps_clock(tmp_path) -> None:
    ride = epochs(200, rate_hz=5.0)
    glitched = {}
    for k, glitch in enumerate(TIME_GLITCHES.values()):
        i = 30 + 40 * k
        ride[i] = replace(ride[i], data=glitch(ride[i]))
        glitched[i] = round(ride[i].unix, 3)
    got: list[float] = []
    offsets: list[float] = []
    stop = threading.Event()

    def out(fixes) -> None:
        got.extend(round(f.time, 3) for f in fixes)
        offsets.append(reader.clock_offset)  # set from these fixes, before they are handed over

    with PtyWriter.open(tmp_path / "gps0") as gps:
        reader = GpsReader(gps.path, 9600, out, stop)
        thread = threading.Thread(target=reader.run, daemon=True)
        thread.start()
        try:
            assert gps.wait_for_reader(timeout=10)
            for e in ride:
                gps.write(e.data)
            want = [round(e.unix, 3) for i, e in enumerate(ride) if i not in glitched]
            wait_for(lambda: got == want, what=f"every good fix, and only those: {got[-3:]}")
        finally:
            stop.set()
            thread.join(timeout=5)
    assert reader.stats.rejected_by["time_outlier"] == len(TIME_GLITCHES)
    # Written as fast as the pty takes them: the offset moves with the pace of writing (tens
    # of seconds at most over the ride), never by an outlier's hour, day or decades.
    assert max(offsets) - min(offsets) < 60, (min(offsets), max(offsets))
