"""The `[[sensors]]` entries of the configuration, validated key by key.

Each entry is one sensor link. `parse_sensors()` raises ConfigError with one line naming the
entry and key (`[[sensors]] #2 address: ...`), as tracker/config.py does for the sections:
a typo must stop the daemon at start, not leave a power meter silently unpaired for a ride.

    type       "ble", "ant", "i2c" or "simulated" (required)
    label      the name in logs, status and the stored samples (default from the entry)
    kinds      which of "hr", "cad", "pwr" to take from this sensor (default: all it gives)
    reconnect_max_s  longest wait between reconnection attempts (default 30)
    silence_s  connected but no data for this long: reconnect (ble, ant; default 30)

    ble:  address = "AA:BB:..." or name = "advertised name" (one of them); adapter ("hci0");
          scan_timeout_s (10); connect_timeout_s (20)
    ant:  profile = "hr", "power", "speed_cadence" or "cadence"; device (0..65535, 0 = pair
          with the first one seen and remember it)
    i2c:  bus, address, register, kind (required); width 1, 2 or 4 bytes (2); endian "big" or
          "little" (big); signed (false); scale (1.0: value = raw * scale); rate_hz (1)
    simulated: rate_hz (4); seed (1)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tracker.fix import SAMPLE_KINDS
from tracker.validate import (
    ConfigError,
    boolean,
    int_in,
    nonempty_str,
    one_of,
    pos_float,
    validate,
)

TYPES = ("ble", "ant", "i2c", "simulated")
ANT_PROFILES = ("hr", "power", "speed_cadence", "cadence")


@dataclass(frozen=True)
class SensorConfig:
    type: str
    label: str
    kinds: tuple[str, ...] = SAMPLE_KINDS
    reconnect_max_s: float = 30.0
    silence_s: float = 30.0
    # ble
    address: str | None = None
    name: str | None = None
    adapter: str | None = None
    scan_timeout_s: float = 10.0
    connect_timeout_s: float = 20.0
    # ant
    profile: str | None = None
    device: int = 0
    # i2c (address is shared with ble: a string there, a number here)
    bus: int | None = None
    i2c_address: int | None = None
    register: int | None = None
    kind: str | None = None
    width: int = 2
    endian: str = "big"
    signed: bool = False
    scale: float = 1.0
    # i2c and simulated
    rate_hz: float = 1.0
    seed: int = 1


# The generic validators are in tracker/validate.py; these know sensors.


def _rate(v: Any) -> float:
    rate = pos_float(v)
    if rate > 50:
        raise ValueError(f"at most 50 readings a second, got {v!r}")
    return rate


def _nonzero_float(v: Any) -> float:
    finite = isinstance(v, int | float) and -math.inf < v < math.inf
    if isinstance(v, bool) or not finite or v == 0:
        raise ValueError(f"expected a non-zero finite number, got {v!r}")
    return float(v)


def _kinds(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or not all(k in SAMPLE_KINDS for k in v):
        raise ValueError(f"expected a list of {', '.join(SAMPLE_KINDS)}, got {v!r}")
    return tuple(dict.fromkeys(v))


def _ble_address(v: Any) -> str:
    text = nonempty_str(v)
    parts = text.split(":")
    hexdigits = set("0123456789abcdefABCDEF")
    is_mac = len(parts) == 6 and all(len(p) == 2 and set(p) <= hexdigits for p in parts)
    is_uuid = len(text) == 36 and text.count("-") == 4  # macOS names devices by UUID
    if not (is_mac or is_uuid):
        raise ValueError(f"expected a Bluetooth address like 'C0:FF:EE:12:34:56', got {v!r}")
    return text.upper()


COMMON: dict[str, Callable[[Any], Any]] = {
    "type": one_of(*TYPES),
    "label": nonempty_str,
    "kinds": _kinds,
    "reconnect_max_s": pos_float,
}
BY_TYPE: dict[str, dict[str, Callable[[Any], Any]]] = {
    "ble": {
        "address": _ble_address,
        "name": nonempty_str,
        "adapter": nonempty_str,
        "silence_s": pos_float,
        "scan_timeout_s": pos_float,
        "connect_timeout_s": pos_float,
    },
    "ant": {
        "profile": one_of(*ANT_PROFILES),
        "device": int_in(0, 0xFFFF),
        "silence_s": pos_float,
    },
    "i2c": {
        "bus": int_in(0, 255),
        "address": int_in(0x03, 0x77),
        "register": int_in(0, 0xFF),
        "kind": one_of(*SAMPLE_KINDS),
        "width": one_of(1, 2, 4),
        "endian": one_of("big", "little"),
        "signed": boolean,
        "scale": _nonzero_float,
        "rate_hz": _rate,
    },
    "simulated": {"rate_hz": _rate, "seed": int_in(0, 2**31 - 1)},
}
REQUIRED = {
    "ble": (),
    "ant": ("profile",),
    "i2c": ("bus", "address", "register", "kind"),
    "simulated": (),
}
DEFAULT_RATE = {"i2c": 1.0, "simulated": 4.0}


def parse_sensors(raw: Any, where: str = "") -> list[SensorConfig]:
    """Validate the `[[sensors]]` array of tables. `where` prefixes errors ("path: ")."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}sensors must be an array of tables: write [[sensors]]")
    out: list[SensorConfig] = []
    labels: dict[str, int] = {}
    for n, entry in enumerate(raw, 1):
        at = f"{where}[[sensors]] #{n}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}: must be a table")
        if "type" not in entry:
            raise ConfigError(f"{at} type: missing (one of: {', '.join(TYPES)})")
        try:
            kind = COMMON["type"](entry["type"])
        except ValueError as e:
            raise ConfigError(f"{at} type: {e}") from None
        values = validate(entry, {**COMMON, **BY_TYPE[kind]}, at, f' for type = "{kind}"')
        for key in REQUIRED[kind]:
            if key not in values:
                raise ConfigError(f'{at} {key}: missing (required for type = "{kind}")')
        if kind == "ble" and ("address" in values) == ("name" in values):
            raise ConfigError(f"{at} address: give exactly one of address or name")
        if kind == "i2c":
            values["i2c_address"] = values.pop("address")
            values["kinds"] = (values["kind"],)
        values.setdefault("rate_hz", DEFAULT_RATE.get(kind, 1.0))
        label = values.pop("label", None)
        if label is None:
            label = _default_label(kind, values)
            if label in labels:
                label = f"{label}-{n}"  # two entries alike but for a key we do not name by
        if label in labels:
            raise ConfigError(f"{at} label: {label!r} is already sensor #{labels[label]}'s")
        labels[label] = n
        out.append(SensorConfig(label=label, **values))
    return out


def _default_label(kind: str, values: dict[str, Any]) -> str:
    if kind == "ble":
        return values.get("name") or values["address"]
    if kind == "ant":
        device = values.get("device", 0)
        return f"ant-{values['profile']}" + (f"-{device}" if device else "")
    if kind == "i2c":
        return f"i2c-{values['bus']}-0x{values['i2c_address']:02x}-{values['kind']}"
    return "simulated"
