"""The GPS reader thread against real devices: a pty, a TCP socket, a device that comes and goes."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
from support import epochs, wait_for

from tracker.gps import GpsReader
from tracker.pty import PtyWriter


class Reader:
    """A GpsReader in its own thread, collecting what it emits."""

    def __init__(self, device: str, **kw) -> None:
        self.fixes = []
        self.stop = threading.Event()
        self.reader = GpsReader(device, 9600, self.fixes.extend, self.stop, **kw)
        self.thread = threading.Thread(target=self.reader.run, daemon=True)
        self.thread.start()

    def close(self) -> float:
        started = time.monotonic()
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()
        return time.monotonic() - started


@pytest.fixture
def reader_factory():
    made = []

    def make(device, **kw):
        r = Reader(device, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_reads_fixes_from_a_pty_and_stops_promptly(tmp_path, reader_factory):
    with PtyWriter.open(tmp_path / "gps0") as gps:
        r = reader_factory(gps.path)
        assert gps.wait_for_reader(timeout=10)
        ride = epochs(20)
        for e in ride:
            gps.write(e.data)
        wait_for(lambda: len(r.fixes) == 20, what="20 fixes")
        assert [round(f.time, 3) for f in r.fixes] == [round(e.unix, 3) for e in ride]
        assert r.reader.state == "open"
        assert r.reader.clock_offset is not None
        assert r.close() < 2.0
        assert r.reader.state == "stopped"


def test_a_device_that_appears_later_is_picked_up_and_logged_once(tmp_path, reader_factory, caplog):
    caplog.set_level(logging.INFO, logger="tracker.gps")
    link = tmp_path / "gps0"
    r = reader_factory(str(link), reconnect_max_s=0.5)
    wait_for(lambda: r.reader.attempts >= 3, timeout=10, what="several tries while missing")
    assert r.reader.state == "connecting"
    missing = [m for m in caplog.messages if "not available" in m]
    assert len(missing) == 1, caplog.messages
    assert str(link) in missing[0]
    with PtyWriter.open(link) as gps:
        assert gps.wait_for_reader(timeout=10)
        for e in epochs(5):
            gps.write(e.data)
        wait_for(lambda: len(r.fixes) == 5)
    assert any("back after" in m for m in caplog.messages)
    assert "No such file or directory" in missing[0]


def test_a_pulled_cable_keeps_the_last_epoch_and_resumes(tmp_path, reader_factory, caplog):
    caplog.set_level(logging.INFO, logger="tracker.gps")
    link = tmp_path / "gps0"
    ride = epochs(20)
    gps = PtyWriter.open(link)
    r = reader_factory(str(link), reconnect_max_s=0.5)
    assert gps.wait_for_reader(timeout=10)
    for e in ride[:10]:
        gps.write(e.data)
    gps.close()  # the cable is pulled right after epoch 10: no next epoch to complete it
    wait_for(lambda: len(r.fixes) == 10, what="the last epoch before the pull")
    wait_for(lambda: any("lost" in m for m in caplog.messages), what="the loss logged")

    with PtyWriter.open(link) as gps:  # plugged back in
        assert gps.wait_for_reader(timeout=10)
        for e in ride[10:]:
            gps.write(e.data)
        wait_for(lambda: len(r.fixes) == 20, what="fixes after the reconnect")
    assert r.reader.connects == 2
    assert any("back after" in m for m in caplog.messages)


def test_nmea_over_tcp_with_a_pyserial_url(reader_factory):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.settimeout(10)
    r = reader_factory(f"socket://127.0.0.1:{port}", reconnect_max_s=0.5)
    try:
        for round_ in range(2):  # the second round: the gateway closed and came back
            conn, _ = server.accept()
            with conn:
                # pyserial empties the socket's input when it opens: send only once it has.
                wait_for(lambda n=round_ + 1: r.reader.connects == n, what="the port open")
                for e in epochs(5, start=epochs(1)[0].time.replace(minute=round_)):
                    conn.sendall(e.data)
                wait_for(lambda n=5 * (round_ + 1): len(r.fixes) == n)
    finally:
        server.close()
    assert r.reader.connects == 2


def test_garbage_only_input_is_counted_never_fatal(tmp_path, reader_factory):
    with PtyWriter.open(tmp_path / "gps0") as gps:
        r = reader_factory(gps.path)
        assert gps.wait_for_reader(timeout=10)
        gps.write(bytes(range(256)) * 20 + b"\r\n$GPGGA,garbage*00\r\n" + b"x" * 5000 + b"\n")
        for e in epochs(3):
            gps.write(e.data)
        wait_for(lambda: len(r.fixes) == 3, what="fixes after the garbage")
        assert r.reader.decoder.stats.rejected > 0
        assert r.thread.is_alive()


def test_a_device_path_is_read_straight_from_its_descriptor_and_a_hangup_raises(tmp_path):
    # gps._reader: poll() and os.read() for pyserial's own Serial, with pyserial's waits and
    # its error for a device gone; a subclass (spy://, alt://) keeps pyserial's read().
    import serial

    from tracker import gps

    link = tmp_path / "gps0"
    writer = PtyWriter.open(link)
    port = serial.serial_for_url(str(link), baudrate=9600, timeout=gps.READ_TIMEOUT_S)
    try:
        read = gps._reader(port)
        assert read.__name__ == "read"  # the descriptor's, not pyserial's
        assert writer.wait_for_reader(timeout=10)
        writer.write(b"$GPGGA,1*00\r\n$GPRMC,2*00\r\n")
        got = b""
        while len(got) < 26:
            got += read()
        assert got == b"$GPGGA,1*00\r\n$GPRMC,2*00\r\n"
        started = time.monotonic()
        assert read() == b""  # nothing came: the wait is bounded
        assert 0.5 < time.monotonic() - started < 5
        writer.close()
        with pytest.raises((OSError, serial.SerialException)):
            for _ in range(5):
                read()
    finally:
        port.close()
        writer.close()

    spy = serial.serial_for_url(f"spy://{tmp_path / 'none'}?file={tmp_path / 'spy.txt'}",
                                do_not_open=True)  # fmt: skip
    assert gps._reader(spy).__name__ == "<lambda>"
