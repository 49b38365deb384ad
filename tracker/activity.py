"""When an activity starts, pauses and ends: a pure decision, fed one fix at a time.

Every timer here runs on GPS time (the fixes' own times), never on a clock: a recording replayed
fast through a pty decides exactly as it did live, and a Pi without an RTC cannot mislead it.

Modes (`[activity] start`):
- "auto" (the default): an activity starts once the unit has been moving for `start_after_s`,
  pauses while it stands still, and ends `idle_stop_s` after its last movement.
- "always": the first fix starts an activity; a gap longer than `resume_window_s` ends it and
  the next fix starts another. Ends on idle only when `idle_stop_s` is set explicitly.
- "manual": only `tracker activity start` (or the button) starts one; it runs until stopped,
  whatever the gaps. Ends on idle only when `idle_stop_s` is set explicitly.

Movement, in "auto" mode:
- A fix is evidence of movement when its speed is at least `start_speed_mps` and its HDOP at
  most `max_hdop`. A fix with a worse HDOP is no evidence either way (a receiver with 4
  satellites under trees invents "walks" of 1-3 m/s). A fix without a speed gets one from the
  distance to the previous fix; one without an HDOP counts as good (the receiver sends none).
- Movement *holds* once moving fixes have run for `start_after_s`, interrupted by no more than
  DIP_S of good slow fixes and by no silence of more than `start_after_s`. Only held movement
  starts an activity and keeps one alive: a one-epoch speed spike or a short phantom walk does
  neither.
- The activity starts at the first moving fix of the run that held; the fixes of that run
  stored meanwhile ("lead-in", outside any activity until then) are adopted by it, so the track
  begins where the rider set off, not 10 s later, and with no parked fixes before it.
- Paused: a fix that is neither moving nor within `start_after_s` of held movement (a shorter
  stop is a red light). Paused fixes are stored in the activity; `paused_points` decides
  whether they are sent ("send"), one per PAUSED_EVERY_S ("thin", the default: the people
  following see the rider at the cafe without a cloud of points), or never ("keep_local").
  The first moving fix resumes at once.
- The activity ends when a fix arrives `idle_stop_s` or more after the last held movement,
  whatever came between; it ends at that last moving fix, and the fixes after it leave the
  activity. After a restart the recorder replays the activity's recent fixes through `replay()`,
  so a power cut counts as time without movement: within `idle_stop_s` the ride continues, a
  longer one ends it at its last movement.
- `tracker activity stop` ends the activity at once; the next one starts only after the unit has
  stood still (good slow fixes) for `start_after_s` and then moves again, so a rider who stops
  the ride while still rolling does not get a new one ten seconds later.

Time that does not move forward, in every mode: a fix at the same time as the previous one, or
up to BACK_JUMP_S before it, is dropped (a repeated epoch); a jump back of more than BACK_JUMP_S
ends the current activity cleanly (at its last movement in "auto", its last fix otherwise) and
the fix is taken as the first of a new stretch of time.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from tracker.fix import Fix
from tracker.geo import EARTH_RADIUS_M, distance_m  # noqa: F401 - activity.distance_m, as before

MODES = ("auto", "always", "manual")
PAUSED_POINTS = ("send", "thin", "keep_local")
DIP_S = 3.0  # good slow fixes a movement run survives (a junction, a gear change)
PAUSED_EVERY_S = 60.0  # paused_points = "thin": at most one paused fix a minute is sent
BACK_JUMP_S = 5.0  # GPS time going back by more than this ends the activity
DERIVED_SPEED_MAX_DT_S = 5.0  # speed from two positions only when they are this close in time

# Default start speeds by activity type (m/s): brisk enough to leave a parked unit's noise
# below, slow enough that a rider pushing off crosses it within seconds.
START_SPEEDS: dict[str, float] = {
    **dict.fromkeys(
        ("running", "walking", "hiking", "nordic walking", "orienteering", "mountaineering"), 0.8
    ),
    **dict.fromkeys(
        ("sailing", "rowing", "kayaking", "sea kayaking", "canoeing",
         "stand up paddle boarding", "windsurfing", "kiteboarding", "hot air ballooning"), 0.5,
    ),  # fmt: skip
    **dict.fromkeys(
        ("driving", "motor racing", "off road driving", "motorcycling", "enduro"), 3.0
    ),
}
DEFAULT_START_SPEED = 1.5  # cycling, mountain biking, skating, skiing and the rest
DEFAULT_IDLE_STOP_S = 900.0


def start_speed_for(activity_type: str) -> float:
    """The default `start_speed_mps` for a Map My Tracks activity type."""
    return START_SPEEDS.get(activity_type, DEFAULT_START_SPEED)


@dataclass(frozen=True, slots=True)
class Rules:
    """The `[activity]` settings the decision needs (built by ActivityConfig.rules())."""

    mode: str = "auto"
    start_speed_mps: float = DEFAULT_START_SPEED
    max_hdop: float = 5.0
    start_after_s: float = 10.0
    idle_stop_s: float | None = DEFAULT_IDLE_STOP_S  # None: never ends on idle
    paused_points: str = "thin"
    resume_window_s: float = 1800.0


class Place(enum.Enum):
    """Where a fix is stored."""

    OUTSIDE = "outside"  # outside any activity: stored, never sent
    LEAD_IN = "lead_in"  # outside for now; adopted if its movement run starts an activity
    SENT = "sent"  # in the current activity, sent to the backends
    LOCAL = "local"  # in the current activity, kept on the unit (a paused fix)
    DROP = "drop"  # not stored: a repeated epoch, or time a little behind the last fix


@dataclass(frozen=True, slots=True)
class Ending:
    at: float  # GPS time the activity ends at; its fixes after it leave the activity
    reason: str


@dataclass(frozen=True, slots=True)
class Start:
    at: float  # GPS time the new activity starts at
    adopt: int  # how many of the newest fixes stored outside (the lead-in) it takes over


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one fix: end the current activity first, then start one, then store
    the fix in `place`."""

    place: Place
    end: Ending | None = None
    start: Start | None = None


# The plain decisions, made once: nearly every fix gets one of them (a Decision is frozen).
_PLAIN = {place: Decision(place) for place in Place}


def _decision(place: Place, end: Ending | None) -> Decision:
    return _PLAIN[place] if end is None else Decision(place, end)


@dataclass
class Lifecycle:
    """The decision's state; `step(fix)` per fix in time order, from one thread.

    Copy it (`snapshot()`) before a batch whose storage may fail, and keep the copy if it does.
    """

    rules: Rules
    active: bool = False  # an activity is current
    armed: bool = True  # "always"/"manual": a new activity may start with the next fix
    start_next: bool = False  # `tracker activity start`: start with the next fix, any mode
    wait_still: bool = False  # "auto" after a stop: stand still before the next start
    last_time: float | None = None  # the last fix kept (GPS time)
    last_active: float | None = None  # the current activity's last fix (resume window)
    last_moving: float | None = None  # the current activity's last held movement
    run_start: float | None = None  # the current run of moving fixes: first...
    run_last: float | None = None  # ...and latest moving fix
    run_fixes: int = 0  # fixes kept since run_start (the lead-in, when not active)
    last_evidence: float | None = None  # the latest moving fix of any kind
    still_since: float | None = None  # wait_still: good slow fixes since then
    last_paused_sent: float | None = None  # thin: the last paused fix sent
    prev: tuple[float, float, float] | None = field(default=None, repr=False)  # t, lat, lon

    def snapshot(self) -> Lifecycle:
        return replace(self)

    @property
    def state(self) -> str:
        """For `tracker status`: "recording", "moving", "paused", "starting" (a movement run
        not yet held), "waiting" (for movement, or for stillness after a stop) or "off"."""
        if self.active:
            if self.rules.mode != "auto":
                return "recording"
            t, m, e = self.last_time, self.last_moving, self.last_evidence
            recent = t is not None and (
                (m is not None and t - m < self.rules.start_after_s) or e == t
            )
            return "moving" if recent else "paused"
        if self.rules.mode == "auto":
            return "starting" if self.run_start is not None and not self.wait_still else "waiting"
        return "waiting" if self.armed or self.start_next else "off"

    # -- requests --------------------------------------------------------------------------

    def resumed(self, activity_started_at: float, last_fix_time: float | None) -> None:
        """The store has a current activity (a restart): continue it from its last fix."""
        self.active = True
        self.last_active = last_fix_time if last_fix_time is not None else activity_started_at
        self.last_moving = activity_started_at
        self.last_time = last_fix_time

    def stopped(self) -> None:
        """`tracker activity stop`: the caller ended the current activity (if any)."""
        self._ended()
        self.start_next = False
        if self.rules.mode == "auto":
            self.wait_still, self.still_since = True, None
        else:
            self.armed = False

    def start_requested(self) -> None:
        """`tracker activity start`: the caller ended the current activity (if any); a new
        one starts with the next fix."""
        self._ended()
        self.armed, self.start_next, self.wait_still = True, True, False

    def _ended(self, keep_run: bool = False) -> None:
        self.active = False
        self.last_active = self.last_moving = self.last_paused_sent = None
        if not keep_run:
            self.run_start = self.run_last = None
            self.run_fixes = 0

    # -- one fix ---------------------------------------------------------------------------

    def step(self, fix: Fix) -> Decision:
        t = fix.time
        end: Ending | None = None
        if self.last_time is not None and t <= self.last_time:
            if self.last_time - t <= BACK_JUMP_S:
                return _PLAIN[Place.DROP]
            # The receiver's clock went back: whatever comes now is a new stretch of time.
            if self.active:
                end = Ending(self._end_time(), "GPS time jumped back")
            self._ended()
            self.prev = None
            self.last_evidence = self.still_since = None
        self.last_time = t
        moving = self._evidence(fix)
        self.prev = (t, fix.lat, fix.lon)
        decision = self._decide(t, moving, end)
        if decision.place in (Place.SENT, Place.LOCAL):
            self.last_active = t
        return decision

    def _decide(self, t: float, moving: bool | None, end: Ending | None) -> Decision:
        r = self.rules
        gap = t - self.last_active if self.last_active is not None else 0.0
        if self.active and r.mode == "always" and gap > r.resume_window_s:
            end = Ending(self.last_active or t, "gap")
            self._ended()
        idle = t - self.last_moving if self.last_moving is not None else 0.0
        if self.active and r.idle_stop_s is not None and idle >= r.idle_stop_s:
            end = Ending(self._end_time(), "idle")
            # A run of moving fixes under way is kept: if it holds, its fixes (detached from
            # the ended activity with the rest after its end) are the next lead-in.
            self._ended(keep_run=True)
            if r.mode != "auto":  # as after a stop: no parked activity starts at once
                self.armed = False
        held = self._track_run(t, moving)
        if self.active:
            return self._in_activity(t, moving, held, end)
        if self.start_next or (r.mode != "auto" and self.armed):
            self.start_next = False
            self._started(t)
            return Decision(Place.SENT, end, Start(t, 0))
        if r.mode != "auto" or self._waiting_still(t, moving):
            return _decision(Place.OUTSIDE, end)
        if self.run_start is None:
            return _decision(Place.OUTSIDE, end)
        if held:
            start = Start(self.run_start, self.run_fixes - 1)
            self._started(t)
            self.last_moving = t
            return Decision(Place.SENT, end, start)
        return _decision(Place.LEAD_IN, end)

    def _in_activity(
        self, t: float, moving: bool | None, held: bool, end: Ending | None
    ) -> Decision:
        r = self.rules
        if held:
            self.last_moving = t
        if r.mode != "auto":
            return _decision(Place.SENT, end)
        # Within start_after_s of held movement a stop is a red light, not a pause. A moving fix
        # itself is sent at once (riding again resumes with it); a spike sends only itself.
        recent = self.last_moving is not None and t - self.last_moving < r.start_after_s
        if moving or recent:
            if recent:  # riding again: the next pause sends its first fix at once
                self.last_paused_sent = None
            return _decision(Place.SENT, end)
        if r.paused_points == "send":
            return _decision(Place.SENT, end)
        if r.paused_points == "thin" and (
            self.last_paused_sent is None or t - self.last_paused_sent >= PAUSED_EVERY_S
        ):
            self.last_paused_sent = t
            return _decision(Place.SENT, end)
        return _decision(Place.LOCAL, end)

    def _started(self, t: float) -> None:
        self.active = True
        self.last_active = t
        self.last_moving = t
        self.last_paused_sent = None

    def _end_time(self) -> float:
        if self.rules.idle_stop_s is not None and self.last_moving is not None:
            return self.last_moving
        return self.last_active if self.last_active is not None else self.last_time or 0.0

    # -- movement --------------------------------------------------------------------------

    def _evidence(self, fix: Fix) -> bool | None:
        """True: moving; False: standing still; None: this fix cannot tell."""
        r = self.rules
        if fix.hdop is not None and not fix.hdop <= r.max_hdop:
            return None
        speed = fix.speed
        if speed is None and self.prev is not None:
            t0, lat0, lon0 = self.prev
            dt = fix.time - t0
            if 0 < dt <= DERIVED_SPEED_MAX_DT_S:
                speed = distance_m(lat0, lon0, fix.lat, fix.lon) / dt
        if speed is None or not math.isfinite(speed):
            return None
        return speed >= r.start_speed_mps

    def _track_run(self, t: float, moving: bool | None) -> bool:
        """Update the run of moving fixes; True when it holds (and this fix is moving)."""
        r = self.rules
        if moving:
            self.last_evidence = t
        if self.run_start is not None:
            assert self.run_last is not None
            quiet = t - self.run_last
            if (moving is False and quiet > DIP_S) or quiet > r.start_after_s:
                self.run_start = self.run_last = None
                self.run_fixes = 0
        if self.run_start is not None:
            self.run_fixes += 1
        if not moving:
            return False
        if self.run_start is None:
            self.run_start, self.run_fixes = t, 1
        self.run_last = t
        return t - self.run_start >= r.start_after_s

    def _waiting_still(self, t: float, moving: bool | None) -> bool:
        """After a stop in "auto" mode: True until good slow fixes have held start_after_s."""
        if not self.wait_still:
            return False
        if moving:
            self.still_since = None
        elif moving is False:
            if self.still_since is None:
                self.still_since = t
            if t - self.still_since >= self.rules.start_after_s:
                self.wait_still = False
                self.run_start = self.run_last = None
                self.run_fixes = 0
                return False
        self.run_start = self.run_last = None
        self.run_fixes = 0
        return True

    def replay(self, fixes: Sequence[Fix]) -> None:
        """Rebuild the movement state from the newest stored fixes (in time order), deciding
        nothing: after a restart the idle clock of a resumed activity runs from the last
        movement they show, not from the restart; and with no activity, a lead-in under way
        goes on (its stored fixes are still adopted when the movement holds)."""
        for fix in fixes:
            moving = self._evidence(fix)
            self.prev = (fix.time, fix.lat, fix.lon)
            held = self._track_run(fix.time, moving)
            self.last_time = fix.time
            if self.active:
                self.last_active = fix.time
                if held:
                    self.last_moving = fix.time
        if self.active and fixes and (
            self.last_moving is None or self.last_moving < fixes[0].time
        ):
            # No held movement in the window replayed: it lies before it. The window is longer
            # than idle_stop_s, so the live daemon would have ended the ride; end it no earlier
            # than the window, never at the activity's start.
            self.last_moving = fixes[0].time


