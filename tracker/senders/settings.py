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
    duration,
    nonempty_str,
    one_of,
    pos_float,
    pos_int,
    secret,
    without_userinfo,
)

__all__ = ["secret"]  # the backends' validator for their password or token (tracker.validate)


def history(v: Any) -> float | None:
    """`history`: "all" (None: every fix), "none" (0: only the last LIVE_WINDOW_S), or a
    duration ("10 min")."""
    if v == "all":
        return None
    if v == "none":
        return 0.0
    try:
        return duration(v)
    except ValueError:
        raise ValueError(
            f'expected "all", "none" or a duration such as "10 min", got {v!r}'
        ) from None


# What a live send lags by at most (a batch interval, a retry or two): never held back by
# `history`, so "none" still sends the present and the last minute.
LIVE_WINDOW_S = 60.0


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
        "reconnect_max_s": pos_float,
        "history": history,
        "catch_up": one_of("in_order", "live_first"),
        "catch_up_max_points": pos_int,
    }

    enabled: bool = True
    url: str = ""
    batch_max_points: int = 100
    interval_s: float = 5.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    backoff_max_s: float = 300.0
    # A connection that could not be made (no coverage: no route, refused, connect timeout)
    # costs a few bytes: tried again within this, so the link's return is noticed in seconds.
    reconnect_max_s: float = 10.0
    history: float | None = None  # seconds of backlog sent after an outage; None: all of it
    catch_up: str = "in_order"
    catch_up_max_points: int = 1000  # fixes a request while a backlog is being caught up

    # The catch_up orders this backend's protocol allows (live_first: Traccar and MQTT).
    CATCH_UP: ClassVar[tuple[str, ...]] = ("in_order",)

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
        if self.catch_up not in self.CATCH_UP:
            raise ValueError(f"catch_up: {self.catch_up!r}: this backend sends in order "
                             f"(one of: {', '.join(self.CATCH_UP)})")  # fmt: skip
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
