"""What every backend's config section has, and how a backend module declares its own keys.

A backend's `Settings` is a frozen dataclass deriving from `SenderSettings`: the parsed config
section and, unchanged, its sender's options (no copy to keep in step). Its class attribute
`KEYS` maps each key it adds to a validator (tracker/validate.py); `keys()` merges them with the
shared ones. `check()` does the cross-key checks and raises ValueError("<key>: ...").

Light on purpose: `tracker status` parses the config, and must not pay for an HTTP stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tracker.validate import (
    boolean,
    credential_exists,
    nonempty_str,
    pos_float,
    pos_int,
    secret,
    without_userinfo,
)

__all__ = ["secret"]  # the backends' validator for their password or token (tracker.validate)


def url(v: Any) -> str:
    text = nonempty_str(v)
    if not text.startswith(("https://", "http://")) or len(text.split("/")[2]) == 0:
        raise ValueError(f"expected an https:// (or http://) URL, got {without_userinfo(text)!r}")
    return text


@dataclass(frozen=True)
class SenderSettings:
    """On or off, where, how much a request, how patient.

    A section that is present (and enabled) means its sender runs. Secrets are read by the
    sender (the inline key, else the file, else the systemd credential); never in a repr.
    """

    KEYS: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "enabled": boolean,
        "url": url,
        "batch_max_points": pos_int,
        "interval_s": pos_float,
        "connect_timeout_s": pos_float,
        "read_timeout_s": pos_float,
        "backoff_max_s": pos_float,
    }

    enabled: bool = True
    url: str = ""
    batch_max_points: int = 100
    interval_s: float = 5.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    backoff_max_s: float = 300.0

    @classmethod
    def keys(cls) -> dict[str, Callable[[Any], Any]]:
        """Every key of the section: the shared ones and the backend's own."""
        merged: dict[str, Callable[[Any], Any]] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("KEYS", {}))
        return merged

    # A backend names the keys it cannot run without (key -> what to put there), and its
    # secret: (key, systemd credential); `<key>_file` is the file it may come from instead.
    REQUIRED: ClassVar[dict[str, str]] = {}
    SECRET: ClassVar[tuple[str, str] | None] = None

    def scope(self) -> str:
        """What this backend is sent (tracker/store/db.py's SCOPES): the fixes of activities.
        A fleet backend, which maps parked units too, returns its `send` key."""
        return "activities"

    def read_secret(self) -> str:
        """The backend's secret: its `SECRET` key inline, else `<key>_file`, else the systemd
        credential (SecretError naming the places when none has it). For the sender's thread
        and `tracker doctor`; never logged."""
        from tracker.credentials import read_secret  # a leaf; only when a secret is read

        assert self.SECRET is not None, f"{type(self).__name__} declares no SECRET"
        key, credential = self.SECRET
        return read_secret(getattr(self, key) or None, getattr(self, f"{key}_file"), credential,
                           what=key)  # fmt: skip

    def secret_reader(self) -> Callable[[], str] | None:
        """`read_secret`, for a backend that has a secret (`SECRET`); else None."""
        return None if self.SECRET is None else self.read_secret

    def check(self) -> None:
        """Cross-key checks of an enabled section; ValueError("<key>: ...")."""
        if not self.enabled:
            return
        for key, what in self.REQUIRED.items():
            if not getattr(self, key):
                raise ValueError(f"{key}: missing ({what})")
        if self.SECRET is not None:
            key, credential = self.SECRET
            require_secret(getattr(self, key), getattr(self, f"{key}_file"), credential, key)


def require_secret(value: str, file: Path | None, credential: str, key: str) -> None:
    """ValueError naming `key` unless the secret comes inline, from a file or a credential."""
    if value or file or credential_exists(credential):
        return
    raise ValueError(
        f"{key}: missing (set {key} or {key}_file, or pass the systemd credential {credential})"
    )
