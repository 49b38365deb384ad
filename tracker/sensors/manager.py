"""The sensor manager: one supervised link per `[[sensors]]` entry, samples to the recorder.

    sensor threads (one a link; the BLE links' calls run on one shared event loop)
        --Reading(monotonic)--> SensorClock --Sample(GPS UTC)--> out (the recorder's inbox)

Every link runs in its own thread the source session the GPS and the inputs run
(tracker/source.py): open, one poll a step of the worker loop, close when lost, and open again
until the shared stop event is set. A sensor that is off, out of range or unplugged is one
WARNING line when the outage starts and one INFO line when it is back; reconnection waits
(jittered) double from 1 s up to the entry's `reconnect_max_s`. Nothing a sensor does can stop
GPS tracking: a link's exceptions end in its own session (an unexpected one is logged with its
traceback, once a minute at most), and a missing library (bleak, openant) fails only the
entries that need it, with one ERROR line.

BLE links are asyncio (bleak): they share one event loop in one more thread, and each is
driven from its own thread through `OnLoop`, which waits for each call on that loop.

Every blocking call has a timeout: polls wait at most POLL_S, so a stop is seen within that;
opening a BLE link (scan, connect) is cancelled when the stop event is set.

State for status (`status()`) is plain values replaced atomically, read from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tracker.fix import Sample
from tracker.logutil import RateLimitedLog
from tracker.retry import RetryPolicy
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
from tracker.source import Session

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)
R = TypeVar("R")

POLL_S = 0.25  # longest a poll blocks: bounds how long a stop takes to be seen
FIRST_RETRY_S = 1.0
CLOSE_TIMEOUT_S = 3.0  # longest a link's close may take (a BLE disconnect), beyond a poll's own


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
        self._loop: asyncio.AbstractEventLoop | None = None  # the BLE links' one asyncio loop
        ble_threads: list[threading.Thread] = []
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
                # Its own scan and connect timeouts bound an open; this bounds them all.
                open_s = cfg.scan_timeout_s + cfg.connect_timeout_s + 2 * CLOSE_TIMEOUT_S
                link = OnLoop(link, self._ble_loop(), stop, open_s)  # type: ignore[arg-type]
            thread = threading.Thread(target=self._run, args=(cfg, status, link),
                                      name=f"sensor-{cfg.label}", daemon=True)  # fmt: skip
            (ble_threads if cfg.type == "ble" else self.threads).append(thread)
        if ble_threads:
            # Last: it serves the links' closes, so it ends after their threads.
            self.threads += [*ble_threads, threading.Thread(
                target=self._run_ble_loop, args=(ble_threads,), name="sensors-ble", daemon=True
            )]  # fmt: skip

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

    def _run(self, cfg: SensorConfig, status: SensorStatus, link: Link) -> None:
        """A link's thread: the source session (tracker/source.py) in the worker loop. Not a
        watchdog component (a dead strap must not restart the GPS); its heartbeat is shown in
        status."""

        def open_link() -> Link:
            try:
                link.open()
            except BaseException:
                _quietly(cfg, link.close)  # what a failed open left half done
                raise
            return link

        def beat(now: float) -> None:
            status.heartbeat = now

        session: Session[Link, list[Reading]] = Session(
            f"sensor {cfg.label} ({cfg.type})", open=open_link,
            read=lambda link: link.poll(POLL_S), got=lambda r, _: self.emit(status, r),
            close=lambda link: link.close(), status=status, log=log,
            retry=RetryPolicy(FIRST_RETRY_S, cfg.reconnect_max_s), opened="connected",
            up="connected", expected=(Exception,), why=lambda e: self._reason(cfg, e),
        )  # fmt: skip
        try:
            session.run(f"sensor {cfg.label}", self._stop, beat=beat)
        finally:
            self.emit(status, [])  # release held samples if the offset is known by now

    def _reason(self, cfg: SensorConfig, e: BaseException) -> str:
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

    def _ble_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            import asyncio

            self._loop = asyncio.new_event_loop()
        return self._loop

    def _run_ble_loop(self, link_threads: list[threading.Thread]) -> None:
        """The BLE links' loop, until the stop and the end of every link's thread (their
        closes run on it); what is still pending then is cancelled."""
        import asyncio

        loop = self._ble_loop()

        async def serve() -> None:
            while not self._stop.is_set() or any(t.is_alive() for t in link_threads):
                await asyncio.sleep(POLL_S)

        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()


class OnLoop:
    """An AsyncLink as a Link: each call runs on the BLE links' shared loop and is waited for
    from the link's own thread, so a BLE link runs the same session as every other. A wait
    ends with the call, its deadline, or (but for close) the stop event, which cancels the
    call: a scan or a connect in progress is interrupted at shutdown."""

    def __init__(self, link: AsyncLink, loop: asyncio.AbstractEventLoop, stop: threading.Event,
                 open_s: float) -> None:  # fmt: skip
        self.link = link
        self._loop = loop
        self._stop = stop
        self._open_s = open_s

    def open(self) -> None:
        self._call(self.link.open(), self._open_s, stoppable=True)

    def poll(self, timeout: float) -> list[Reading]:
        return self._call(self.link.poll(timeout), timeout + CLOSE_TIMEOUT_S, stoppable=True)

    def close(self) -> None:
        self._call(self.link.close(), CLOSE_TIMEOUT_S, stoppable=False)

    def _call(self, coro: Coroutine[Any, Any, R], timeout: float, *, stoppable: bool) -> R:
        import asyncio
        import concurrent.futures

        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        deadline = time.monotonic() + timeout
        while not future.done():
            concurrent.futures.wait([future], timeout=POLL_S)
            if future.done():
                break
            if stoppable and self._stop.is_set():
                future.cancel()
                raise SensorError("stopping")
            if time.monotonic() > deadline:
                future.cancel()
                raise SensorError(f"no answer in {timeout:g} s")
        return future.result()


def _quietly(cfg: SensorConfig, close: Callable[[], object]) -> None:
    try:
        close()
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
