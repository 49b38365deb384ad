"""Sensors: the clock, the config, and each driver through a fake at its narrowest boundary
(bleak's scanner and client, openant's node, smbus2's bus), under the real manager."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import struct
import sys
import threading
import time
from pathlib import Path

import pytest
from support import wait_for

from tracker.config import ConfigError
from tracker.fix import Sample
from tracker.sensors import gatt
from tracker.sensors.ant import AntLink, decode_power, extended_device_number
from tracker.sensors.ble import BleLink, render_scan, scan
from tracker.sensors.clock import JUMP_S, WINDOW_S, Reading, SensorClock
from tracker.sensors.config import SensorConfig, parse_sensors
from tracker.sensors.i2c import I2cLink
from tracker.sensors.manager import (
    LinkContext,
    MissingLibrary,
    SensorError,
    SensorManager,
    SensorStatus,
)
from tracker.sensors.simulated import Rider

# --- the clock ------------------------------------------------------------------------------


class Now:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_clock_holds_readings_until_the_first_fix_then_converts_them():
    offset: list[float | None] = [None]
    clock = SensorClock(lambda: offset[0], clock=Now())
    assert clock.convert([Reading(10.0, "hr", 120, "s")]) == []
    assert clock.convert([Reading(11.0, "hr", 121, "s")]) == []
    assert clock.held == 2
    offset[0] = 1.7e9
    out = clock.convert([Reading(12.0, "cad", 90, "s")])
    assert out == [
        Sample(1.7e9 + 10.0, "hr", 120, "s"),
        Sample(1.7e9 + 11.0, "hr", 121, "s"),
        Sample(1.7e9 + 12.0, "cad", 90, "s"),
    ]
    assert clock.held == 0


def test_clock_holding_is_bounded_and_counts_what_it_drops(caplog):
    clock = SensorClock(lambda: None, max_held=5, clock=Now())
    for i in range(8):
        clock.convert([Reading(float(i), "hr", 100 + i)])
    assert clock.held == 5 and clock.dropped == 3
    assert caplog.text.count("no GPS fix yet") == 1


def test_clock_uses_the_least_delayed_offset_in_its_window():
    now = Now(0.0)
    offset = [1000.0]
    clock = SensorClock(lambda: offset[0], clock=now)
    assert clock.current_offset() == 1000.0
    now.t, offset[0] = 1.0, 999.6  # this fix was handed over 0.4 s later than the first
    assert clock.current_offset() == 1000.0
    now.t, offset[0] = 2.0, 1000.1  # less delayed: taken at once
    assert clock.current_offset() == 1000.1
    now.t, offset[0] = 2.0 + WINDOW_S + 1, 999.9  # the better one left the window
    assert clock.current_offset() == 999.9
    now.t, offset[0] = 40.0, 999.9 - JUMP_S - 5  # the receiver's time stepped back
    assert clock.current_offset() == 999.9 - JUMP_S - 5


# --- config ---------------------------------------------------------------------------------


def test_parse_sensors_valid_entries():
    got = parse_sensors(
        [
            {"type": "ble", "address": "c0:ff:ee:12:34:56"},
            {"type": "ble", "name": "Polar H10 1234", "kinds": ["hr"]},
            {"type": "ant", "profile": "power", "device": 12345},
            {
                "type": "i2c",
                "bus": 1,
                "address": 0x48,
                "register": 0x10,
                "kind": "pwr",
                "width": 2,
                "endian": "little",
                "signed": True,
                "scale": 0.5,
                "rate_hz": 4,
            },
            {"type": "simulated"},
        ]  # fmt: skip
    )
    assert [s.label for s in got] == [
        "C0:FF:EE:12:34:56", "Polar H10 1234", "ant-power-12345", "i2c-1-0x48-pwr", "simulated",
    ]  # fmt: skip
    assert got[1].kinds == ("hr",)
    assert got[3].i2c_address == 0x48 and got[3].kinds == ("pwr",) and got[3].rate_hz == 4.0
    assert got[4].rate_hz == 4.0


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ({"type": "ble"}, "[[sensors]] #1 address: give exactly one of address or name"),
        ([{"type": "sim"}], "[[sensors]] #1 type: 'sim' is not one of"),
        ([{"name": "x"}], "[[sensors]] #1 type: missing"),
        ([{"type": "simulated"}, {"type": "ble", "address": "nope"}], "#2 address: expected a "),
        ([{"type": "ant"}], '[[sensors]] #1 profile: missing (required for type = "ant")'),
        ([{"type": "ant", "profile": "hr", "device": 70000}], "#1 device: expected a whole"),
        (
            [{"type": "i2c", "bus": 1, "address": 0x48, "register": 1, "kind": "hr", "width": 3}],
            "#1 width: 3 is not one of: 1, 2, 4",
        ),
        ([{"type": "simulated", "adress": 1}], '#1 adress: unknown key for type = "simulated"'),
        ([{"type": "simulated", "rate_hz": 100}], "#1 rate_hz: at most 50"),
        (
            [{"type": "simulated"}, {"type": "simulated", "label": "simulated"}],
            "#2 label: 'simulated' is already sensor #1's",
        ),
        ([{"type": "ble", "name": "H", "kinds": ["hr", "speed"]}], "#1 kinds: expected a list"),
        (["ble"], "[[sensors]] #1: must be a table"),
    ],  # fmt: skip
)
def test_parse_sensors_errors_are_one_line_naming_entry_and_key(entries, expected):
    raw = entries if isinstance(entries, list) else [entries]
    with pytest.raises(ConfigError) as e:
        parse_sensors(raw, "/etc/tracker.toml: ")
    message = str(e.value)
    assert expected in message and "\n" not in message
    assert message.startswith("/etc/tracker.toml: ")
    with pytest.raises(ConfigError, match="array of tables"):
        parse_sensors({"type": "ble"})


# --- helpers for the drivers ----------------------------------------------------------------


class Run:
    """The real SensorManager around one link, with a fixed GPS offset and a sample list."""

    OFFSET = 1.75e9

    def __init__(
        self, cfg: SensorConfig | list[SensorConfig], make_link, tmp_path: Path | None = None
    ) -> None:
        self.samples: list[Sample] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.links: list = []

        def make(cfg, ctx):
            link = make_link(cfg, ctx)
            self.links.append(link)
            return link

        self.manager = SensorManager(
            cfg if isinstance(cfg, list) else [cfg],
            self._out, self.stop, lambda: self.OFFSET, state_dir=tmp_path, make_link=make,
        )  # fmt: skip
        self.status = self.manager.statuses[0]

    def _out(self, samples):
        with self.lock:
            self.samples.extend(samples)

    def values(self, kind: str, label: str | None = None) -> list[float]:
        with self.lock:
            return [s.value for s in self.samples
                    if s.kind == kind and label in (None, s.sensor)]  # fmt: skip

    def __enter__(self) -> Run:
        self.manager.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.manager.threads:
            t.join(5)
            assert not t.is_alive(), f"{t.name} did not stop"
        for status in self.manager.statuses:
            assert status.state in ("stopped", "unavailable")


def ble_cfg(**kw) -> SensorConfig:
    base = {"type": "ble", "address": "C0:FF:EE:00:00:01", "reconnect_max_s": 0.2}
    return parse_sensors([{**base, **kw}])[0]


# --- BLE, through fake bleak scanner and client ---------------------------------------------


class FakeDevice:
    def __init__(self, address: str, name: str) -> None:
        self.address, self.name = address, name


class FakeAdv:
    def __init__(self, name, uuids, rssi=-60) -> None:
        self.local_name, self.service_uuids, self.rssi = name, uuids, rssi


class FakeServices:
    def __init__(self, uuids) -> None:
        self.uuids = set(uuids)

    def get_characteristic(self, uuid):
        return f"char-{uuid[4:8]}" if uuid in self.uuids else None


class FakeRadio:
    """The air around the unit: which devices advertise, and the clients connected to them."""

    def __init__(self, address, name, characteristics) -> None:
        self.device = FakeDevice(address, name)
        self.adv = FakeAdv(name, [gatt.HEART_RATE_SERVICE])
        self.characteristics = characteristics
        self.in_range = True
        self.clients: list[FakeClient] = []
        radio = self

        class Scanner:
            @staticmethod
            async def find_device_by_filter(filterfunc, timeout=10.0, **kw):
                await asyncio.sleep(0.01)
                if radio.in_range and filterfunc(radio.device, radio.adv):
                    return radio.device
                return None

            @staticmethod
            async def discover(timeout=5.0, return_adv=False, **kw):
                return {radio.device.address: (radio.device, radio.adv)}

        class Client(FakeClient):
            def __init__(self, device, disconnected_callback=None, timeout=30, **kw):
                super().__init__(radio, device, disconnected_callback)

        self.Scanner, self.Client = Scanner, Client

    @property
    def client(self) -> FakeClient:
        return self.clients[-1]

    def connected(self) -> bool:
        return bool(self.clients) and self.client.is_connected and bool(self.client.callbacks)

    def notify(self, uuid: str, data: bytes) -> None:
        c = self.client
        c.loop.call_soon_threadsafe(c.callbacks[uuid], f"char-{uuid[4:8]}", bytearray(data))

    def drop(self) -> None:
        """The link goes away (strap out of range): bleak calls the disconnected callback."""
        c = self.client
        c.is_connected = False
        c.loop.call_soon_threadsafe(c.disconnected_callback, c)


class FakeClient:
    def __init__(self, radio: FakeRadio, device, disconnected_callback) -> None:
        self.radio, self.device = radio, device
        self.disconnected_callback = disconnected_callback
        self.is_connected = False
        self.callbacks: dict = {}
        self.services = FakeServices(radio.characteristics)
        radio.clients.append(self)

    async def connect(self) -> None:
        self.loop = asyncio.get_running_loop()
        if not self.radio.in_range:
            raise TimeoutError
        self.is_connected = True

    async def start_notify(self, uuid, callback) -> None:
        self.callbacks[uuid] = callback

    async def disconnect(self) -> None:
        self.is_connected = False


def ble_link(radio: FakeRadio):
    return lambda cfg, ctx: BleLink(cfg, ctx, scanner=radio.Scanner, client_class=radio.Client)


HR = gatt.HEART_RATE_MEASUREMENT
CSC = gatt.CSC_MEASUREMENT
CP = gatt.CYCLING_POWER_MEASUREMENT


def test_ble_heart_rate_strap_values_malformed_packets_and_skin_contact():
    radio = FakeRadio("C0:FF:EE:00:00:01", "Strap", [HR])
    with Run(ble_cfg(), ble_link(radio)) as run:
        wait_for(radio.connected, 10, "the strap to be connected")
        radio.notify(HR, bytes([0x06, 72]))  # contact detected, 72 bpm
        radio.notify(HR, bytes([0x01]))  # truncated: counted, not raised
        radio.notify(HR, bytes([0x04, 75]))  # contact lost: off the chest, no sample
        radio.notify(HR, bytes([0x01, 0x90, 0x00]))  # 16-bit 144 bpm
        wait_for(lambda: run.values("hr") == [72.0, 144.0], 10, "two heart rates")
        wait_for(lambda: run.status.malformed == 1, 5, "the malformed packet counted")
        assert run.status.state == "connected"
    assert all(s.sensor == "C0:FF:EE:00:00:01" for s in run.samples)
    # Stamped at arrival (monotonic) plus the GPS offset: today's GPS time, not 1970.
    assert all(s.time > Run.OFFSET for s in run.samples)


def test_ble_cadence_sensor_and_power_meter_by_name():
    radio = FakeRadio("C0:FF:EE:00:00:02", "PowerMeter", [CP])
    cfg = parse_sensors([{"type": "ble", "name": "PowerMeter", "reconnect_max_s": 0.2}])[0]
    with Run(cfg, ble_link(radio)) as run:
        wait_for(radio.connected, 10, "the power meter")
        flags = 0x20  # crank data present
        radio.notify(CP, struct.pack("<HhHH", flags, 250, 100, 1000))
        radio.notify(CP, struct.pack("<HhHH", flags, 260, 102, 1000 + 1365))  # 2 rev in 1.33 s
        wait_for(lambda: run.values("pwr") == [250.0, 260.0], 10, "power")
        wait_for(lambda: len(run.values("cad")) == 1, 10, "cadence")
        assert run.values("cad")[0] == pytest.approx(2 * 60 * 1024 / 1365)


def test_ble_csc_is_preferred_for_cadence_when_a_device_offers_both():
    radio = FakeRadio("C0:FF:EE:00:00:03", "Both", [CSC, CP])
    with Run(ble_cfg(address="C0:FF:EE:00:00:03"), ble_link(radio)) as run:
        wait_for(radio.connected, 10, "the device")
        radio.notify(CP, struct.pack("<HhHH", 0x20, 200, 1, 0))
        radio.notify(CP, struct.pack("<HhHH", 0x20, 200, 50, 1024))  # would be 2940 rpm
        radio.notify(CSC, struct.pack("<BHH", 0x02, 10, 0))
        radio.notify(CSC, struct.pack("<BHH", 0x02, 11, 1024))
        wait_for(lambda: run.values("cad") == [60.0], 10, "cadence from CSC only")
        assert run.values("pwr") == [200.0, 200.0]


def test_ble_reconnects_after_a_drop_and_logs_the_outage_once(caplog):
    caplog.set_level(logging.INFO, logger="tracker.sensors")
    radio = FakeRadio("C0:FF:EE:00:00:01", "Strap", [HR])
    with Run(ble_cfg(), ble_link(radio)) as run:
        wait_for(radio.connected, 10, "first connection")
        radio.notify(HR, bytes([0, 100]))
        wait_for(lambda: run.values("hr") == [100.0], 10, "a value")
        radio.in_range = False
        radio.drop()
        wait_for(lambda: run.status.state == "lost", 10, "the drop noticed")
        wait_for(lambda: len(radio.clients) >= 1 and "not seen" in (run.status.error or ""),
                 10, "failed reconnection attempts")  # fmt: skip
        radio.in_range = True
        wait_for(lambda: run.status.connects == 2 and radio.connected(), 10, "reconnection")
        radio.notify(HR, bytes([0, 101]))
        wait_for(lambda: run.values("hr") == [100.0, 101.0], 10, "values after reconnecting")
    assert caplog.text.count("lost (disconnected)") == 1
    assert caplog.text.count("not available") == 0  # the outage was already announced
    assert caplog.text.count("back after") == 1


def test_ble_silence_is_a_lost_link(caplog):
    radio = FakeRadio("C0:FF:EE:00:00:01", "Strap", [HR])
    with Run(ble_cfg(silence_s=0.3), ble_link(radio)) as run:
        wait_for(lambda: run.status.connects >= 2, 10, "a reconnect after silence")
    assert "lost (no data for 0.3 s); reconnecting" in caplog.text
    assert not radio.clients[0].is_connected  # the silent connection was closed, not leaked


def test_a_ble_scan_in_progress_is_cancelled_at_the_stop_without_an_outage_line(caplog):
    """A BLE link's calls run on the shared loop, waited for from its own thread (OnLoop): the
    stop cancels a scan that would go on for a minute, and is no outage to report."""
    caplog.set_level(logging.INFO, logger="tracker.sensors")
    radio = FakeRadio("C0:FF:EE:00:00:01", "Strap", [HR])
    scanning = threading.Event()
    cancelled = threading.Event()

    async def slow_scan(filterfunc, timeout=10.0, **kw):
        scanning.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    radio.Scanner.find_device_by_filter = staticmethod(slow_scan)
    with Run(ble_cfg(scan_timeout_s=60), ble_link(radio)) as run:
        wait_for(scanning.is_set, 10, "the scan under way")
        stopped_at = time.monotonic()
    assert cancelled.is_set()
    assert time.monotonic() - stopped_at < 5  # the scan's 60 s were not waited for
    assert run.status.state == "stopped" and run.status.connects == 0
    assert "not available" not in caplog.text and " lost " not in caplog.text


def test_ble_device_without_useful_services_is_reported():
    radio = FakeRadio("C0:FF:EE:00:00:01", "Lamp", [])
    with Run(ble_cfg(), ble_link(radio)) as run:
        wait_for(lambda: "offers no heart rate" in (run.status.error or ""), 10, "the reason")


def test_ble_scan_lists_devices_with_their_services():
    radio = FakeRadio("C0:FF:EE:00:00:01", "Strap", [HR])
    devices = asyncio.run(scan(1.0, scanner=radio.Scanner))
    assert devices[0]["services"] == ["heart rate"] and devices[0]["usable"]
    assert "C0:FF:EE:00:00:01" in render_scan(devices) and "heart rate" in render_scan(devices)


def test_missing_bleak_disables_only_that_entry(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "bleak", None)  # import bleak -> ImportError
    stop = threading.Event()
    cfgs = [ble_cfg(), parse_sensors([{"type": "simulated"}])[0]]
    manager = SensorManager(cfgs, lambda s: None, stop, lambda: None)
    assert [s.state for s in manager.statuses] == ["unavailable", "connecting"]
    assert len(manager.threads) == 1  # the simulated sensor still runs
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert lines == [
        "sensor C0:FF:EE:00:00:01 (ble) disabled: bleak is not installed "
        "(pip install 'pi-live-tracker[ble]')"
    ]
    with pytest.raises(MissingLibrary):
        BleLink(cfgs[0], LinkContext(manager.statuses[0], manager.clock))


# --- ANT+, through a fake openant node ------------------------------------------------------


class FakeChannel:
    """openant's easy Channel: one slot of the node, numbered by its index in `node.channels`."""

    def __init__(self, node, number: int) -> None:
        self.node = node
        self.id = number
        self.id_set: tuple | None = None
        self.opened = False
        self.opens = 0

    def set_id(self, device, device_type, trans):
        assert not self.opened, "configuring an open channel"
        self.id_set = (device, device_type, trans)

    def set_search_timeout(self, t): ...
    def enable_extended_messages(self, on): ...
    def set_period(self, p): ...
    def set_rf_freq(self, f): ...

    def on_broadcast_data(self, data):
        assert data

    on_burst_data = on_broadcast_data

    def open(self):
        assert not self.opened, "opening an open channel"
        self.opened = True
        self.opens += 1

    def close(self):
        self.opened = False

    def wait_for_event(self, ok_codes):
        assert ok_codes == [0x07]  # EVENT_CHANNEL_CLOSED, sent after the close
        return (self.id, 1, [0x07])

    def hears(self, device: int, device_type: int) -> bool:
        return bool(self.opened and self.id_set and self.id_set[1] == device_type
                    and self.id_set[0] in (0, device))  # fmt: skip


class AntAir:
    """The USB stick and the ANT+ devices around it; makes openant-like nodes."""

    def __init__(self) -> None:
        self.plugged = True
        self.nodes: list[FakeNode] = []

    def make_node(self):
        if not self.plugged:
            raise RuntimeError("No ANT devices available")  # openant's DriverNotFound-like
        node = FakeNode()
        self.nodes.append(node)
        return node

    def send(self, page: bytes, device: int, device_type: int = 120) -> None:
        """A broadcast with the extended device-number bytes, delivered on openant's thread to
        every open channel of the stick that listens for that device."""
        ext = bytes([0x80, device & 0xFF, device >> 8, device_type, 1])
        node = self.nodes[-1]
        for channel in list(node.channels):
            if channel.hears(device, device_type):
                node.deliver(page + ext, channel.id)

    def open_channels(self) -> list[FakeChannel]:
        return [c for c in self.nodes[-1].channels if c.opened] if self.nodes else []


class FakeNode:
    """openant's easy Node: channels in a list, its dispatch loop (start) indexes it by number."""

    def __init__(self) -> None:
        self.channels: list[FakeChannel] = []
        self.max_channels = 8
        self.inbox: list[tuple[bytes, int]] = []
        self.cond = threading.Condition()
        self.running = True
        self.key = None
        self.started = threading.Event()

    @property
    def channel(self) -> FakeChannel | None:
        return self.channels[0] if self.channels else None

    def set_network_key(self, network, key):
        self.key = key

    def new_channel(self, ctype, network=0, ext_assign=None):
        if len(self.channels) >= self.max_channels:
            raise RuntimeError("Cannot create new channel")
        channel = FakeChannel(self, len(self.channels))
        self.channels.append(channel)
        return channel

    def deliver(self, data: bytes, channel: int = 0) -> None:
        with self.cond:
            self.inbox.append((data, channel))
            self.cond.notify()

    def start(self):  # openant's dispatch loop: runs until stop()
        self.started.set()
        while True:
            with self.cond:
                while self.running and not self.inbox:
                    self.cond.wait(1.0)
                if not self.running:
                    return
                data, number = self.inbox.pop(0)
            self.channels[number].on_broadcast_data(list(data))

    def crash(self):  # the stick pulled: openant's loop ends
        with self.cond:
            self.running = False
            self.cond.notify()

    def stop(self):
        self.crash()


def ant_link(air: AntAir):
    return lambda cfg, ctx: AntLink(cfg, ctx, make_node=air.make_node, network_key=[0] * 8)


def ant_cfg(**kw) -> SensorConfig:
    return parse_sensors([{"type": "ant", "profile": "hr", "reconnect_max_s": 0.2, **kw}])[0]


def hr_page(bpm: int) -> bytes:
    return bytes([0x04, 0, 0, 0, 0, 0, 0, bpm])


def test_ant_pairs_with_the_first_strap_remembers_it_and_ignores_others(tmp_path):
    air = AntAir()
    with Run(ant_cfg(), ant_link(air), tmp_path) as run:
        wait_for(air.open_channels, 10, "the channel open")
        assert air.nodes[0].channel.id_set == (0, 120, 0)  # wildcard search
        air.send(hr_page(130), device=4242)
        wait_for(lambda: run.values("hr") == [130.0], 10, "the first strap's value")
        air.send(hr_page(90), device=777)  # a neighbour's strap: not ours
        air.send(hr_page(131), device=4242)
        air.nodes[-1].deliver(bytes([1, 2, 3]))  # a short message: counted
        wait_for(lambda: run.values("hr") == [130.0, 131.0], 10, "only our strap")
        wait_for(lambda: run.status.malformed == 1, 10, "the malformed page")
        air.nodes[-1].crash()
        wait_for(lambda: len(air.nodes) == 2 and air.open_channels(), 10, "reopened")
        assert air.nodes[-1].channel.id_set == (4242, 120, 0)  # remembered across the reconnect
    assert json.loads((tmp_path / "ant-pairings.json").read_text()) == {"ant-hr": 4242}
    # And across a restart of the daemon: a new link starts with the paired number.
    link = AntLink(ant_cfg(), LinkContext(run.status, run.manager.clock, state_dir=tmp_path),
                   make_node=air.make_node, network_key=[0] * 8)  # fmt: skip
    assert link.device == 4242


def test_ant_stick_missing_at_start_is_retried_and_picked_up(caplog):
    air = AntAir()
    air.plugged = False
    with Run(ant_cfg(device=5), ant_link(air)) as run:
        wait_for(lambda: "no ANT+ USB stick" in (run.status.error or ""), 10, "the reason")
        air.plugged = True
        wait_for(lambda: run.status.state == "connected", 10, "the stick picked up")
        air.send(hr_page(101), device=5)
        wait_for(lambda: run.values("hr") == [101.0], 10, "a value")
    assert caplog.text.count("not available (no ANT+ USB stick") == 1


def test_ant_power_and_speed_cadence_pages():
    assert decode_power(bytes([0x10, 7, 0xFF, 88, 0, 0, 0x2C, 0x01])) == (300, 88)
    assert decode_power(bytes([0x10, 7, 0xFF, 0xFF, 0, 0, 0x2C, 0x01])) == (300, None)
    assert decode_power(bytes([0x12, 0, 0, 0, 0, 0, 0, 0])) is None  # torque page: ignored
    assert extended_device_number(bytes(8) + bytes([0x80, 0x39, 0x30, 11, 1])) == 12345
    assert extended_device_number(bytes(8)) is None
    air = AntAir()
    cfg = parse_sensors([{"type": "ant", "profile": "speed_cadence", "device": 9}])[0]
    with Run(cfg, ant_link(air)) as run:
        wait_for(air.open_channels, 10, "open")
        air.send(struct.pack("<HHHH", 64512, 65535, 0, 0), device=9, device_type=121)
        # both counters rolled over
        air.send(struct.pack("<HHHH", 1024, 2, 0, 0), device=9, device_type=121)
        wait_for(lambda: run.values("cad") == [90.0], 10, "cadence")


def power_page(watts: int, cadence: int) -> bytes:
    return struct.pack("<BBBBHH", 0x10, 1, 0xFF, cadence, 0, watts)


def power_cfg(**kw) -> SensorConfig:
    entry = {"type": "ant", "profile": "power", "device": 12345, "reconnect_max_s": 0.2, **kw}
    return parse_sensors([entry])[0]


def test_ant_hr_and_power_share_one_stick_and_come_back_together_after_an_unplug(caplog):
    air = AntAir()
    with Run([ant_cfg(), power_cfg()], ant_link(air)) as run:
        hr, power = run.manager.statuses
        wait_for(lambda: len(air.open_channels()) == 2, 10, "two channels open")
        assert len(air.nodes) == 1  # one stick for both entries
        assert sorted(c.id_set for c in air.nodes[0].channels) == [(0, 120, 0), (12345, 11, 0)]
        air.send(hr_page(120), device=4242)
        air.send(power_page(250, 85), device=12345, device_type=11)
        wait_for(lambda: run.values("hr") == [120.0], 10, "the strap's value")
        wait_for(lambda: run.values("pwr") == [250.0], 10, "the power meter's value")
        assert run.values("cad") == [85.0]
        air.nodes[0].crash()  # the stick pulled: both links lost, one node reopened for both
        wait_for(lambda: len(air.nodes) == 2 and len(air.open_channels()) == 2, 10, "reopened")
        wait_for(lambda: hr.connects == power.connects == 2, 10, "both back")
        assert sorted(c.id_set for c in air.nodes[1].channels) == [(4242, 120, 0), (12345, 11, 0)]
        air.send(hr_page(121), device=4242)
        air.send(power_page(260, 86), device=12345, device_type=11)
        wait_for(lambda: run.values("hr") == [120.0, 121.0], 10, "the strap after the replug")
        wait_for(lambda: run.values("pwr") == [250.0, 260.0], 10, "power after the replug")
        assert len(air.nodes) == 2  # reopened once, not once per link
    assert caplog.text.count("lost (the ANT+ node stopped") == 2
    assert not air.nodes[1].running  # the last close stopped the node


def test_ant_a_silent_strap_reopens_only_its_own_channel():
    air = AntAir()
    with Run([ant_cfg(device=7, silence_s=0.3), power_cfg()], ant_link(air)) as run:
        hr, power = run.manager.statuses
        wait_for(lambda: hr.connects >= 3, 10, "the strap's channel reopened after silences")
        air.send(power_page(200, 80), device=12345, device_type=11)
        wait_for(lambda: run.values("pwr") == [200.0], 10, "power, undisturbed")
        assert len(air.nodes) == 1 and air.nodes[0].running
        assert len(air.nodes[0].channels) == 2  # the strap's slot is reused, not added
        assert power.connects == 1 and power.state == "connected"


def direct_ant_link(air: AntAir, cfg: SensorConfig) -> AntLink:
    ctx = LinkContext(SensorStatus(cfg.label, "ant"), SensorClock(lambda: None))
    return AntLink(cfg, ctx, make_node=air.make_node, network_key=[0] * 8)


def test_ant_closing_one_link_keeps_the_other_and_the_last_close_stops_the_node():
    air = AntAir()
    hr, power = direct_ant_link(air, ant_cfg(device=7)), direct_ant_link(air, power_cfg())
    hr.open()
    power.open()
    node = air.nodes[0]
    wait_for(node.started.is_set, 10, "the dispatch loop")
    hr.close()
    assert [c.opened for c in node.channels] == [False, True]  # only the strap's channel
    assert node.running and len(air.nodes) == 1
    air.send(power_page(300, 90), device=12345, device_type=11)
    got = wait_for(lambda: power.poll(0.1), 10, "power after the strap's close")
    assert [(r.kind, r.value) for r in got] == [("pwr", 300.0), ("cad", 90.0)]
    hr.open()  # the freed slot is reused
    assert len(node.channels) == 2 and node.channels[0].opens == 2 and node.channels[0].opened
    air.send(hr_page(99), device=7)
    assert [r.value for r in wait_for(lambda: hr.poll(0.1), 10, "the strap again")] == [99.0]
    hr.close()
    assert node.running
    power.close()
    assert not node.running  # the last link closed the node
    power.close()  # twice: nothing
    power.open()  # and the next one starts a new node
    assert len(air.nodes) == 2 and air.nodes[1].running
    power.close()


def test_ant_a_ninth_link_is_refused_without_disturbing_the_eight_on_the_stick():
    air = AntAir()
    links = [direct_ant_link(air, ant_cfg(device=n)) for n in range(1, 10)]
    for link in links[:8]:
        link.open()
    with pytest.raises(SensorError, match="all 8 channels"):
        links[8].open()
    assert len(air.nodes) == 1 and air.nodes[0].running
    assert all(link.stick.alive(link._attachment) for link in links[:8])
    for link in links[:8]:
        link.close()
    assert not air.nodes[0].running


# --- I2C register map, through a fake smbus2 bus --------------------------------------------


class FakeSmbus:
    def __init__(self, registers: dict[int, bytes], address=0x48) -> None:
        self.registers, self.address = registers, address
        self.nak = False
        self.opened = 0

    def open(self, bus):
        self.opened += 1
        return self

    def _check(self, address):
        if self.nak or address != self.address:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")

    def read_byte_data(self, address, register):
        self._check(address)
        return self.registers[register][0]

    def read_i2c_block_data(self, address, register, length):
        self._check(address)
        return list(self.registers[register][:length])

    def close(self):
        pass


def i2c_cfg(**kw) -> SensorConfig:
    base = {"type": "i2c", "bus": 1, "address": 0x48, "register": 0x10, "kind": "pwr",
            "rate_hz": 50, "reconnect_max_s": 0.2}  # fmt: skip
    return parse_sensors([{**base, **kw}])[0]


@pytest.mark.parametrize(
    ("kw", "raw", "value"),
    [
        ({}, b"\x01\x2c", 300.0),
        ({"endian": "little"}, b"\x2c\x01", 300.0),
        ({"signed": True, "scale": 0.5}, b"\xff\x38", -100.0),
        ({"width": 1, "kind": "hr"}, b"\x8c", 140.0),
        ({"width": 4, "scale": 0.001}, b"\x00\x01\x86\xa0", 100.0),
    ],
)
def test_i2c_register_map(kw, raw, value):
    bus = FakeSmbus({0x10: raw})
    cfg = i2c_cfg(**kw)
    with Run(cfg, lambda c, ctx: I2cLink(c, ctx, open_bus=bus.open)) as run:
        wait_for(lambda: run.values(cfg.kind), 10, "a reading")
    assert run.values(cfg.kind)[0] == pytest.approx(value)


def test_i2c_nak_is_a_lost_link_that_comes_back(caplog):
    bus = FakeSmbus({0x10: b"\x00\xc8"})
    with Run(i2c_cfg(), lambda c, ctx: I2cLink(c, ctx, open_bus=bus.open)) as run:
        wait_for(lambda: run.values("pwr"), 10, "a reading")
        bus.nak = True
        wait_for(lambda: "Remote I/O error" in (run.status.error or ""), 10, "the NAK")
        n = len(run.values("pwr"))
        bus.registers[0x10] = b"\x00\xfa"
        bus.nak = False
        wait_for(lambda: 250.0 in run.values("pwr"), 10, "readings again")
        assert run.values("pwr")[:n] == [200.0] * n
        assert run.status.connects == 2
    assert caplog.text.count("lost (bus 1 address 0x48: Remote I/O error)") == 1


# --- simulated --------------------------------------------------------------------------------


def test_simulated_rider_is_plausible_and_deterministic():
    rider = Rider(seed=3)
    values = [rider.values_at(1.75e9 + t) for t in range(0, 3600, 5)]
    assert all(100 <= v["hr"] <= 180 for v in values)
    pedalling = [v for v in values if v["pwr"] > 0]
    assert all(60 <= v["cad"] <= 110 and 100 <= v["pwr"] <= 320 for v in pedalling)
    coasting = [v for v in values if v["pwr"] == 0]
    assert coasting and all(v["cad"] == 0 for v in coasting)  # the rider freewheels sometimes
    assert Rider(seed=3).values_at(1.75e9) == rider.values_at(1.75e9)


def test_simulated_sensor_waits_for_gps_time_then_follows_it():
    offset: list[float | None] = [None]
    stop = threading.Event()
    got: list[Sample] = []
    cfg = parse_sensors([{"type": "simulated", "rate_hz": 20}])[0]
    manager = SensorManager([cfg], got.extend, stop, lambda: offset[0])
    manager.start()
    try:
        wait_for(lambda: manager.statuses[0].state == "connected", 10, "running")
        assert got == []  # no GPS time yet: nothing to follow
        offset[0] = 1.75e9
        wait_for(lambda: len(got) >= 30, 10, "samples")
    finally:
        stop.set()
        manager.threads[0].join(5)
    rider = Rider(cfg.seed)
    for s in got:
        assert s.value == rider.values_at(s.time)[s.kind]


def test_the_commented_examples_in_the_config_file_are_valid():
    import tomllib

    text = (Path(__file__).resolve().parents[1] / "config" / "tracker.toml").read_text()
    part = text[text.index("# Fitness sensors") :]
    lines = [ln[1:] for ln in part.splitlines() if ln.startswith("#[[sensors]]")
             or (ln.startswith("#") and " = " in ln and not ln.startswith("# "))]  # fmt: skip
    got = parse_sensors(tomllib.loads("\n".join(lines))["sensors"])
    assert [s.type for s in got] == ["ble", "ant", "i2c", "simulated"]
