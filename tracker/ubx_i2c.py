"""A u-blox receiver on the I2C bus (DDC), as a pyserial-like port for the GPS reader.

`[gps] device = "i2c:BUS:ADDR"` (e.g. "i2c:1:0x42") selects it. u-blox DDC: registers 0xFD
(high byte) and 0xFE (low byte) hold how many bytes the receiver has ready, read in one
transaction; register 0xFF is the data stream. We read the count, then at most that many bytes
in SMBus block reads of up to 32 bytes (what every I2C adapter supports), so the receiver's 0xFF
"nothing to send" filler never reaches the decoder.

`I2cPort` offers what GpsReader uses of a serial port: `read(n)` (blocks until n bytes or
`timeout`), `in_waiting`, `close()`. Bus errors are OSError (EREMOTEIO when the receiver does
not acknowledge), which the reader treats like a pulled USB cable: log once, reopen with backoff.

`open_gps_port()` is what the daemon gives GpsReader as `open_port`: `i2c:` URLs here,
everything else to `serial.serial_for_url`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import serial

DEFAULT_ADDRESS = 0x42
REG_AVAILABLE = 0xFD  # 0xFD high byte, 0xFE low byte
REG_STREAM = 0xFF
BLOCK = 32  # the SMBus block read limit
POLL_S = 0.02  # between looks at the count while waiting: a 1 Hz receiver sends in bursts
MAX_AVAILABLE = 0x7FFF  # a larger count is a bus glitch (all ones), not data


def parse_i2c_url(url: str) -> tuple[int, int]:
    """'i2c:1:0x42' -> (1, 0x42); 'i2c:1' -> (1, 0x42). ValueError with the reason otherwise."""
    parts = url.split(":")
    if parts[0] != "i2c" or len(parts) not in (2, 3):
        raise ValueError(f"{url!r}: expected i2c:BUS:ADDRESS, e.g. i2c:1:0x42")
    try:
        bus = int(parts[1], 0)
        address = int(parts[2], 0) if len(parts) == 3 else DEFAULT_ADDRESS
    except ValueError:
        raise ValueError(f"{url!r}: bus and address must be numbers, e.g. i2c:1:0x42") from None
    if not 0 <= bus <= 255 or not 0x03 <= address <= 0x77:
        raise ValueError(f"{url!r}: bus 0-255 and a 7-bit address 0x03-0x77 expected")
    return bus, address


def _smbus(bus: int) -> Any:
    from smbus2 import SMBus

    return SMBus(bus)


class I2cPort:
    """The receiver's DDC stream as a port. Not thread-safe: it belongs to the GPS reader."""

    def __init__(
        self,
        bus: int,
        address: int = DEFAULT_ADDRESS,
        *,
        timeout: float | None = 1.0,
        open_bus: Callable[[int], Any] = _smbus,
        sleep: Callable[[float], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = f"i2c:{bus}:0x{address:02x}"
        self.address = address
        self.timeout = timeout
        self._clock = clock
        self._sleep = sleep or threading.Event().wait  # never woken: a plain bounded wait
        self._buf = bytearray()
        self._bus = open_bus(bus)
        try:
            self._available()  # a receiver that does not answer is not there
        except OSError:
            self._bus.close()
            raise
        self.is_open = True

    def _available(self) -> int:
        hi, lo = self._bus.read_i2c_block_data(self.address, REG_AVAILABLE, 2)
        n = hi << 8 | lo
        return 0 if n > MAX_AVAILABLE else n

    def _fill(self, want: int) -> None:
        """Move up to `want` bytes the receiver has ready into the buffer."""
        n = min(self._available(), want)
        while n > 0:
            chunk = bytes(self._bus.read_i2c_block_data(self.address, REG_STREAM, min(n, BLOCK)))
            self._buf += chunk
            n -= len(chunk)

    @property
    def in_waiting(self) -> int:
        if not self._buf:
            self._fill(4096)
        return len(self._buf)

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise serial.PortNotOpenError()
        deadline = None if self.timeout is None else self._clock() + self.timeout
        while len(self._buf) < size:
            self._fill(max(size - len(self._buf), BLOCK))
            if len(self._buf) >= size:
                break
            if deadline is not None and self._clock() >= deadline:
                break
            self._sleep(POLL_S)
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            self._bus.close()


def open_gps_port(url: str, baudrate: int = 9600, timeout: float | None = None, **kw: Any):
    """`serial.serial_for_url` for everything but `i2c:` URLs, which open an I2cPort."""
    if url.startswith("i2c:"):
        bus, address = parse_i2c_url(url)
        return I2cPort(bus, address, timeout=timeout)
    return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout, **kw)
