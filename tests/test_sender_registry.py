"""The registry builds every sender (tracker/backends.py): one store opener, the secret read
from the backend's `Settings.SECRET`, and `SENDER(settings, stop, open_db, secret=...)` for
each backend it lists, so a new backend needs no `make_sender` of its own."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tracker import backends
from tracker.config import parse
from tracker.credentials import SecretError
from tracker.senders.base import Sender

SECTIONS = {
    "mapmytracks": {"username": "rider", "password": "mmt-secret"},
    "gpsr": {"url": "https://gpsr.example/", "token": "gpsr-secret"},
    "traccar": {"url": "http://traccar.example:5055/", "device_id": "unit-7"},
    "mqtt": {"url": "mqtt://broker.example", "username": "rider", "password": "mqtt-secret"},
}
SECRETS = {"mapmytracks": "mmt-secret", "gpsr": "gpsr-secret", "traccar": None,
           "mqtt": "mqtt-secret"}  # fmt: skip


def test_every_registered_backend_is_covered_here():
    assert set(SECTIONS) == set(backends.REGISTRY)


def test_the_registry_builds_each_sender_with_one_opener_and_its_secret(tmp_path: Path):
    db = tmp_path / "tracker.db"
    cfg = parse({"storage": {"path": str(db)}, **SECTIONS})
    senders = backends.make_senders(cfg, threading.Event())
    assert [s.name for s in senders] == list(backends.REGISTRY)
    for s in senders:
        assert type(s) is backends.module(s.name).SENDER and isinstance(s, Sender)
        assert s.options is cfg.backends[s.name]
        secret = s._secret() if s._secret is not None else None
        assert secret == SECRETS[s.name], s.name
    store = senders[0]._open_db()  # the config's database, opened in the sender's thread
    try:
        store.register_backend("gpsr", "activities")
        assert db.exists()
    finally:
        store.close()


def test_a_secret_comes_from_its_file_and_a_missing_one_names_the_places(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("from-file\n")
    cfg = parse({"gpsr": {"url": "https://gpsr.example/", "token_file": str(token)}})
    (sender,) = backends.make_senders(cfg, threading.Event(), tmp_path / "t.db")
    assert sender._secret is not None and sender._secret() == "from-file"
    token.unlink()
    with pytest.raises(SecretError, match="token"):
        sender._secret()
