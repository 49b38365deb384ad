"""The backends: where a stored fix leaves the unit. One module each, listed here.

A backend module declares everything about itself:
- `NAME` (its config section, its name in the store and in `tracker status`) and `CREDENTIAL`
  (the systemd credential its secret may come from);
- `Settings`: its config section, a dataclass deriving from tracker/senders/settings.py's
  SenderSettings with its own `KEYS` and `check()`, and also its sender's options;
- `make_sender(settings, db_path, stop)`: its Sender (tracker/senders/base.py);
- `probe(settings) -> Probe`: its `tracker doctor` checks (tracker/checks.py).
`config`, the daemon and `doctor` iterate this registry; adding a backend is a new module and a
line here (docs/architecture.md).
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracker.senders.base import Sender
    from tracker.senders.settings import SenderSettings

# Config section (also the backend's name in the store and in `tracker status`) -> its module.
REGISTRY: dict[str, str] = {
    "mapmytracks": "tracker.senders.mapmytracks",
    "gpsr": "tracker.senders.gpsr",
    "traccar": "tracker.senders.traccar",
    "mqtt": "tracker.senders.mqtt",
}


def module(section: str) -> ModuleType:
    """The backend module of a config section (imported on first use)."""
    return importlib.import_module(REGISTRY[section])


def settings_class(section: str) -> type[SenderSettings]:
    """The dataclass a backend's config section is parsed into."""
    return module(section).Settings


def configured(cfg: Any) -> list[tuple[str, Any]]:
    """(section, settings) of every backend present and enabled in `cfg`, in registry order."""
    return [
        (section, cfg.backends[section])
        for section in REGISTRY
        if section in cfg.backends and cfg.backends[section].enabled
    ]


def make_senders(cfg: Any, stop: threading.Event, db_path: Path | None = None) -> list[Sender]:
    """One sender per configured and enabled backend (none when no section is present)."""
    path = db_path or cfg.storage.path
    return [module(section).make_sender(settings, path, stop) for section, settings in
            configured(cfg)]  # fmt: skip
