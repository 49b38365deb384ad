"""The durable local queue: every fix, sample and control request goes through this SQLite file.

Nothing is sent from anywhere but here. The GPS writer stores fixes; each sender reads batches
for its backend and acknowledges them only after its server said yes (at-least-once: a crash
between the upload and the acknowledgement sends the batch again, it never loses it).

One class, `Store` (get one from `open_store()`), over one connection, composed of one part per
concern, each in its own module with its own docstring:

- `db`: the file (open, check, move aside, migrate), the schema, SQLite errors, transactions.
- `fixes`: activities, fixes, samples (fitness) and instrument readings (a boat's, in a table
  of their own), point-of-interest notes.
- `ledger`: delivery state per backend (cursors, marks, sender state), and `Ledger`, the narrow
  interface a sender gets.
- `control`: control requests from the CLI, runtime rows for `tracker status`, counters.
- `prune`: the size limit and pruning.
- `facade`: `Store` and `open_store()`; `inspect_store()`, the read-only look of `tracker
  doctor` (`check.py`, kept out of these imports) at any schema version.

Contracts
---------
Threads: one Store per thread. A Store may be created in one thread and handed to the thread
that uses it, but two threads must never use the same Store at once (one connection, one
transaction state). The daemon's writer thread owns one; each sender thread opens its own.

Processes: any number of processes may open the same file at the same time (the daemon, and
`tracker status` / `export` / `activity stop` from a shell, possibly as another user). SQLite's
WAL mode lets readers run beside the one writer; writers wait up to BUSY_TIMEOUT_S for each
other, then get StoreBusy.

Durability: journal_mode=WAL with synchronous=FULL, so a transaction is on the storage once
COMMIT returns (with NORMAL, WAL mode may lose the last transactions on a power cut). The
writer commits a batch every commit interval, so a power cut loses at most that interval.

Errors: everything SQLite raises enters the rest of the code as StoreError or a subclass, with
the database path in the message. A full disk, a read-only file or file system, or an I/O error
during a write rolls the transaction back and raises StorageUnavailable: nothing of that
transaction was stored, everything committed before is intact, and the same Store works again
once the cause is gone (the caller keeps its batch in memory and retries).
"""

from __future__ import annotations

from tracker.store.control import REQUEST_COMMANDS, Request
from tracker.store.db import (
    BUSY_TIMEOUT_S,
    MIGRATIONS,
    SCHEMA_VERSION,
    StorageFull,
    StorageUnavailable,
    StoreBusy,
    StoreError,
)

# Private names that tests reach through the package; re-exported with an alias so they stay.
from tracker.store.db import _open_here as _open_here
from tracker.store.db import _open_here_lock as _open_here_lock
from tracker.store.db import _statements as _statements
from tracker.store.facade import Store, open_store
from tracker.store.fixes import Activity, StoredFix
from tracker.store.ledger import Ledger
from tracker.store.prune import PRUNE_MODES, PRUNE_TARGET, PruneReport

__all__ = [
    "BUSY_TIMEOUT_S",
    "MIGRATIONS",
    "PRUNE_MODES",
    "PRUNE_TARGET",
    "REQUEST_COMMANDS",
    "SCHEMA_VERSION",
    "Activity",
    "Ledger",
    "PruneReport",
    "Request",
    "StorageFull",
    "StorageUnavailable",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoredFix",
    "open_store",
]
