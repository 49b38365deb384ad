"""ANT+ sensors through openant and a USB ANT+ stick: heart rate, bike power, speed/cadence.

openant gives us the node (the stick) and its channels; the data pages are decoded here, by
pure functions tested against the ANT+ device profiles' byte layouts, so cadence goes through
the same `gatt.CrankCadence` as Bluetooth and a bad page is a count, never an exception:

  heart rate (device type 120): every page's byte 7 is the computed heart rate (0 = invalid).
  bike power (11): page 0x10, standard power-only: byte 3 instantaneous cadence (0xFF = none),
      bytes 6-7 instantaneous power (u16 LE). Other pages (torque, calibration) are ignored.
  speed and cadence (121): no page byte; bytes 0-1 cadence event time (1/1024 s), 2-3
      cumulative cadence revolutions.
  cadence only (122): bytes 4-5 event time (1/1024 s), 6-7 cumulative revolutions, on every
      page.

`device = 0` opens the channel as a wildcard: it pairs with the first device of the profile in
range. Its device number (from the extended message bytes) is then remembered, in memory and in
`ant-pairings.json` beside the database, so a reconnect, or the next ride, takes the rider's own
strap and not a neighbour's.

Each link opens its own node: one ANT+ stick has 8 channels, but openant's node is one process
object per stick, so several ANT entries need several sticks (or one entry per stick).
A stick that is unplugged, or a sensor silent for `silence_s`, is a lost link.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tracker.logutil import RateLimitedLog
from tracker.sensors.clock import Reading
from tracker.sensors.config import SensorConfig
from tracker.sensors.gatt import CrankCadence, CrankData, MalformedPacket
from tracker.sensors.manager import LinkContext, MissingLibrary, SensorError

log = logging.getLogger(__name__)

INSTALL_HINT = "openant is not installed (pip install 'tracker[ant]')"
# profile -> (ANT+ device type, channel period in 1/32768 s)
PROFILES = {"hr": (120, 8070), "power": (11, 8182), "speed_cadence": (121, 8086),
            "cadence": (122, 8102)}  # fmt: skip
RF_FREQ = 57  # 2457 MHz, the ANT+ frequency
CHANNEL_RECEIVE = 0x00  # openant Channel.Type.BIDIRECTIONAL_RECEIVE
SEARCH_FOREVER = 0xFF
PAIRINGS_FILE = "ant-pairings.json"


# --- pure page decoders ---------------------------------------------------------------------


def _need8(data: bytes) -> None:
    if len(data) < 8:
        raise MalformedPacket(f"ANT+ page of {len(data)} bytes, expected 8")


def decode_hr(data: bytes) -> int | None:
    """Heart rate in bpm from any heart rate page, None when the strap says invalid (0)."""
    _need8(data)
    return data[7] or None


def decode_power(data: bytes) -> tuple[int, int | None] | None:
    """(watts, cadence or None) from a standard power-only page; None for other pages."""
    _need8(data)
    if data[0] != 0x10:
        return None
    cadence = None if data[3] == 0xFF else data[3]
    return data[6] | data[7] << 8, cadence


def decode_speed_cadence(data: bytes) -> CrankData:
    _need8(data)
    return CrankData(data[2] | data[3] << 8, data[0] | data[1] << 8)


def decode_cadence(data: bytes) -> CrankData:
    _need8(data)
    return CrankData(data[6] | data[7] << 8, data[4] | data[5] << 8)


def extended_device_number(data: bytes) -> int | None:
    """The sending device's number from an extended (flagged) message, if present."""
    if len(data) >= 13 and data[8] & 0x80:
        return data[9] | data[10] << 8
    return None


# --- remembering the paired device ------------------------------------------------------------


class Pairings:
    """label -> device number, kept in a small JSON file. Failures are logged, never raised."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mem: dict[str, int] = {}
        if path is not None:
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
                self._mem = {str(k): int(v) for k, v in data.items()}

    def get(self, label: str) -> int | None:
        return self._mem.get(label)

    def remember(self, label: str, device: int) -> None:
        self._mem[label] = device
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self._mem, indent=1, sort_keys=True))
            tmp.replace(self.path)
        except OSError as e:
            log.warning("cannot save ANT+ pairing to %s: %s (kept for this run)", self.path, e)


# --- the link -------------------------------------------------------------------------------


def _openant_node() -> Any:
    from openant.easy.node import Node

    return Node()


class AntLink:
    """A Link to one ANT+ sensor. `make_node` returns an openant `easy.node.Node`-like object."""

    def __init__(
        self,
        cfg: SensorConfig,
        ctx: LinkContext,
        *,
        make_node: Callable[[], Any] | None = None,
        network_key: list[int] | None = None,
    ) -> None:
        if make_node is None or network_key is None:
            try:
                from openant.devices import ANTPLUS_NETWORK_KEY
            except ImportError:
                raise MissingLibrary(INSTALL_HINT) from None
            make_node = make_node or _openant_node
            network_key = network_key or ANTPLUS_NETWORK_KEY
        assert cfg.profile is not None
        self.cfg = cfg
        self.ctx = ctx
        self._make_node = make_node
        self._key = network_key
        self._device_type, self._period = PROFILES[cfg.profile]
        state_dir = ctx.state_dir
        self.pairings = Pairings(state_dir / PAIRINGS_FILE if state_dir else None)
        self._node: Any = None
        self._runner: threading.Thread | None = None
        self._queue: queue.Queue[Reading] = queue.Queue(maxsize=1000)
        self._cadence = CrankCadence()
        self._last_packet = 0.0
        self._limited = RateLimitedLog(log, 60.0)
        self.device: int = cfg.device or (self.pairings.get(cfg.label) or 0)

    def open(self) -> None:
        self._cadence.reset()
        self._queue = queue.Queue(maxsize=1000)
        try:
            node = self._node = self._make_node()
        except Exception as e:  # openant's DriverNotFound, pyusb's errors
            raise SensorError(f"no ANT+ USB stick ({type(e).__name__}: {e})") from e
        try:
            node.set_network_key(0x00, self._key)
            channel = node.new_channel(CHANNEL_RECEIVE, 0x00, 0x01)
            channel.on_broadcast_data = self._on_data
            channel.on_burst_data = self._on_data
            channel.set_search_timeout(SEARCH_FOREVER)
            channel.set_id(self.device, self._device_type, 0)
            channel.enable_extended_messages(1)
            channel.set_period(self._period)
            channel.set_rf_freq(RF_FREQ)
            channel.open()
        except Exception as e:
            raise SensorError(f"ANT+ channel setup failed ({type(e).__name__}: {e})") from e
        self._runner = threading.Thread(
            target=node.start, name=f"ant-{self.cfg.label}", daemon=True
        )
        self._runner.start()
        self._last_packet = time.monotonic()

    def _on_data(self, data: Any) -> None:
        """openant's callback, on its thread: decode, queue. Never raises."""
        now = time.monotonic()
        data = bytes(data)
        number = extended_device_number(data)
        if number is not None and number != self.device:
            if self.device:
                return  # another device of the same type: not ours
            self.device = number
            log.info("sensor %s: paired with ANT+ device %d", self.cfg.label, number)
            self.pairings.remember(self.cfg.label, number)
        self._last_packet = now
        try:
            readings = self._decode(data, now)
        except MalformedPacket as e:
            self.ctx.status.malformed += 1
            self._limited.warning("malformed", "sensor %s: %s", self.cfg.label, e)
            return
        for r in readings:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(r)

    def _decode(self, data: bytes, now: float) -> list[Reading]:
        profile, kinds, label = self.cfg.profile, self.cfg.kinds, self.cfg.label
        out: list[Reading] = []
        crank = None
        if profile == "hr":
            bpm = decode_hr(data)
            if bpm and "hr" in kinds:
                out.append(Reading(now, "hr", float(bpm), label))
        elif profile == "power":
            power = decode_power(data)
            if power is not None:
                watts, cadence = power
                if "pwr" in kinds:
                    out.append(Reading(now, "pwr", float(watts), label))
                if cadence is not None and "cad" in kinds:
                    out.append(Reading(now, "cad", float(cadence), label))
        elif profile == "speed_cadence":
            crank = decode_speed_cadence(data)
        else:
            crank = decode_cadence(data)
        if crank is not None and "cad" in kinds:
            rpm = self._cadence.update(crank, now)
            if rpm is not None:
                out.append(Reading(now, "cad", rpm, label))
        return out

    def poll(self, timeout: float) -> list[Reading]:
        out = []
        with contextlib.suppress(queue.Empty):
            out.append(self._queue.get(timeout=timeout))
            while True:
                out.append(self._queue.get_nowait())
        if self._runner is not None and not self._runner.is_alive():
            raise SensorError("the ANT+ node stopped (stick unplugged?)")
        if not out and time.monotonic() - self._last_packet >= self.cfg.silence_s:
            raise SensorError(f"no data for {self.cfg.silence_s:g} s")
        return out

    def close(self) -> None:
        node, self._node = self._node, None
        runner, self._runner = self._runner, None
        if node is not None:
            node.stop()
        if runner is not None:
            runner.join(timeout=2.0)
