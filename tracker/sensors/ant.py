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

Every ANT entry is a channel on ONE shared node (one stick, 8 channels): the first link to open
starts the node and its dispatch thread, later ones add a channel, a link's close closes its
channel (the slot is reused, never removed: openant dispatches by list index), and the last
close stops the node. The manager runs each link in its own thread, so the node is guarded by
a lock. A sensor silent for `silence_s` is a lost link and reopens only its own channel; a stick
that is unplugged (the node's thread ends, or a channel command fails) makes every ANT link
lost, and the first to reconnect reopens the node once for all of them.
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
from tracker.sensors.link import LinkContext, MissingLibrary, SensorError

log = logging.getLogger(__name__)

INSTALL_HINT = "openant is not installed (pip install 'pi-live-tracker[ant]')"
# profile -> (ANT+ device type, channel period in 1/32768 s)
PROFILES = {"hr": (120, 8070), "power": (11, 8182), "speed_cadence": (121, 8086),
            "cadence": (122, 8102)}  # fmt: skip
RF_FREQ = 57  # 2457 MHz, the ANT+ frequency
CHANNEL_RECEIVE = 0x00  # openant Channel.Type.BIDIRECTIONAL_RECEIVE
SEARCH_FOREVER = 0xFF
EVENT_CHANNEL_CLOSED = 0x07  # openant Message.Code: the channel is closed, its slot reusable
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


# --- the shared stick ------------------------------------------------------------------------

STOP_TIMEOUT_S = 3.0  # longest a node's stop (joining openant's threads) is waited for
LOCK_TIMEOUT_S = 120.0  # longest a link waits for another's channel setup (openant: 10 s a command)


def _openant_node() -> Any:
    from openant.easy.node import Node

    return Node()


def _ignore(data: Any) -> None:
    """The callback of a free channel slot: a late packet for a closed link goes nowhere."""


class _Attachment:
    """One link's channel on one generation of the node."""

    def __init__(self, generation: int, channel: Any) -> None:
        self.generation = generation
        self.channel = channel


class AntStick:
    """One openant node (one USB stick) shared by every ANT link: one channel per link.

    All changes happen under `lock`; `alive` is lock-free (plain reads) so a poll never waits
    for another link's channel setup.
    """

    def __init__(self, make_node: Callable[[], Any], network_key: list[int]) -> None:
        self._make_node = make_node
        self._key = network_key
        self.lock = threading.Lock()
        self.node: Any = None
        self._runner: threading.Thread | None = None
        self.generation = 0  # bumped at every node open: attachments of older ones are stale
        self._failed = False
        self._free: list[Any] = []  # closed channels of the current node, reusable
        self.users = 0  # attachments on the current node

    def attach(self, device: int, device_type: int, period: int,
               on_data: Callable[[Any], None]) -> _Attachment:  # fmt: skip
        """Open a receive channel for one device; start the node first if it is not running."""
        if not self.lock.acquire(timeout=LOCK_TIMEOUT_S):
            raise SensorError("the ANT+ stick is busy (another channel's setup)")
        try:
            if self.node is not None and not self._usable():
                self._teardown()  # unplugged: the first link back reopens it for all
            if self.node is None:
                self._start_node()
            node = self.node
            if self._free:
                channel = self._free.pop()
            elif len(node.channels) >= getattr(node, "max_channels", 8):
                raise SensorError(f"all {len(node.channels)} channels of the ANT+ stick in use")
            else:
                channel = self._command(node.new_channel, CHANNEL_RECEIVE, 0x00, 0x01)
            try:
                self._command(channel.set_search_timeout, SEARCH_FOREVER)
                self._command(channel.set_id, device, device_type, 0)
                self._command(channel.enable_extended_messages, 1)
                self._command(channel.set_period, period)
                self._command(channel.set_rf_freq, RF_FREQ)
                channel.on_broadcast_data = on_data
                channel.on_burst_data = on_data
                self._command(channel.open)
            except SensorError:
                channel.on_broadcast_data = channel.on_burst_data = _ignore
                raise
            self.users += 1
            return _Attachment(self.generation, channel)
        finally:
            if self.users == 0 and self.node is not None:
                self._teardown()  # the only link failed to set up: nothing keeps the stick
            self.lock.release()

    def alive(self, att: _Attachment) -> bool:
        return att.generation == self.generation and self.node is not None and self._usable()

    def detach(self, att: _Attachment) -> None:
        """Close a link's channel; the last one stops the node. Stale attachments: nothing."""
        if not self.lock.acquire(timeout=LOCK_TIMEOUT_S):
            raise SensorError("the ANT+ stick is busy (another channel's setup)")
        try:
            if att.generation != self.generation or self.node is None:
                return  # that node was already torn down (unplugged, then reopened or not)
            self.users -= 1
            att.channel.on_broadcast_data = att.channel.on_burst_data = _ignore
            if self._usable():
                try:
                    self._command(att.channel.close)
                    # The close answer comes first; the slot is reusable once this event is in.
                    self._command(att.channel.wait_for_event, [EVENT_CHANNEL_CLOSED])
                    self._free.append(att.channel)
                except SensorError as e:
                    log.warning("ANT+ stick: closing a channel failed (%s); reopening it", e)
            if self.users == 0 or not self._usable():
                self._teardown()
        finally:
            self.lock.release()

    def _usable(self) -> bool:
        runner = self._runner
        return not self._failed and runner is not None and runner.is_alive()

    def _command(self, call: Callable[..., Any], *args: Any) -> Any:
        """A command to the stick (openant waits 10 s at most for its answer). A failure means
        the stick is gone or confused: every link on it is lost and the node is reopened."""
        try:
            return call(*args)
        except Exception as e:
            self._failed = True
            raise SensorError(f"ANT+ command failed ({type(e).__name__}: {e})") from e

    def _start_node(self) -> None:
        try:
            node = self._make_node()
        except Exception as e:  # openant's DriverNotFound, pyusb's errors
            raise SensorError(f"no ANT+ USB stick ({type(e).__name__}: {e})") from e
        self.node, self._failed, self._free, self.users = node, False, [], 0
        self.generation += 1
        self._runner = threading.Thread(target=node.start, name="ant-node", daemon=True)
        self._command(node.set_network_key, 0x00, self._key)
        self._runner.start()

    def _teardown(self) -> None:
        node, self.node = self.node, None
        runner, self._runner = self._runner, None
        self._free, self.users = [], 0
        self.generation += 1  # every attachment to the old node is stale now
        if node is None:
            return
        stopper = threading.Thread(target=node.stop, name="ant-node-stop", daemon=True)
        stopper.start()  # openant joins its threads without a timeout
        stopper.join(STOP_TIMEOUT_S)
        if runner is not None and runner.ident is not None:
            runner.join(STOP_TIMEOUT_S)


_sticks: dict[Callable[[], Any], AntStick] = {}
_sticks_lock = threading.Lock()


def shared_stick(make_node: Callable[[], Any], network_key: list[int]) -> AntStick:
    """The one AntStick for this node factory (the real one: one stick for every ANT link)."""
    with _sticks_lock:
        stick = _sticks.get(make_node)
        if stick is None:
            stick = _sticks[make_node] = AntStick(make_node, network_key)
        return stick


# --- the link -------------------------------------------------------------------------------


class AntLink:
    """A Link to one ANT+ sensor: one channel on the shared stick. `make_node` returns an
    openant `easy.node.Node`-like object; links with the same `make_node` share one node."""

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
        self.stick = shared_stick(make_node, network_key)
        self._device_type, self._period = PROFILES[cfg.profile]
        state_dir = ctx.state_dir
        self.pairings = Pairings(state_dir / PAIRINGS_FILE if state_dir else None)
        self._attachment: _Attachment | None = None
        self._queue: queue.Queue[Reading] = queue.Queue(maxsize=1000)
        self._cadence = CrankCadence()
        self._last_packet = 0.0
        self._limited = RateLimitedLog(log, 60.0)
        self.device: int = cfg.device or (self.pairings.get(cfg.label) or 0)

    def open(self) -> None:
        self._cadence.reset()
        self._queue = queue.Queue(maxsize=1000)
        self._attachment = self.stick.attach(
            self.device, self._device_type, self._period, self._on_data
        )
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
        att = self._attachment
        if att is None or not self.stick.alive(att):
            raise SensorError("the ANT+ node stopped (stick unplugged?)")
        if not out and time.monotonic() - self._last_packet >= self.cfg.silence_s:
            raise SensorError(f"no data for {self.cfg.silence_s:g} s")
        return out

    def close(self) -> None:
        att, self._attachment = self._attachment, None
        if att is not None:
            self.stick.detach(att)
