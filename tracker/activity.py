"""When an activity starts, continues and ends: a pure decision, tested without a database.

The rules, all in GPS time (a Pi without RTC cannot trust its own clock):
- `start = "always"`: the first valid fix starts an activity. `start = "manual"`: only after
  `tracker activity start`.
- A fix within `resume_window_s` of the current activity's last fix continues it; that is how a
  restart (crash, power cut, reboot) within the window resumes the same ride.
- A longer gap (the unit was off, or indoors without a fix, for longer than the window) ends the
  current activity at its last fix and starts a new one with this fix. A GPS time that jumps
  backwards by more than the window counts as a gap too.
  In manual mode an activity runs until it is stopped, whatever the gaps.
- `tracker activity stop` ends the current activity and disarms: no new activity starts until
  `tracker activity start` (or, in "always" mode, a daemon restart). Fixes that arrive meanwhile
  are still stored, outside any activity, and are never sent.
"""

from __future__ import annotations

import enum


class Step(enum.Enum):
    CONTINUE = "continue"  # the fix belongs to the current activity
    START = "start"  # no current activity: start one with this fix
    RESTART = "restart"  # end the current activity (gap) and start one with this fix
    NONE = "none"  # store the fix outside any activity


def decide(
    *,
    has_current: bool,
    last_time: float | None,
    fix_time: float,
    mode: str,
    armed: bool,
    resume_window_s: float,
) -> Step:
    """What to do with a fix at `fix_time`, given the current activity's last fix time.

    `armed` says whether a new activity may start: true from the start in "always" mode, after
    `tracker activity start` in either mode, false after `tracker activity stop`.
    """
    if has_current:
        if mode == "manual" or last_time is None or abs(fix_time - last_time) <= resume_window_s:
            return Step.CONTINUE
        return Step.RESTART
    return Step.START if armed else Step.NONE
