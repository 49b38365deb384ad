"""Value validators for the configuration: tracker/config.py and tracker/sensors/config.py.

A leaf module (it imports nothing of tracker), so both configs can use it without importing each
other, and one copy means one behaviour: a string key is stripped the same way and a boolean is
never taken for a number, whichever section it is in.

A validator takes the raw TOML value and returns the typed one, or raises ValueError with the
reason in a few words; `validate()` runs a table through them and words the ConfigError.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration problem, worded as one line for the rider."""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def key_text(key: Any) -> str:
    """A section or key name as the rider would write it in TOML: bare, else quoted with its
    escapes (`"a\\nb"`), so that a stray line end or space in a key stays visible on one line."""
    key = str(key)
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def secret(v: Any) -> str:
    """A password or token as written: not stripped (the secret file reader keeps spaces).
    Its error names the type, never the value, whatever the value is: a number or a table
    written by mistake may still be the real secret, and the error goes to the journal."""
    if isinstance(v, str):
        if v:
            return v
        raise ValueError("expected a non-empty string, got an empty one")
    raise ValueError(f"expected a string in quotes, got {_kind(v)} (its value is not shown)")


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    return "a date or time" if hasattr(v, "isoformat") else f"a {type(v).__name__}"


def without_userinfo(url: str) -> str:
    """`url` with any `user:password@` replaced by `***@`, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rpartition("@")[2]
    return f"{scheme}{sep}{host}{slash}{path}"


def nonempty_str(v: Any) -> str:
    """A string with something besides whitespace, stripped (a stray space in a device name or
    a label is a typo, never meant)."""
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"expected a non-empty string, got {v!r}")
    return v.strip()


def pos_int(v: Any) -> int:
    # bool is an int in Python: `baudrate = true` must not become 1.
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"expected a positive whole number, got {v!r}")
    return v


def pos_float(v: Any) -> float:
    # TOML has nan and inf: neither is a duration, a size or a rate.
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < math.inf:
        raise ValueError(f"expected a positive number, got {v!r}")
    return float(v)


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def one_of(*allowed: Any) -> Callable[[Any], Any]:
    """One of `allowed`, as given. A boolean never matches (True == 1 would pass `width`)."""

    def check(v: Any) -> Any:
        if isinstance(v, bool) or v not in allowed:
            raise ValueError(f"{v!r} is not one of: {', '.join(map(str, allowed))}")
        return v

    return check


def int_in(lo: int, hi: int) -> Callable[[Any], int]:
    """A whole number from `lo` to `hi` (register and bus numbers: the bound is shown in hex)."""

    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"expected a whole number from {lo} to {hi} (0x{hi:x}), got {v!r}")
        return v

    return check


def bounded(low: float, high: float, why: str) -> Callable[[Any], float]:
    """A positive number from `low` to `high`; `why` says what the bounds protect."""

    def check(v: Any) -> float:
        x = pos_float(v)
        if not low <= x <= high:
            raise ValueError(f"expected {low:g} to {high:g} ({why}), got {v!r}")
        return x

    return check


_UNITS = {"s": 1, "sec": 1, "min": 60, "h": 3600, "d": 86400}


def duration(v: Any) -> float:
    """A span of time: a number of seconds, or text such as "90 s", "10 min", "1 h 30 min"."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return pos_float(v)
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f'expected seconds or a duration such as "10 min", got {v!r}')
    words, total = v.split(), 0.0
    try:
        if len(words) % 2:
            raise ValueError
        for number, unit in zip(words[::2], words[1::2], strict=True):
            total += float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise ValueError(f'expected a duration such as "90 s", "10 min" or "1 h 30 min" '
                         f"(units: {', '.join(_UNITS)}), got {v!r}") from None  # fmt: skip
    return pos_float(total)


def user_path(v: Any) -> Path:
    """A file path; `~` is the home of the user running the daemon."""
    try:
        return Path(nonempty_str(v)).expanduser()
    except RuntimeError:  # "~someone/..." and no such user
        raise ValueError(f"no home directory for {v.split('/')[0]!r}") from None


def validate(
    body: dict[str, Any],
    keys: dict[str, Callable[[Any], Any]],
    at: str,
    unknown: str = "",
    sep: str = " ",
) -> dict[str, Any]:
    """Each key of a table through its validator; ConfigError naming `at` and the key
    (`[gps] baudrate: ...`; with `sep` ".", `inputs[1].url: ...`).

    `unknown` words the unknown-key error's context (e.g. ' for type = "ble"').
    """
    values = {}
    for key, raw in body.items():
        if key not in keys:
            known = ", ".join(keys)
            raise ConfigError(f"{at}{sep}{key_text(key)}: unknown key{unknown} (known: {known})")
        try:
            values[key] = keys[key](raw)
        except ValueError as e:
            raise ConfigError(f"{at}{sep}{key}: {e}") from None
    return values


def credential_exists(name: str) -> bool:
    """Whether systemd passed the credential `name` (LoadCredential=) to this process."""
    import os

    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not creds:
        return False
    return (Path(creds) / name).exists()
