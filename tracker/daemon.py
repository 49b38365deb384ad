"""The daemon's wiring: start the parts in order, stop them in reverse, through one event.

    GPS reader thread ---+
                         +--(inbox queue)--> recorder thread --> SQLite store --> sender threads
    sensor threads ------+                   (the only writer)     ^             (one a backend)
    input threads -------+  (NMEA instruments: samples only)       |
                                                                   |
    button (optional) ------- requests, like the CLI's ------------+

    GPS reader, input threads --(whole NMEA lines, never blocking)--> share server --> TCP clients

Under systemd the main loop is the supervisor (tracker/systemd.py): READY=1, STATUS=, and
WATCHDOG=1 only while the GPS, recorder and every sender thread show recent heartbeats.

Signals only set the shutdown event. On SIGTERM/SIGINT the GPS reader stops reading and hands
over its last epoch, the recorder commits everything pending, and `run()` returns 0, well within
systemd's default 90 s (the budget is SHUTDOWN_BUDGET_S).
"""

from __future__ import annotations

import functools
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from tracker import systemd as sd
from tracker.backends import make_senders
from tracker.config import Config
from tracker.fix import Fix, Sample
from tracker.gps import GpsReader
from tracker.recorder import Recorder
from tracker.runtime import GpsStatus, ShareStatus
from tracker.sensors.manager import SensorManager
from tracker.store import open_store
from tracker.ubx_i2c import open_gps_port
from tracker.worker import run_loop

if TYPE_CHECKING:  # imported where they start, only when configured
    from tracker.button import HardwareButton
    from tracker.inputs import InputReader
    from tracker.senders.base import Sender
    from tracker.sensors.clock import Reading
    from tracker.share import ShareServer
    from tracker.web import StatusServer

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET_S = 15.0


def _lean_malloc() -> None:
    """glibc's allocator, tuned for a daemon on a Pi Zero (scripts/bench.py, `memory`):
    - each thread that allocates gets its own arena (up to 8 per core), whose free memory stays
      resident: two serve a daemon whose threads mostly wait;
    - a reply body read up to its 1 MB cap is one big buffer; by default glibc raises its mmap
      threshold after such a buffer is freed, so the next ones come from the heap and stay
      resident. Fixed thresholds return them to the system when freed.
    Set before any thread starts; a no-op on other C libraries."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)  # M_ARENA_MAX
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD


def _log_fatal_signals() -> None:
    """A fault Python cannot handle (SIGBUS on a memory-mapped -shm that can no longer be
    written, SIGSEGV, SIGILL, SIGFPE, SIGABRT) ends the process, but never silently: the
    faulthandler writes the signal and every thread's stack to stderr (the journal) first,
    then the signal takes its default course (a core, and systemd's Restart=)."""
    import faulthandler
    import sys

    if not faulthandler.is_enabled() and sys.stderr is not None:
        faulthandler.enable(file=sys.stderr, all_threads=True)


def run(cfg: Config, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set). Returns the process exit code."""
    stop = stop or threading.Event()
    _lean_malloc()
    _log_fatal_signals()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop.set())

    # Bounded by the recorder in fixes and samples (INBOX_MAX), not in batches: a recorder
    # stuck for long must cost dropped (and counted) fixes, not all memory.
    inbox: queue.Queue[tuple[float, list[Fix | Sample]]] = queue.Queue()
    latest: list[Fix | None] = [None]  # the newest fix, for systemd's STATUS=
    sources: list[threading.Thread] = []  # the recorder waits for them at shutdown

    def received(fixes: list[Fix]) -> None:
        latest[0] = fixes[-1]
        recorder.offer(fixes)

    # [share]: bound before the sources start, so that they publish from their first line.
    share: ShareServer | None = None
    share_off = ShareStatus()  # what status shows without a running share server
    if cfg.share.nmea_tcp is not None:
        from tracker.config import split_listen
        from tracker.share import ShareServer

        try:
            share = ShareServer(*split_listen(cfg.share.nmea_tcp), stop).start()
        except OSError as e:  # one part failing to start is one line, not a dead daemon
            reason = e.strerror or str(e)
            log.error("cannot share NMEA on %s: %s", cfg.share.nmea_tcp, reason)
            share_off = ShareStatus(listen=cfg.share.nmea_tcp, error=reason)

    def instrument_readings(readings: list[Reading]) -> None:
        """Instrument readings of the NMEA sources, in GPS time through the sensor clock."""
        samples = sensors.clock.convert(readings)
        if samples:
            recorder.offer(samples)

    gps = GpsReader(
        cfg.gps.device,
        cfg.gps.baudrate,
        received,
        stop,
        reconnect_max_s=cfg.gps.reconnect_max_s,
        open_port=open_gps_port,
        readings=instrument_readings,
        share=share.publish if share else None,
    )
    gps_thread = threading.Thread(target=gps.run, name="gps", daemon=True)
    # Sensor samples go to the same inbox, stamped in GPS time through the reader's offset.
    # Not watchdog components: a dead strap must never get the GPS restarted.
    sensors = SensorManager(
        cfg.sensors, lambda samples: recorder.offer(samples), stop, lambda: gps.clock_offset,
        state_dir=cfg.storage.path.parent,
    )  # fmt: skip
    # [[inputs]]: instrument streams; samples only (their positions are ignored). Not watchdog
    # components either: a dead echo sounder must never get the GPS restarted.
    inputs: list[InputReader] = []
    if cfg.inputs:
        from tracker.inputs import InputReader

        publish = share.publish if share else None
        inputs = [InputReader(entry, instrument_readings, stop, share=publish)
                  for entry in cfg.inputs]  # fmt: skip

    def runtime() -> dict[str, Any]:
        """The sources' part of the daemon's runtime row (tracker/runtime.py DaemonStatus)."""
        counts = gps.stats  # the decoder's counters, field by field (GpsStatus's types)
        return {
            "gps": GpsStatus(
                device=gps.device, baudrate=gps.baudrate, state=gps.state,
                bytes_read=gps.bytes_read, connects=gps.connects,
                sentences=counts.sentences, ignored=counts.ignored, fixes=counts.fixes,
                rejected=counts.rejected, rejected_by=dict(counts.rejected_by),
                invalid_epochs=counts.invalid_epochs, no_checksum=counts.no_checksum,
                late=counts.late, instruments=counts.instruments,
                readings_dropped=counts.readings_dropped,
            ),
            "sensors": sensors.status(),
            "inputs": [i.status.to_json() for i in inputs],
            "share": ShareStatus.from_json(share.status()) if share else share_off,
        }  # fmt: skip

    # The running totals of each ride are summed with the rules `tracker activities` reads
    # them with (tracker/store/totals.py).
    rules = cfg.activity.rules()
    open_db = functools.partial(open_store, ride_rules=(rules.max_hdop, rules.start_speed_mps))
    recorder = Recorder(cfg, inbox, stop, sources=sources, runtime=runtime, open_db=open_db)
    sources += [gps_thread, *sensors.threads, *(i.thread for i in inputs)]
    recorder_thread = threading.Thread(target=recorder.run, name="recorder", daemon=True)

    log.info("tracker starting (config %s)", cfg.path or "built-in defaults")
    recorder_thread.start()
    gps_thread.start()
    sensors.start()
    for reader in inputs:
        reader.thread.start()
    sender_threads: list[threading.Thread] = []
    senders: list[Sender[Any]] = []
    for sender in make_senders(cfg, stop):
        # One failing to start is one log line, not a dead daemon.
        thread = threading.Thread(target=sender.run, name=f"sender-{sender.name}", daemon=True)
        try:
            thread.start()
        except RuntimeError as e:
            log.error("cannot start the %s sender: %s", sender.name, e)
            continue
        sender_threads.append(thread)
        senders.append(sender)

    # systemd: READY=1 once the store is open and the GPS was tried, STATUS= every few seconds,
    # WATCHDOG=1 only while every thread's heartbeat is fresh (see tracker/systemd.py).
    notifier = sd.Notifier.from_env()
    backlog = sd.BacklogProbe(cfg.storage.path)
    supervisor = sd.Supervisor(
        notifier,
        is_ready=lambda: recorder.store_open.is_set() and gps.tried.is_set(),
        status_text=lambda: sd.status_line(
            gps.state,
            latest[0],
            backlog() if recorder.store_open.is_set() else None,
            storage_error=recorder.stats.storage_error,
            stale_threads=supervisor.stale,
        ),
        components=lambda: [
            # The GPS thread waits up to reconnect_max_s between attempts to open the device.
            sd.Component("gps", lambda: gps.heartbeat, cfg.gps.reconnect_max_s + 5.0),
            sd.Component("recorder", lambda: recorder.heartbeat),
            *(sd.Component(f"sender-{s.name}", _heartbeat(s)) for s in senders),
        ],
    )
    # None: not started yet; False: tried once, not available (one log line, not one a tick).
    button: HardwareButton | Literal[False] | None = None
    web: StatusServer | Literal[False] | None = None

    def step() -> float:
        """The main thread's part: systemd's notifications, and the parts that start once the
        store is open. Through the worker loop like every thread: an unexpected error here is
        logged and the loop goes on, rather than stopping a daemon that tracks well."""
        nonlocal button, web
        supervisor.tick()
        if button is None and cfg.button is not None and recorder.store_open.is_set():
            # After the store is open: a press must not race its creation and migration.
            from tracker.button import start_button

            button = start_button(cfg.button, cfg.storage.path, stop) or False
        if web is None and cfg.web is not None and recorder.store_open.is_set():
            from tracker import web as status_page  # the page reads the store: after it

            web = status_page.start(cfg, stop) or False
        return supervisor.next_wait_s()

    try:
        run_loop("daemon", step, stop, error_wait_s=1.0)
    finally:
        notifier.stopping("stopping: storing what is pending")
        stop.set()
        if button:
            button.close()
        deadline = time.monotonic() + SHUTDOWN_BUDGET_S - 1.0
        # Senders last: all threads see `stop` at once, and the recorder's final commit must not
        # wait behind a sender's request in flight (its pending marker makes that one safe).
        share_threads = [share.thread] if share and share.thread else []
        for thread in (gps_thread, *sensors.threads, *(i.thread for i in inputs),
                       recorder_thread, *share_threads, *sender_threads):  # fmt: skip
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("thread %s still running at shutdown", thread.name)
    log.info("tracker stopped: %d fixes stored this run", recorder.stats.fixes_stored)
    return 0


def _heartbeat(sender: Sender[Any]) -> Callable[[], float]:
    """The watchdog's reading of one sender's heartbeat, bound to that sender."""
    return lambda: sender.heartbeat
