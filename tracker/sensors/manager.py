"""The sensor manager: one supervised link per `[[sensors]]` entry, samples to the recorder.

    sensor threads (i2c, ant, simulated: one each; ble: one event loop for all)
        --Reading(monotonic)--> SensorClock --Sample(GPS UTC)--> out (the recorder's inbox)

Every link runs the same loop: open, poll until lost, close, wait, again, until the shared stop
event is set. A sensor that is off, out of range or unplugged is one WARNING line when the
outage starts and one INFO line when it is back; reconnection waits double from 1 s up to the
entry's `reconnect_max_s`. Nothing a sensor does can stop GPS tracking: a link's exceptions end
in its own loop (an unexpected one is logged with its traceback, once a minute at most), and a
missing library (bleak, openant) fails only the entries that need it, with one ERROR line.

Every blocking call has a timeout: polls wait at most POLL_S, so a stop is seen within that;
opening a BLE link (scan, connect) is cancelled when the stop event is set.

State for status (`status()`) is plain values replaced atomically, read from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tracker.fix import Sample
from tracker.logutil import RateLimitedLog
from tracker.sensors.clock import Reading, SensorClock
from tracker.sensors.config import SensorConfig

# The link contract moved to tracker/sensors/link.py (the links import it without importing
# this module); its names stay importable from here for code written against the manager.
from tracker.sensors.link import (  # noqa: F401
    AsyncLink,
    Link,
    LinkContext,
    MissingLibrary,
    Pacer,
    SensorError,
    SensorStatus,
)
from tracker.worker import run_loop, run_loop_async

log = logging.getLogger(__name__)

POLL_S = 0.25  # longest a poll blocks: bounds how long a stop takes to be seen
FIRST_RETRY_S = 1.0
CLOSE_TIMEOUT_S = 3.0  # longest a link's close may take (a BLE disconnect)


def default_link(cfg: SensorConfig, ctx: LinkContext) -> Link | AsyncLink:
    """The real link for an entry; raises MissingLibrary when its library is not installed."""
    if cfg.type == "ble":
        from tracker.sensors.ble import BleLink

        return BleLink(cfg, ctx)
    if cfg.type == "ant":
        from tracker.sensors.ant import AntLink

        return AntLink(cfg, ctx)
    if cfg.type == "i2c":
        from tracker.sensors.i2c import I2cLink

        return I2cLink(cfg, ctx)
    from tracker.sensors.simulated import SimulatedLink

    return SimulatedLink(cfg, ctx)


class Outage:
    """Backoff and once-per-outage logging for one link."""

    def __init__(self, cfg: SensorConfig, status: SensorStatus) -> None:
        self.cfg = cfg
        self.status = status
        self.delay = FIRST_RETRY_S
        self.started: float | None = None

    @property
    def who(self) -> str:
        return f"sensor {self.cfg.label} ({self.cfg.type})"

    def failed(self, reason: str, *, lost: bool = False) -> float:
        """Record a failed open or a lost link; return how long to wait before the next try."""
        self.status.error = reason
        self.status.state = "lost" if self.status.connects else "connecting"
        if lost:
            log.warning("%s lost (%s); reconnecting", self.who, reason)
            self.started = time.monotonic()
            self.delay = FIRST_RETRY_S
            return 0.0  # reconnect at once; back off only if that fails
        if self.started is None:
            self.started = time.monotonic()
            log.warning(
                "%s not available (%s); retrying every %g s at most until it is back",
                self.who, reason, self.cfg.reconnect_max_s,
            )  # fmt: skip
        delay = self.delay
        self.delay = min(self.delay * 2, self.cfg.reconnect_max_s)
        return delay

    def connected(self) -> None:
        self.status.connects += 1
        self.status.state = "connected"
        self.status.error = None
        if self.started is None:
            log.info("%s connected", self.who)
        else:
            log.info("%s back after %.0f s", self.who, time.monotonic() - self.started)
        self.started = None
        self.delay = FIRST_RETRY_S


class SensorManager:
    """Starts and supervises the sensor links. `start()` once; they stop on `stop`."""

    def __init__(
        self,
        sensors: tuple[SensorConfig, ...] | list[SensorConfig],
        out: Callable[[list[Sample]], None],
        stop: threading.Event,
        clock_offset: Callable[[], float | None],
        *,
        state_dir: Path | None = None,
        make_link: Callable[[SensorConfig, LinkContext], Link | AsyncLink] = default_link,
    ) -> None:
        self.clock = SensorClock(clock_offset)
        self._out = out
        self._stop = stop
        self._limited = RateLimitedLog(log, 60.0)
        self.statuses: list[SensorStatus] = []
        self.threads: list[threading.Thread] = []
        sync: list[tuple[SensorConfig, SensorStatus, Link]] = []
        ble: list[tuple[SensorConfig, SensorStatus, AsyncLink]] = []
        for cfg in sensors:
            status = SensorStatus(cfg.label, cfg.type)
            self.statuses.append(status)
            try:
                link = make_link(cfg, LinkContext(status, self.clock, stop, state_dir))
            except SensorError as e:
                status.state, status.error = "unavailable", str(e)
                log.error("sensor %s (%s) disabled: %s", cfg.label, cfg.type, e)
                continue
            if cfg.type == "ble":
                ble.append((cfg, status, link))  # type: ignore[arg-type]
            else:
                sync.append((cfg, status, link))  # type: ignore[arg-type]
        for cfg, status, link in sync:
            self.threads.append(
                threading.Thread(
                    target=self._run_sync,
                    args=(cfg, status, link),
                    name=f"sensor-{cfg.label}",
                    daemon=True,
                )  # fmt: skip
            )
        if ble:
            self.threads.append(
                threading.Thread(target=self._run_ble, args=(ble,), name="sensors-ble", daemon=True)
            )

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def status(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.statuses]

    def emit(self, status: SensorStatus, readings: list[Reading]) -> None:
        """Convert readings to GPS time (or hold them) and hand the samples to the recorder."""
        if readings:
            status.readings += len(readings)
            for r in readings:
                status.last[r.kind] = r.value
        elif not self.clock.held:
            return
        samples = self.clock.convert(readings)
        if samples:
            self._out(samples)

    # --- the blocking links: one thread each ------------------------------------------------

    def _run_sync(self, cfg: SensorConfig, status: SensorStatus, link: Link) -> None:
        """The shared worker loop (tracker/worker.py) around one session: open the link and
        poll it until it fails, then wait as long as the outage's backoff says."""
        outage = Outage(cfg, status)

        def session() -> float:
            try:
                link.open()
            except Exception as e:  # a driver's own failures, or a bug: never the thread's end
                self._close(cfg, link.close)
                return outage.failed(self._reason(cfg, e))
            outage.connected()
            try:
                while not self._stop.is_set():
                    status.heartbeat = time.monotonic()
                    self.emit(status, link.poll(POLL_S))
            except Exception as e:
                outage.failed(self._reason(cfg, e), lost=True)
            finally:
                self._close(cfg, link.close)
            return 0.0

        def beat(now: float) -> None:
            status.heartbeat = now

        # Not a watchdog component (a dead strap must not restart the GPS): the backoff may
        # wait longer than the usual cap.
        run_loop(f"sensor {cfg.label}", session, self._stop, beat=beat, max_wait_s=3600.0)
        self.emit(status, [])  # release held samples if the offset is known by now
        status.state = "stopped"

    def _close(self, cfg: SensorConfig, close: Callable[[], Any]) -> None:
        try:
            close()
        except Exception as e:
            log.debug("sensor %s: close failed: %s", cfg.label, e)

    def _reason(self, cfg: SensorConfig, e: Exception) -> str:
        if isinstance(e, SensorError | OSError | TimeoutError):
            return str(e) or type(e).__name__
        self._limited.log(
            logging.ERROR, f"bug-{cfg.label}",
            "sensor %s (%s): unexpected %s", cfg.label, cfg.type, type(e).__name__,
        )  # fmt: skip
        log.debug("traceback", exc_info=e)
        return f"{type(e).__name__}: {e}"

    # --- BLE: one asyncio loop for every BLE link ---------------------------------------------

    # asyncio is imported only here: ~8 MB of resident memory a unit without BLE never needs.

    def _run_ble(self, links: list[tuple[SensorConfig, SensorStatus, AsyncLink]]) -> None:
        import asyncio

        asyncio.run(self._ble_main(links))

    async def _ble_main(self, links: list[tuple[SensorConfig, SensorStatus, AsyncLink]]) -> None:
        import asyncio

        tasks = [asyncio.create_task(self._run_async(*entry)) for entry in links]
        while not self._stop.is_set() and not all(t.done() for t in tasks):
            await asyncio.sleep(POLL_S)
        for task in tasks:
            task.cancel()  # interrupts a scan or a connect in progress
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_async(self, cfg: SensorConfig, status: SensorStatus, link: AsyncLink) -> None:
        """The shared worker loop's asyncio form around one session, as `_run_sync`."""
        outage = Outage(cfg, status)

        async def session() -> float:
            try:
                await link.open()
            except Exception as e:
                await self._aclose(cfg, link)
                return outage.failed(self._reason(cfg, e))
            outage.connected()
            try:
                while not self._stop.is_set():
                    status.heartbeat = time.monotonic()
                    self.emit(status, await link.poll(POLL_S))
            except Exception as e:
                outage.failed(self._reason(cfg, e), lost=True)
            finally:
                await self._aclose(cfg, link)
            return 0.0

        def beat(now: float) -> None:
            status.heartbeat = now

        try:
            await run_loop_async(f"sensor {cfg.label}", session, self._stop, beat=beat,
                                 max_wait_s=3600.0, poll_s=POLL_S)  # fmt: skip
        finally:
            await self._aclose(cfg, link)  # a scan or connect cancelled by the stop
            self.emit(status, [])
            status.state = "stopped"

    async def _aclose(self, cfg: SensorConfig, link: AsyncLink) -> None:
        import asyncio

        try:
            await asyncio.wait_for(asyncio.shield(link.close()), timeout=CLOSE_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.debug("sensor %s: close failed: %s", cfg.label, e)



# --- `tracker doctor`: the sensors' check (tracker/checks.py, tracker/doctor.py) --------------

from typing import TYPE_CHECKING  # noqa: E402 (the check's imports stay with it, here)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tracker.checks import Check, Context

ANT_VENDOR = "0fcf"  # Garmin/Dynastream


def check(ctx: Context) -> Iterator[Check]:
    """What the configured sensors need from the machine (under ctx.root): the Bluetooth
    adapter, an ANT+ stick, the I2C bus (an `i2c:` GPS's too). Only for sensor types configured."""
    from tracker.checks import FAIL, OK, Check

    r = ctx.root
    kinds = {s.type for s in ctx.cfg.sensors}
    if "ble" in kinds:
        wanted = {s.adapter or "hci0" for s in ctx.cfg.sensors if s.type == "ble"}
        for adapter in sorted(wanted):
            if (r / "sys/class/bluetooth" / adapter).exists():
                yield Check("bluetooth", OK, f"adapter {adapter} present")
            else:
                yield Check(
                    "bluetooth", FAIL, f"no Bluetooth adapter {adapter}",
                    "rfkill unblock bluetooth && systemctl enable --now bluetooth "
                    "(on a Pi Zero W/2 W or Pi 3/4/5 the adapter is built in)",
                )  # fmt: skip
    if "ant" in kinds:
        yield _ant_stick(r)
    buses = {s.bus for s in ctx.cfg.sensors if s.type == "i2c" and s.bus is not None}
    if ctx.cfg.gps.device.startswith("i2c:"):
        buses.add(int(ctx.cfg.gps.device.split(":")[1]))
    for bus in sorted(buses):
        if (r / "dev" / f"i2c-{bus}").exists():
            yield Check("i2c", OK, f"/dev/i2c-{bus} present")
        else:
            yield Check(
                "i2c", FAIL, f"no /dev/i2c-{bus}",
                "enable I2C: raspi-config > Interface Options > I2C, then reboot",
            )  # fmt: skip


def _ant_stick(root: Path) -> Check:
    from tracker.checks import FAIL, OK, Check

    for dev in sorted((root / "sys/bus/usb/devices").glob("*")):
        try:
            vendor = (dev / "idVendor").read_text().strip()
        except OSError:
            continue
        if vendor == ANT_VENDOR:
            product = (dev / "idProduct").read_text().strip() if (dev / "idProduct").exists() \
                else "?"  # fmt: skip
            return Check("ant+ stick", OK, f"USB {vendor}:{product} at {dev.name}")
    return Check(
        "ant+ stick", FAIL, "no ANT+ USB stick (vendor 0fcf) plugged in",
        "plug in the stick; scripts/install-pi.sh's udev rule gives it to the service user",
    )  # fmt: skip
