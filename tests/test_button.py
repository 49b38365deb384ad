"""The GPIO button: pure press classification, then gpiozero's mock pins into a real store."""

from __future__ import annotations

import logging
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracker import button as button_mod
from tracker.button import (
    LONG,
    SHORT,
    ButtonConfig,
    HardwareButton,
    PressClassifier,
    request_for,
    start_button,
)
from tracker.store import Request, open_store

GPIO = 17
WAIT_S = 3.0

# -- the classifier, with time given -------------------------------------------------------------


def test_a_short_press_counts_on_release():
    c = PressClassifier(hold_s=3.0)
    assert c.pressed(10.0) is None
    assert c.released(10.3) == SHORT


def test_a_long_press_counts_once_when_held_and_not_on_release():
    c = PressClassifier(hold_s=3.0)
    c.pressed(10.0)
    assert c.held(13.0) == LONG
    assert c.held(16.0) is None
    assert c.released(17.0) is None


def test_a_release_that_beats_the_late_hold_callback_is_still_long():
    c = PressClassifier(hold_s=3.0)
    c.pressed(10.0)
    assert c.released(13.01) == LONG
    assert c.held(13.02) is None


def test_chatter_on_the_press_edge_is_one_press():
    c = PressClassifier(hold_s=3.0, bounce_s=0.05)
    c.pressed(10.000)
    assert c.released(10.002) is None
    c.pressed(10.004)
    assert c.released(10.300) == SHORT


def test_chatter_on_the_release_edge_is_not_a_second_press():
    c = PressClassifier(hold_s=3.0, bounce_s=0.05)
    c.pressed(10.0)
    assert c.released(10.300) == SHORT
    c.pressed(10.302)
    assert c.released(10.304) is None
    assert c.held(13.4) is None
    c.pressed(11.0)  # the next real press
    assert c.released(11.2) == SHORT


def test_presses_map_to_the_cli_requests():
    assert request_for(SHORT, activity_running=False) == ("activity_start", None)
    assert request_for(SHORT, activity_running=True) == ("activity_stop", None)
    assert request_for(LONG, activity_running=True) == ("poi", "button")
    assert request_for(LONG, activity_running=False) == ("poi", "button")


# -- gpiozero's mock pins into a real store ------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "t.db"
    open_store(path).close()
    return path


@pytest.fixture
def factory() -> Iterator:
    mock = pytest.importorskip("gpiozero.pins.mock")
    f = mock.MockFactory()
    yield f
    f.close()


@pytest.fixture
def stop() -> threading.Event:
    return threading.Event()


class Clock:
    """The time the button sees for debouncing, moved by the test (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_button(db: Path, factory, stop: threading.Event, clock: Clock) -> Iterator:
    made: list[HardwareButton] = []

    def make(hold_s: float = 3.0) -> HardwareButton:
        cfg = ButtonConfig(GPIO, hold_s=hold_s)
        b = start_button(cfg, db, stop, pin_factory=factory, clock=clock)
        assert b is not None
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def requests(db: Path) -> list[Request]:
    store = open_store(db, check=False)
    try:
        return store.take_requests()
    finally:
        store.close()


def wait_requests(db: Path, n: int) -> list[Request]:
    """The requests once there are `n` of them (or all there are after WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    found = requests(db)
    while len(found) < n and time.monotonic() < deadline:
        time.sleep(0.01)
        found = requests(db)
    return found


def press(pin, clock: Clock, seconds: float = 0.3) -> None:
    pin.drive_low()  # pulled up: pressed connects the pin to ground
    clock.now += seconds
    pin.drive_high()
    clock.now += 1.0


def test_short_press_without_an_activity_requests_a_start(db, factory, make_button, clock, caplog):
    caplog.set_level(logging.INFO, logger="tracker.button")
    b = make_button()
    press(factory.pin(GPIO), clock)
    b.close()  # records what is queued
    assert [(r.command, r.arg) for r in requests(db)] == [("activity_start", None)]
    assert "button: short press -> activity_start (request 1)" in caplog.messages


def test_short_press_during_an_activity_requests_a_stop(db, factory, make_button, clock):
    with open_store(db, check=False) as store:
        store.start_activity("t", "cycling", "private", (), 1.0)
    make_button()
    press(factory.pin(GPIO), clock)
    assert [r.command for r in wait_requests(db, 1)] == ["activity_stop"]


def test_long_press_requests_one_poi_and_no_start_or_stop(db, factory, make_button, clock):
    b = make_button(hold_s=0.2)
    pin = factory.pin(GPIO)
    pin.drive_low()
    # The point is marked when the hold time is reached, before the release.
    assert [(r.command, r.arg) for r in wait_requests(db, 1)] == [("poi", "button")]
    time.sleep(0.25)  # past a second hold time: it must not repeat
    clock.now += 0.5
    pin.drive_high()
    b.close()
    assert [(r.command, r.arg) for r in requests(db)] == [("poi", "button")]


def test_bouncing_contacts_make_one_press(db, factory, make_button, clock):
    b = make_button()
    pin = factory.pin(GPIO)
    for _ in range(3):  # chatter as the contacts close, 2 ms apart
        pin.drive_low()
        clock.now += 0.002
        pin.drive_high()
        clock.now += 0.002
    pin.drive_low()
    clock.now += 0.3
    for _ in range(3):  # and as they open
        pin.drive_high()
        clock.now += 0.002
        pin.drive_low()
        clock.now += 0.002
    pin.drive_high()
    b.close()
    assert [r.command for r in requests(db)] == ["activity_start"]


def test_a_store_error_on_a_press_is_one_line_and_the_button_goes_on(
    tmp_path, factory, stop, clock, caplog
):
    path = tmp_path / "t.db"
    path.mkdir()  # a directory where the database should be
    b = start_button(ButtonConfig(GPIO), path, stop, pin_factory=factory, clock=clock)
    assert b is not None
    try:
        press(factory.pin(GPIO), clock)
        deadline = time.monotonic() + WAIT_S
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)
        path.rmdir()  # the cause is gone: the next press is recorded
        open_store(path).close()
        press(factory.pin(GPIO), clock)
    finally:
        b.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage().startswith("button: short press not recorded:")
    assert [r.command for r in requests(path)] == ["activity_start"]


def test_presses_after_stop_are_ignored(db, factory, make_button, stop, clock, caplog):
    caplog.set_level(logging.INFO, logger="tracker.button")
    make_button()
    stop.set()
    press(factory.pin(GPIO), clock)
    assert requests(db) == []
    assert "button: short press ignored: the daemon is stopping" in caplog.messages


def test_close_releases_the_pin(db, factory, stop):
    b = start_button(ButtonConfig(GPIO), db, stop, pin_factory=factory)
    assert b is not None
    b.close()
    again = start_button(ButtonConfig(GPIO), db, stop, pin_factory=factory)
    assert again is not None  # GPIOPinInUse if the first had kept the pin
    again.close()


# -- no button ------------------------------------------------------------------------------------


def test_no_config_no_button(db, stop):
    assert start_button(None, db, stop) is None


def test_without_gpiozero_one_line_and_no_button(db, stop, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # import gpiozero raises ImportError
    assert start_button(ButtonConfig(GPIO), db, stop) is None
    assert len(caplog.records) == 1
    line = caplog.records[0]
    assert line.levelno == logging.WARNING
    assert line.getMessage().startswith("button on GPIO 17 unavailable: ")
    assert line.getMessage().endswith("; the daemon runs without it")


def test_a_pin_factory_that_fails_is_one_line_and_no_button(db, stop, caplog):
    mock = pytest.importorskip("gpiozero.pins.mock")

    class NoAccess(mock.MockFactory):
        def pin(self, name, pin_class=None, **kwargs):
            raise PermissionError(13, "Permission denied", "/dev/gpiochip0")

    f = NoAccess()
    try:
        assert start_button(ButtonConfig(GPIO), db, stop, pin_factory=f) is None
    finally:
        f.close()
    assert [r.getMessage() for r in caplog.records] == [
        "button on GPIO 17 unavailable: [Errno 13] Permission denied: '/dev/gpiochip0'; "
        "the daemon runs without it"
    ]


def test_no_gpio_chip_folds_gpiozero_warnings_into_the_one_line(db, stop, monkeypatch, caplog):
    gpiozero = pytest.importorskip("gpiozero")
    from gpiozero.exc import BadPinFactory, PinFactoryFallback

    def no_factory():
        warnings.warn(
            PinFactoryFallback("Falling back from lgpio: can not open gpiochip"), stacklevel=1
        )
        raise BadPinFactory("Unable to load any default pin factory!")

    monkeypatch.setattr(gpiozero.Device, "pin_factory", None)
    monkeypatch.setattr(gpiozero.Device, "_default_pin_factory", staticmethod(no_factory))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escaped would fail here
        assert start_button(ButtonConfig(GPIO), db, stop) is None
    assert [r.getMessage() for r in caplog.records] == [
        "button on GPIO 17 unavailable: Unable to load any default pin factory! "
        "(Falling back from lgpio: can not open gpiochip); the daemon runs without it"
    ]


def test_the_worker_ends_when_the_daemon_stops(db, factory, stop):
    b = start_button(ButtonConfig(GPIO), db, stop, pin_factory=factory)
    assert b is not None
    stop.set()
    b._thread.join(WAIT_S)
    assert not b._thread.is_alive()
    b.close()


def test_module_does_not_import_gpiozero_at_import_time():
    assert "gpiozero" not in button_mod.__dict__
