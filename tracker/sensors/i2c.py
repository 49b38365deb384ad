"""A register-map sensor on the I2C bus, for home-made boards (smbus2).

The entry names the bus, the device address and the register holding the value, its width
(1, 2 or 4 bytes), byte order and signedness, and a scale: value = raw * scale, in the kind's
unit (bpm, rpm, W). It is read `rate_hz` times a second with one SMBus transaction. A device
that does not answer (NAK: EREMOTEIO, a loose wire, no power) is a lost link: the manager
reopens the bus with backoff, logging once per outage.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tracker.sensors.clock import Reading
from tracker.sensors.config import SensorConfig
from tracker.sensors.link import LinkContext, Pacer, SensorError


def _smbus(bus: int) -> Any:
    from smbus2 import SMBus

    return SMBus(bus)


def _why(e: OSError) -> str:
    return os.strerror(e.errno) if isinstance(e.errno, int) else str(e)


class I2cLink:
    def __init__(
        self, cfg: SensorConfig, ctx: LinkContext, *, open_bus: Callable[[int], Any] = _smbus
    ) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self._open_bus = open_bus
        self._bus: Any = None
        self._pacer = Pacer(cfg.rate_hz, ctx.stop)

    @property
    def where(self) -> str:
        return f"bus {self.cfg.bus} address 0x{self.cfg.i2c_address:02x}"

    def open(self) -> None:
        assert self.cfg.bus is not None
        try:
            self._bus = self._open_bus(self.cfg.bus)
        except OSError as e:
            raise SensorError(f"/dev/i2c-{self.cfg.bus}: {_why(e)}") from e
        self.read()  # a device that does not answer is not connected
        self._pacer.start()

    def read(self) -> float:
        """One value from the register, scaled."""
        c = self.cfg
        assert c.i2c_address is not None and c.register is not None
        try:
            if c.width == 1:
                raw = bytes([self._bus.read_byte_data(c.i2c_address, c.register)])
            else:
                raw = bytes(self._bus.read_i2c_block_data(c.i2c_address, c.register, c.width))
        except OSError as e:
            raise SensorError(f"{self.where}: {_why(e)}") from e
        if len(raw) != c.width:
            self.ctx.status.malformed += 1
            raise SensorError(f"{self.where}: read {len(raw)} bytes, expected {c.width}")
        return int.from_bytes(raw, c.endian, signed=c.signed) * c.scale  # type: ignore[arg-type]

    def poll(self, timeout: float) -> list[Reading]:
        now = self._pacer.due(timeout)
        if now is None:
            return []
        value = self.read()
        assert self.cfg.kind is not None
        return [Reading(now, self.cfg.kind, value, self.cfg.label)]

    def close(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.close()
