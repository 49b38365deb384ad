"""tracker.pty with a real pseudo-terminal and pyserial on the slave side, as the daemon uses it."""

from __future__ import annotations

import os
import threading
import time

import pytest
import serial

from tracker.pty import PtyWriter, create_pty, remove_link


def read_exactly(port: serial.Serial, n: int, timeout: float = 2.0) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < n and time.monotonic() < deadline:
        data += port.read(n - len(data))
    return data


@pytest.fixture
def writer():
    w = PtyWriter.open(timeout=0.2)
    yield w
    w.close()


def test_create_pty_gives_a_raw_slave_that_pyserial_opens():
    master, slave_path = create_pty()
    try:
        assert slave_path.startswith("/dev/")
        port = serial.serial_for_url(slave_path, timeout=0.5)
        try:
            payload = b"$GNGGA,1*00\r\n\r\n\n\r\x00\xff\x7f\x03\x1a$GNRMC\r\n"
            os.write(master, payload)
            # Raw mode: no CR/LF translation, control bytes and 8-bit bytes untouched.
            assert read_exactly(port, len(payload)) == payload
        finally:
            port.close()
    finally:
        os.close(master)


def test_no_echo_of_what_the_master_writes(writer):
    port = serial.serial_for_url(writer.slave_path, timeout=0.3)
    try:
        assert writer.wait_for_reader(timeout=2, settle=0)
        writer.write(b"$GNTXT,hello*00\r\n")
        assert read_exactly(port, 17) == b"$GNTXT,hello*00\r\n"
        time.sleep(0.05)
        assert writer.read_input() == b""  # nothing came back to us
    finally:
        port.close()


def test_bytes_arrive_unchanged_through_the_writer(writer):
    port = serial.serial_for_url(writer.slave_path, timeout=0.5)
    try:
        assert writer.wait_for_reader(timeout=2, settle=0)
        payload = bytes(range(256)) * 8 + b"\r\n"
        assert writer.write(payload) == len(payload)
        assert read_exactly(port, len(payload)) == payload
        assert writer.written == len(payload)
        assert writer.dropped == 0
    finally:
        port.close()


def test_what_the_reader_writes_is_drained_and_kept(writer):
    port = serial.serial_for_url(writer.slave_path, timeout=0.5)
    try:
        assert writer.wait_for_reader(timeout=2, settle=0)
        port.write(b"$PUBX,41,1,0007,0003,115200,0*18\r\n")
        port.flush()
        time.sleep(0.05)
        assert writer.read_input() == b"$PUBX,41,1,0007,0003,115200,0*18\r\n"
        assert writer.read_input() == b""
    finally:
        port.close()


def test_write_without_a_reader_drops_and_does_not_raise(writer):
    assert not writer.reader_connected()
    assert writer.write(b"$stale\r\n") == 0
    assert writer.dropped == 8
    assert writer.drops == 1
    # The dropped bytes never reach a later reader.
    port = serial.serial_for_url(writer.slave_path, timeout=0.3)
    try:
        assert writer.wait_for_reader(timeout=2, settle=0)
        writer.write(b"fresh\r\n")
        assert read_exactly(port, 7) == b"fresh\r\n"
        assert port.read(100) == b""
    finally:
        port.close()


def test_closing_the_reader_does_not_crash_the_writer(writer):
    port = serial.serial_for_url(writer.slave_path, timeout=0.5)
    assert writer.wait_for_reader(timeout=2, settle=0)
    writer.write(b"one\r\n")
    assert read_exactly(port, 5) == b"one\r\n"
    port.close()
    assert not writer.reader_connected()
    for _ in range(50):
        assert writer.write(b"x" * 100) == 0
    assert writer.dropped == 5000
    # A new reader gets the stream again.
    port = serial.serial_for_url(writer.slave_path, timeout=0.5)
    try:
        assert writer.wait_for_reader(timeout=2, settle=0)
        assert writer.write(b"two\r\n") == 5
        assert read_exactly(port, 5) == b"two\r\n"
    finally:
        port.close()


def test_a_stalled_reader_costs_at_most_the_timeout(writer):
    port = serial.serial_for_url(writer.slave_path, timeout=0.5)
    try:
        assert writer.wait_for_reader(timeout=2, settle=0)
        t0 = time.monotonic()
        sent = writer.write(b"y" * 1_000_000, timeout=0.3)  # far more than a pty buffers
        elapsed = time.monotonic() - t0
        assert 0 < sent < 1_000_000
        assert writer.dropped == 1_000_000 - sent
        assert 0.25 < elapsed < 2.0
    finally:
        port.close()


def test_the_reader_sees_a_hangup_when_the_master_closes(writer):
    port = serial.serial_for_url(writer.slave_path, timeout=0.5)
    try:
        assert writer.wait_for_reader(timeout=2, settle=0)
        writer.write(b"last\r\n")
        assert read_exactly(port, 6) == b"last\r\n"
        writer.close()
        with pytest.raises(serial.SerialException):
            port.read(10)
    finally:
        port.close()
    with pytest.raises(ValueError):
        writer.write(b"after close")
    writer.close()  # idempotent


def test_wait_for_reader(writer):
    assert writer.wait_for_reader(timeout=0.2) is False
    stop = threading.Event()
    stop.set()
    assert writer.wait_for_reader(stop=stop) is False

    opened: list[serial.Serial] = []
    timer = threading.Timer(
        0.2, lambda: opened.append(serial.serial_for_url(writer.slave_path, timeout=0.1))
    )
    timer.start()
    try:
        t0 = time.monotonic()
        assert writer.wait_for_reader(timeout=5, settle=0.1) is True
        assert 0.25 <= time.monotonic() - t0 < 3
    finally:
        timer.join()
        for port in opened:
            port.close()


def test_link_points_at_the_slave_and_is_removed_on_close(tmp_path):
    link = tmp_path / "gps"
    with PtyWriter.open(link, timeout=0.2) as w:
        assert os.readlink(link) == w.slave_path
        assert w.path == str(link)
        port = serial.serial_for_url(str(link), timeout=0.5)
        try:
            assert w.wait_for_reader(timeout=2, settle=0)
            w.write(b"$via link\r\n")
            assert read_exactly(port, 11) == b"$via link\r\n"
        finally:
            port.close()
    assert not os.path.lexists(link)


def test_link_replaces_a_stale_symlink_but_not_a_file(tmp_path):
    link = tmp_path / "gps"
    link.symlink_to("/dev/pts/nonexistent")
    with PtyWriter.open(link) as w:
        assert os.readlink(link) == w.slave_path
    assert not os.path.lexists(link)

    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    with pytest.raises(FileExistsError):
        create_pty(regular)
    assert regular.read_text() == "keep me"


def test_a_link_taken_over_by_someone_else_is_left_alone(tmp_path):
    link = tmp_path / "gps"
    master, slave_path = create_pty(link)
    try:
        os.unlink(link)
        link.symlink_to("/dev/null")
        assert remove_link(link, slave_path) is False
        assert os.readlink(link) == "/dev/null"
        os.unlink(link)
        assert remove_link(link, slave_path) is False  # already gone: no error
    finally:
        os.close(master)


def test_close_lets_the_reader_drain_first():
    w = PtyWriter.open(timeout=3.0)
    port = serial.serial_for_url(w.slave_path, timeout=0.5)
    try:
        assert w.wait_for_reader(timeout=2, settle=0)
        payload = b"$GNGGA,last epoch of the ride*00\r\n" * 100
        assert w.write(payload) == len(payload)
        closer = threading.Thread(target=w.close)
        closer.start()  # would discard the unread bytes if it did not wait for them
        time.sleep(0.2)
        got = b""
        try:
            while len(got) < len(payload):
                chunk = port.read(port.in_waiting or 1)
                if not chunk:
                    break
                got += chunk
        except serial.SerialException:
            pass
        closer.join(5)
        assert got == payload
    finally:
        port.close()
        w.close()


def test_drain_gives_up_on_a_stalled_reader():
    w = PtyWriter.open(timeout=0.3)
    port = serial.serial_for_url(w.slave_path, timeout=0.5)
    try:
        assert w.wait_for_reader(timeout=2, settle=0)
        w.write(b"z" * 1000)
        t0 = time.monotonic()
        assert w.drain() is False
        assert 0.25 < time.monotonic() - t0 < 2
        assert w.drain(timeout=0) is False
    finally:
        port.close()
        w.close()
    assert w.drain() is True  # closed: nothing to wait for
