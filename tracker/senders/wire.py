"""What every protocol writes the same way: a fix's time as sent, numbers as text, and the
thinning to at most one point per `min_point_interval_s` (its config key declared here, once);
and, for `catch_up = "live_first"` (Traccar, MQTT), the planning of the history sent after the
present (`next_history`: which fix next, given the stretches of seconds sent ahead).

Light on purpose (no I/O, standard library only): the backends' Settings import it, and
`tracker status` parses the config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeGuard

from tracker.senders.settings import SenderSettings
from tracker.senders.state import StateError
from tracker.validate import bounded

if TYPE_CHECKING:
    from tracker.store import StoredFix


def wire_time(t: float, millis: bool = False) -> int:
    """A fix's time as sent: whole seconds (floor, so a fix never moves to a later second),
    or rounded milliseconds (json-gpsr's millis mode)."""
    return round(t * 1000) if millis else math.floor(t)


def is_finite(x: float | None) -> TypeGuard[float]:
    """A value that is known and a number (an older release stored some unchecked)."""
    return x is not None and math.isfinite(x)


def num(x: float, places: int) -> str:
    """`x` to at most `places` decimals, without trailing zeros ("0", never "-0")."""
    text = f"{x:.{places}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# catch_up = "live_first" (Traccar, MQTT): a backlog spanning more than this goes newest first.
# Below it, in order is as quick, and a live unit's order stays intact (a retry or two).
LIVE_FIRST_AFTER_S = 10.0


def due(t: int, last_time: int | None, min_interval_s: float) -> bool:
    """Whether a point at wire time `t` may be sent after one at `last_time`: at least
    `min_interval_s` later, and at least one whole second."""
    return last_time is None or t - last_time >= max(1.0, min_interval_s)


def thin(
    fixes: Sequence[StoredFix], last_time: int | None, min_interval_s: float = 1.0
) -> list[StoredFix]:
    """The fixes to send: strictly increasing whole-second times, at least `min_interval_s`
    apart and after `last_time` (the newest time already on the server). The others are
    covered by the points kept and acknowledged with them."""
    kept = []
    prev = last_time
    for f in fixes:
        t = wire_time(f.time)
        if due(t, prev, min_interval_s):
            kept.append(f)
            prev = t
    return kept


# live_first: stretches sent ahead of the history at most. One more starts when fixes arrive
# faster than requests go (two in one recorder commit): a few a minute on a mobile link, each
# 25 bytes of state; past this (a very slow link) the present waits for the history.
MAX_RUNS = 256


def adjacent(t: int, last: int, min_interval_s: float) -> bool:
    """Whether a position at `t` sent after one at `last` leaves no due second between them."""
    return t - last <= math.ceil(max(1.0, min_interval_s))


def next_history(
    fixes: Sequence[StoredFix],
    runs: Sequence[Sequence[int]],
    filled: int | None,
    min_interval_s: float = 1.0,
) -> tuple[list[StoredFix], StoredFix | None, list[list[int]], int | None]:
    """live_first, while `runs` (the stretches of seconds sent ahead, oldest first) are out:
    (the fixes covered without sending, the next history fix or None, the runs left, the new
    history reference) from a batch in id order. The history fix is the first one before a
    run and at least `min_interval_s` after `filled`, the newest history second sent. A run
    the batch has passed is on the server: the reference moves to its end. Once every run is
    passed, or the oldest pending fix is in the last one, the history is complete (no runs
    left): the caller goes on in order."""
    left = [list(r) for r in runs]
    done = False  # nothing older than the last run is pending: the history is filled
    for i, f in enumerate(fixes):
        t = wire_time(f.time)
        while left and t > left[0][1]:
            filled = left.pop(0)[1]
        if not left:
            return list(fixes[:i]), None, [], filled
        if t < left[0][0]:
            if due(t, filled, min_interval_s):
                return list(fixes[:i]), f, left, filled
        elif len(left) == 1:  # a second of the last run: already on the server
            done = True
    return list(fixes), None, [] if done else left, filled


def stored_runs(value: Any, backend: str) -> list[list[int]]:
    """A delivery state's live_first runs ([first, last] pairs) as stored, checked."""
    if not value:
        return []
    if not isinstance(value, list) or not all(isinstance(r, list) and len(r) == 2 for r in value):
        raise StateError(f"{backend}: stored runs that are not [first, last] pairs: {value!r}")
    return [[int(a), int(b)] for a, b in value]


@dataclass(frozen=True)
class ThinnedSettings(SenderSettings):
    """The settings of a backend that sends at most one point per `min_point_interval_s`."""

    KEYS: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "min_point_interval_s": bounded(1, 3600, "point times are whole seconds"),
    }

    min_point_interval_s: float = 1.0
