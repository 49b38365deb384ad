"""Control requests from the CLI to the running daemon, runtime rows the daemon publishes for
`tracker status`, and the store's persistent counters.

Both directions go through the database because the CLI is another process, possibly another
user: a request is a row the daemon takes and finishes; a runtime row is a JSON value it puts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tracker.store.db import StoreBase, StoreError

REQUEST_COMMANDS = ("activity_start", "activity_stop", "poi")
# The daemon writes its runtime row at least this often; a reader takes a row older than a few
# of these as a daemon that is gone.
RUNTIME_EVERY_S = 5.0
# While nothing is stored (a silent GPS, a daemon waiting for its receiver) the row is rewritten
# this often only: each write is a commit with an fsync, SD-card wear for no news. `tracker
# status` counts a row up to 3 x RUNTIME_EVERY_S + 5 s old as a running daemon.
RUNTIME_IDLE_S = 15.0
_REQUEST_COLUMNS = "id, created_at, command, arg, done_at, result"


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    created_at: float  # wall clock
    command: str  # one of REQUEST_COMMANDS
    arg: str | None
    done_at: float | None
    result: str | None

    @property
    def done(self) -> bool:
        return self.done_at is not None


class ControlMixin(StoreBase):
    """Requests, runtime rows and counters of a Store. Each write is one transaction, or part
    of the caller's inside `transaction()`."""

    def add_request(self, command: str, arg: str | None = None) -> int:
        """Queue a request for the running daemon; returns its id (poll `request(id)`)."""
        if command not in REQUEST_COMMANDS:
            raise ValueError(f"command must be one of {REQUEST_COMMANDS}, not {command!r}")
        with self.transaction():
            cur = self._conn.execute(
                "INSERT INTO requests (created_at, command, arg) VALUES (?, ?, ?)",
                (self._clock(), command, arg),
            )
        assert cur.lastrowid is not None  # set by the INSERT
        return cur.lastrowid

    def take_requests(self) -> list[Request]:
        """Unfinished requests, oldest first. Taking claims nothing: a request stays here until
        `finish_request`, so one the daemon crashed on is taken again after the restart."""
        return [
            Request(*r)
            for r in self._all(
                f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE done_at IS NULL ORDER BY id"
            )
        ]

    def finish_request(self, request_id: int, result: str) -> None:
        with self.transaction():
            cur = self._conn.execute(
                "UPDATE requests SET done_at = ?, result = ? WHERE id = ?",
                (self._clock(), result, request_id),
            )
            if cur.rowcount == 0:
                raise StoreError(f"{self.path}: no request {request_id}")

    def request(self, request_id: int) -> Request | None:
        row = self._one(f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE id = ?", (request_id,))
        return None if row is None else Request(*row)

    # -- runtime -------------------------------------------------------------------------------

    def put_runtime(self, key: str, value: dict[str, Any]) -> None:
        """Publish a live value for `tracker status` (another process). Each call is a write:
        the daemon should put runtime rows in the writer's batch transaction, not alone."""
        raw = json.dumps(value, separators=(",", ":"), sort_keys=True)
        with self.transaction():
            self._conn.execute(
                "INSERT INTO runtime (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (key, raw, self._clock()),
            )

    def get_runtime(self, key: str) -> tuple[dict[str, Any], float] | None:
        """(value, wall-clock time it was put) or None."""
        row = self._one("SELECT value, updated_at FROM runtime WHERE key = ?", (key,))
        return None if row is None else (json.loads(row[0]), row[1])

    def counters(self) -> dict[str, int]:
        """The store's persistent counters: "pruned_fixes" (deleted once no backend needed
        them), "dropped_undelivered" and "dropped_undelivered:<backend>" (deleted before being
        delivered, prune = drop_oldest)."""
        return dict(self._all("SELECT name, value FROM counters ORDER BY name"))

    def _count(self, name: str, n: int) -> None:
        self._conn.execute(
            "INSERT INTO counters (name, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value, "
            "updated_at = excluded.updated_at",
            (name, n, self._clock()),
        )
