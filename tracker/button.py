"""An optional push button on a GPIO pin: a short press starts or ends the activity, a long
press marks a point of interest.

The button is one more source of control requests, exactly like `tracker activity` and
`tracker poi`: it writes a request into the store and the recorder carries it out. It never
calls the recorder.

Threads: gpiozero calls back from its own threads (edges from the pin's thread, holds from its
hold thread). The callbacks only classify the press and queue it; one worker thread writes the
requests, each through a short-lived Store, so a slow store (another writer holding the lock)
never delays the edge callbacks and the requests keep the order of the presses.

gpiozero is imported only in `start_button`: the daemon runs without it, and a missing library,
pin factory, GPIO chip or permission is one log line and no button.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tracker.button_config import ButtonConfig
from tracker.store import StoreError, open_store
from tracker.worker import run_loop

log = logging.getLogger(__name__)

BOUNCE_S = 0.05  # contacts chatter for a few ms; no human press is this short
SHORT = "short"
LONG = "long"
POI_TEXT = "button"
_JOIN_S = 2.0


class PressClassifier:
    """Turns the button's edges into presses: SHORT on a release before `hold_s`, LONG once
    per press when it has been held `hold_s` (its release then counts for nothing).

    Debounces on its own as well as through gpiozero's bounce_time (not every pin factory
    implements that): a release within `bounce_s` of its press is contact chatter and the
    press goes on; a press within `bounce_s` of a counted release is chatter of that release.

    Thread-safe: `held` comes from another thread than `pressed` and `released`, and a release
    at the moment the hold time is reached may race with it; the lock makes one of them win.
    """

    def __init__(self, hold_s: float, bounce_s: float = BOUNCE_S) -> None:
        self.hold_s = hold_s
        self.bounce_s = bounce_s
        self._lock = threading.Lock()
        self._down_at: float | None = None  # start of the press in progress
        self._up_at = float("-inf")  # the last counted release
        self._long_done = False  # this press has counted as LONG already

    def pressed(self, now: float) -> None:
        with self._lock:
            if now - self._up_at < self.bounce_s:
                return
            if self._down_at is None:
                self._long_done = False
            self._down_at = now

    def held(self, now: float) -> str | None:
        with self._lock:
            if self._down_at is None or self._long_done:
                return None
            self._long_done = True
            return LONG

    def released(self, now: float) -> str | None:
        with self._lock:
            if self._down_at is None:
                return None
            if now - self._down_at < self.bounce_s:
                return None
            down_at, self._down_at, self._up_at = self._down_at, None, now
            if self._long_done:
                return None
            # The hold callback may come late (it runs in another thread): a press that
            # lasted hold_s is long whichever callback reports it first.
            if now - down_at >= self.hold_s:
                self._long_done = True
                return LONG
            return SHORT


def request_for(press: str, activity_running: bool) -> tuple[str, str | None]:
    """The control request a press stands for (the same as the CLI's)."""
    if press == LONG:
        return "poi", POI_TEXT
    return ("activity_stop" if activity_running else "activity_start"), None


def record_press(db_path: Path, press: str) -> int | None:
    """Write the request for `press` into the store; its id, or None (logged) on a store
    error. Opens its own Store and closes it: callable from any thread."""
    try:
        store = open_store(db_path, check=False)
        try:
            command, arg = request_for(press, store.current_activity() is not None)
            request_id = store.add_request(command, arg)
        finally:
            store.close()
    except (StoreError, OSError) as e:
        log.error("button: %s press not recorded: %s", press, e)
        return None
    log.info("button: %s press -> %s (request %d)", press, command, request_id)
    return request_id


class HardwareButton:
    """A gpiozero button wired to a PressClassifier and a worker that records the presses.
    `close()` releases the pin and ends the worker after the presses already queued."""

    def __init__(
        self,
        device: Any,
        cfg: ButtonConfig,
        db_path: Path,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device = device
        self.cfg = cfg
        self.db_path = db_path
        self.classifier = PressClassifier(cfg.hold_s)
        self._stop = stop
        self._clock = clock
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._done = threading.Event()  # the worker's end
        self._thread = threading.Thread(target=self._run, name="button", daemon=True)
        self._thread.start()
        device.when_pressed = self._on_pressed
        device.when_held = self._on_held
        device.when_released = self._on_released

    def _on_pressed(self) -> None:
        self.classifier.pressed(self._clock())

    def _on_held(self) -> None:
        self._submit(self.classifier.held(self._clock()))

    def _on_released(self) -> None:
        self._submit(self.classifier.released(self._clock()))

    def _submit(self, press: str | None) -> None:
        if press is None:
            return
        if self._stop.is_set() or not self._thread.is_alive():
            log.info("button: %s press ignored: the daemon is stopping", press)
            return
        self._queue.put(press)

    def _run(self) -> None:
        # Through the worker loop like every thread, on an event of its own: the daemon's stop
        # must not end it before the presses queued by then are recorded (close() ends it).
        # A bug in a press is logged there and the worker goes on: the next press may work.
        run_loop("button", self._step, self._done, error_wait_s=0.0)

    def _step(self) -> float:
        try:
            press = self._queue.get(timeout=0.5)
        except queue.Empty:
            if self._stop.is_set():  # stopped without close(): nothing is queued
                self._done.set()
            return 0.0
        if press is None:
            self._done.set()
        else:
            record_press(self.db_path, press)
        return 0.0

    def close(self) -> None:
        """Release the pin (no more callbacks), then let the worker record what is queued."""
        try:
            self.device.close()
        except Exception as e:  # the pin is being given up anyway
            log.warning("button: closing GPIO %d: %s", self.cfg.gpio, e)
        self._queue.put(None)
        self._thread.join(_JOIN_S)
        if self._thread.is_alive():
            log.warning("thread %s still running at shutdown", self._thread.name)


def start_button(
    cfg: ButtonConfig | None,
    db_path: Path,
    stop: threading.Event,
    *,
    pin_factory: Any = None,
    clock: Callable[[], float] = time.monotonic,
) -> HardwareButton | None:
    """The running button, or None: not configured, or not available here (one log line).
    `pin_factory` is gpiozero's (None: its default for this board); `clock` times the presses
    for debouncing (gpiozero times the hold itself)."""
    if cfg is None:
        return None
    fallbacks: list[str] = []
    try:
        from gpiozero import Button

        # gpiozero warns once per pin library it cannot load before it gives up; fold those
        # into the one line below instead of a screenful of warnings on every start.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                device = Button(
                    cfg.gpio,
                    pull_up=cfg.pull_up,
                    bounce_time=BOUNCE_S,
                    hold_time=cfg.hold_s,
                    hold_repeat=False,
                    pin_factory=pin_factory,
                )
            finally:
                fallbacks = _gpio_warnings(caught)
    except Exception as e:  # ImportError, BadPinFactory, lgpio.error, OSError, RuntimeError...
        reason = f"{e}" if not fallbacks else f"{e} ({'; '.join(fallbacks)})"
        log.warning(
            "button on GPIO %d unavailable: %s; the daemon runs without it", cfg.gpio, reason
        )
        return None
    for text in fallbacks:
        log.debug("button: %s", text)
    button = HardwareButton(device, cfg, db_path, stop, clock)
    log.info(
        "button on GPIO %d: short press starts or ends the activity, %g s marks a point",
        cfg.gpio, cfg.hold_s,
    )  # fmt: skip
    return button


def _gpio_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """The texts of gpiozero's own warnings; any other warning (another thread's, caught by
    the process-wide catch_warnings) is issued again."""
    texts = []
    for w in caught:
        if type(w.message).__module__.startswith("gpiozero"):
            texts.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return texts
