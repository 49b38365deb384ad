"""Bluetooth LE sensors through bleak: heart rate straps, cadence sensors, power meters.

One `BleLink` per `[[sensors]]` entry; the manager runs every BLE link as a task on one asyncio
loop in one thread (bleak is asyncio). A link finds its device by address or advertised name
(a scan of at most `scan_timeout_s`), connects (at most `connect_timeout_s`), and subscribes to
what the device offers of:

  - Heart Rate Measurement (0x2A37) for hr. A strap that says it has no skin contact, or sends
    0 bpm, gives no sample: it is off the rider's chest.
  - CSC Measurement (0x2A5B) for cad, from the crank data.
  - Cycling Power Measurement (0x2A63) for pwr, and for cad from its crank data when the
    device has no CSC service (a power meter offering both would otherwise count twice).

The crank data of either goes through `gatt.CrankCadence`. Many cadence sensors and power
meters stop notifying when the crank stops: after `CRANK_STOPPED_S` without a packet, the link
reports cad (and pwr) 0 once a second until they resume. A disconnection (bleak's callback,
which BlueZ calls at the link's supervision timeout) or `silence_s` without any packet is a
lost link. Malformed packets are counted in the status and logged once a minute, never raised.

`scan()` is `tracker sensors scan`: nearby devices with the services they advertise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from tracker.logutil import RateLimitedLog
from tracker.sensors.clock import Reading
from tracker.sensors.config import SensorConfig
from tracker.sensors.gatt import (
    CRANK_STOPPED_S,
    CSC_MEASUREMENT,
    CYCLING_POWER_MEASUREMENT,
    HEART_RATE_MEASUREMENT,
    SERVICE_NAMES,
    CrankCadence,
    MalformedPacket,
    decode_csc,
    decode_cycling_power,
    decode_heart_rate,
)
from tracker.sensors.link import LinkContext, MissingLibrary, SensorError

if TYPE_CHECKING:  # bleak is optional: imported when a link or a scan needs it (_bleak)
    from bleak import BleakClient, BleakScanner
    from bleak.backends.characteristic import BleakGATTCharacteristic
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData

log = logging.getLogger(__name__)

INSTALL_HINT = "bleak is not installed (pip install 'pi-live-tracker[ble]')"


def _bleak() -> tuple[type[BleakScanner], type[BleakClient]]:
    try:
        from bleak import BleakClient, BleakScanner
    except ImportError:
        raise MissingLibrary(INSTALL_HINT) from None
    return BleakScanner, BleakClient


class BleLink:
    """An AsyncLink to one BLE device. `scanner` and `client_class` default to bleak's."""

    def __init__(
        self,
        cfg: SensorConfig,
        ctx: LinkContext,
        *,
        scanner: type[BleakScanner] | None = None,
        client_class: type[BleakClient] | None = None,
    ) -> None:
        if scanner is None or client_class is None:
            bleak_scanner, bleak_client = _bleak()
            scanner = scanner or bleak_scanner
            client_class = client_class or bleak_client
        self.cfg = cfg
        self.ctx = ctx
        self._scanner = scanner
        self._client_class = client_class
        self._client: BleakClient | None = None
        self._limited = RateLimitedLog(log, 60.0)
        self._pending: list[Reading] = []
        self._wake = asyncio.Event()
        self._lost = False
        self._last_packet = 0.0
        self._last_crank = 0.0
        self._last_zero = 0.0
        self._last_power = 0.0
        self._crank_source: str | None = None  # the measurement cadence comes from
        self._has_power = False
        self._cadence = CrankCadence()
        self.subscribed: list[str] = []

    @property
    def _extra(self) -> dict[str, Any]:
        return {"bluez": {"adapter": self.cfg.adapter}} if self.cfg.adapter else {}

    def _matches(self, device: BLEDevice, adv: AdvertisementData) -> bool:
        if self.cfg.address:
            return str(device.address).upper() == self.cfg.address
        return self.cfg.name in (getattr(adv, "local_name", None), device.name)

    async def open(self) -> None:
        self._pending, self._lost, self.subscribed = [], False, []
        self._wake = asyncio.Event()  # bound to the running loop
        self._cadence.reset()
        try:
            await self._connect()
        except SensorError:
            raise
        except TimeoutError:  # asyncio.TimeoutError is TimeoutError since 3.11
            raise SensorError("timed out connecting") from None
        except Exception as e:  # bleak's and the D-Bus layer's many error types
            raise SensorError(f"{type(e).__name__}: {e}") from e
        now = time.monotonic()
        self._last_packet = self._last_crank = self._last_power = self._last_zero = now

    async def _connect(self) -> None:
        cfg = self.cfg
        device = await asyncio.wait_for(
            self._scanner.find_device_by_filter(
                self._matches, timeout=cfg.scan_timeout_s, **self._extra
            ),
            timeout=cfg.scan_timeout_s + 5,
        )
        if device is None:
            sought = cfg.address or repr(cfg.name)
            raise SensorError(f"{sought} not seen in a {cfg.scan_timeout_s:g} s scan")
        client = self._client = self._client_class(
            device,
            disconnected_callback=self._on_disconnect,
            timeout=cfg.connect_timeout_s,
            **self._extra,
        )
        await asyncio.wait_for(client.connect(), timeout=cfg.connect_timeout_s + 5)
        offered = {
            uuid
            for uuid in (HEART_RATE_MEASUREMENT, CSC_MEASUREMENT, CYCLING_POWER_MEASUREMENT)
            if client.services.get_characteristic(uuid) is not None
        }
        kinds = cfg.kinds
        wanted: list[str] = []
        if HEART_RATE_MEASUREMENT in offered and "hr" in kinds:
            wanted.append(HEART_RATE_MEASUREMENT)
        if CSC_MEASUREMENT in offered and "cad" in kinds:
            wanted.append(CSC_MEASUREMENT)
        power_cadence = "cad" in kinds and CSC_MEASUREMENT not in wanted
        if CYCLING_POWER_MEASUREMENT in offered and ("pwr" in kinds or power_cadence):
            wanted.append(CYCLING_POWER_MEASUREMENT)
        if not wanted:
            raise SensorError(
                "offers no heart rate, speed/cadence or cycling power measurement for "
                f"{', '.join(kinds)}"
            )
        self._crank_source = (
            CSC_MEASUREMENT if CSC_MEASUREMENT in wanted
            else CYCLING_POWER_MEASUREMENT if power_cadence and CYCLING_POWER_MEASUREMENT in wanted
            else None
        )  # fmt: skip
        self._has_power = CYCLING_POWER_MEASUREMENT in wanted and "pwr" in kinds
        for uuid in wanted:
            await asyncio.wait_for(
                client.start_notify(uuid, self._notified(uuid)),
                timeout=cfg.connect_timeout_s,
            )
            self.subscribed.append(uuid)

    def _on_disconnect(self, client: BleakClient) -> None:
        self._lost = True
        self._wake.set()

    def _notified(self, uuid: str) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        def callback(characteristic: BleakGATTCharacteristic, data: bytearray) -> None:
            self.feed(uuid, bytes(data), time.monotonic())

        return callback

    def feed(self, uuid: str, data: bytes, now: float) -> None:
        """Decode one notification into pending readings. Never raises on bad input."""
        self._last_packet = now
        try:
            readings = self._decode(uuid, data, now)
        except MalformedPacket as e:
            self.ctx.status.malformed += 1
            self._limited.warning(
                "malformed", "sensor %s: malformed packet (%s): %s", self.cfg.label, e, data.hex()
            )
            return
        if readings:
            self._pending.extend(readings)
            self._wake.set()

    def _decode(self, uuid: str, data: bytes, now: float) -> list[Reading]:
        label = self.cfg.label
        out = []
        if uuid == HEART_RATE_MEASUREMENT:
            hr = decode_heart_rate(data)
            if hr.bpm > 0 and hr.contact is not False:
                out.append(Reading(now, "hr", float(hr.bpm), label))
            return out
        if uuid == CSC_MEASUREMENT:
            crank = decode_csc(data).crank
        else:
            power = decode_cycling_power(data)
            crank = power.crank
            if self._has_power:
                self._last_power = now
                out.append(Reading(now, "pwr", float(max(0, power.watts)), label))
        if crank is not None and uuid == self._crank_source:
            self._last_crank = now
            rpm = self._cadence.update(crank, now)
            if rpm is not None:
                out.append(Reading(now, "cad", rpm, label))
        return out

    async def poll(self, timeout: float) -> list[Reading]:
        if not self._pending and not self._lost:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        if self._lost:
            raise SensorError("disconnected")
        out, self._pending = self._pending, []
        now = time.monotonic()
        if now - self._last_packet >= self.cfg.silence_s:
            raise SensorError(f"no data for {self.cfg.silence_s:g} s")
        out.extend(self.stopped_crank(now))
        return out

    def stopped_crank(self, now: float) -> list[Reading]:
        """Zero cadence and power, once a second, while a crank sensor sends nothing."""
        if now - self._last_zero < 1.0:
            return []
        out = []
        if self._crank_source is not None and now - self._last_crank >= CRANK_STOPPED_S:
            out.append(Reading(now, "cad", 0.0, self.cfg.label))
        if self._has_power and now - self._last_power >= CRANK_STOPPED_S:
            out.append(Reading(now, "pwr", 0.0, self.cfg.label))
        if out:
            self._last_zero = now
        return out

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.disconnect()


# --- tracker sensors scan -------------------------------------------------------------------


class SeenDevice(TypedDict):
    """One device of a scan, as `tracker sensors scan --json` prints it."""

    address: str
    name: str | None
    rssi: int | None
    services: list[str]
    usable: bool  # offers a service a [[sensors]] entry can read


async def scan(
    timeout: float, adapter: str | None = None, scanner: type[BleakScanner] | None = None
) -> list[SeenDevice]:
    """Nearby BLE devices, strongest first, with the services they advertise."""
    scanner = scanner or _bleak()[0]
    extra: BleakScanner.ExtraArgs = {"bluez": {"adapter": adapter}} if adapter else {}
    found = await scanner.discover(timeout=timeout, return_adv=True, **extra)
    out: list[SeenDevice] = []
    for device, adv in found.values():
        uuids = [u.lower() for u in (adv.service_uuids or [])]
        out.append(
            {
                "address": device.address,
                "name": adv.local_name or device.name,
                "rssi": adv.rssi,
                "services": [SERVICE_NAMES.get(u, u) for u in uuids],
                "usable": any(u in SERVICE_NAMES for u in uuids),
            }
        )
    out.sort(key=lambda d: (not d["usable"], -(d["rssi"] or -999)))
    return out


def render_scan(devices: list[SeenDevice]) -> str:
    if not devices:
        return "no Bluetooth LE devices seen"
    lines = []
    for d in devices:
        services = ", ".join(d["services"]) or "no services advertised"
        mark = "*" if d["usable"] else " "
        lines.append(
            f"{mark} {d['address']}  {d['rssi']:>4} dBm  {d['name'] or '(no name)'}: {services}"
        )
    lines.append("* offers heart rate, speed and cadence, or cycling power: usable as")
    lines.append('  [[sensors]] type = "ble" with address = "..." or name = "..."')
    return "\n".join(lines)
