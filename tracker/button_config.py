"""The `[button]` section of the configuration (tracker/button.py, docs/button.md).

Beside the button, as the sensors' settings are beside them (tracker/sensors/config.py): the
configuration parses it without importing the button (its queue, its store writer, gpiozero).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tracker.validate import boolean, bounded


@dataclass(frozen=True)
class ButtonConfig:
    """[button]: a push button on a GPIO pin; -1 until `gpio` is set."""

    gpio: int = -1  # BCM number, e.g. 17
    hold_s: float = 3.0  # a press this long records a point of interest
    pull_up: bool = True  # button wired to ground

    def check(self) -> None:
        if self.gpio < 0:
            raise ValueError("gpio: missing (the BCM number of the button's pin, e.g. 17)")


def _gpio(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 27:
        raise ValueError(f"expected a BCM GPIO number from 0 to 27, got {v!r}")
    return v


KEYS: dict[str, Callable[[Any], Any]] = {
    "gpio": _gpio,
    "hold_s": bounded(0.5, 30, "a short press must stay possible"),
    "pull_up": boolean,
}
