"""The daemon's wiring: start the parts in order, stop them in reverse, through one event.

    GPS reader thread --(inbox queue)--> recorder thread --> SQLite store --> (senders, later)

Signals only set the shutdown event. On SIGTERM/SIGINT the GPS reader stops reading and hands
over its last epoch, the recorder commits everything pending, and `run()` returns 0, well within
systemd's default 90 s (the budget is SHUTDOWN_BUDGET_S).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from typing import Any

from tracker.config import Config
from tracker.gps import GpsReader
from tracker.recorder import Recorder
from tracker.senders import make_senders

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET_S = 15.0


def setup_logging(level: str) -> None:
    """Plain stderr lines with level and component; no timestamps when journald adds its own."""
    under_journal = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journal:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, force=True)


def run(cfg: Config, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set). Returns the process exit code."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop.set())

    inbox: queue.Queue = queue.Queue()
    gps = GpsReader(
        cfg.gps.device,
        cfg.gps.baudrate,
        inbox.put,
        stop,
        reconnect_max_s=cfg.gps.reconnect_max_s,
    )
    gps_thread = threading.Thread(target=gps.run, name="gps", daemon=True)

    def runtime() -> dict[str, Any]:
        return {
            "gps": {
                "device": gps.device,
                "baudrate": gps.baudrate,
                "state": gps.state,
                "bytes_read": gps.bytes_read,
                "connects": gps.connects,
                **gps.decoder.stats.as_dict(),
            }
        }

    recorder = Recorder(cfg, inbox, stop, sources=[gps_thread], runtime=runtime)
    recorder_thread = threading.Thread(target=recorder.run, name="recorder", daemon=True)

    log.info("tracker starting (config %s)", cfg.path or "built-in defaults")
    recorder_thread.start()
    gps_thread.start()
    sender_threads = []
    senders = []
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
    try:
        while not stop.is_set():
            stop.wait(1.0)
    finally:
        stop.set()
        deadline = time.monotonic() + SHUTDOWN_BUDGET_S - 1.0
        # Senders last: all threads see `stop` at once, and the recorder's final commit must not
        # wait behind a sender's request in flight (its pending marker makes that one safe).
        for thread in (gps_thread, recorder_thread, *sender_threads):
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("thread %s still running at shutdown", thread.name)
    log.info("tracker stopped: %d fixes stored this run", recorder.stats.fixes_stored)
    return 0
