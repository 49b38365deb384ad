"""When to try again: exponential backoff with full jitter, capped, reset on success.

A RetryPolicy is a small immutable value in the manner of urllib3's Retry: `failed()` returns
the next policy, carrying the delay to wait before the next attempt; `succeeded()` returns the
policy reset to no failures. Nothing here reads a clock or sleeps; randomness and "now" are
passed in, so the whole module is tested without waiting.

Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): the delay after the n-th
consecutive failure is uniform in [0, min(cap, base * 2**(n-1))]. Many units that lost the
network in the same tunnel then do not all come back in the same second.

A server's Retry-After (429, 503) is honoured as a floor: the delay is never shorter than what
the server asked for, but it is bounded by RETRY_AFTER_MAX_S so a wrong header cannot park a
unit for a day.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC

RETRY_AFTER_MAX_S = 3600.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff state after `failures` consecutive failures; `delay_s` is the wait it chose."""

    base_s: float = 1.0
    cap_s: float = 300.0
    failures: int = 0
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s <= 0:
            raise ValueError("base_s and cap_s must be positive")

    def ceiling(self, failures: int) -> float:
        """The upper bound of the jittered delay after `failures` consecutive failures."""
        if failures <= 0:
            return 0.0
        # 2**n overflows a float past n ~ 1024; the cap is reached long before.
        exp = min(failures - 1, 64)
        return min(self.cap_s, self.base_s * math.ldexp(1.0, exp))

    def failed(
        self,
        retry_after_s: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> RetryPolicy:
        """The policy after one more failure. `rand` returns a float in [0, 1)."""
        failures = self.failures + 1
        delay = rand() * self.ceiling(failures)
        if retry_after_s is not None and retry_after_s > 0:
            delay = max(delay, min(retry_after_s, RETRY_AFTER_MAX_S))
        return replace(self, failures=failures, delay_s=delay)

    def succeeded(self) -> RetryPolicy:
        return replace(self, failures=0, delay_s=0.0)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None when
    absent or unreadable. A date in the past gives 0. `now` is the wall clock (unix s)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        from email.utils import parsedate_to_datetime  # only for an HTTP-date Retry-After

        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
