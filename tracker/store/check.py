"""`tracker doctor`'s look at the storage (tracker/checks.py): room on the card for the queue.

Kept out of the store's package imports: `tracker status` opens the store without it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from tracker.checks import FAIL, OK, Check, Context

MIN_FREE_MB = 64.0


def check(ctx: Context) -> Iterator[Check]:
    """The partition of `[storage] path` has room: MIN_FREE_MB free, and `max_mb` fits."""
    path = Path(ctx.cfg.storage.path)
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_mb = usage.free / 1e6
    used_mb = path.stat().st_size / 1e6 if path.exists() else 0.0
    room = free_mb + used_mb
    max_mb = ctx.cfg.storage.max_mb
    if free_mb < MIN_FREE_MB:
        yield Check(
            "disk", FAIL, f"only {free_mb:.0f} MB free on the partition of {path}",
            "free space (journalctl --vacuum-size=50M, apt-get clean) or use a larger card",
        )  # fmt: skip
    elif room < max_mb:
        yield Check(
            "disk", FAIL,
            f"[storage] max_mb is {max_mb:g} MB but only {room:.0f} MB can be used at {path}",
            f"set [storage] max_mb = {int(room * 0.8)} (the queue must fit on the card)",
        )  # fmt: skip
    else:
        yield Check("disk", OK, f"{free_mb:.0f} MB free for {path} (max_mb {max_mb:g})")
