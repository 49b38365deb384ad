"""What `tracker doctor` reports: one Check per thing looked at, with the fix when it failed.

A leaf module, so a backend module can carry its own probe (`probe(settings) -> Probe`) without
importing the doctor command.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OK, FAIL, SKIP = "ok", "FAIL", "skip"


@dataclass
class Check:
    name: str
    result: str  # OK, FAIL or SKIP
    detail: str
    fix: str | None = None


def unreachable(name: str, url: str, detail: str, section: str) -> Check:
    """A backend server that could not be reached, with the fix a rider can try."""
    return Check(
        name, FAIL, f"{url} unreachable: {detail}",
        f"check the network (ping the host), DNS and the url in [{section}]",
    )  # fmt: skip


@dataclass
class Probe:
    """A backend's answer to `tracker doctor`: its checks, and the server's clock when it
    told it (server minus system clock, seconds), for the clock check."""

    checks: list[Check] = field(default_factory=list)
    server_offset_s: float | None = None
