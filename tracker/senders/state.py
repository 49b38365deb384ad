"""A sender's delivery state, as kept in the store: typed and versioned.

Each backend keeps one JSON document in the store (`Ledger.get_state` / `set_state`) beside its
cursor and marks. What is in flight is a `Pending` marker: committed before a request goes out,
cleared in the same transaction that acknowledges what the server confirmed. A marker still
there at the next step (a lost reply, a crash, a SIGKILL mid-request) means the server may have
applied the request: the sender asks the server what it has before anything is sent again.
That is the whole exactly-once rule, and the core runs it (tracker/senders/base.py:
`Sender.deliver` marks, sends and settles; `Sender.reconcile` resolves a marker left over).

Versions: each backend's state class has its own `VERSION`, written as `"v"`, and a migration
from every older version (`MIGRATIONS[n]` takes a version-n document to n + 1; `upgrade()` runs
them in turn), so a format change in one backend leaves the others' documents alone. Version 0
is the untyped JSON of the releases before versioning (no "v"): a unit upgraded in the middle of
a ride keeps its pending markers and sends nothing twice. A document from a newer release raises
StateError, which stops that backend only: better a stopped backend, with the data kept, than a
misread ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# One step up: a document of version n as version n + 1 (its "v" is set by `upgrade`).
Migration = Callable[[dict[str, Any]], dict[str, Any]]


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
    def from_json(cls, d: Any) -> Pending | None:
        if not d:
            return None
        if not isinstance(d, dict) or "kind" not in d:
            raise StateError(f"a pending marker that is not an object with a kind: {d!r}")
        return cls(
            kind=str(d["kind"]),
            first_time=_int(d.get("first_time")),
            last_time=_int(d.get("last_time")),
            last_id=_int(d.get("last_id")),
        )


def upgrade(
    d: dict[str, Any], backend: str, version: int, migrations: Mapping[int, Migration]
) -> dict[str, Any]:
    """`d` brought up to `version` by the backend's migrations; StateError for a document
    newer than this release reads (or one that is not an object)."""
    if not isinstance(d, dict):
        raise StateError(f"{backend}: stored delivery state that is not an object: {d!r}")
    v = d.get("v", 0)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= version:
        raise StateError(
            f"{backend}: stored delivery state version {v!r} is newer than this tracker "
            f"reads ({version}); upgrade tracker (the data is kept)"
        )
    for n in range(v, version):
        d = {**migrations[n](d), "v": n + 1}
    return d


def with_pending_kind(d: dict[str, Any], kind: str) -> dict[str, Any]:
    """A version-0 marker had no kind when its backend sent one kind of request only."""
    pending = d.get("pending")
    if isinstance(pending, dict) and pending and "kind" not in pending:
        return {**d, "pending": {**pending, "kind": kind}}
    return d


def _int(v: Any) -> int | None:
    return None if v is None else int(v)
