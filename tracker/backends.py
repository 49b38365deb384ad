"""The backends: where a stored fix leaves the unit. One module each, listed here.

A backend module declares everything about itself: its config section (a dataclass that is also
its sender's options), its secret, its sender (`make_sender`) and its `tracker doctor` probe.
`config`, the daemon and `doctor` iterate this registry; adding a backend is a new module and a
line here (docs/architecture.md).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracker.senders.base import Sender

# Config section (also the backend's name in the store and in `tracker status`) -> its module.
REGISTRY: dict[str, str] = {
    "mapmytracks": "tracker.senders.mapmytracks",
    "gpsr": "tracker.senders.gpsr",
}


def make_senders(cfg: Any, stop: threading.Event, db_path: Path | None = None) -> list[Sender]:
    """One sender per configured and enabled backend (none when no section is present)."""
    import importlib

    senders: list[Sender] = []
    path = db_path or cfg.storage.path
    for section, module in REGISTRY.items():
        settings = getattr(cfg, section, None)
        if settings is not None and settings.enabled:
            senders.append(importlib.import_module(module).make_sender(cfg, path, stop))
    return senders
