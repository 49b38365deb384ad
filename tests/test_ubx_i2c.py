"""The u-blox I2C (DDC) port, through a fake smbus2 bus, alone and under the real GpsReader."""

from __future__ import annotations

import errno
import queue
import threading

import pytest
import serial
from support import epochs, wait_for

from tracker.gps import GpsReader
from tracker.ubx_i2c import I2cPort, open_gps_port, parse_i2c_url


class FakeDdc:
    """A u-blox receiver's DDC registers behind smbus2's read_i2c_block_data, as on the wire.

    0xFD/0xFE: bytes ready (big-endian), 0xFF: the stream, 0xFF filler when empty. `unplugged`
    makes every transaction fail like a NAK (EREMOTEIO); `max_block` is the adapter's limit.
    """

    def __init__(self, address: int = 0x42) -> None:
        self.address = address
        self.out = bytearray()
        self.lock = threading.Lock()
        self.unplugged = False
        self.closed = 0
        self.transactions = 0

    def send(self, data: bytes) -> None:
        with self.lock:
            self.out += data

    def open(self, bus: int) -> FakeDdc:
        if self.unplugged:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", f"/dev/i2c-{bus}")
        return self

    def read_i2c_block_data(self, address: int, register: int, length: int) -> list[int]:
        self.transactions += 1
        if self.unplugged or address != self.address:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        assert length <= 32, "an SMBus block read is at most 32 bytes"
        with self.lock:
            if register == 0xFD:
                n = len(self.out)
                return [n >> 8 & 0xFF, n & 0xFF][:length]
            assert register == 0xFF, f"unexpected register 0x{register:02x}"
            chunk = bytes(self.out[:length])
            del self.out[:length]
        return list(chunk + b"\xff" * (length - len(chunk)))

    def close(self) -> None:
        self.closed += 1


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def port(ddc: FakeDdc, timeout: float | None = 1.0, clock: FakeClock | None = None) -> I2cPort:
    clock = clock or FakeClock()
    return I2cPort(1, 0x42, timeout=timeout, open_bus=ddc.open, sleep=clock.sleep, clock=clock)


def test_parse_urls():
    assert parse_i2c_url("i2c:1:0x42") == (1, 0x42)
    assert parse_i2c_url("i2c:0:66") == (0, 0x42)
    assert parse_i2c_url("i2c:1") == (1, 0x42)
    for bad in ("i2c:", "i2c:x:0x42", "i2c:1:0x80", "i2c:1:2", "i2c:1:0x42:9"):
        with pytest.raises(ValueError, match="i2c"):
            parse_i2c_url(bad)


def test_reads_exactly_what_the_receiver_has_in_block_reads():
    ddc = FakeDdc()
    text = b"$GPRMC," + b"x" * 100 + b"\r\n"
    ddc.send(text)
    p = port(ddc)
    assert p.in_waiting == len(text)
    assert p.read(p.in_waiting) == text  # no 0xFF filler: never more than the count
    assert p.in_waiting == 0


def test_read_waits_up_to_the_timeout_then_returns_what_there_is():
    ddc, clock = FakeDdc(), FakeClock()
    p = port(ddc, timeout=0.25, clock=clock)
    assert p.read(1) == b""
    assert 0.25 <= clock.t < 0.3  # waited the timeout (fake time), did not spin forever
    ddc.send(b"AB")
    assert p.read(5) == b"AB"


def test_a_silly_count_is_not_data():
    ddc = FakeDdc()
    p = port(ddc)
    ddc.read_i2c_block_data = lambda a, r, n: [0xFF, 0xFF] if r == 0xFD else [0xFF] * n
    assert p.in_waiting == 0


def test_no_receiver_at_the_address_fails_the_open_and_closes_the_bus():
    ddc = FakeDdc(address=0x43)
    with pytest.raises(OSError) as e:
        port(ddc)
    assert e.value.errno == errno.EREMOTEIO
    assert ddc.closed == 1


def test_open_gps_port_dispatches(monkeypatch):
    seen = {}

    def fake_serial_for_url(url, **kw):
        seen[url] = kw
        return "serial"

    monkeypatch.setattr(serial, "serial_for_url", fake_serial_for_url)
    assert open_gps_port("/dev/ttyUSB0", baudrate=38400, timeout=0.25) == "serial"
    assert seen["/dev/ttyUSB0"] == {"baudrate": 38400, "timeout": 0.25}
    with pytest.raises(FileNotFoundError):  # no /dev/i2c-250 here: the real smbus2 was asked
        open_gps_port("i2c:250:0x42", baudrate=9600, timeout=0.25)


def test_gps_reader_reads_fixes_over_i2c_and_survives_an_unplug(caplog):
    ddc = FakeDdc()
    inbox: queue.Queue = queue.Queue()
    stop = threading.Event()

    def open_port(url, baudrate, timeout):
        assert url == "i2c:1:0x42"
        bus, address = parse_i2c_url(url)
        return I2cPort(bus, address, timeout=timeout, open_bus=ddc.open)

    reader = GpsReader("i2c:1:0x42", 9600, inbox.put, stop, reconnect_max_s=0.2,
                       open_port=open_port)  # fmt: skip
    thread = threading.Thread(target=reader.run, daemon=True)
    ride = epochs(20, rate_hz=10.0)
    thread.start()
    try:
        got: list = []

        def fixes(n):
            while not inbox.empty():
                got.extend(inbox.get())
            return len(got) >= n

        for e in ride[:10]:
            ddc.send(e.data)
        wait_for(lambda: fixes(9), 10, "fixes over I2C")
        assert reader.clock_offset is not None
        ddc.unplugged = True
        wait_for(lambda: reader.state == "lost", 10, "the reader to notice the unplug")
        ddc.unplugged = False
        for e in ride[10:]:
            ddc.send(e.data)
        wait_for(lambda: fixes(19), 10, "fixes after the receiver came back")
    finally:
        stop.set()
        thread.join(5)
    want = {round(e.time.timestamp(), 2) for e in ride if e.valid}
    assert {round(f.time, 2) for f in got} >= want - {round(ride[-1].time.timestamp(), 2)}
    assert reader.connects >= 2
    assert "Remote I/O error" in caplog.text
