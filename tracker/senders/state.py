"""A sender's delivery state, as kept in the store: typed and versioned.

Each backend keeps one JSON document in the store (`Ledger.get_state` / `set_state`) beside its
cursor and marks. What is in flight is a `Pending` marker: committed before a request goes out,
cleared in the same transaction that acknowledges what the server confirmed. A marker still
there at the next step (a lost reply, a crash, a SIGKILL mid-request) means the server may have
applied the request: the sender asks the server what it has before anything is sent again.
That is the whole exactly-once rule; `Sender.send_marked` and `Sender.settle`
(tracker/senders/base.py) are its two halves.

Versions: the document carries `"v": STATE_VERSION`. Version 0 is the untyped JSON of the
releases before this module (the same keys, no "v"): it is read as it is, so a unit upgraded in
the middle of a ride keeps its pending markers and sends nothing twice. A document from a newer
release raises StateError: better a stopped backend, with the data kept, than a misread ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STATE_VERSION = 1


class StateError(Exception):
    """A backend's stored state this release cannot read."""


@dataclass
class Pending:
    """A request in flight: what it covered, to check with the server if its reply never came.
    Times are as sent (whole seconds, or milliseconds for json-gpsr's millis mode)."""

    kind: str  # "start", "update", "upload" (Map My Tracks), "post" (json-gpsr)
    first_time: int | None = None
    last_time: int | None = None
    last_id: int | None = None  # the newest fix id the request carried

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}

    @classmethod
    def from_json(cls, d: Any, default_kind: str) -> Pending | None:
        if not d:
            return None
        if not isinstance(d, dict):
            raise StateError(f"a pending marker that is not an object: {d!r}")
        return cls(
            kind=str(d.get("kind", default_kind)),
            first_time=_int(d.get("first_time")),
            last_time=_int(d.get("last_time")),
            last_id=_int(d.get("last_id")),
        )


def check_version(d: dict[str, Any], backend: str) -> int:
    """The document's version; StateError for one newer than this release."""
    version = d.get("v", 0)
    if not isinstance(version, int) or not 0 <= version <= STATE_VERSION:
        raise StateError(
            f"{backend}: stored delivery state version {version!r} is newer than this tracker "
            f"reads ({STATE_VERSION}); upgrade tracker (the data is kept)"
        )
    return version


def _int(v: Any) -> int | None:
    return None if v is None else int(v)
