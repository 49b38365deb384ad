"""The backends: where a stored fix leaves the unit. One module each, listed here.

A backend module declares everything about itself:
- `NAME` (its config section, its name in the store and in `tracker status`) and `CREDENTIAL`
  (the systemd credential its secret may come from);
- `Settings`: its config section, a dataclass deriving from tracker/senders/settings.py's
  SenderSettings with its own `KEYS` and `check()`, and also its sender's options;
- `SENDER`: its Sender class (tracker/senders/base.py), which `make_senders()` below builds as
  `SENDER(settings, stop, open_db, secret=...)`: the store opener is made here, once for every
  backend, and the secret reader is its Settings' `secret_reader()` (from `SECRET`);
- `probe(settings) -> Probe`: its `tracker doctor` checks (tracker/checks.py);
- optionally `activity_done(state, activity_id) -> bool`: whether, by its stored state, it is
  finished with an activity (a backend with activities of its own, as Map My Tracks has; the
  others are done with a fix once it is acknowledged). `tracker activities` asks it through
  `activity_done()` below.
`config`, the daemon and `doctor` iterate this registry; adding a backend is a new module and a
line here (docs/architecture.md).

It is also the one list of secrets (`secrets()`): the backends' and, in `OTHER_SECRETS`, those
of the parts that are not backends. The unit's `LoadCredential=` lines and README's tables of
backends and credentials are written from it (scripts/sync-registry), and tests/test_registry.py
fails, naming the line to add, when one of them drifts.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracker.senders.base import Sender
    from tracker.senders.settings import SenderSettings
    from tracker.store import Store

# Config section (also the backend's name in the store and in `tracker status`) -> its module.
REGISTRY: dict[str, str] = {
    "mapmytracks": "tracker.senders.mapmytracks",
    "gpsr": "tracker.senders.gpsr",
    "traccar": "tracker.senders.traccar",
    "mqtt": "tracker.senders.mqtt",
}

# The secrets of the parts that are not backends: config section -> "module:class" of its
# settings, which declares `SECRET = (key, systemd credential)` as a backend's Settings does.
OTHER_SECRETS: dict[str, str] = {
    "web": "tracker.config:WebConfig",  # the status page's token (tracker/web.py)
}


@dataclass(frozen=True)
class Secret:
    """A secret a config section may take: `key` inline, `<key>_file`, or the systemd
    credential `credential` (/etc/credstore/<credential>, passed by LoadCredential=)."""

    section: str
    key: str
    credential: str


def module(section: str) -> ModuleType:
    """The backend module of a config section (imported on first use)."""
    return importlib.import_module(REGISTRY[section])


def settings_class(section: str) -> type[SenderSettings]:
    """The dataclass a backend's config section is parsed into."""
    cls: type[SenderSettings] = module(section).Settings
    return cls


def secrets() -> list[Secret]:
    """Every secret a section may take: the backends' in registry order, then the others'.
    Imports every backend module: for tests and scripts, not the daemon."""
    declared: list[tuple[str, tuple[str, str] | None]] = [
        (section, settings_class(section).SECRET) for section in REGISTRY
    ]
    for section, where in OTHER_SECRETS.items():
        module_name, _, cls = where.partition(":")
        declared.append((section, getattr(importlib.import_module(module_name), cls).SECRET))
    return [Secret(section, *secret) for section, secret in declared if secret is not None]


def activity_done(section: str, state: dict[str, Any], activity_id: int) -> bool | None:
    """Whether the backend of `section` is finished with an activity, by its stored `state`;
    None when it has no such notion (no `activity_done` of its own) or is not registered."""
    if section not in REGISTRY:
        return None
    done = getattr(module(section), "activity_done", None)
    return None if done is None else bool(done(state, activity_id))


def configured(cfg: Any) -> list[tuple[str, Any]]:
    """(section, settings) of every backend present and enabled in `cfg`, in registry order."""
    return [
        (section, cfg.backends[section])
        for section in REGISTRY
        if section in cfg.backends and cfg.backends[section].enabled
    ]


def make_senders(cfg: Any, stop: threading.Event, db_path: Path | None = None) -> list[Sender[Any]]:
    """One sender per configured and enabled backend (none when no section is present), each
    opening the store at `db_path` (else the config's) in its own thread."""
    from tracker.store import open_store

    path = db_path or cfg.storage.path

    def open_db() -> Store:
        return open_store(path, check=False)

    return [module(section).SENDER(settings, stop, open_db, secret=settings.secret_reader())
            for section, settings in configured(cfg)]  # fmt: skip
